package probe

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newTestRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0xe5)) }

// featureSource serves the rows of datasets keyed by feature.
func featureSource(sets map[Feature]*Dataset) RowSource {
	return func(f Feature) (*Matrix, error) {
		d, ok := sets[f]
		if !ok {
			return nil, fmt.Errorf("no rows for layer %d position %s", f.Layer, f.Position)
		}
		return d.X, nil
	}
}

func TestEnsembleOfIdenticalProbesIsTheProbe(t *testing.T) {
	shift := make([]float64, 8)
	shift[0], shift[3] = 1.5, -1
	ds, _ := gaussianData(3, 300, 1200, 8, shift)
	p, err := Logistic{C: 1}.Fit(ds)
	require.NoError(t, err)
	src := featureSource(map[Feature]*Dataset{{7, PositionLast}: ds})
	want := p.ScoreRows(ds.X, nil, nil)

	// Unstandardised: the mean of identical scores is the score.
	e, err := NewEnsemble([]*Probe{p, p, p}, nil)
	require.NoError(t, err)
	got, err := e.ScoreSource(src)
	require.NoError(t, err)
	assert.InDeltaSlice(t, want, got, 1e-12)

	// Standardised on clean rows: a monotone transform, so calibrated on the same clean rows
	// the ensemble fires on exactly the rows the probe fires on.
	clean := ds.Subset(ds.WithLabel(Negative))
	cleanSrc := featureSource(map[Feature]*Dataset{{7, PositionLast}: clean})
	es, err := NewEnsemble([]*Probe{p, p}, cleanSrc)
	require.NoError(t, err)
	require.NoError(t, es.CalibrateSource(cleanSrc, 0.02))
	require.NoError(t, p.Calibrate(ds, 0.02))
	gs, err := es.ScoreSource(src)
	require.NoError(t, err)
	for i := range want {
		require.Equal(t, p.Fired(want[i]), es.Fired(gs[i]), "row %d", i)
	}
	assert.Equal(t, p.Calibration.AchievedFPR, es.Calibration.AchievedFPR)
	assert.Equal(t, p.Calibration.FPRUpper95, es.Calibration.FPRUpper95)

	// A step scores as the rows do.
	s, err := es.ScoreStep(map[int][]float32{7: ds.X.Row(5)})
	require.NoError(t, err)
	assert.InDelta(t, gs[5], s, 1e-9)
}

// TestEnsembleFusesFeatures: two probes at two layers, one at the prompt mean; the fused score
// is the hand-computed mean of standardised scores, and the file round-trips.
func TestEnsembleFusesFeatures(t *testing.T) {
	shift := make([]float64, 5)
	shift[1] = 2
	a, _ := gaussianData(5, 100, 300, 5, shift)
	b, _ := gaussianData(6, 100, 300, 5, shift)
	b.Info.Layer, b.Info.Position = 9, PositionMean
	pa, err := MeanDiff{}.Fit(a)
	require.NoError(t, err)
	pb, err := Logistic{C: 1}.Fit(b)
	require.NoError(t, err)
	src := featureSource(map[Feature]*Dataset{{7, PositionLast}: a, {9, PositionMean}: b})
	e, err := NewEnsemble([]*Probe{pa, pb}, src)
	require.NoError(t, err)
	assert.Equal(t, []Feature{{7, PositionLast}, {9, PositionMean}}, e.Features())
	assert.Equal(t, []int{7, 9}, e.Layers())
	sa, sb := pa.ScoreRows(a.X, nil, nil), pb.ScoreRows(b.X, nil, nil)
	got, err := e.ScoreSource(src)
	require.NoError(t, err)
	m := e.Members
	for i := range got {
		want := ((sa[i]-m[0].Center)/m[0].Scale + (sb[i]-m[1].Center)/m[1].Scale) / 2
		require.InDelta(t, want, got[i], 1e-9)
	}
	// The standardisation is the members' clean-score mean and sample standard deviation.
	mean, sd := meanSD(sa)
	assert.InDelta(t, mean, m[0].Center, 1e-9)
	assert.InDelta(t, sd, m[0].Scale, 1e-9)

	require.NoError(t, e.CalibrateSource(src, 0.05))
	path := filepath.Join(t.TempDir(), "e.json")
	require.NoError(t, e.Save(path))
	back, err := Load(path)
	require.NoError(t, err)
	again, err := back.ScoreSource(src)
	require.NoError(t, err)
	assert.Equal(t, got, again)
	assert.Equal(t, e.Threshold, back.Threshold)

	_, err = e.ScoreStep(map[int][]float32{7: a.X.Row(0), 9: b.X.Row(0)})
	require.ErrorContains(t, err, "prompt mean")
	require.ErrorContains(t, e.CheckStep(), "prompt mean")
	require.Panics(t, func() { e.Score(a.X.Row(0)) })
	require.ErrorContains(t, e.CheckDataset(a), "an ensemble reads 2 features")

	raw, err := json.Marshal(pb)
	require.NoError(t, err)
	other := new(Probe)
	require.NoError(t, json.Unmarshal(raw, other))
	other.Model.Fingerprint = "sha256:other"
	_, err = NewEnsemble([]*Probe{pa, other}, nil)
	require.ErrorIs(t, err, ErrModelMismatch)

	// Members of another capture point: a feature (layer, position) could not say which rows.
	mlp := new(Probe)
	require.NoError(t, json.Unmarshal(raw, mlp))
	mlp.Point = PointMLPOut
	_, err = NewEnsemble([]*Probe{pa, mlp}, nil)
	require.EqualError(t, err, `ensemble member 1 reads capture point "mlp_out", member 0 "residual": the members of an ensemble read one point`)
}

