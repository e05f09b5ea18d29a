package probe

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/stat"
	"gonum.org/v1/gonum/stat/distmv"
)

// gaussianData draws nPos rows from N(μ₊, Σ) and nNeg from N(μ₋, Σ), with
// Σ = AAᵀ + 0.5·I for a random A, μ₋ = 0 and μ₊ = shift. It returns the
// dataset (groups of 4 consecutive rows) and Σ. The Bayes-optimal direction
// is Σ⁻¹(μ₊ − μ₋).
func gaussianData(seed uint64, nPos, nNeg, d int, shift []float64) (*Dataset, *mat.SymDense) {
	r := rand.New(rand.NewPCG(seed, 1))
	a := mat.NewDense(d, d, nil)
	for i := range d {
		for j := range d {
			a.Set(i, j, r.NormFloat64()/math.Sqrt(float64(d)))
		}
	}
	sigma := mat.NewSymDense(d, nil)
	sigma.SymOuterK(1, a)
	for i := range d {
		sigma.SetSym(i, i, sigma.At(i, i)+0.5)
	}
	n := nPos + nNeg
	x := NewMatrix(n, d, nil)
	labels := make([]Label, n)
	groups := make([]string, n)
	z := make([]float64, d)
	for i := range n {
		for j := range z {
			z[j] = r.NormFloat64()
		}
		row := x.Row(i)
		for j := range d {
			v := 0.0
			for k := range d {
				v += a.At(j, k) * z[k]
			}
			v += math.Sqrt(0.5) * r.NormFloat64()
			if i < nPos {
				v += shift[j]
			}
			row[j] = float32(v)
		}
		labels[i] = Negative
		if i < nPos {
			labels[i] = Positive
		}
		groups[i] = fmt.Sprint("g", i/4)
	}
	ds := NewDataset(x, labels, groups, nil)
	ds.Info = DatasetInfo{Layer: 7, Point: PointResidual, Position: PositionLast, Fingerprint: "fp", NEmbd: d}
	return ds, sigma
}

func cosine(a, b []float64) float64 {
	return floats.Dot(a, b) / (floats.Norm(a, 2) * floats.Norm(b, 2))
}

// rawDirection returns the probe's weights in raw activation space, w/σ.
func rawDirection(p *Probe) []float64 {
	w := append([]float64{}, p.Weights...)
	if p.Normalization != nil {
		for j := range w {
			w[j] /= p.Normalization.Scale[j]
		}
	}
	return w
}

// denseRows returns the rows idx of x as a float64 matrix.
func denseRows(x *Matrix, idx []int) *mat.Dense {
	out := mat.NewDense(len(idx), x.Cols, nil)
	for k, i := range idx {
		for j, v := range x.Row(i) {
			out.Set(k, j, float64(v))
		}
	}
	return out
}

// refCovariance returns (1/n) Σ (x − μ)(x − μ)ᵀ of the rows of a, via
// stat.CovarianceMatrix (which divides by n − 1).
func refCovariance(a *mat.Dense) *mat.SymDense {
	n, d := a.Dims()
	var c mat.SymDense
	stat.CovarianceMatrix(&c, a, nil)
	out := mat.NewSymDense(d, nil)
	out.ScaleSym(float64(n-1)/float64(n), &c)
	return out
}

// refLedoitWolf computes the Ledoit–Wolf intensity from its definition, with
// explicit outer products: b̄² = (1/n²) Σ ‖x xᵀ − S‖²_F, d² = ‖S − mI‖²_F.
func refLedoitWolf(centred *mat.Dense) (delta, m float64) {
	n, p := centred.Dims()
	var s mat.SymDense
	s.SymOuterK(1/float64(n), centred.T())
	m = mat.Trace(&s) / float64(p)
	var diff mat.Dense
	diff.Sub(&s, scaledIdentity(p, m))
	d2 := mat.Norm(&diff, 2) * mat.Norm(&diff, 2) // Frobenius for Dense
	var b2 float64
	for i := range n {
		row := centred.RawRowView(i)
		var outer mat.Dense
		outer.Outer(1, mat.NewVecDense(p, row), mat.NewVecDense(p, row))
		outer.Sub(&outer, &s)
		f := mat.Norm(&outer, 2)
		b2 += f * f
	}
	b2 /= float64(n * n)
	return math.Min(b2, d2) / d2, m
}

