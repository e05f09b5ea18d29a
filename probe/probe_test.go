package probe

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// refScore computes a probe's score in float64 from its fields alone.
func refScore(p *Probe, x []float32) float64 {
	d := p.Model.NEmbd
	z := make([]float64, d)
	for j := range z {
		z[j] = float64(x[j])
		if p.Normalization != nil {
			z[j] = (z[j] - p.Normalization.Mean[j]) / p.Normalization.Scale[j]
		}
	}
	s := p.Bias
	if p.Quadratic == nil {
		for j, w := range p.Weights {
			s += w * z[j]
		}
		return s
	}
	for k, u := range p.Quadratic.Components {
		var t float64
		for j := range u {
			t += float64(u[j]) * z[j]
		}
		s += p.Quadratic.Coef[k] * t * t
	}
	return s
}

func TestProbeScoring(t *testing.T) {
	ds := benchData(3000, 70, 5) // offsets of ±5, strong factors: a fair test of folding
	ds.Info = DatasetInfo{Layer: 2, Point: PointResidual, Position: PositionLast, Fingerprint: "fp", NEmbd: 70}
	lr, err := Logistic{C: 0.1}.Fit(ds)
	require.NoError(t, err)
	md, err := Mahalanobis{}.Fit(ds)
	require.NoError(t, err)
	sp, err := Spectral{}.Fit(ds)
	require.NoError(t, err)
	for _, p := range []*Probe{lr, md, sp} {
		all := p.ScoreRows(ds.X, nil, nil) // large enough to run in parallel
		idx := []int{5, 0, 2999, 17}
		some := p.ScoreRows(ds.X, idx, nil)
		for k, i := range idx {
			require.Equal(t, all[i], some[k])
		}
		for i := 0; i < ds.Len(); i += 97 {
			want := refScore(p, ds.X.Row(i))
			require.InDelta(t, want, p.Score(ds.X.Row(i)), 1e-5*math.Max(1, math.Abs(want)), "%s row %d", p.Method, i)
			require.Equal(t, p.Score(ds.X.Row(i)), all[i])
		}
		require.Panics(t, func() { p.Score(make([]float32, 3)) })
		require.Panics(t, func() { p.ScoreRows(NewMatrix(1, 3, nil), nil, nil) })
		scores, err := p.Apply(ds)
		require.NoError(t, err)
		require.Equal(t, all, scores)
	}
}

func TestProbeCalibrateAndFire(t *testing.T) {
	shift := make([]float64, 6)
	shift[0] = 2
	ds, _ := gaussianData(21, 500, 2000, 6, shift)
	p, err := LDA{}.Fit(ds)
	require.NoError(t, err)
	require.NoError(t, p.Calibrate(ds, 0.05))
	require.NotNil(t, p.Calibration)
	assert.Equal(t, 2000, p.Calibration.NClean)
	assert.Equal(t, 0.05, p.Calibration.TargetFPR)
	assert.Equal(t, p.Threshold, p.Calibration.Threshold)
	scores, err := p.Apply(ds)
	require.NoError(t, err)
	c := ConfusionAt(scores, ds.Positives(nil), p.Threshold)
	assert.Equal(t, p.Calibration.AchievedFPR, c.FPR())
	assert.LessOrEqual(t, c.FPR(), 0.05)
	assert.Equal(t, scores[0] > p.Threshold, p.Fired(scores[0]))
	require.Error(t, p.Calibrate(ds, 1.5))
	noClean := ds.Subset(ds.WithLabel(Positive))
	require.Error(t, p.Calibrate(noClean, 0.01))
}

