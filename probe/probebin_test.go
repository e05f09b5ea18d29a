package probe

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// quadProbe returns a valid Mahalanobis-style probe of k random components of n values with
// every optional field set. Its first component holds −0, the smallest subnormal and the
// largest float32, so that a round trip shows it keeps every bit.
func quadProbe(k, n int, seed uint64) *Probe {
	r := rand.New(rand.NewPCG(seed, 7))
	mean, scale := make([]float64, n), make([]float64, n)
	for j := range mean {
		mean[j], scale[j] = r.NormFloat64(), 0.5+r.Float64()
	}
	all := make([]float32, k*n)
	for i := range all {
		all[i] = float32(r.NormFloat64() / math.Sqrt(float64(n)))
	}
	comps, coef := make([][]float32, k), make([]float64, k)
	for i := range comps {
		comps[i], coef[i] = all[i*n:(i+1)*n:(i+1)*n], 0.5+r.Float64()
	}
	if n >= 3 {
		comps[0][0], comps[0][1], comps[0][2] = float32(math.Copysign(0, -1)), math.SmallestNonzeroFloat32, math.MaxFloat32
	}
	mean[0] = math.Copysign(0, -1)
	return &Probe{
		Version: ProbeVersion, Method: MethodMahalanobis, Layer: 4, Point: PointResidual, Position: PositionLast,
		Model:         ProbeModel{Fingerprint: "sha256:feed", NEmbd: n, Family: "sha256:fam", FileType: "F32"},
		Normalization: &Normalization{Mean: mean, Scale: scale},
		Quadratic:     &Quadratic{Coef: coef, Components: comps},
		Bias:          -float64(k), Threshold: 3.5,
		Calibration: &Calibration{Threshold: 3.5, TargetFPR: 0.01, AchievedFPR: 0.0098, NClean: 1000, FPRUpper95: 0.012},
		Generation: &GenerationCalibration{Rule: Rule{Kind: RuleKofN, K: 2, N: 3}, Threshold: 4, Tokens: 99,
			Calibration: Calibration{Threshold: 4, TargetFPR: 0.01, AchievedFPR: 0.01, NClean: 50}, Standardize: []Moments{{Mean: 1, SD: 2}}},
		Training: TrainingSummary{Rows: 100, Positives: 0, Negatives: 100, Groups: 10, Params: map[string]float64{"shrinkage": 0.125}, Notes: []string{"synthetic"}},
		Meta:     map[string]string{"data": "dump/"},
	}
}

// linearProbe returns a valid linear probe of n weights with a normalisation.
func linearProbe(n int, seed uint64) *Probe {
	r := rand.New(rand.NewPCG(seed, 8))
	w, mean, scale := make([]float64, n), make([]float64, n), make([]float64, n)
	for j := range w {
		w[j], mean[j], scale[j] = r.NormFloat64(), r.NormFloat64(), 0.5+r.Float64()
	}
	return &Probe{Version: ProbeVersion, Method: MethodLogistic, Layer: 2, Point: PointResidual, Position: PositionLast,
		Model: ProbeModel{Fingerprint: "sha256:feed", NEmbd: n, Family: "sha256:fam", FileType: "F32"}, Weights: w,
		Normalization: &Normalization{Mean: mean, Scale: scale}, Bias: 0.25, Threshold: 1, Training: TrainingSummary{Rows: 10}}
}

// requireSameBits fails unless the probes' arrays hold the same bits (require.Equal takes
// −0 for 0).
func requireSameBits(t *testing.T, p, q *Probe) {
	t.Helper()
	f64 := func(a, b []float64) {
		require.Len(t, b, len(a))
		for i := range a {
			require.Equal(t, math.Float64bits(a[i]), math.Float64bits(b[i]), "value %d", i)
		}
	}
	f64(p.Weights, q.Weights)
	require.Equal(t, p.Normalization == nil, q.Normalization == nil)
	if p.Normalization != nil {
		f64(p.Normalization.Mean, q.Normalization.Mean)
		f64(p.Normalization.Scale, q.Normalization.Scale)
	}
	require.Equal(t, p.Quadratic == nil, q.Quadratic == nil)
	if p.Quadratic != nil {
		f64(p.Quadratic.Coef, q.Quadratic.Coef)
		require.Len(t, q.Quadratic.Components, len(p.Quadratic.Components))
		for k, u := range p.Quadratic.Components {
			v := q.Quadratic.Components[k]
			require.Len(t, v, len(u))
			for j := range u {
				require.Equal(t, math.Float32bits(u[j]), math.Float32bits(v[j]), "component %d value %d", k, j)
			}
		}
	}
	require.Len(t, q.Members, len(p.Members))
	for k := range p.Members {
		requireSameBits(t, p.Members[k].Probe, q.Members[k].Probe)
	}
}