func scaledIdentity(p int, m float64) *mat.Dense {
	out := mat.NewDense(p, p, nil)
	for i := range p {
		out.Set(i, i, m)
	}
	return out
}

func centre(a *mat.Dense) *mat.Dense {
	n, d := a.Dims()
	out := mat.NewDense(n, d, nil)
	for j := range d {
		col := mat.Col(nil, j, a)
		mu := stat.Mean(col, nil)
		for i := range n {
			out.Set(i, j, col[i]-mu)
		}
	}
	return out
}

func TestScatterAndLedoitWolf(t *testing.T) {
	for _, c := range []struct{ n, d int }{{40, 5}, {12, 30}, {300, 300}, {7, 257}} {
		ds, _ := gaussianData(uint64(c.n*c.d), c.n, 0, c.d, make([]float64, c.d))
		rows := ds.Where(func(int) bool { return true })
		mu := ds.X.colMeans(rows)
		s, sum4 := scatter(ds.X, rows, [][]float64{mu}, nil)
		a := denseRows(ds.X, rows)
		ref := refCovariance(a)
		require.True(t, mat.EqualApprox(s, ref, 1e-5), "scatter n=%d d=%d", c.n, c.d)
		delta, m := ledoitWolf(s, c.n, sum4)
		if c.d <= 60 {
			wantDelta, wantM := refLedoitWolf(centre(a))
			assert.InDelta(t, wantDelta, delta, 1e-5, "δ n=%d d=%d", c.n, c.d)
			assert.InDelta(t, wantM, m, 1e-6)
		}
		assert.True(t, delta >= 0 && delta <= 1)
		if c.n < c.d {
			assert.Greater(t, delta, 0.05, "fewer rows than dimensions need shrinkage")
		}
	}
}

func TestMeanDiffHand(t *testing.T) {
	x := NewMatrix(4, 2, []float32{1, 2, 3, 4, 0, 0, 2, 0})
	ds := NewDataset(x, []Label{Positive, Positive, Negative, Negative}, nil, nil)
	p, err := MeanDiff{}.Fit(ds)
	require.NoError(t, err)
	// μ₊ = (2, 3), μ₋ = (1, 0): w = (1, 3), b = −w·(1.5, 1.5) = −6.
	assert.Equal(t, []float64{1, 3}, p.Weights)
	assert.InDelta(t, -6, p.Bias, 1e-12)
	assert.InDelta(t, -6, p.Score([]float32{0, 0}), 1e-6)
	assert.InDelta(t, 0, p.Score([]float32{1.5, 1.5}), 1e-6)
	assert.Equal(t, MethodMeanDiff, p.Method)

	_, err = MeanDiff{}.Fit(NewDataset(x, []Label{Positive, Positive, Unknown, Unknown}, nil, nil))
	require.ErrorContains(t, err, "0 negative")
}

// ldaClosedForm computes Σ⁻¹(μ₊ − μ₋) and the LDA bias independently with
// gonum: pooled within-class covariance from the class-centred rows, δ from
// the definition (or fixed), and a dense solve.
func ldaClosedForm(t *testing.T, ds *Dataset, fixed float64) ([]float64, float64, float64) {
	pos, neg := ds.WithLabel(Positive), ds.WithLabel(Negative)
	ap, an := denseRows(ds.X, pos), denseRows(ds.X, neg)
	cp, cn := centre(ap), centre(an)
	var stacked mat.Dense
	stacked.Stack(cp, cn)
	n, p := stacked.Dims()
	var sw mat.SymDense
	sw.SymOuterK(1/float64(n), stacked.T())
	delta, m := refLedoitWolf(&stacked)
	if fixed != 0 {
		delta = fixed
	}
	var sigma mat.Dense
	sigma.Scale(1-delta, &sw)
	sigma.Add(&sigma, scaledIdentity(p, delta*m))
	mp, mn := make([]float64, p), make([]float64, p)
	for j := range p {
		mp[j] = stat.Mean(mat.Col(nil, j, ap), nil)
		mn[j] = stat.Mean(mat.Col(nil, j, an), nil)
	}
	diff := make([]float64, p)
	floats.SubTo(diff, mp, mn)
	var w mat.VecDense
	require.NoError(t, w.SolveVec(&sigma, mat.NewVecDense(p, diff)))
	wv := mat.Col(nil, 0, &w)
	mid := make([]float64, p)
	floats.AddTo(mid, mp, mn)
	bias := -floats.Dot(wv, mid)/2 + math.Log(float64(len(pos))/float64(len(neg)))
	return wv, bias, delta
}