func TestCheckModel(t *testing.T) {
	p := &Probe{Version: 1, Method: "meandiff", Layer: 3, Position: PositionLast, Model: ProbeModel{Fingerprint: "sha256:aaa", NEmbd: 4}, Weights: make([]float64, 4)}
	require.NoError(t, p.CheckModel("sha256:aaa", 4))
	err := p.CheckModel("sha256:bbb", 4)
	require.ErrorIs(t, err, ErrModelMismatch)
	require.ErrorContains(t, err, `trained on model "sha256:aaa", this model is "sha256:bbb"`)
	err = p.CheckModel("sha256:aaa", 8)
	require.ErrorIs(t, err, ErrModelMismatch)
	require.ErrorContains(t, err, "n_embd 4, the model has 8")

	ds := NewDataset(NewMatrix(2, 4, nil), nil, nil, nil)
	require.NoError(t, p.CheckDataset(ds), "synthetic dataset: n_embd only")
	ds.Info = DatasetInfo{Layer: 3, Position: PositionLast, Fingerprint: "sha256:aaa", NEmbd: 4}
	require.NoError(t, p.CheckDataset(ds))
	ds.Info.Layer = 4
	require.ErrorContains(t, p.CheckDataset(ds), "layer 3, the dataset is layer 4")
	ds.Info.Layer, ds.Info.Position = 3, PositionMean
	require.ErrorContains(t, p.CheckDataset(ds), `position "last"`)
	ds.Info.Position, ds.Info.Fingerprint = PositionLast, "sha256:bbb"
	_, err = p.Apply(ds)
	require.ErrorIs(t, err, ErrModelMismatch)
	require.ErrorIs(t, p.CheckDataset(NewDataset(NewMatrix(2, 5, nil), nil, nil, nil)), ErrModelMismatch)

	// A probe without a fingerprint is bound to no model: it applies to none (it used to apply
	// to any model of the same width).
	anon := &Probe{Model: ProbeModel{NEmbd: 4}}
	require.ErrorIs(t, anon.CheckModel("anything", 4), ErrModelMismatch)
}

func TestProbeFileRoundTrip(t *testing.T) {
	ds := benchData(400, 12, 8)
	ds.Info = DatasetInfo{Layer: 5, Point: PointResidual, Position: PositionMean, Fingerprint: "sha256:0123", NEmbd: 12}
	dir := t.TempDir()
	for _, m := range []Method{Logistic{Folds: 3}, MeanDiff{}, LDA{}, Contrast{}, Mahalanobis{}, Spectral{}} {
		p, err := m.Fit(ds)
		require.NoError(t, err, m.Name())
		require.NoError(t, p.Calibrate(ds, 0.02))
		p.Meta = map[string]string{"data": "dump/"}
		path := filepath.Join(dir, m.Name()+".json")
		require.NoError(t, p.Save(path))
		q, err := Load(path)
		require.NoError(t, err)

		// Exact: every field, bit for bit.
		a, _ := json.Marshal(p)
		b, _ := json.Marshal(q)
		require.JSONEq(t, string(a), string(b))
		require.Equal(t, p.Weights, q.Weights)
		require.Equal(t, p.Bias, q.Bias)
		require.Equal(t, p.Normalization, q.Normalization)
		require.Equal(t, p.Quadratic, q.Quadratic)
		require.Equal(t, p.Calibration, q.Calibration)
		require.Equal(t, p.Training, q.Training)
		require.Equal(t, p.Threshold, q.Threshold)
		require.Equal(t, p.ScoreRows(ds.X, nil, nil), q.ScoreRows(ds.X, nil, nil))
		require.NoError(t, q.CheckModel("sha256:0123", 12))
		require.ErrorIs(t, q.CheckModel("sha256:other", 12), ErrModelMismatch)
		assert.Equal(t, 5, q.Layer)
		assert.Equal(t, PositionMean, q.Position)
		assert.Equal(t, m.Name(), q.Method)
		assert.Equal(t, ProbeVersion, q.Version)
	}
}

