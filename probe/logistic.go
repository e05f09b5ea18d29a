package probe

import (
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/optimize"
)

// DefaultCs are the candidate inverse regularisation strengths that Logistic
// chooses from by grouped cross-validation.
var DefaultCs = []float64{1e-4, 1e-3, 1e-2, 1e-1, 1}

// Logistic is L2-regularised logistic regression on standardised features.
// With z = (x − μ)/σ (column means and standard deviations of the training
// rows; σ = 1 for a constant column) and y_i ∈ {−1, +1}, it minimises
//
//	f(w, b) = (1/n) Σ_i log(1 + exp(−y_i (w·z_i + b))) + ‖w‖² / (2·C·n),
//
// which has the same minimiser as scikit-learn's C·Σ_i loss_i + ½‖w‖² (the
// intercept is not penalised), with gonum's L-BFGS. The gradient is
//
//	∇_w f = (1/n) Σ_i (σ(m_i) − t_i)·z_i + w/(C·n),   ∂f/∂b = (1/n) Σ_i (σ(m_i) − t_i),
//
// where m_i = w·z_i + b, t_i ∈ {0, 1} and σ is the logistic function.
//
// The data are never copied or converted: with v = w/σ and c = b − v·μ the
// margin is m_i = v·x_i + c on the raw float32 row, and
// Σ_i r_i z_ij = (Σ_i r_i x_ij − μ_j Σ_i r_i)/σ_j, so one pass over the rows,
// split across Workers goroutines, computes the loss and the gradient: per
// row a dot product with v and an axpy into the gradient, four rows at a
// time, in float32, flushed to float64 every 256 rows. Float32 margins
// resolve the loss to about 1e-7 relative, enough for a gradient tolerance
// of 1e-5; for a smaller Tol, or if the line search stalls above Tol, the
// margins are accumulated in float64 from float64 weights instead. Memory
// beyond the data is O(Workers·K·d) for K simultaneous problems.
//
// When C is 0, C is chosen from Cs by grouped K-fold cross-validation
// (GroupKFold with Folds folds). The K fold problems and the problem on all
// rows each follow the path of Cs in increasing order, warm-starting every C
// from the previous solution, with a gradient tolerance of 10·Tol (held-out
// AUROC does not move at that precision) and float32 margins. The K+1 L-BFGS
// runs proceed in lockstep: each pass over the data evaluates every problem
// waiting for an evaluation, so cross-validation costs about as many passes
// as a single fit, each pass reading the data once and doing more arithmetic
// on each row while it is in cache. The chosen C is the smallest whose mean
// held-out AUROC is within one standard error (over folds) of the best mean
// (the one-standard-error rule: the most regularised model that is as good
// within noise), and the all-rows solution at that C is refined to Tol.
// The training summary records that mean fold AUROC and the bootstrap
// interval of the pooled out-of-fold scores at the chosen C. The estimate is
// slightly optimistic, as C was chosen on it; CrossValidate gives an unbiased
// one (a nested cross-validation).
type Logistic struct {
	// C is the inverse regularisation strength; 0 chooses it by grouped
	// cross-validation from Cs.
	C float64
	// Cs are the candidates (default DefaultCs).
	Cs []float64
	// Folds is the number of grouped folds (default 5).
	Folds int
	// Seed seeds the fold assignment.
	Seed uint64
	// Workers bounds the goroutines of a pass over the data (default
	// GOMAXPROCS).
	Workers int
	// Tol stops L-BFGS when the gradient's largest component is below it
	// (default 1e-4, scikit-learn's tol).
	Tol float64
	// MaxIter bounds the L-BFGS iterations of each C (default 1000).
	MaxIter int
}

// Name returns "logistic".
func (Logistic) Name() string { return MethodLogistic }

