package probe

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/mat"
)

// Spectral is the spectral-signature score of Tran, Li & Mądry (2018,
// "Spectral Signatures in Backdoor Attacks") for a dataset suspected to hold
// poisoned rows: poisoned rows shift the mean along a direction that
// dominates the covariance, so with μ the mean of the rows and v the top
// right singular vector of the centred matrix [x_i − μ] (the top eigenvector
// of the covariance),
//
//	s(x) = ((x − μ)·v)².
//
// Tran et al. remove the rows with the highest scores (about 1.5 times the
// expected poisoned fraction) and retrain. Spectral uses every row of the
// dataset, whatever its label: select the rows to analyse (say, those of one
// label) with Dataset.Subset.
//
// v is found by subspace iteration with a block of 8 vectors and a
// Rayleigh–Ritz step, one pass over the data per iteration, until the top Ritz
// vector moves by less than Tol (default 1e-6) in angle, or MaxIter (default
// 300) iterations. The eigenvalue and the iterations are recorded in the
// training summary.
type Spectral struct {
	// Seed seeds the starting block of the iteration.
	Seed uint64
	// Tol is the convergence angle of the top vector (default 1e-6).
	Tol float64
	// MaxIter bounds the iterations (default 300).
	MaxIter int
}

// Name returns "spectral".
func (Spectral) Name() string { return MethodSpectral }

// Fit computes the top singular direction of d's centred rows.
func (s Spectral) Fit(d *Dataset) (*Probe, error) {
	n, dim := d.X.Rows, d.X.Cols
	if n < 2 {
		return nil, errors.New("spectral: needs at least 2 rows")
	}
	tol, maxIter := s.Tol, s.MaxIter
	if tol <= 0 {
		tol = 1e-6
	}
	if maxIter <= 0 {
		maxIter = 300
	}
	mu := d.X.colMeans(nil)
	v, lambda, iters, err := topEigenvector(d.X, mu, s.Seed, tol, maxIter)
	if err != nil {
		return nil, fmt.Errorf("spectral: %w", err)
	}
	ones := make([]float64, dim)
	for j := range ones {
		ones[j] = 1
	}
	u := make([]float32, dim)
	for j := range u {
		u[j] = float32(v[j])
	}
	p := newProbe(MethodSpectral, d)
	p.Normalization = &Normalization{Mean: mu, Scale: ones}
	p.Quadratic = &Quadratic{Coef: []float64{1}, Components: [][]float32{u}}
	p.Training.setParam("eigenvalue", lambda)
	p.Training.setParam("iterations", float64(iters))
	return p, nil
}

// covTimes computes W = S·V for the covariance S = (1/n) Σ_i (x_i − μ)(x_i − μ)ᵀ
// of all rows of x and the d×b matrix V, in one pass over the rows.
func covTimes(x *Matrix, mu []float64, v *mat.Dense) *mat.Dense {
	d, b := v.Dims()
	// Columns of V as float32, and μ·v_k so that (x − μ)·v_k = x·v_k − μ·v_k.
	cols := make([][]float32, b)
	muv := make([]float64, b)
	for k := range cols {
		cols[k] = make([]float32, d)
		for j := range d {
			cols[k][j] = float32(v.At(j, k))
			muv[k] += mu[j] * v.At(j, k)
		}
	}
	w := workers(0, x.Rows/64)
	acc := make([][][]float64, w) // per worker, per column: Σ t_ik x_i; then Σ t_ik
	parallelFor(x.Rows, w, func(k, lo, hi int) {
		a := make([][]float64, b)
		a32 := make([][]float32, b)
		sums := make([]float64, b)
		for c := range a {
			a[c] = make([]float64, d)
			a32[c] = make([]float32, d)
		}
		for i := lo; i < hi; i++ {
			row := x.Row(i)
			for c := range b {
				t := float64(dot32(row, cols[c])) - muv[c]
				sums[c] += t
				axpy32(float32(t), row, a32[c])
			}
			if (i-lo+1)%256 == 0 || i == hi-1 {
				for c := range b {
					for j, val := range a32[c] {
						a[c][j] += float64(val)
					}
					clear(a32[c])
				}
			}
		}
		acc[k] = append(a, sums)
	})
	out := mat.NewDense(d, b, nil)
	for c := range b {
		var st float64
		for k := range acc {
			st += acc[k][b][c]
		}
		for j := range d {
			var sx float64
			for k := range acc {
				sx += acc[k][c][j]
			}
			// Σ_i t_i (x_ij − μ_j) / n
			out.Set(j, c, (sx-mu[j]*st)/float64(x.Rows))
		}
	}
	return out
}

