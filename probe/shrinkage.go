package probe

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// scatter returns the centred second-moment matrix
//
//	S = (1/n) Σ_k (x_k − c_k)(x_k − c_k)ᵀ
//
// over the rows rows of x, where row rows[k] is centred by centres[which[k]]
// (which nil: every row by centres[0]), together with Σ_k ‖x_k − c_k‖⁴, which
// the Ledoit–Wolf estimate needs.
//
// The rows are centred and transposed in float32 blocks of 256, and S is
// accumulated in float64 from float32 dot products of the block's columns
// (four at a time), on GOMAXPROCS goroutines: the cost is n·d²/2
// multiply-adds.
func scatter(x *Matrix, rows []int, centres [][]float64, which []int) (*mat.SymDense, float64) {
	d := x.Cols
	n := len(rows)
	s := make([]float64, d*d) // lower triangle used, row-major
	const block = 256
	t := make([]float32, d*block) // t[j*block+r]: column j of the centred block
	var sum4 float64
	w := workers(0, d/64)
	for b0 := 0; b0 < n; b0 += block {
		r := min(block, n-b0)
		for k := 0; k < r; k++ {
			c := centres[0]
			if which != nil {
				c = centres[which[b0+k]]
			}
			var sq float64
			for j, v := range x.Row(rows[b0+k]) {
				z := float64(v) - c[j]
				sq += z * z
				t[j*block+k] = float32(z)
			}
			sum4 += sq * sq
		}
		// Split the lower triangle's rows so each worker gets equal area.
		parallelFor(w, w, func(_, lo, hi int) {
			jlo := int(float64(d) * math.Sqrt(float64(lo)/float64(w)))
			jhi := int(float64(d) * math.Sqrt(float64(hi)/float64(w)))
			var cols [4][]float32
			for j := jlo; j < jhi; j++ {
				tj := t[j*block : j*block+r]
				srow := s[j*d : j*d+j+1]
				k := 0
				for ; k+3 <= j; k += 4 {
					for c := range cols {
						cols[c] = t[(k+c)*block : (k+c)*block+r]
					}
					p := dot4(&cols, tj)
					for c := range p {
						srow[k+c] += float64(p[c])
					}
				}
				for ; k <= j; k++ {
					srow[k] += float64(dot32(tj, t[k*block:k*block+r]))
				}
			}
		})
	}
	// s holds the lower triangle row-major; mirror it into the upper
	// triangle that mat.SymDense reads, scaling by 1/n, in place.
	inv := 1 / float64(max(n, 1))
	for j := 0; j < d; j++ {
		for k := 0; k <= j; k++ {
			s[k*d+j] = s[j*d+k] * inv
		}
	}
	return mat.NewSymDense(d, s), sum4
}

// ledoitWolf returns the Ledoit–Wolf (2004) shrinkage intensity for the
// sample covariance S of n centred rows of dimension p with
// sum4 = Σ_i ‖x_i‖⁴:
//
//	m  = tr(S)/p
//	d² = ‖S − m·I‖²_F / p
//	b̄² = (1/n²) Σ_i ‖x_i x_iᵀ − S‖²_F / p = (sum4/n − ‖S‖²_F) / (n·p)
//	δ  = min(b̄², d²) / d²   (0 when d² = 0)
//
// and the shrinkage target's scale m. The shrunk covariance is
// (1 − δ)·S + δ·m·I; this is scikit-learn's ledoit_wolf.
func ledoitWolf(s *mat.SymDense, n int, sum4 float64) (delta, m float64) {
	raw := s.RawSymmetric()
	p := raw.N
	var tr, fro float64
	for i := 0; i < p; i++ {
		row := raw.Data[i*raw.Stride : i*raw.Stride+p]
		tr += row[i]
		fro += row[i] * row[i]
		for _, v := range row[i+1:] {
			fro += 2 * v * v
		}
	}
	m = tr / float64(p)
	d2 := (fro - 2*m*tr + float64(p)*m*m) / float64(p)
	b2 := (sum4/float64(n) - fro) / (float64(n) * float64(p))
	b2 = math.Max(0, math.Min(b2, d2))
	if d2 <= 0 {
		return 0, m
	}
	return b2 / d2, m
}

// shrinkCovariance replaces s by (1 − δ)·s + δ·m·I, in place, for the
// shrinkage option opt (0: Ledoit–Wolf; in (0, 1]: fixed δ; negative: δ = 0),
// and returns the δ used.
func shrinkCovariance(s *mat.SymDense, n int, sum4 float64, opt float64) (float64, error) {
	if opt > 1 || math.IsNaN(opt) {
		return 0, fmt.Errorf("shrinkage %v outside [0, 1]", opt)
	}
	delta, m := ledoitWolf(s, n, sum4)
	switch {
	case opt > 0:
		delta = opt
	case opt < 0:
		delta = 0
	}
	raw := s.RawSymmetric()
	for i := 0; i < raw.N; i++ {
		row := raw.Data[i*raw.Stride+i : i*raw.Stride+raw.N]
		for k := range row {
			row[k] *= 1 - delta
		}
		row[0] += delta * m
	}
	return delta, nil
}

// errSingular is returned when a covariance cannot be factorised.
var errSingular = errors.New("covariance matrix is singular: use shrinkage (Ledoit–Wolf is the default) or more rows")

// cholesky factorises a shrunk covariance, with an error for a matrix that
// is not numerically positive definite.
func cholesky(c *mat.SymDense) (*mat.Cholesky, error) {
	var ch mat.Cholesky
	if !ch.Factorize(c) {
		return nil, errSingular
	}
	if cond := ch.Cond(); cond > 1e14 || math.IsInf(cond, 0) || math.IsNaN(cond) {
		return nil, fmt.Errorf("%w (condition number %.3g)", errSingular, cond)
	}
	return &ch, nil
}