func TestLDAClosedForm(t *testing.T) {
	for _, c := range []struct {
		nPos, nNeg, d int
		shrink        float64
	}{{60, 90, 6, 0}, {60, 90, 6, 0.3}, {15, 20, 50, 0}, {200, 100, 20, 0}} {
		shift := make([]float64, c.d)
		shift[0], shift[1] = 1, -0.5
		ds, _ := gaussianData(uint64(c.d+c.nPos), c.nPos, c.nNeg, c.d, shift)
		p, err := LDA{Shrinkage: c.shrink}.Fit(ds)
		require.NoError(t, err)
		w, b, delta := ldaClosedForm(t, ds, c.shrink)
		require.InDelta(t, delta, p.Training.Params["shrinkage"], 1e-6)
		require.True(t, floats.EqualApprox(w, p.Weights, 1e-4*floats.Norm(w, math.Inf(1))), "weights %v\nvs %v", w[:3], p.Weights[:3])
		require.InDelta(t, b, p.Bias, 1e-4*math.Max(1, math.Abs(b)))
		assert.Equal(t, 7, p.Layer)
		assert.Equal(t, "fp", p.Model.Fingerprint)

		// The whitened mean difference is the same direction, without the
		// prior term in the bias.
		wm, err := MeanDiff{Whiten: true, Shrinkage: c.shrink}.Fit(ds)
		require.NoError(t, err)
		require.True(t, floats.EqualApprox(p.Weights, wm.Weights, 1e-12))
		require.InDelta(t, p.Bias-math.Log(float64(c.nPos)/float64(c.nNeg)), wm.Bias, 1e-9)
	}
}

func TestLDAAndLogisticRecoverBayesDirection(t *testing.T) {
	const d = 8
	shift := []float64{0.8, 0, -0.4, 0, 0, 0.3, 0, 0}
	ds, sigma := gaussianData(42, 3000, 3000, d, shift)
	var bayes mat.VecDense
	require.NoError(t, bayes.SolveVec(sigma, mat.NewVecDense(d, shift)))
	want := mat.Col(nil, 0, &bayes)

	lda, err := LDA{}.Fit(ds)
	require.NoError(t, err)
	assert.Greater(t, cosine(want, lda.Weights), 0.99, "LDA")

	lr, err := Logistic{C: 10}.Fit(ds)
	require.NoError(t, err)
	assert.Greater(t, cosine(want, rawDirection(lr)), 0.99, "logistic")

	md, err := MeanDiff{}.Fit(ds)
	require.NoError(t, err)
	// The plain mean difference ignores the covariance: it points at Δμ.
	assert.Greater(t, cosine(shift, md.Weights), 0.98)
}