// TestProbeFileBinaryRoundTrip: the binary form keeps every field and every bit, float32
// components as float32 and float64 arrays as float64, for a quadratic probe, a linear one and
// an ensemble of both; the file is standard safetensors holding the JSON document without its
// arrays.
func TestProbeFileBinaryRoundTrip(t *testing.T) {
	quad, lin := quadProbe(5, 8, 1), linearProbe(8, 2)
	// The ensemble's own members: the subtests score quad and lin, which caches a prepared
	// form that a loaded probe does not have yet.
	ens, err := NewEnsemble([]*Probe{quadProbe(5, 8, 1), linearProbe(8, 2)}, nil)
	require.NoError(t, err)
	ens.Threshold = 0.75
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		p       *Probe
		tensors map[string]string
	}{
		{"quadratic", quad, map[string]string{
			"normalization.mean": "F64 [8]", "normalization.scale": "F64 [8]",
			"quadratic.coef": "F64 [5]", "quadratic.components": "F32 [5, 8]",
		}},
		{"linear", lin, map[string]string{"normalization.mean": "F64 [8]", "normalization.scale": "F64 [8]", "weights": "F64 [8]"}},
		{"ensemble", ens, map[string]string{
			"members.0.normalization.mean": "F64 [8]", "members.0.normalization.scale": "F64 [8]",
			"members.0.quadratic.coef": "F64 [5]", "members.0.quadratic.components": "F32 [5, 8]",
			"members.1.normalization.mean": "F64 [8]", "members.1.normalization.scale": "F64 [8]", "members.1.weights": "F64 [8]",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".json")
			require.NoError(t, tc.p.save(path, formBinary))
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			require.True(t, isBinaryProbe(data))

			// What safetensors.numpy.load_file sees: the arrays, and the document in the metadata.
			h, err := readSafetensorsHeader(bytes.NewReader(data), int64(len(data)))
			require.NoError(t, err)
			got := map[string]string{}
			for _, ts := range h.Tensors {
				got[ts.Name] = ts.DType + " " + shapeText(ts.Shape)
			}
			assert.Equal(t, tc.tensors, got)
			assert.Equal(t, []string{metaSHA256, metaProbe}, slices.Sorted(maps.Keys(h.Meta)))
			var doc map[string]any
			require.NoError(t, json.Unmarshal([]byte(h.Meta[metaProbe]), &doc))
			assert.EqualValues(t, ProbeVersion, doc["version"])
			assert.Equal(t, tc.p.Method, doc["method"])
			assert.NotContains(t, doc, "quadratic")
			assert.NotContains(t, doc, "weights")
			assert.NotContains(t, doc, "normalization")

			back, err := Load(path)
			require.NoError(t, err)
			require.Equal(t, tc.p, back)
			requireSameBits(t, tc.p, back)
			x := NewMatrix(3, 8, nil)
			for i := range x.Data {
				x.Data[i] = float32(i%7) - 3
			}
			src := func(Feature) (*Matrix, error) { return x, nil }
			want, err := tc.p.ScoreSource(src)
			require.NoError(t, err)
			have, err := back.ScoreSource(src)
			require.NoError(t, err)
			require.Equal(t, want, have)
		})
	}
}

