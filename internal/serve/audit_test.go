package serve

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

type auditLine struct {
	Time         string            `json:"time"`
	Route        string            `json:"route"`
	Status       int               `json:"status"`
	PromptSHA256 []string          `json:"prompt_sha256"`
	Prompt       []string          `json:"prompt"`
	Probes       []string          `json:"probes"`
	Verdicts     []json.RawMessage `json:"verdicts"`
	FinishReason string            `json:"finish_reason"`
	Error        string            `json:"error"`
}

// TestAuditConcurrent sends 20 concurrent requests to the audited routes and checks that the
// audit log holds one valid JSON line for each, with the prompt's hash and no text.
func TestAuditConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	ts := newTestServer(t, withWatch("stop", "bomb"), func(c *Config, _ *fakeEngine) { c.AuditLog = path })
	type request struct {
		path   string
		body   map[string]any
		prompt string
		status int
	}
	var reqs []request
	for i := range 20 {
		prompt := fmt.Sprintf("prompt number %d", i)
		switch i % 6 {
		case 0:
			reqs = append(reqs, request{"/v1/completions", map[string]any{"prompt": prompt}, prompt, 200})
		case 1:
			body := userChat(prompt + " bomb")
			body["stream"] = i%12 == 7
			reqs = append(reqs, request{"/v1/chat/completions", body, "Human: " + prompt + " bomb\n\nAssistant:", 200})
		case 2:
			reqs = append(reqs, request{"/v1/score", map[string]any{"prompt": prompt}, prompt, 200})
		case 3:
			reqs = append(reqs, request{"/v1/moderations", map[string]any{"input": prompt}, prompt, 200})
		case 4:
			reqs = append(reqs, request{"/v1/activations", map[string]any{"prompt": prompt, "layers": []int{0}}, prompt, 200})
		case 5:
			reqs = append(reqs, request{"/v1/completions", map[string]any{"prompt": prompt, "max_tokens": 1000}, prompt, 400})
		}
	}
	var wg sync.WaitGroup
	for _, rq := range reqs {
		wg.Go(func() {
			resp, data := ts.do(t, http.MethodPost, rq.path, rq.body)
			assert.Equal(t, rq.status, resp.StatusCode, "%s %s", rq.path, data)
		})
	}
	wg.Wait()
	ts.do(t, http.MethodGet, "/v1/models", nil) // not audited
	require.NoError(t, ts.srv.Close())

	lines := readLines(t, path)
	require.Len(t, lines, len(reqs))
	byHash := map[string]auditLine{}
	for _, l := range lines {
		var a auditLine
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&a), "line %q", l)
		_, err := time.Parse(time.RFC3339Nano, a.Time)
		require.NoError(t, err)
		require.Len(t, a.PromptSHA256, 1)
		assert.Nil(t, a.Prompt, "no prompt text without AuditText")
		byHash[a.PromptSHA256[0]] = a
	}
	for _, rq := range reqs {
		a, ok := byHash[sha(rq.prompt)]
		require.True(t, ok, "no line for %s %q", rq.path, rq.prompt)
		assert.Equal(t, rq.path, a.Route)
		assert.Equal(t, rq.status, a.Status)
		switch {
		case rq.status != 200:
			assert.Contains(t, a.Error, "max_tokens 1000")
		case rq.path == "/v1/chat/completions":
			assert.Equal(t, "content_filter", a.FinishReason)
			assert.Equal(t, []string{"bomb"}, a.Probes)
			require.Len(t, a.Verdicts, 2, "the prompt's verdict and the fire")
			var v auditVerdict
			require.NoError(t, json.Unmarshal(a.Verdicts[1], &v))
			assert.Equal(t, verdict{Probe: "bomb", Score: 1, Threshold: 0.5, Layer: 2, TokenIndex: 5, Fired: true, Rule: "max"}, v.verdict)
		case rq.path == "/v1/completions":
			assert.Equal(t, "stop", a.FinishReason)
			require.Len(t, a.Verdicts, 1)
		case rq.path == "/v1/score", rq.path == "/v1/moderations":
			assert.Len(t, a.Verdicts, 4, "every loaded probe")
		}
	}
}

// TestAuditText checks that AuditText logs the prompt's text, that the log is appended to,
// and that a request refused for its key is not (unauthenticated clients cannot grow the log).
func TestAuditText(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	require.NoError(t, os.WriteFile(path, []byte("{\"earlier\": true}\n"), 0o600))
	ts := newTestServer(t, func(c *Config, _ *fakeEngine) {
		c.AuditLog, c.AuditText, c.APIKeys = path, true, []string{"key"}
	})
	ts.post(t, "/v1/score", map[string]any{"prompt": []string{"one", "two"}, "probes": []string{"bomb"}})
	ts.key = "wrong"
	resp, _ := ts.do(t, http.MethodPost, "/v1/moderations", map[string]any{"input": "x"})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.NoError(t, ts.srv.Close())
	lines := readLines(t, path)
	require.Len(t, lines, 2, "the earlier line and the scored request; not the refused one")
	assert.JSONEq(t, `{"earlier": true}`, lines[0])
	var a auditLine
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &a))
	assert.Equal(t, []string{"one", "two"}, a.Prompt)
	assert.Equal(t, []string{sha("one"), sha("two")}, a.PromptSHA256)
	require.Len(t, a.Verdicts, 2)
	var v auditVerdict
	require.NoError(t, json.Unmarshal(a.Verdicts[1], &v))
	assert.Equal(t, 1, v.Input)
}
