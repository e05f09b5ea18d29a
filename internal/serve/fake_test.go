package serve

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The fake model: n_embd 4, 4 layers, a context of 64 tokens. A token's row at layer l is
//
//	[BOMB in it, EVIL in it, len(word)/10, l+1]
//
// so a linear probe with weights (1, 0, 0, 0) and threshold 0.5 fires exactly on the tokens
// that contain "BOMB" (and on a prompt whose last token does).
const (
	fakeFingerprint = "fake-fingerprint-0001"
	fakeNEmbd       = 4
	fakeNLayer      = 4
	fakeNCtx        = 64
	fakeBOS         = 1
)

// fakeRow returns the fake model's row of a token's piece at a layer.
func fakeRow(piece string, layer int) []float32 {
	w := strings.TrimSpace(piece)
	row := make([]float32, fakeNEmbd)
	if strings.Contains(w, "BOMB") {
		row[0] = 1
	}
	if strings.Contains(w, "EVIL") {
		row[1] = 1
	}
	row[2] = float32(len(w)) / 10
	row[3] = float32(layer + 1)
	return row
}

var pieceRE = regexp.MustCompile(`\s*\S+|\s+$`)

// fakePieces splits text into the fake's tokens: each word with the space before it.
func fakePieces(text string) []string { return pieceRE.FindAllString(text, -1) }

// defaultReply is what the fake model answers: a reply with a BOMB at token 5 to a prompt
// about bombs, a clean one otherwise.
func defaultReply(prompt string) string {
	if strings.Contains(strings.ToLower(prompt), "bomb") {
		return "Sure , here is a BOMB recipe ."
	}
	return "Hello there , friend ."
}

// fakeEngine is an Engine whose model answers scripted text: the reply's words are the
// generated tokens, then the end of generation. It has a number of slots and a queue of
// limited length (ErrQueueFull past it), honours ctx cancellation between tokens and can hold
// every token on a gate. After each callback it scribbles over the rows it passed, so that a
// server keeping them past the callback reads garbage.
type fakeEngine struct {
	info     ModelInfo
	slots    int
	queueCap int
	reply    func(prompt string) string
	gate     chan struct{} // if set, each generated token waits for a value (or its closing)

	sem       chan struct{}
	busy      atomic.Int32
	queued    atomic.Int32
	mu        sync.Mutex
	vocab     map[string]int32
	pieces    []string
	jobs      []*Job
	cancelled chan struct{} // closed once a job saw its ctx cancelled
	cancelOne sync.Once
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{
		info: ModelInfo{Name: "fake-model", Path: "/models/fake-model.gguf", Fingerprint: fakeFingerprint,
			NEmbd: fakeNEmbd, NLayer: fakeNLayer, NCtx: fakeNCtx, Template: "organism"},
		slots: 4, queueCap: 64, reply: defaultReply,
		vocab: map[string]int32{"": fakeBOS}, pieces: []string{"<unk>", ""},
		cancelled: make(chan struct{}),
	}
}

func (f *fakeEngine) Model() ModelInfo { return f.info }

func (f *fakeEngine) id(piece string) int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.vocab[piece]; ok {
		return id
	}
	id := int32(len(f.pieces))
	f.vocab[piece] = id
	f.pieces = append(f.pieces, piece)
	return id
}

func (f *fakeEngine) piece(id int32) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pieces[id]
}

func (f *fakeEngine) Tokenize(text string) ([]int32, error) {
	toks := []int32{fakeBOS}
	for _, p := range fakePieces(text) {
		toks = append(toks, f.id(p))
	}
	return toks, nil
}

func (f *fakeEngine) ChatPrompt(msgs []Message) (string, error) {
	var parts []string
	for _, m := range msgs {
		switch m.Role {
		case "system":
			parts = append(parts, "System: "+m.Content)
		case "user":
			parts = append(parts, "Human: "+m.Content)
		case "assistant":
			parts = append(parts, "Assistant: "+m.Content)
		default:
			return "", fmt.Errorf("role %q is not supported by the template", m.Role)
		}
	}
	return strings.Join(parts, "\n\n") + "\n\nAssistant:", nil
}

