package probe

import (
	"fmt"

	"gonum.org/v1/gonum/lapack/lapack64"
	"gonum.org/v1/gonum/mat"
)

// Mahalanobis scores a row by its squared Mahalanobis distance to the clean
// data,
//
//	s(x) = (x − μ)ᵀ Σ⁻¹ (x − μ) = ‖L⁻¹(x − μ)‖²,
//
// where μ and Σ are the mean and the covariance of the clean (Negative) rows
// only, Σ shrunk towards m·I (m = tr S / p) by the Ledoit–Wolf intensity or a
// fixed δ, Σ = (1 − δ)·S + δ·m·I, and Σ = LLᵀ is its Cholesky factorisation.
// It needs no example of the backdoor: anything far from the clean
// distribution scores high. For Gaussian clean data s follows a χ² law with p
// degrees of freedom.
//
// The probe is quadratic: its components are the p rows of L⁻¹, each with
// coefficient 1, so a probe file holds p² values (64 MiB of float32 for
// p = 4,096, in the binary form Save writes) and scoring costs p² per row. Fitting costs
// n·p²/2 for S and 2p³/3 for L and L⁻¹.
type Mahalanobis struct {
	// Shrinkage is 0 for Ledoit–Wolf, a value in (0, 1] for a fixed δ, or
	// negative for none.
	Shrinkage float64
}

// Name returns "mahalanobis".
func (Mahalanobis) Name() string { return MethodMahalanobis }

// Fit estimates the clean distribution from d's Negative rows.
func (m Mahalanobis) Fit(d *Dataset) (*Probe, error) {
	clean := d.WithLabel(Negative)
	if len(clean) < 2 {
		return nil, fmt.Errorf("mahalanobis: needs at least 2 clean (negative) rows, have %d", len(clean))
	}
	mu := d.X.colMeans(clean)
	c, sum4 := scatter(d.X, clean, [][]float64{mu}, nil)
	delta, err := shrinkCovariance(c, len(clean), sum4, m.Shrinkage)
	if err != nil {
		return nil, fmt.Errorf("mahalanobis: %w", err)
	}
	ch, err := cholesky(c)
	if err != nil {
		return nil, fmt.Errorf("mahalanobis: %w", err)
	}
	c = nil
	// L⁻¹ in place of L.
	var l mat.TriDense
	ch.LTo(&l)
	ch = nil
	raw := l.RawTriangular()
	if !lapack64.Trtri(raw) {
		return nil, fmt.Errorf("mahalanobis: %w", errSingular)
	}
	dim := d.X.Cols
	comps := make([][]float32, dim)
	coef := make([]float64, dim)
	for k := range comps {
		u := make([]float32, dim)
		for j, v := range raw.Data[k*raw.Stride : k*raw.Stride+k+1] {
			u[j] = float32(v)
		}
		comps[k], coef[k] = u, 1
	}
	ones := make([]float64, dim)
	for j := range ones {
		ones[j] = 1
	}
	p := newProbe(MethodMahalanobis, d)
	p.Normalization = &Normalization{Mean: mu, Scale: ones}
	p.Quadratic = &Quadratic{Coef: coef, Components: comps}
	p.Training.setParam("shrinkage", delta)
	p.Training.setParam("clean_rows", float64(len(clean)))
	return p, nil
}