func TestLoadInvalidProbe(t *testing.T) {
	good := `{"version":1,"method":"meandiff","layer":0,"point":"residual","position":"last",
		"model":{"fingerprint":"f","n_embd":2},"weights":[1,2],"bias":0,"threshold":0,"training":{"rows":0,"positives":0,"negatives":0,"groups":0,"cv_folds":0,"cv_auroc":0,"cv_auroc_low":0,"cv_auroc_high":0}}`
	_, err := ParseProbe([]byte(good))
	require.NoError(t, err)
	cases := map[string]string{
		"not json":          `{`,
		"trailing":          good + `{}`,
		"version":           strings.Replace(good, `"version":1`, `"version":4`, 1),
		"no method":         strings.Replace(good, `"method":"meandiff"`, `"method":""`, 1),
		"weights length":    strings.Replace(good, `"weights":[1,2]`, `"weights":[1]`, 1),
		"no weights":        strings.Replace(good, `"weights":[1,2],`, ``, 1),
		"n_embd":            strings.Replace(good, `"n_embd":2`, `"n_embd":0`, 1),
		"nan":               strings.Replace(good, `"bias":0`, `"bias":"NaN"`, 1),
		"scale zero":        strings.Replace(good, `"bias":0`, `"normalization":{"mean":[0,0],"scale":[1,0]},"bias":0`, 1),
		"mean length":       strings.Replace(good, `"bias":0`, `"normalization":{"mean":[0],"scale":[1,1]},"bias":0`, 1),
		"both":              strings.Replace(good, `"bias":0`, `"quadratic":{"coef":[1],"components":[[1,0]]},"bias":0`, 1),
		"component length":  strings.Replace(good, `"weights":[1,2],`, `"quadratic":{"coef":[1],"components":[[1]]},`, 1),
		"coef count":        strings.Replace(good, `"weights":[1,2],`, `"quadratic":{"coef":[1,2],"components":[[1,0]]},`, 1),
		"huge number":       strings.Replace(good, `"weights":[1,2]`, `"weights":[1,1e999]`, 1),
		"negative clean n":  strings.Replace(good, `"threshold":0`, `"threshold":0,"calibration":{"threshold":0,"target_fpr":0.01,"achieved_fpr":0,"n_clean":-1}`, 1),
		"string for number": strings.Replace(good, `"layer":0`, `"layer":"0"`, 1),
	}
	for name, c := range cases {
		_, err := ParseProbe([]byte(c))
		require.ErrorIs(t, err, ErrProbeFile, name)
	}
	dir := t.TempDir()
	_, err = Load(filepath.Join(dir, "missing.json"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bad.json"), []byte(cases["weights length"]), 0o644))
	_, err = Load(filepath.Join(dir, "bad.json"))
	require.ErrorContains(t, err, "1 weights for n_embd 2")
	// Save refuses an invalid probe.
	require.ErrorIs(t, (&Probe{Version: 1, Method: "x", Model: ProbeModel{NEmbd: 3}}).Save(filepath.Join(dir, "x.json")), ErrProbeFile)
}

// FuzzParseProbe checks that no input makes the probe loader panic, and
// that an accepted probe can score a row.
func FuzzParseProbe(f *testing.F) {
	ds := benchData(60, 3, 1)
	for _, m := range []Method{MeanDiff{}, Mahalanobis{}, Logistic{C: 1}} {
		p, err := m.Fit(ds)
		require.NoError(f, err)
		data, err := json.Marshal(p)
		require.NoError(f, err)
		f.Add(data)
	}
	bin, err := quadProbe(3, 4, 1).encode(formBinary)
	require.NoError(f, err)
	f.Add(bin.bytes())
	f.Add([]byte(`{"version":1,"method":"m","model":{"n_embd":1},"weights":[1]}`))
	f.Add([]byte(`null`))
	r := rand.New(rand.NewPCG(1, 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseProbe(data)
		if err != nil {
			return
		}
		if p.Model.NEmbd > 1<<12 {
			return
		}
		x := make([]float32, p.Model.NEmbd)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		_ = p.Score(x)
	})
}

// TestMatchModel: a probe applies to its own model, to another quantisation of it with a
// warning naming both file types, and to nothing else; a probe without a family (written
// before families) applies only to its exact model.
func TestMatchModel(t *testing.T) {
	p := &Probe{Version: ProbeVersion, Method: MethodMeanDiff, Layer: 1, Point: PointResidual, Position: PositionLast,
		Model: ProbeModel{Fingerprint: "sha256:f32", NEmbd: 4, Family: "sha256:fam", FileType: "F32"}, Weights: make([]float64, 4)}
	w, err := p.MatchModel(ModelID{Fingerprint: "sha256:f32", Family: "sha256:fam", FileType: "F32", NEmbd: 4})
	require.NoError(t, err)
	assert.Empty(t, w)
	w, err = p.MatchModel(ModelID{Fingerprint: "sha256:q8", Family: "sha256:fam", FileType: "Q8_0", NEmbd: 4})
	require.NoError(t, err)
	assert.Contains(t, w, "trained on F32 (sha256:f32)")
	assert.Contains(t, w, "another quantisation of it, Q8_0 (sha256:q8)")
	_, err = p.MatchModel(ModelID{Fingerprint: "sha256:x", Family: "sha256:other", FileType: "F32", NEmbd: 4})
	require.ErrorIs(t, err, ErrModelMismatch)
	_, err = p.MatchModel(ModelID{Fingerprint: "sha256:q8", Family: "sha256:fam", NEmbd: 8})
	require.ErrorIs(t, err, ErrModelMismatch)
	p.Model.Family = ""
	_, err = p.MatchModel(ModelID{Fingerprint: "sha256:q8", Family: "", NEmbd: 4})
	require.ErrorIs(t, err, ErrModelMismatch, "no family: exact model only")
}