// newtonLogistic solves the Logistic objective in float64 by Newton's method
// with dense gonum algebra on standardised features: an independent solver.
func newtonLogistic(ds *Dataset, C float64) ([]float64, float64) {
	rows := ds.Labelled()
	a := denseRows(ds.X, rows)
	n, d := a.Dims()
	mean, std := make([]float64, d), make([]float64, d)
	for j := range d {
		col := mat.Col(nil, j, a)
		mean[j] = stat.Mean(col, nil)
		std[j] = math.Sqrt(stat.PopVariance(col, nil))
	}
	z := mat.NewDense(n, d+1, nil) // last column: intercept
	y := make([]float64, n)
	for i := range n {
		for j := range d {
			z.Set(i, j, (a.At(i, j)-mean[j])/std[j])
		}
		z.Set(i, d, 1)
		if ds.Labels[rows[i]] == Positive {
			y[i] = 1
		}
	}
	beta := make([]float64, d+1)
	for range 50 {
		g := make([]float64, d+1)
		h := mat.NewSymDense(d+1, nil)
		for i := range n {
			zi := z.RawRowView(i)
			p := 1 / (1 + math.Exp(-floats.Dot(zi, beta)))
			floats.AddScaled(g, (p-y[i])/float64(n), zi)
			wgt := p * (1 - p) / float64(n)
			for j := range d + 1 {
				for k := 0; k <= j; k++ {
					h.SetSym(j, k, h.At(j, k)+wgt*zi[j]*zi[k])
				}
			}
		}
		for j := range d {
			g[j] += beta[j] / (C * float64(n))
			h.SetSym(j, j, h.At(j, j)+1/(C*float64(n)))
		}
		var step mat.VecDense
		if err := step.SolveVec(h, mat.NewVecDense(d+1, g)); err != nil {
			panic(err)
		}
		floats.Sub(beta, mat.Col(nil, 0, &step))
	}
	return beta[:d], beta[d]
}

func TestLogisticMatchesNewton(t *testing.T) {
	shift := []float64{0.6, -0.3, 0, 0.2, 0, 0}
	ds, _ := gaussianData(7, 180, 220, len(shift), shift)
	for _, C := range []float64{0.01, 0.3, 10} {
		for _, w := range []int{1, 2, 3} {
			p, err := Logistic{C: C, Tol: 1e-8, Workers: w}.Fit(ds)
			require.NoError(t, err)
			wantW, wantB := newtonLogistic(ds, C)
			tol := 1e-6 * floats.Norm(wantW, math.Inf(1))
			require.True(t, floats.EqualApprox(wantW, p.Weights, tol), "C=%g workers=%d\n%v\n%v", C, w, wantW, p.Weights)
			require.InDelta(t, wantB, p.Bias, tol, "C=%g workers=%d grad %g iters %g", C, w, p.Training.Params["gradient"], p.Training.Params["iterations"])
			require.Less(t, p.Training.Params["gradient"], 1e-6)
			require.Equal(t, C, p.Training.Params["C"])
		}
	}
}

func TestLogisticGradient(t *testing.T) {
	shift := []float64{1, 0, 0, 0.5, 0}
	ds, _ := gaussianData(11, 70, 90, 5, shift)
	rows := ds.Labelled()
	data := &logisticData{x: ds.X, rows: rows, target: ds.Positives(rows), fold: make([]int, len(rows)), folds: 1}
	means, scales := foldMoments(data, 2)
	ls := newLockstep(data, 1, 2)
	ob := newObjective(5, -1, len(rows), means[1], scales[1], false)
	ob.invC = 1 / 0.7
	r := rand.New(rand.NewPCG(1, 1))
	x := make([]float64, 6)
	for i := range x {
		x[i] = r.NormFloat64()
	}
	ls.evaluate(ob, x)
	grad := append([]float64{}, ob.grad...)
	f := func(x []float64) float64 {
		ls.evaluate(ob, append([]float64{}, x...))
		return ob.f
	}
	const h = 1e-4
	for i := range x {
		xp := append([]float64{}, x...)
		xm := append([]float64{}, x...)
		xp[i] += h
		xm[i] -= h
		fd := (f(xp) - f(xm)) / (2 * h)
		assert.InDelta(t, fd, grad[i], 1e-4*math.Max(1, math.Abs(fd)), "component %d", i)
	}
	// The standardisation is the rows' population mean and deviation.
	for j := range 5 {
		col := make([]float64, len(rows))
		for k, i := range rows {
			col[k] = float64(ds.X.At(i, j))
		}
		assert.InDelta(t, stat.Mean(col, nil), means[1][j], 1e-9)
		assert.InDelta(t, math.Sqrt(stat.PopVariance(col, nil)), scales[1][j], 1e-9)
	}
}