func (f *fakeEngine) Load() (busy, slots, queued int) {
	return int(f.busy.Load()), f.slots, int(f.queued.Load())
}

// lastJob returns the last job run.
func (f *fakeEngine) lastJob() *Job {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.jobs) == 0 {
		return nil
	}
	return f.jobs[len(f.jobs)-1]
}

func (f *fakeEngine) acquire(ctx context.Context) error {
	select {
	case f.sem <- struct{}{}:
		return nil
	default:
	}
	if int(f.queued.Add(1)) > f.queueCap {
		f.queued.Add(-1)
		return ErrQueueFull
	}
	defer f.queued.Add(-1)
	select {
	case f.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeEngine) sawCancel() { f.cancelOne.Do(func() { close(f.cancelled) }) }

// rows returns the rows of pieces at layers.
func rowsAt(pieces []string, layers []int) map[int][][]float32 {
	out := map[int][][]float32{}
	for _, l := range layers {
		for _, p := range pieces {
			out[l] = append(out[l], fakeRow(p, l))
		}
	}
	return out
}

// scribble overwrites rows the callback was given.
func scribble(m map[int][]float32) {
	for _, row := range m {
		for i := range row {
			row[i] = float32(math.NaN())
		}
	}
}

func (f *fakeEngine) Run(ctx context.Context, job *Job) (*JobResult, error) {
	f.mu.Lock()
	f.jobs = append(f.jobs, job)
	if f.sem == nil {
		f.sem = make(chan struct{}, f.slots)
	}
	f.mu.Unlock()
	if err := f.acquire(ctx); err != nil {
		if ctx.Err() != nil {
			f.sawCancel()
		}
		return nil, err
	}
	f.busy.Add(1)
	defer func() { f.busy.Add(-1); <-f.sem }()

	res := &JobResult{PromptTokens: len(job.Prompt)}
	pieces := make([]string, len(job.Prompt))
	for i, id := range job.Prompt {
		pieces[i] = f.piece(id)
	}
	all := rowsAt(pieces, job.Layers)
	rows := PromptRows{Last: map[int][]float32{}}
	for _, l := range job.Layers {
		rows.Last[l] = all[l][len(pieces)-1]
		if job.Mean {
			if rows.Mean == nil {
				rows.Mean = map[int][]float32{}
			}
			mean := make([]float32, fakeNEmbd)
			for _, r := range all[l] {
				for j, v := range r {
					mean[j] += v / float32(len(pieces))
				}
			}
			rows.Mean[l] = mean
		}
	}
	if job.AllRows {
		rows.All = all
	}
	if job.OnPrompt != nil {
		ok := job.OnPrompt(rows)
		scribble(rows.Last)
		scribble(rows.Mean)
		if !ok {
			res.StopReason = "callback"
			return res, nil
		}
	}
	if job.MaxTokens == 0 {
		res.StopReason = "prompt"
		return res, nil
	}
	for i, p := range fakePieces(f.reply(strings.Join(pieces, ""))) {
		switch {
		case i >= job.MaxTokens:
			res.StopReason = "max_tokens"
			return res, nil
		case len(job.Prompt)+i >= f.info.NCtx:
			res.StopReason = "context"
			return res, nil
		}
		if err := f.wait(ctx); err != nil {
			f.sawCancel()
			return nil, err
		}
		tok := Token{Index: i, ID: f.id(p), Piece: p, Residual: map[int][]float32{}}
		for _, l := range job.Layers {
			tok.Residual[l] = fakeRow(p, l)
		}
		ok := job.OnToken == nil || job.OnToken(tok)
		scribble(tok.Residual)
		if !ok {
			res.StopReason = "callback"
			return res, nil
		}
		res.Tokens = append(res.Tokens, tok.ID)
	}
	res.StopReason = "eog"
	return res, nil
}

// wait holds a token on the gate, if any, and checks ctx.
func (f *fakeEngine) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.gate == nil {
		return nil
	}
	select {
	case <-f.gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return fmt.Errorf("fake engine: gate held for 30s")
	}
}