// TestProbeFileForm: Save writes JSON up to binaryThreshold array values and the binary form
// above; Load and Clone read both.
func TestProbeFileForm(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		p      *Probe
		binary bool
	}{
		{"linear 4096", linearProbe(4096, 3), false},
		{"linear 21845", linearProbe(21845, 3), false}, // 3 × 21,845 = 65,535 values
		{"linear 21846", linearProbe(21846, 3), true},  // 65,538 values
		{"quadratic 64x64", quadProbe(64, 64, 4), false},
		{"quadratic 256x256", quadProbe(256, 256, 6), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "p.json")
			require.NoError(t, tc.p.Save(path))
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, tc.binary, isBinaryProbe(data))
			if !tc.binary {
				assert.True(t, json.Valid(data), "the JSON form is plain JSON")
			}
			back, err := Load(path)
			require.NoError(t, err)
			requireSameBits(t, tc.p, back)
			c, err := tc.p.Clone()
			require.NoError(t, err)
			require.Equal(t, back, c)
		})
	}
}

// Checksum handling of binaryFile.
const (
	sumRecompute = iota // the checksum of the edited tensors
	sumOriginal         // the checksum of the probe's own tensors
	sumNone             // no checksum
)

// TestProbeFileOldVersionResaved: a large probe read from a version 1 or 2 file (all JSON) is
// saved in the binary form, which says version 3, and loads again; Clone keeps its version.
func TestProbeFileOldVersionResaved(t *testing.T) {
	for _, v := range []int{1, 2} {
		p := quadProbe(256, 256, 12)
		p.Version, p.Generation = v, nil
		path := filepath.Join(t.TempDir(), "p.json")
		require.NoError(t, p.save(path, formJSON))
		old, err := Load(path)
		require.NoError(t, err)
		require.Equal(t, v, old.Version)
		c, err := old.Clone() // through the binary form, yet a copy
		require.NoError(t, err)
		require.Equal(t, old, c)
		require.NoError(t, old.Save(path))
		back, err := Load(path)
		require.NoError(t, err)
		assert.Equal(t, binaryVersion, back.Version)
		requireSameBits(t, p, back)
	}
}

// binaryFile builds a binary probe file from p's tensors and metadata after edit changes them,
// with the checksum sum says.
func binaryFile(t *testing.T, p *Probe, edit func(ts []stWriteTensor, meta map[string]string) []stWriteTensor, sum int) []byte {
	t.Helper()
	e, err := p.encode(formBinary)
	require.NoError(t, err)
	original := e.meta[metaSHA256]
	e.tensors = edit(e.tensors, e.meta)
	switch sum {
	case sumRecompute:
		e.meta[metaSHA256] = tensorSHA256(e.tensors)
	case sumOriginal:
		e.meta[metaSHA256] = original
	case sumNone:
		delete(e.meta, metaSHA256)
	}
	return e.bytes()
}

// editDoc returns an edit that changes the document as a map.
func editDoc(t *testing.T, f func(m map[string]any)) func(ts []stWriteTensor, meta map[string]string) []stWriteTensor {
	return func(ts []stWriteTensor, meta map[string]string) []stWriteTensor {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(meta[metaProbe]), &m))
		f(m)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		meta[metaProbe] = string(b)
		return ts
	}
}

// editTensor returns an edit that replaces the tensor called name (dropping it for nil).
func editTensor(name string, f func(ts stWriteTensor) *stWriteTensor) func(ts []stWriteTensor, meta map[string]string) []stWriteTensor {
	return func(ts []stWriteTensor, _ map[string]string) []stWriteTensor {
		var out []stWriteTensor
		for _, x := range ts {
			if x.Name == name {
				if y := f(x); y != nil {
					out = append(out, *y)
				}
				continue
			}
			out = append(out, x)
		}
		return out
	}
}

