package probe

import (
	"errors"
	"fmt"
	"slices"
)

// MethodEnsemble is the method of a probe that fuses the scores of other probes (Members).
const MethodEnsemble = "ensemble"

// Member is one probe of an ensemble and how its score enters the fused score: standardised
// as (s − Center) / Scale and weighted by Weight.
type Member struct {
	Probe  *Probe  `json:"probe"`
	Center float64 `json:"center"`
	Scale  float64 `json:"scale"`
	Weight float64 `json:"weight"`
}

// Feature is what a probe reads: the residual stream at one layer and position.
type Feature struct {
	Layer    int      `json:"layer"`
	Position Position `json:"position"`
}

// RowSource returns the activation rows of one layer at one position, one row per example,
// the examples in the same order for every feature.
type RowSource func(f Feature) (*Matrix, error)

// IsEnsemble reports whether the probe fuses other probes' scores.
func (p *Probe) IsEnsemble() bool { return len(p.Members) > 0 }

// Features returns the layers and positions the probe reads, in first-use order: its own
// for a single probe, its members' for an ensemble.
func (p *Probe) Features() []Feature {
	if !p.IsEnsemble() {
		return []Feature{{p.Layer, p.Position}}
	}
	var out []Feature
	for _, m := range p.Members {
		f := Feature{m.Probe.Layer, m.Probe.Position}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// Layers returns the layers the probe reads, in increasing order.
func (p *Probe) Layers() []int {
	var ls []int
	for _, f := range p.Features() {
		if !slices.Contains(ls, f.Layer) {
			ls = append(ls, f.Layer)
		}
	}
	slices.Sort(ls)
	return ls
}

// ScoreSource scores every example of src: Score for a single probe (the rows of its layer
// and position), the fused score Σ_k Weight_k·(s_k − Center_k)/Scale_k of the members' scores
// for an ensemble. The matrices must have n_embd columns and agree on the number of rows.
func (p *Probe) ScoreSource(src RowSource) ([]float64, error) {
	if !p.IsEnsemble() {
		x, err := src(Feature{p.Layer, p.Position})
		if err != nil {
			return nil, err
		}
		if x.Cols != p.Model.NEmbd {
			return nil, fmt.Errorf("%w: rows of %d values for a probe of n_embd %d", ErrModelMismatch, x.Cols, p.Model.NEmbd)
		}
		return p.ScoreRows(x, nil, nil), nil
	}
	var out []float64
	for k, m := range p.Members {
		s, err := m.Probe.ScoreSource(src)
		if err != nil {
			return nil, fmt.Errorf("ensemble member %d: %w", k, err)
		}
		if out == nil {
			out = make([]float64, len(s))
		} else if len(s) != len(out) {
			return nil, fmt.Errorf("ensemble member %d: %d rows, member 0 had %d", k, len(s), len(out))
		}
		for i, v := range s {
			out[i] += m.Weight * (v - m.Center) / m.Scale
		}
	}
	return out, nil
}

// ScoreStep scores one token from the residual stream of the layers the probe reads (as a
// generation step carries them): every feature must be at the last position or every token,
// since a prompt mean does not exist token by token.
func (p *Probe) ScoreStep(residual map[int][]float32) (float64, error) {
	if !p.IsEnsemble() {
		if p.Position == PositionMean {
			return 0, fmt.Errorf("probe of layer %d reads the prompt mean, which has no value per token", p.Layer)
		}
		x, ok := residual[p.Layer]
		if !ok || len(x) != p.Model.NEmbd {
			return 0, fmt.Errorf("no residual of %d values at layer %d", p.Model.NEmbd, p.Layer)
		}
		return p.Score(x), nil
	}
	s := 0.0
	for k, m := range p.Members {
		v, err := m.Probe.ScoreStep(residual)
		if err != nil {
			return 0, fmt.Errorf("ensemble member %d: %w", k, err)
		}
		s += m.Weight * (v - m.Center) / m.Scale
	}
	return s, nil
}

// CheckStep returns an error unless ScoreStep can score the probe token by token.
func (p *Probe) CheckStep() error {
	for _, f := range p.Features() {
		if f.Position == PositionMean {
			return fmt.Errorf("the probe reads the prompt mean at layer %d, which has no value per token: use a probe of the last token", f.Layer)
		}
	}
	return nil
}

// NewEnsemble fuses calibrated or uncalibrated probes of one model into one probe. Each
// member's score is standardised by its mean and standard deviation over the rows of clean
// (normal traffic, no labels needed) and the standardised scores are averaged: the fused
// score is Σ_k (s_k − mean_k)/sd_k / K. With clean nil the members' scores are averaged as
// they are (Center 0, Scale 1), so an ensemble of one probe, or of identical probes, scores
// exactly as the probe does. The ensemble is not calibrated: call CalibrateSource. Members
// that are ensembles are flattened into their members. Every member must be for the same model
// and read the same capture point.
func NewEnsemble(probes []*Probe, clean RowSource) (*Probe, error) {
	var flat []*Probe
	for _, q := range probes {
		if q.IsEnsemble() {
			for _, m := range q.Members {
				flat = append(flat, m.Probe)
			}
			continue
		}
		flat = append(flat, q)
	}
	if len(flat) == 0 {
		return nil, errors.New("ensemble: no probes")
	}
	first := flat[0]
	e := &Probe{Version: ProbeVersion, Method: MethodEnsemble, Layer: first.Layer, Point: first.Point, Position: first.Position, Model: first.Model}
	for k, q := range flat {
		if q.Model != first.Model {
			return nil, fmt.Errorf("%w: ensemble member %d is for model %q (n_embd %d), member 0 for %q (n_embd %d)",
				ErrModelMismatch, k, q.Model.Fingerprint, q.Model.NEmbd, first.Model.Fingerprint, first.Model.NEmbd)
		}
		if err := q.Validate(); err != nil {
			return nil, fmt.Errorf("ensemble member %d: %w", k, err)
		}
		if q.Point != first.Point {
			// A feature is a layer and a position: the rows of every member come from one
			// capture point.
			return nil, fmt.Errorf("ensemble member %d reads capture point %q, member 0 %q: the members of an ensemble read one point", k, q.Point, first.Point)
		}
		m := Member{Probe: q, Scale: 1, Weight: 1 / float64(len(flat))}
		if clean != nil {
			s, err := q.ScoreSource(clean)
			if err != nil {
				return nil, fmt.Errorf("ensemble member %d: %w", k, err)
			}
			if len(s) < 2 {
				return nil, fmt.Errorf("ensemble: %d clean rows; standardising a score needs at least 2", len(s))
			}
			mo, err := momentsOf(s)
			if err != nil {
				return nil, fmt.Errorf("ensemble member %d (%s, layer %d): %w", k, q.Method, q.Layer, err)
			}
			m.Center, m.Scale = mo.Mean, mo.SD
		}
		e.Members = append(e.Members, m)
		e.Training.Rows = max(e.Training.Rows, q.Training.Rows)
	}
	e.Training.Notes = append(e.Training.Notes, fmt.Sprintf("ensemble of %d probes, mean of standardised scores", len(flat)))
	return e, nil
}

// CalibrateSource sets the probe's threshold from the scores of the clean rows of src (every
// row of src counts as clean) so that it fires on at most targetFPR of them, and records the
// calibration. It is Calibrate for probes that read several layers or positions.
func (p *Probe) CalibrateSource(clean RowSource, targetFPR float64) error {
	s, err := p.ScoreSource(clean)
	if err != nil {
		return err
	}
	return p.calibrateScores(s, targetFPR)
}

// validateMembers checks an ensemble's members: each a valid single probe of the ensemble's
// model, with a positive finite scale and finite centre and weight.
func (p *Probe) validateMembers() error {
	if len(p.Weights) != 0 || p.Quadratic != nil || p.Normalization != nil {
		return fmt.Errorf("%w: an ensemble has members, not weights of its own", ErrProbeFile)
	}
	for k, m := range p.Members {
		if m.Probe == nil {
			return fmt.Errorf("%w: ensemble member %d has no probe", ErrProbeFile, k)
		}
		if m.Probe.IsEnsemble() || m.Probe.Method == MethodEnsemble {
			return fmt.Errorf("%w: ensemble member %d is itself an ensemble", ErrProbeFile, k)
		}
		if err := m.Probe.Validate(); err != nil {
			return fmt.Errorf("ensemble member %d: %w", k, err)
		}
		if m.Probe.Model != p.Model {
			return fmt.Errorf("%w: ensemble member %d is for another model than the ensemble", ErrProbeFile, k)
		}
		if !finite([]float64{m.Center, m.Weight}) || !positiveFinite(m.Scale) {
			return fmt.Errorf("%w: ensemble member %d: centre %v, scale %v, weight %v (want finite, scale positive)", ErrProbeFile, k, m.Center, m.Scale, m.Weight)
		}
	}
	return nil
}