// topEigenvector returns the top eigenvector of the covariance of x's rows
// about mu, its eigenvalue and the iterations used.
func topEigenvector(x *Matrix, mu []float64, seed uint64, tol float64, maxIter int) ([]float64, float64, int, error) {
	vecs, vals, it, err := topEigenvectors(x, mu, 1, seed, tol, maxIter)
	if err != nil {
		return nil, 0, 0, err
	}
	return vecs[0], vals[0], it, nil
}

// topEigenvectors returns the k leading eigenvectors of the covariance of
// x's rows about mu (unit vectors, largest component positive), their
// eigenvalues in decreasing order, and the iterations used. It runs subspace
// iteration on a block of k+7 vectors (at most d and n) with a Rayleigh–Ritz
// step per pass over the data, until every one of the k Ritz vectors moves by
// less than tol in angle, or maxIter iterations. Data with non-finite values make the
// small eigenproblem of the Rayleigh–Ritz step fail: that is an error.
func topEigenvectors(x *Matrix, mu []float64, k int, seed uint64, tol float64, maxIter int) ([][]float64, []float64, int, error) {
	d := x.Cols
	b := min(k+7, d, x.Rows)
	k = min(k, b)
	rng := rand.New(rand.NewPCG(seed, 0x57ec))
	v := mat.NewDense(d, b, nil)
	for j := range d {
		for c := range b {
			v.Set(j, c, rng.NormFloat64())
		}
	}
	orthonormalize(v)
	top := make([][]float64, k)
	prev := make([][]float64, k)
	for i := range top {
		top[i], prev[i] = make([]float64, d), make([]float64, d)
	}
	lambda := make([]float64, k)
	it := 0
	for it = 1; it <= maxIter; it++ {
		w := covTimes(x, mu, v) // S V
		// Rayleigh–Ritz: H = Vᵀ S V, its eigenvectors rotate V.
		var h mat.Dense
		h.Mul(v.T(), w)
		hs := mat.NewSymDense(b, nil)
		for i := range b {
			for j := 0; j <= i; j++ {
				hs.SetSym(i, j, (h.At(i, j)+h.At(j, i))/2)
			}
		}
		var eig mat.EigenSym
		if !eig.Factorize(hs, true) {
			return nil, nil, 0, errors.New("the covariance's eigendecomposition failed: the data hold non-finite values")
		}
		vals := eig.Values(nil)
		var vecs mat.Dense
		eig.VectorsTo(&vecs)
		order := make([]int, b)
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, c int) int { return cmp.Compare(vals[c], vals[a]) })
		moved := 0.0
		for i := range k {
			lambda[i] = vals[order[i]]
			for j := range d {
				var t float64
				for c := range b {
					t += v.At(j, c) * vecs.At(c, order[i])
				}
				top[i][j] = t
			}
			normalize(top[i])
			var cos float64
			for j := range d {
				cos += top[i][j] * prev[i][j]
			}
			moved = math.Max(moved, 1-math.Abs(cos))
			copy(prev[i], top[i])
		}
		if it > 1 && moved < tol*tol/2 { // angle ≈ √(2(1−|cos|))
			break
		}
		// Next basis: orthonormalised S V.
		v.Copy(w)
		orthonormalize(v)
	}
	// A fixed sign, for reproducible files: largest component positive.
	for _, u := range top {
		big := 0
		for j := range u {
			if math.Abs(u[j]) > math.Abs(u[big]) {
				big = j
			}
		}
		if u[big] < 0 {
			for j := range u {
				u[j] = -u[j]
			}
		}
	}
	return top, lambda, min(it, maxIter), nil
}

// orthonormalize replaces the columns of v by an orthonormal basis of their
// span (modified Gram–Schmidt, twice for stability).
func orthonormalize(v *mat.Dense) {
	d, b := v.Dims()
	col := make([]float64, d)
	for pass := 0; pass < 2; pass++ {
		for c := range b {
			mat.Col(col, c, v)
			for k := 0; k < c; k++ {
				var dot float64
				for j := range d {
					dot += col[j] * v.At(j, k)
				}
				for j := range d {
					col[j] -= dot * v.At(j, k)
				}
			}
			normalize(col)
			v.SetCol(c, col)
		}
	}
}

// normalize scales x to unit Euclidean norm (leaving a zero vector alone).
func normalize(x []float64) {
	var s float64
	for _, v := range x {
		s += v * v
	}
	if s == 0 {
		return
	}
	s = 1 / math.Sqrt(s)
	for i := range x {
		x[i] *= s
	}
}