func meanSD(xs []float64) (float64, float64) {
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

// TestEnsembleFileChecks: an ensemble file whose member lacks a field its score depends on,
// or is malformed, is refused with the member named.
func TestEnsembleFileChecks(t *testing.T) {
	shift := make([]float64, 3)
	shift[0] = 1
	ds, _ := gaussianData(8, 50, 50, 3, shift)
	p, err := MeanDiff{}.Fit(ds)
	require.NoError(t, err)
	e, err := NewEnsemble([]*Probe{p, p}, nil)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "e.json")
	require.NoError(t, e.Save(path))
	good, err := safeRead(path)
	require.NoError(t, err)
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(good, &m))
		f(m)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}
	member := func(m map[string]any, k int) map[string]any { return m["members"].([]any)[k].(map[string]any) }
	for _, tc := range []struct {
		name string
		edit func(m map[string]any)
		want string
	}{
		{"member without layer", func(m map[string]any) { delete(member(m, 1)["probe"].(map[string]any), "layer") }, `no "members[1].probe.layer" field`},
		{"member without scale", func(m map[string]any) { delete(member(m, 0), "scale") }, `no "members[0].scale" field`},
		{"zero scale", func(m map[string]any) { member(m, 0)["scale"] = 0 }, "ensemble member 0: centre 0, scale 0"},
		{"nested ensemble", func(m map[string]any) { member(m, 0)["probe"].(map[string]any)["method"] = MethodEnsemble }, "member 0 is itself an ensemble"},
		{"no members", func(m map[string]any) { delete(m, "members") }, "an ensemble without members"},
		{"members of a linear probe", func(m map[string]any) { m["method"] = MethodMeanDiff }, `members in a probe of method "meandiff"`},
		{"member of another model", func(m map[string]any) {
			member(m, 1)["probe"].(map[string]any)["model"].(map[string]any)["fingerprint"] = "sha256:x"
		}, "member 1 is for another model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseProbe(edit(tc.edit))
			require.ErrorIs(t, err, ErrProbeFile)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestVersion1FileLoads: a probe file written before ensembles and generation calibrations
// (version 1, no fpr_upper_95) still loads and scores.
func TestVersion1FileLoads(t *testing.T) {
	const v1 = `{"version": 1, "method": "logistic", "layer": 2, "point": "residual", "position": "last",
 "model": {"fingerprint": "sha256:abc", "n_embd": 2}, "weights": [1, -2], "bias": 0.5, "threshold": 0.25,
 "calibration": {"threshold": 0.25, "target_fpr": 0.01, "achieved_fpr": 0.01, "n_clean": 100},
 "training": {"rows": 10, "positives": 5, "negatives": 5, "groups": 10, "cv_folds": 0, "cv_auroc": 0, "cv_auroc_low": 0, "cv_auroc_high": 0}}`
	p, err := ParseProbe([]byte(v1))
	require.NoError(t, err)
	assert.Equal(t, 1, p.Version)
	assert.Nil(t, p.Generation)
	assert.False(t, p.IsEnsemble())
	assert.InDelta(t, 1*3-2*1+0.5, p.Score([]float32{3, 1}), 1e-12)
	assert.Equal(t, []Feature{{2, PositionLast}}, p.Features())
}

// TestGenerationCalibrationInFile: a probe carries its generation rule and threshold through
// a save and load; an invalid rule is refused.
func TestGenerationCalibrationInFile(t *testing.T) {
	p := &Probe{Version: ProbeVersion, Method: MethodMeanDiff, Layer: 3, Point: PointResidual, Position: PositionLast,
		Model: ProbeModel{Fingerprint: "sha256:aaa", NEmbd: 2}, Weights: []float64{1, -1}}
	g, err := CalibrateGeneration(Rule{Kind: RuleKofN, K: 2, N: 3}, [][]float64{{0, 1, 2}, {3, 1, 0}, {0.5, 0.5}}, 0.4, false)
	require.NoError(t, err)
	p.Generation = g
	path := filepath.Join(t.TempDir(), "g.json")
	require.NoError(t, p.Save(path))
	back, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, *g, *back.Generation)
	p.Generation.Rule.K = 0
	require.ErrorContains(t, p.Save(path), "generation: rule kofn")
}