// TestFoldMoments checks the per-fold standardisation against direct
// computation on the rows outside each fold.
func TestFoldMoments(t *testing.T) {
	ds, _ := gaussianData(13, 40, 60, 4, []float64{1, 2, 3, 4})
	rows := ds.Labelled()
	data := &logisticData{x: ds.X, rows: rows, target: ds.Positives(rows), fold: make([]int, len(rows)), folds: 3}
	for i := range data.fold {
		data.fold[i] = i % 3
	}
	means, scales := foldMoments(data, 2)
	for ex := 0; ex <= 3; ex++ {
		var idx []int
		for i, r := range rows {
			if data.fold[i] != ex {
				idx = append(idx, r)
			}
		}
		mean, std := ds.X.colMoments(idx)
		require.True(t, floats.EqualApprox(mean, means[ex], 1e-9))
		require.True(t, floats.EqualApprox(std, scales[ex], 1e-9))
	}
}

func TestLogisticChoosesC(t *testing.T) {
	shift := make([]float64, 20)
	shift[0], shift[3] = 2.5, 1.5
	ds, _ := gaussianData(5, 150, 150, 20, shift)
	ds.Labels[3] = Unknown // unknown rows are ignored
	p, err := Logistic{Folds: 4, Seed: 1}.Fit(ds)
	require.NoError(t, err)
	assert.Contains(t, DefaultCs, p.Training.Params["C"])
	assert.Equal(t, 4, p.Training.CVFolds)
	assert.Greater(t, p.Training.CVAUROC, 0.8)
	assert.Less(t, p.Training.CVLow, p.Training.CVAUROC+0.02)
	assert.Greater(t, p.Training.CVHigh, p.Training.CVAUROC-0.02)
	assert.Equal(t, 299, p.Training.Positives+p.Training.Negatives)
	require.NotNil(t, p.Normalization)

	_, err = Logistic{C: -1}.Fit(ds)
	require.Error(t, err)
	_, err = Logistic{Cs: []float64{0, 1}}.Fit(ds)
	require.Error(t, err)
}

func TestContrast(t *testing.T) {
	// Two pairs: pair a differs by (2, 0, 0), pair b by (0, 2, 0); mean
	// difference (1, 1, 0), unit direction (1, 1, 0)/√2.
	x := NewMatrix(5, 3, []float32{
		3, 1, 1, // a+
		1, 1, 1, // a−
		0, 4, 2, // b+
		0, 2, 2, // b−
		9, 9, 9, // unknown: ignored
	})
	ds := NewDataset(x, []Label{Positive, Negative, Positive, Negative, Unknown}, []string{"a", "a", "b", "b", ""}, nil)
	p, err := Contrast{}.Fit(ds)
	require.NoError(t, err)
	s := 1 / math.Sqrt2
	require.True(t, floats.EqualApprox([]float64{s, s, 0}, p.Weights, 1e-12))
	// Centre: mean of midpoints (2,1,1) and (0,3,2) = (1, 2, 1.5).
	assert.InDelta(t, -(1+2)*s, p.Bias, 1e-12)
	assert.InDelta(t, 0, p.Score([]float32{1, 2, 1.5}), 1e-6)
	assert.InDelta(t, math.Sqrt2, p.Score([]float32{2, 3, 0}), 1e-6)
	assert.Equal(t, 2.0, p.Training.Params["pairs"])

	bad := NewDataset(x, []Label{Positive, Negative, Positive, Positive, Unknown}, []string{"a", "a", "b", "b", ""}, nil)
	_, err = Contrast{}.Fit(bad)
	require.ErrorContains(t, err, `pair "b" has 2 positive and 0 negative`)

	// Orient flips a probe that ranks the classes backwards.
	rev := NewDataset(x, []Label{Negative, Positive, Negative, Positive, Unknown}, nil, nil)
	flipped, err := p.Orient(rev)
	require.NoError(t, err)
	require.True(t, flipped)
	require.InDelta(t, -s, p.Weights[0], 1e-12)
	auc, err := AUROC(p.ScoreRows(rev.X, rev.Labelled(), nil), rev.Positives(rev.Labelled()))
	require.NoError(t, err)
	require.Equal(t, 1.0, auc)
	require.Len(t, p.Training.Notes, 1)
}