// TestProbeFileBinaryErrors: a binary probe file whose tensors have the wrong shape or dtype,
// are missing or unknown, whose data was altered or cut, or whose document is invalid, is
// refused with a message that says so.
func TestProbeFileBinaryErrors(t *testing.T) {
	p := quadProbe(3, 4, 9)
	f64 := func(v ...float64) []byte { return appendF64(nil, v) }
	keep := func(ts []stWriteTensor, _ map[string]string) []stWriteTensor { return ts }
	cases := []struct {
		name string
		edit func(ts []stWriteTensor, meta map[string]string) []stWriteTensor
		sum  int
		want string
	}{
		{"components as F64", editTensor("quadratic.components", func(ts stWriteTensor) *stWriteTensor {
			ts.DType, ts.Data = "F64", make([]byte, 8*12)
			return &ts
		}), sumRecompute, `tensor "quadratic.components" is F64 [3, 4], want F32 [k, 4] (n_embd 4)`},
		{"components of another width", editTensor("quadratic.components", func(ts stWriteTensor) *stWriteTensor {
			ts.Shape = []int64{4, 3}
			return &ts
		}), sumRecompute, `tensor "quadratic.components" is F32 [4, 3], want F32 [k, 4] (n_embd 4)`},
		{"components flat", editTensor("quadratic.components", func(ts stWriteTensor) *stWriteTensor {
			ts.Shape = []int64{12}
			return &ts
		}), sumRecompute, `tensor "quadratic.components" is F32 [12], want F32 [k, 4]`},
		{"mean too short", editTensor("normalization.mean", func(ts stWriteTensor) *stWriteTensor {
			ts.Shape, ts.Data = []int64{3}, f64(0, 0, 0)
			return &ts
		}), sumRecompute, `tensor "normalization.mean" is F64 [3], want F64 [4] (n_embd 4)`},
		{"scale as F32", editTensor("normalization.scale", func(ts stWriteTensor) *stWriteTensor {
			ts.DType, ts.Data = "F32", appendF32(nil, []float32{1, 1, 1, 1})
			return &ts
		}), sumRecompute, `tensor "normalization.scale" is F32 [4], want F64 [4]`},
		{"coefficients for fewer components", editTensor("quadratic.coef", func(ts stWriteTensor) *stWriteTensor {
			ts.Shape, ts.Data = []int64{2}, f64(1, 1)
			return &ts
		}), sumRecompute, "2 coefficients for 3 components"},
		{"no components", editTensor("quadratic.components", func(stWriteTensor) *stWriteTensor { return nil }),
			sumRecompute, "tensor quadratic.coef or quadratic.components without the other"},
		{"no scale", editTensor("normalization.scale", func(stWriteTensor) *stWriteTensor { return nil }),
			sumRecompute, "tensor normalization.mean or normalization.scale without the other"},
		{"non-finite scale", editTensor("normalization.scale", func(ts stWriteTensor) *stWriteTensor {
			ts.Data = f64(1, math.Inf(1), 1, 1)
			return &ts
		}), sumRecompute, "normalisation scale +Inf is not positive and finite"},
		{"unknown tensor", func(ts []stWriteTensor, _ map[string]string) []stWriteTensor {
			return append(ts, stWriteTensor{Name: "bias", DType: "F64", Shape: []int64{1}, Data: f64(1)})
		}, sumRecompute, `unknown tensor "bias"`},
		{"tensor of no member", func(ts []stWriteTensor, _ map[string]string) []stWriteTensor {
			return append(ts, stWriteTensor{Name: "members.0.weights", DType: "F64", Shape: []int64{4}, Data: f64(1, 2, 3, 4)})
		}, sumRecompute, `unknown tensor "members.0.weights"`},
		{"no checksum", keep, sumNone, `no "data_sha256" in the metadata`},
		{"altered data", func(ts []stWriteTensor, _ map[string]string) []stWriteTensor {
			last := &ts[len(ts)-1]
			last.Data = slices.Clone(last.Data)
			last.Data[5] ^= 1
			return ts
		}, sumOriginal, "the file is corrupt or was altered"},
		{"no document", func(ts []stWriteTensor, meta map[string]string) []stWriteTensor {
			delete(meta, metaProbe)
			return ts
		}, sumRecompute, `a safetensors file without a probe document (no "probe" in its __metadata__): not a probe file`},
		{"document not JSON", func(ts []stWriteTensor, meta map[string]string) []stWriteTensor {
			meta[metaProbe] = "{"
			return ts
		}, sumRecompute, "unexpected end of JSON input"},
		{"arrays in the document", editDoc(t, func(m map[string]any) { m["weights"] = []float64{1, 2, 3, 4} }),
			sumRecompute, "the document holds weights: a binary probe file keeps its arrays in tensors"},
		{"version 2", editDoc(t, func(m map[string]any) { m["version"] = 2 }), sumRecompute, "version 2 in the binary form, which version 3 introduced"},
		{"version 4", editDoc(t, func(m map[string]any) { m["version"] = 4 }), sumRecompute, "version 4 not supported (this build reads 1 to 3)"},
		{"no threshold", editDoc(t, func(m map[string]any) { delete(m, "threshold") }), sumRecompute, `no "threshold" field`},
		{"no fingerprint", editDoc(t, func(m map[string]any) { delete(m["model"].(map[string]any), "fingerprint") }), sumRecompute, `no "model.fingerprint" field`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseProbe(binaryFile(t, p, tc.edit, tc.sum))
			require.ErrorIs(t, err, ErrProbeFile)
			require.ErrorContains(t, err, tc.want)
		})
	}

	// A file cut anywhere is refused: in the length, the header or the data.
	good := binaryFile(t, p, func(ts []stWriteTensor, _ map[string]string) []stWriteTensor { return ts }, sumRecompute)
	_, err := ParseProbe(good)
	require.NoError(t, err)
	headerEnd := 8 + int(binary.LittleEndian.Uint64(good))
	for _, tc := range []struct {
		name string
		size int
		want string
	}{
		{"in the length", 7, "shorter than the 8-byte header length"},
		{"in the header", headerEnd - 1, "exceeds the file"},
		{"at the data", headerEnd, "truncated?"},
		{"in the data", len(good) - 1, fmt.Sprintf("tensor data ends at byte %d but the file has %d bytes: truncated?", len(good), len(good)-1)},
	} {
		t.Run("cut "+tc.name, func(t *testing.T) {
			_, err := ParseProbe(good[:tc.size])
			require.ErrorIs(t, err, ErrProbeFile)
			require.ErrorContains(t, err, tc.want)
		})
	}

	// Load names the file.
	path := filepath.Join(t.TempDir(), "p.json")
	require.NoError(t, os.WriteFile(path, good[:len(good)-1], 0o644))
	_, err = Load(path)
	require.ErrorContains(t, err, "load probe "+path+": invalid probe file: ")
}

