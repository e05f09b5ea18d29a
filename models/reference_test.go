package models

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReferenceHandComputed checks the reference on cases computed by hand: with the attention
// and feed-forward output projections zeroed, every block passes the embedding through
// unchanged; with only the attention path on, a one-token sequence attends to itself, so
// attn_out = Wo·Wv·RMSNorm(x) (RoPE at position 0 is the identity, and the softmax over one
// key is 1).
func TestReferenceHandComputed(t *testing.T) {
	cfg := LlamaConfig{NEmbd: 8, NLayer: 2, NHead: 2, NHeadKV: 1, NFF: 16, NVocab: 400, NCtx: 16, RopeTheta: 10000, NormEps: 1e-5}
	m, err := NewRandomLlama(cfg, 1)
	require.NoError(t, err)
	for i := range m.Blocks {
		clear(m.Blocks[i].Wo)
		clear(m.Blocks[i].Down)
	}
	fw, err := m.Reference([]int32{300, 17, 42})
	require.NoError(t, err)
	for l := range m.Blocks {
		for i, tok := range []int{300, 17, 42} {
			assert.InDeltaSlice(t, m.TokenEmbd[tok*8:(tok+1)*8], fw.Residual[l][i*8:(i+1)*8], 1e-6)
		}
	}

	m, err = NewRandomLlama(cfg, 2)
	require.NoError(t, err)
	b := m.Blocks[0]
	x := m.TokenEmbd[5*8 : 6*8]
	ss := 0.0
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	inv := 1 / math.Sqrt(ss/8+1e-5)
	h := make([]float64, 8)
	for i := range h {
		h[i] = float64(x[i]) * inv * float64(b.AttnNorm[i])
	}
	v := make([]float64, 4) // one kv head of 4
	for o := range v {
		for i := range h {
			v[o] += float64(b.Wv[o*8+i]) * h[i]
		}
	}
	att := append(append([]float64{}, v...), v...) // both query heads read the one kv head
	want := make([]float32, 8)
	for o := range want {
		s := 0.0
		for i := range att {
			s += float64(b.Wo[o*8+i]) * att[i]
		}
		want[o] = float32(s)
	}
	fw, err = m.Reference([]int32{5})
	require.NoError(t, err)
	assert.InDeltaSlice(t, want, fw.AttnOut[0], 1e-5)
}

// TestRopeRotation: RoPE is a rotation (norm preserved) and q·k depends only on the offset
// between positions.
func TestRopeRotation(t *testing.T) {
	q := []float64{1, 2, 3, 4, 5, 6, 7, 8}
	k := []float64{-1, 0.5, 2, 1, 0, 3, -2, 1}
	dot := func(a, b []float64) float64 {
		s := 0.0
		for i := range a {
			s += a[i] * b[i]
		}
		return s
	}
	rot := func(v []float64, pos int) []float64 {
		out := append([]float64(nil), v...)
		rope(out, 4, pos, 10000)
		return out
	}
	assert.InDelta(t, dot(q, q), dot(rot(q, 7), rot(q, 7)), 1e-9)
	assert.InDelta(t, dot(rot(q, 3), rot(k, 1)), dot(rot(q, 12), rot(k, 10)), 1e-9)
	assert.Equal(t, q, rot(q, 0))
}

func TestRandomLlamaDeterministicAndRoundTrip(t *testing.T) {
	cfg := TinyConfig()
	a, err := NewRandomLlama(cfg, 3)
	require.NoError(t, err)
	b, err := NewRandomLlama(cfg, 3)
	require.NoError(t, err)
	c, err := NewRandomLlama(cfg, 4)
	require.NoError(t, err)
	assert.Equal(t, a.Blocks[2].Wq, b.Blocks[2].Wq)
	assert.NotEqual(t, a.Blocks[2].Wq, c.Blocks[2].Wq)
	path := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, a.WriteGGUF(path))
	back, err := LoadLlama(path)
	require.NoError(t, err)
	assert.Equal(t, a.Config, back.Config)
	assert.Equal(t, a.Vocab, back.Vocab)
	assert.Equal(t, a.Blocks, back.Blocks)
	assert.Equal(t, a.Output, back.Output)
	assert.Equal(t, cfg.NVocab, a.Vocab.Size())
}

func TestConfigErrors(t *testing.T) {
	base := TinyConfig()
	for _, tc := range []struct {
		mod  func(*LlamaConfig)
		want string
	}{
		{func(c *LlamaConfig) { c.NEmbd = 0 }, "must be positive"},
		{func(c *LlamaConfig) { c.NHead = 5 }, "not a multiple of heads"},
		{func(c *LlamaConfig) { c.NHeadKV = 3 }, "not a multiple of kv heads"},
		{func(c *LlamaConfig) { c.NEmbd, c.NHead, c.NHeadKV = 12, 4, 4 }, "must be even"},
		{func(c *LlamaConfig) { c.NVocab = 300 }, "vocab 300 is too small"},
	} {
		c := base
		tc.mod(&c)
		_, err := NewRandomLlama(c, 1)
		require.ErrorContains(t, err, tc.want)
	}
}