func TestMahalanobisAgainstDistmv(t *testing.T) {
	for _, c := range []struct {
		n, d   int
		shrink float64
	}{{400, 6, -1}, {400, 6, 0.2}, {30, 40, 0}, {200, 10, 0}} {
		ds, _ := gaussianData(uint64(c.n+c.d), 10, c.n, c.d, make([]float64, c.d))
		p, err := Mahalanobis{Shrinkage: c.shrink}.Fit(ds)
		require.NoError(t, err)
		require.True(t, p.IsQuadratic())

		// Independent estimate: covariance of the clean rows, shrunk.
		clean := ds.WithLabel(Negative)
		a := denseRows(ds.X, clean)
		cov := refCovariance(a)
		delta, m := refLedoitWolf(centre(a))
		switch {
		case c.shrink > 0:
			delta = c.shrink
		case c.shrink < 0:
			delta = 0
		}
		sigma := mat.NewSymDense(c.d, nil)
		for i := range c.d {
			for j := 0; j <= i; j++ {
				v := (1 - delta) * cov.At(i, j)
				if i == j {
					v += delta * m
				}
				sigma.SetSym(i, j, v)
			}
		}
		mu := make([]float64, c.d)
		for j := range mu {
			mu[j] = stat.Mean(mat.Col(nil, j, a), nil)
		}
		normal, ok := distmv.NewNormal(mu, sigma, nil)
		require.True(t, ok)
		var chol mat.Cholesky
		require.True(t, chol.Factorize(sigma))
		logp0 := normal.LogProb(mu)
		r := rand.New(rand.NewPCG(2, 2))
		for trial := 0; trial < 20; trial++ {
			x := make([]float32, c.d)
			xf := make([]float64, c.d)
			for j := range x {
				xf[j] = mu[j] + 2*r.NormFloat64()
				x[j] = float32(xf[j])
				xf[j] = float64(x[j])
			}
			// distmv: log p(x) − log p(μ) = −½ D².
			want := -2 * (normal.LogProb(xf) - logp0)
			got := p.Score(x)
			require.InEpsilon(t, want, got, 2e-4, "n=%d d=%d δ=%g", c.n, c.d, c.shrink)
			dist := stat.Mahalanobis(mat.NewVecDense(c.d, xf), mat.NewVecDense(c.d, mu), &chol)
			require.InEpsilon(t, dist*dist, got, 2e-4)
		}
	}
	// Fitted on clean rows only: adding positives does not change the probe.
	ds, _ := gaussianData(3, 50, 100, 5, []float64{5, 5, 5, 5, 5})
	p1, err := Mahalanobis{}.Fit(ds)
	require.NoError(t, err)
	p2, err := Mahalanobis{}.Fit(ds.Subset(ds.WithLabel(Negative)))
	require.NoError(t, err)
	require.Equal(t, p1.Quadratic, p2.Quadratic)
	require.Equal(t, p1.Normalization, p2.Normalization)
	// And it separates the shifted positives.
	auc, err := AUROC(p1.ScoreRows(ds.X, nil, nil), ds.Positives(nil))
	require.NoError(t, err)
	require.Greater(t, auc, 0.99)

	_, err = Mahalanobis{}.Fit(NewDataset(NewMatrix(2, 2, nil), []Label{Positive, Negative}, nil, nil))
	require.ErrorContains(t, err, "at least 2 clean")
	_, err = Mahalanobis{Shrinkage: -1}.Fit(NewDataset(NewMatrix(3, 5, nil), []Label{Negative, Negative, Negative}, nil, nil))
	require.ErrorIs(t, err, errSingular)
}

