package probe

import "fmt"

// MeanDiff is the difference-of-means ("mass-mean") probe: the direction
// between the class centroids,
//
//	w = μ₊ − μ₋,   s(x) = w·(x − (μ₊ + μ₋)/2),
//
// so that the score is 0 halfway between the centroids. With Whiten set it is
// the covariance-whitened variant of Marks & Tegmark (2023),
//
//	w = Σ_w⁻¹ (μ₊ − μ₋),
//
// where Σ_w is the pooled within-class covariance (the covariance of the rows
// after subtracting their class mean), shrunk towards a multiple of the
// identity (see LDA, whose direction this is; only the bias differs).
type MeanDiff struct {
	// Whiten selects the covariance-whitened variant.
	Whiten bool
	// Shrinkage is the covariance shrinkage of the whitened variant: 0 for
	// Ledoit–Wolf, a value in (0, 1] for a fixed δ, negative for none.
	Shrinkage float64
}

// Name returns "meandiff" or "meandiff-whitened".
func (m MeanDiff) Name() string {
	if m.Whiten {
		return MethodMeanDiffWhitened
	}
	return MethodMeanDiff
}

// Fit computes the direction from d's positive and negative rows.
func (m MeanDiff) Fit(d *Dataset) (*Probe, error) {
	pos, neg, err := classRows(d, m.Name())
	if err != nil {
		return nil, err
	}
	mp, mn := d.X.colMeans(pos), d.X.colMeans(neg)
	p := newProbe(m.Name(), d)
	var w []float64
	if m.Whiten {
		var delta float64
		w, delta, err = whitenedDirection(d.X, pos, neg, mp, mn, m.Shrinkage)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.Name(), err)
		}
		p.Training.setParam("shrinkage", delta)
	} else {
		w = make([]float64, len(mp))
		for j := range w {
			w[j] = mp[j] - mn[j]
		}
	}
	p.Weights = w
	p.Bias = -midpointProjection(w, mp, mn)
	return p, nil
}

// midpointProjection returns w·(μ₊ + μ₋)/2.
func midpointProjection(w, mp, mn []float64) float64 {
	var s float64
	for j := range w {
		s += w[j] * (mp[j] + mn[j]) / 2
	}
	return s
}