// foldMoments returns, for each fold f, the column means and standard
// deviations of the entries outside f, and at index folds those of all
// entries, in two passes: the overall mean, then per fold the sums of y and
// y² for y = x − mean (differences of near-equal means cancel benignly).
// Zero or negligible deviations become 1.
func foldMoments(data *logisticData, workersWanted int) (means, scales [][]float64) {
	d, k := data.x.Cols, data.folds
	n := len(data.rows)
	all := data.x.colMeans(data.rows)
	w := workers(workersWanted, n/64)
	type acc struct {
		sy, sy2 [][]float64
		cnt     []int
	}
	accs := make([]acc, w)
	parallelFor(n, w, func(wk, lo, hi int) {
		a := acc{sy: make([][]float64, k), sy2: make([][]float64, k), cnt: make([]int, k)}
		for f := range k {
			a.sy[f], a.sy2[f] = make([]float64, d), make([]float64, d)
		}
		for i := lo; i < hi; i++ {
			f := data.fold[i]
			a.cnt[f]++
			sy, sy2 := a.sy[f], a.sy2[f]
			for j, v := range data.x.Row(data.rows[i]) {
				y := float64(v) - all[j]
				sy[j] += y
				sy2[j] += y * y
			}
		}
		accs[wk] = a
	})
	means, scales = make([][]float64, k+1), make([][]float64, k+1)
	for ex := 0; ex <= k; ex++ {
		mean, scale := make([]float64, d), make([]float64, d)
		cnt := 0
		for _, a := range accs {
			for f := range k {
				if f == ex {
					continue
				}
				cnt += a.cnt[f]
				for j := range d {
					mean[j] += a.sy[f][j]
					scale[j] += a.sy2[f][j]
				}
			}
		}
		for j := range d {
			my := mean[j] / float64(cnt)
			mean[j] = all[j] + my
			s := sqrtPos(scale[j]/float64(cnt) - my*my)
			if !(s > 1e-12*math.Max(1, math.Abs(mean[j]))) {
				s = 1
			}
			scale[j] = s
		}
		means[ex], scales[ex] = mean, scale
	}
	return means, scales
}

// initParams returns (w = 0, b = logit of the positive rate of the entries
// outside fold exclude).
func initParams(data *logisticData, exclude int) []float64 {
	params := make([]float64, data.x.Cols+1)
	pos, n := 0, 0
	for i, t := range data.target {
		if data.fold[i] == exclude {
			continue
		}
		n++
		if t {
			pos++
		}
	}
	p := (float64(pos) + 0.5) / (float64(n) + 1)
	params[data.x.Cols] = math.Log(p / (1 - p))
	return params
}

// Fit fits the logistic regression to d's labelled rows.
func (l Logistic) Fit(d *Dataset) (*Probe, error) {
	pos, neg, err := classRows(d, MethodLogistic)
	if err != nil {
		return nil, err
	}
	if l.C < 0 || math.IsNaN(l.C) || math.IsInf(l.C, 0) {
		return nil, fmt.Errorf("logistic: C = %v must be positive", l.C)
	}
	tol := l.Tol
	if tol <= 0 {
		tol = 1e-4
	}
	maxIter := l.MaxIter
	if maxIter <= 0 {
		maxIter = 1000
	}
	rows := append(append([]int{}, pos...), neg...)
	slices.Sort(rows)
	target := make([]bool, len(rows))
	for i, r := range rows {
		target[i] = d.Labels[r] == Positive
	}
	full := &logisticData{x: d.X, rows: rows, target: target, fold: make([]int, len(rows)), folds: 1}
	p := newProbe(MethodLogistic, d)
	dim := d.X.Cols

	C := l.C
	var params, mean, scale []float64
	if C == 0 {
		sel, err := l.selectC(d, rows, target, tol*10, maxIter)
		if err != nil {
			return nil, err
		}
		C, params, mean, scale = sel.C, sel.params, sel.mean, sel.scale
		p.Training.SetCV(sel.cv)
		p.Training.setParam("cv_passes", float64(sel.passes))
	} else {
		means, scales := foldMoments(full, l.Workers)
		mean, scale = means[1], scales[1]
		params = initParams(full, -1)
	}
	// Float32 margins resolve the loss to about 1e-7, enough for gradient
	// tolerances down to about 1e-5; below that, or should the coarse run
	// stop short of Tol, float64 margins finish the job.
	coarse := tol >= 1e-5
	ls := newLockstep(full, 1, l.Workers)
	ob := newObjective(dim, -1, len(rows), mean, scale, coarse)
	res, err := ls.minimize(ob, C, params, tol, maxIter)
	evals := ob.evals
	if err == nil && coarse && gradNorm(res.Gradient) > tol {
		ob = newObjective(dim, -1, len(rows), mean, scale, false)
		res, err = ls.minimize(ob, C, params, tol, maxIter)
		evals += ob.evals
	}
	ls.leave()
	if err != nil {
		return nil, fmt.Errorf("logistic: C=%g: %w", C, err)
	}
	if g := gradNorm(res.Gradient); g > tol {
		p.Training.Notes = append(p.Training.Notes, fmt.Sprintf("L-BFGS stopped with gradient %.3g above the tolerance %.3g", g, tol))
	}
	if res.Status == optimize.IterationLimit {
		p.Training.Notes = append(p.Training.Notes, fmt.Sprintf("L-BFGS stopped at the iteration limit %d", maxIter))
	}
	p.Normalization = &Normalization{Mean: mean, Scale: scale}
	p.Weights = params[:dim:dim]
	p.Bias = params[dim]
	p.Training.setParam("C", C)
	p.Training.setParam("iterations", float64(res.Stats.MajorIterations))
	p.Training.setParam("evaluations", float64(evals))
	p.Training.setParam("gradient", gradNorm(res.Gradient))
	return p, nil
}