func TestSpectral(t *testing.T) {
	// Against gonum's SVD of the centred matrix.
	ds, _ := gaussianData(8, 0, 120, 15, make([]float64, 15))
	p, err := Spectral{}.Fit(ds)
	require.NoError(t, err)
	a := centre(denseRows(ds.X, ds.Where(func(int) bool { return true })))
	var svd mat.SVD
	require.True(t, svd.Factorize(a, mat.SVDThin))
	var v mat.Dense
	svd.VTo(&v)
	top := mat.Col(nil, 0, &v)
	got := make([]float64, 15)
	for j, u := range p.Quadratic.Components[0] {
		got[j] = float64(u)
	}
	require.InDelta(t, 1, math.Abs(cosine(top, got)), 1e-6)
	sv := svd.Values(nil)
	require.InEpsilon(t, sv[0]*sv[0]/120, p.Training.Params["eigenvalue"], 1e-6)

	// Planted poison (Tran et al.): 5% of rows carry a shift along one
	// direction; their spectral scores rank at the top.
	const n, d = 1000, 32
	r := rand.New(rand.NewPCG(4, 4))
	x := NewMatrix(n, d, nil)
	poison := make([]bool, n)
	for i := range n {
		poison[i] = i%20 == 0
		for j := range d {
			x.Row(i)[j] = float32(r.NormFloat64())
		}
		if poison[i] {
			for j := range 4 {
				x.Row(i)[j] += 3
			}
		}
	}
	sp, err := Spectral{Seed: 3}.Fit(NewDataset(x, nil, nil, nil))
	require.NoError(t, err)
	auc, err := AUROC(sp.ScoreRows(x, nil, nil), poison)
	require.NoError(t, err)
	require.Greater(t, auc, 0.97)
}

func TestGroupKFold(t *testing.T) {
	n := 103
	x := NewMatrix(n, 1, nil)
	labels := make([]Label, n)
	groups := make([]string, n)
	for i := range n {
		labels[i] = []Label{Negative, Positive, Negative, Unknown}[i%4]
		if i%7 != 0 {
			groups[i] = fmt.Sprint("g", i%17) // 17 groups …
		} // … plus rows without a group, each its own
	}
	ds := NewDataset(x, labels, groups, nil)
	for _, k := range []int{2, 3, 5, 10} {
		folds, err := GroupKFold(ds, nil, k, 1)
		require.NoError(t, err)
		require.Len(t, folds, k)
		seen := make([]int, n)
		for _, f := range folds {
			require.Len(t, f.Train, n-len(f.Test))
			testGroups := map[string]bool{}
			pos := 0
			for _, i := range f.Test {
				seen[i]++
				testGroups[groupKey(ds, i)] = true
				if labels[i] == Positive {
					pos++
				}
			}
			for _, i := range f.Train {
				require.False(t, testGroups[groupKey(ds, i)], "group %q in train and test", groupKey(ds, i))
			}
			require.Greater(t, pos, 0, "every fold has positives")
			require.InDelta(t, n/k, len(f.Test), float64(n)/float64(k)/2+8)
		}
		for i, c := range seen {
			require.Equal(t, 1, c, "row %d tested once", i)
		}
		again, err := GroupKFold(ds, nil, k, 1)
		require.NoError(t, err)
		require.Equal(t, folds, again, "deterministic for a seed")
	}
	_, err := GroupKFold(NewDataset(NewMatrix(3, 1, nil), nil, []string{"a", "a", "b"}, nil), nil, 3, 1)
	require.ErrorContains(t, err, "at least 3 groups, have 2")
	_, err = GroupKFold(ds, nil, 1, 1)
	require.ErrorContains(t, err, "at least 2 folds")
	_, err = Logistic{Folds: 1}.Fit(ds.Subset(ds.Labelled()))
	require.ErrorContains(t, err, "at least 2 folds")
}

func TestCrossValidate(t *testing.T) {
	shift := make([]float64, 10)
	shift[0], shift[1] = 3, 3
	ds, _ := gaussianData(12, 100, 100, 10, shift)
	for _, m := range []Method{MeanDiff{}, LDA{}, Logistic{C: 1}, Mahalanobis{}} {
		cv, err := CrossValidate(m, ds, 5, 1)
		require.NoError(t, err, m.Name())
		require.Len(t, cv.FoldAUROC, 5)
		require.Len(t, cv.Scores, 200)
		require.Greater(t, cv.MeanAUROC, 0.8, m.Name())
		require.LessOrEqual(t, cv.Pooled.Low, cv.Pooled.AUROC)
		require.GreaterOrEqual(t, cv.Pooled.High, cv.Pooled.AUROC)
	}
}

func TestNewMethod(t *testing.T) {
	for _, name := range MethodNames() {
		m, err := NewMethod(name, Options{C: 2, Shrinkage: 0.1})
		require.NoError(t, err)
		require.Equal(t, name, m.Name())
	}
	m, _ := NewMethod(MethodLogistic, Options{C: 2, Folds: 3})
	require.Equal(t, Logistic{C: 2, Folds: 3}, m)
	_, err := NewMethod("svm", Options{})
	require.ErrorContains(t, err, "unknown method")
}

