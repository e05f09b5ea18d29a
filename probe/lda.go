package probe

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// LDA is Fisher's linear discriminant with a shrunk covariance: for two
// Gaussian classes with a shared covariance Σ the log-odds of the positive
// class is linear,
//
//	s(x) = wᵀx − ½ wᵀ(μ₊ + μ₋) + log(π₊/π₋),   w = Σ⁻¹(μ₊ − μ₋),
//
// and LDA plugs in the class means, the class priors π = n_c/n and the
// pooled within-class covariance Σ_w = (1/n) Σ_c Σ_{i∈c} (x_i − μ_c)(x_i − μ_c)ᵀ,
// shrunk towards m·I (m = tr Σ_w / p) by the Ledoit–Wolf intensity computed on
// the class-centred rows, or by a fixed δ:
//
//	Σ = (1 − δ)·Σ_w + δ·m·I.
//
// Shrinkage makes Σ invertible when there are fewer rows than dimensions.
// The cost is n·p²/2 for Σ_w and p³/3 for its Cholesky factor.
type LDA struct {
	// Shrinkage is 0 for Ledoit–Wolf, a value in (0, 1] for a fixed δ, or
	// negative for none.
	Shrinkage float64
}

// Name returns "lda".
func (LDA) Name() string { return MethodLDA }

// Fit computes the discriminant from d's positive and negative rows.
func (l LDA) Fit(d *Dataset) (*Probe, error) {
	pos, neg, err := classRows(d, MethodLDA)
	if err != nil {
		return nil, err
	}
	mp, mn := d.X.colMeans(pos), d.X.colMeans(neg)
	w, delta, err := whitenedDirection(d.X, pos, neg, mp, mn, l.Shrinkage)
	if err != nil {
		return nil, fmt.Errorf("lda: %w", err)
	}
	p := newProbe(MethodLDA, d)
	p.Weights = w
	p.Bias = -midpointProjection(w, mp, mn) + math.Log(float64(len(pos))/float64(len(neg)))
	p.Training.setParam("shrinkage", delta)
	return p, nil
}

// whitenedDirection returns Σ_w⁻¹(μ₊ − μ₋) for the pooled within-class
// covariance of the rows pos and neg, shrunk as opt says, and the shrinkage
// used.
func whitenedDirection(x *Matrix, pos, neg []int, mp, mn []float64, opt float64) ([]float64, float64, error) {
	rows := append(append([]int{}, pos...), neg...)
	which := make([]int, len(rows))
	for k := len(pos); k < len(rows); k++ {
		which[k] = 1
	}
	c, sum4 := scatter(x, rows, [][]float64{mp, mn}, which)
	delta, err := shrinkCovariance(c, len(rows), sum4, opt)
	if err != nil {
		return nil, 0, err
	}
	ch, err := cholesky(c)
	if err != nil {
		return nil, 0, err
	}
	diff := make([]float64, len(mp))
	for j := range diff {
		diff[j] = mp[j] - mn[j]
	}
	var w mat.VecDense
	if err := ch.SolveVecTo(&w, mat.NewVecDense(len(diff), diff)); err != nil {
		return nil, 0, err
	}
	out := make([]float64, len(diff))
	for j := range out {
		out[j] = w.AtVec(j)
	}
	if !finite(out) {
		return nil, 0, errSingular
	}
	return out, delta, nil
}