// TestVersion2FileLoads: a version 2 file (JSON, an ensemble with a generation calibration)
// still loads and scores.
func TestVersion2FileLoads(t *testing.T) {
	const member = `{"version": 2, "method": "meandiff", "layer": %d, "point": "residual", "position": "last",
  "model": {"fingerprint": "sha256:abc", "n_embd": 2, "family": "sha256:fam", "file_type": "F32"},
  "weights": [%s], "bias": 0, "threshold": 0,
  "training": {"rows": 10, "positives": 5, "negatives": 5, "groups": 10, "cv_folds": 0, "cv_auroc": 0, "cv_auroc_low": 0, "cv_auroc_high": 0}}`
	v2 := `{"version": 2, "method": "ensemble", "layer": 1, "point": "residual", "position": "last",
 "model": {"fingerprint": "sha256:abc", "n_embd": 2, "family": "sha256:fam", "file_type": "F32"},
 "bias": 0, "threshold": 0.5,
 "members": [{"probe": ` + fmt.Sprintf(member, 1, "1, 0") + `, "center": 0, "scale": 1, "weight": 0.5},
             {"probe": ` + fmt.Sprintf(member, 2, "0, 2") + `, "center": 1, "scale": 2, "weight": 0.5}],
 "generation": {"rule": {"kind": "kofn", "k": 2, "n": 3}, "threshold": 0.75,
   "calibration": {"threshold": 0.75, "target_fpr": 0.01, "achieved_fpr": 0.01, "n_clean": 100, "fpr_upper_95": 0.03}, "tokens": 500},
 "training": {"rows": 10, "positives": 5, "negatives": 5, "groups": 10, "cv_folds": 0, "cv_auroc": 0, "cv_auroc_low": 0, "cv_auroc_high": 0}}`
	p, err := ParseProbe([]byte(v2))
	require.NoError(t, err)
	assert.Equal(t, 2, p.Version)
	assert.Equal(t, Rule{Kind: RuleKofN, K: 2, N: 3}, p.Generation.Rule)
	s, err := p.ScoreStep(map[int][]float32{1: {3, 9}, 2: {9, 4}})
	require.NoError(t, err)
	assert.InDelta(t, 0.5*3+0.5*(8-1)/2, s, 1e-12)
}