// TestSelectCFoldsMatchCrossValidate: with a single candidate C, selectC's fold AUROCs are
// those of CrossValidate fitting Logistic at that C on the same grouped folds (up to the
// solvers' tolerances), and the pooled interval brackets its mean; cv_passes counts the
// shared passes over the data.
func TestSelectCFoldsMatchCrossValidate(t *testing.T) {
	shift := make([]float64, 12)
	shift[0], shift[5] = 1.2, 0.8
	ds, _ := gaussianData(9, 120, 120, 12, shift)
	pos, neg, err := classRows(ds, MethodLogistic)
	require.NoError(t, err)
	rows := append(append([]int{}, pos...), neg...)
	slices.Sort(rows)
	target := make([]bool, len(rows))
	for i, r := range rows {
		target[i] = ds.Labels[r] == Positive
	}
	for _, C := range []float64{1e-3, 1e-1} {
		l := Logistic{Cs: []float64{C}, Folds: 4, Seed: 3}
		sel, err := l.selectC(ds, rows, target, 1e-3, 1000) // as Fit calls it: 10 × its default tolerance
		require.NoError(t, err)
		ref, err := CrossValidate(Logistic{C: C}, ds, 4, 3)
		require.NoError(t, err)
		require.Len(t, sel.cv.FoldAUROC, 4)
		for f := range ref.FoldAUROC {
			assert.InDelta(t, ref.FoldAUROC[f], sel.cv.FoldAUROC[f], 2e-3, "C %g fold %d", C, f)
		}
		assert.InDelta(t, ref.MeanAUROC, sel.cv.MeanAUROC, 2e-3)
		// The five problems share passes: at least as many as the slowest L-BFGS run needs
		// evaluations, not one per evaluation of every problem.
		assert.GreaterOrEqual(t, sel.passes, 5, "C %g", C)

		p, err := l.Fit(ds)
		require.NoError(t, err)
		assert.Equal(t, float64(sel.passes), p.Training.Params["cv_passes"])
	}
}

// TestOneStandardError picks from constructed fold AUROCs (candidates from small C up).
func TestOneStandardError(t *testing.T) {
	for _, tc := range []struct {
		name string
		aucs [][]float64
		want int
	}{
		// Best mean 0.90 at index 2, sd 0.02·√(4/3)… se = sd/2; index 1 (mean 0.895) is within.
		{"smaller C within one SE", [][]float64{{0.80, 0.82, 0.78, 0.80}, {0.88, 0.91, 0.89, 0.90}, {0.88, 0.92, 0.90, 0.90}}, 1},
		// Index 1 is 0.04 below the best with se ≈ 0.0082: not within; index 0 neither.
		{"best stays", [][]float64{{0.70, 0.70, 0.70, 0.70}, {0.86, 0.86, 0.86, 0.86}, {0.89, 0.91, 0.90, 0.90}}, 2},
		// The smallest qualifying C wins even past one that does not qualify.
		{"smallest qualifying", [][]float64{{0.90, 0.90, 0.90, 0.90}, {0.70, 0.70, 0.70, 0.70}, {0.89, 0.93, 0.89, 0.93}}, 0},
		{"best first", [][]float64{{0.95, 0.95, 0.95, 0.95}, {0.90, 0.90, 0.90, 0.90}}, 0},
		{"ties go to the smaller C", [][]float64{{0.9, 0.9}, {0.9, 0.9}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, oneStandardError(tc.aucs))
		})
	}
}

// TestSpectralNonFinite: data with NaN or ±Inf are an error, not a panic inside gonum.
func TestSpectralNonFinite(t *testing.T) {
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		ds, _ := gaussianData(8, 0, 60, 6, make([]float64, 6))
		ds.X.Data[7] = bad
		_, err := Spectral{}.Fit(ds)
		require.ErrorContains(t, err, "non-finite", "%v", bad)
		_, err = TreeBaseline{}.Fit(ds)
		require.Error(t, err, "%v", bad)
	}
}
