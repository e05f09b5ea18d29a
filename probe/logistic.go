package probe

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"gonum.org/v1/gonum/optimize"
	"gonum.org/v1/gonum/stat"
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

// logisticData are the labelled rows that the problems of one fit share.
type logisticData struct {
	x      *Matrix
	rows   []int  // dataset row of each entry
	target []bool // per entry: positive
	fold   []int  // per entry: its cross-validation fold (0 without CV)
	folds  int    // number of folds (1 without CV)
}

// objective is one logistic regression problem: the entries whose fold is
// not exclude (every entry if exclude < 0), standardised with mean and scale.
type objective struct {
	exclude     int
	n           float64 // training rows
	mean, scale []float64
	invC        float64

	// the point being evaluated, and the result
	v     []float64 // w/σ
	v32   []float32 // w/σ in float32, for coarse objectives (nil: precise)
	c     float64   // b − v·μ
	f     float64
	grad  []float64
	at    []float64 // params of the cached f and grad
	done  chan struct{}
	evals int
}

// newObjective returns the problem on the entries outside fold exclude. A
// coarse objective computes margins with float32 dot products (1.4 to 1.6
// times faster per pass, measured; its loss precise to about 1e-7 relative,
// enough for gradient tolerances down to about 1e-5); a precise one
// accumulates them in float64 from float64 weights.
func newObjective(d int, exclude int, n int, mean, scale []float64, coarse bool) *objective {
	ob := &objective{
		exclude: exclude, n: float64(n), mean: mean, scale: scale,
		v: make([]float64, d), grad: make([]float64, d+1),
	}
	if coarse {
		ob.v32 = make([]float32, d)
	}
	return ob
}

// lockstep evaluates the objectives of several concurrent L-BFGS runs in
// shared passes over the data: a run asking for an evaluation waits until
// every active run has asked, and the last to ask performs the pass for all.
type lockstep struct {
	data    *logisticData
	workers int

	passes  int // passes run, for the training summary
	mu      sync.Mutex
	active  int
	waiting []*objective

	// per worker, per objective of a batch: gradient accumulators
	acc32 [][][]float32
	acc64 [][][]float64
	sums  [][][2]float64 // Σ r and Σ loss
}

func newLockstep(data *logisticData, active, workersWanted int) *lockstep {
	w := workers(workersWanted, len(data.rows)/64)
	d := data.x.Cols
	ls := &lockstep{data: data, workers: w, active: active,
		acc32: make([][][]float32, w), acc64: make([][][]float64, w), sums: make([][][2]float64, w)}
	for k := range w {
		ls.acc32[k] = make([][]float32, active)
		ls.acc64[k] = make([][]float64, active)
		ls.sums[k] = make([][2]float64, active)
		for t := range active {
			ls.acc32[k][t] = make([]float32, d)
			ls.acc64[k][t] = make([]float64, d)
		}
	}
	return ls
}

// evaluate computes ob.f and ob.grad at params, sharing a pass with the other
// active runs.
func (ls *lockstep) evaluate(ob *objective, params []float64) {
	if ob.at != nil && slices.Equal(ob.at, params) {
		return
	}
	d := ls.data.x.Cols
	w, b := params[:d], params[d]
	ob.c = b
	for j := range w {
		ob.v[j] = w[j] / ob.scale[j]
		ob.c -= ob.v[j] * ob.mean[j]
	}
	if ob.v32 != nil {
		for j, v := range ob.v {
			ob.v32[j] = float32(v)
		}
	}
	ob.evals++
	ls.mu.Lock()
	ob.done = make(chan struct{})
	ls.waiting = append(ls.waiting, ob)
	if len(ls.waiting) < ls.active {
		ls.mu.Unlock()
		<-ob.done
	} else {
		batch := ls.waiting
		ls.waiting = nil
		ls.mu.Unlock()
		ls.run(batch)
	}
	ls.finish(ob, params)
}

// leave removes a finished run; if the others are all waiting, it runs their
// pass.
func (ls *lockstep) leave() {
	ls.mu.Lock()
	ls.active--
	if ls.active == 0 || len(ls.waiting) < ls.active {
		ls.mu.Unlock()
		return
	}
	batch := ls.waiting
	ls.waiting = nil
	ls.mu.Unlock()
	ls.run(batch)
}

// run performs one pass over the data for the batch, then releases it. Rows
// are taken four at a time, and each block of four is processed in column
// chunks of 1,024 values (16 KiB for four rows) so that the chunk stays in
// the L1 cache while every problem of the batch uses it: first the margins
// (dot4, or float64 dot products for a precise problem), then the gradients
// (axpy4, which reads and writes each accumulator once per four rows). A row
// outside a problem's training set gets coefficient 0.
func (ls *lockstep) run(batch []*objective) {
	data := ls.data
	d := data.x.Cols
	const flush, chunk = 256, 1024
	parallelFor(len(data.rows), ls.workers, func(k, lo, hi int) {
		a32, a64, sums := ls.acc32[k], ls.acc64[k], ls.sums[k]
		for t := range batch {
			clear(a32[t])
			clear(a64[t])
			sums[t] = [2]float64{}
		}
		zero := make([]float32, d)
		margins := make([][4]float64, len(batch))
		coefs := make([][4]float32, len(batch))
		var xb, xc [4][]float32
		since := 0
		for i := lo; i < hi; i += 4 {
			nb := min(4, hi-i)
			for b := range xb {
				if b < nb {
					xb[b] = data.x.Row(data.rows[i+b])
				} else {
					xb[b] = zero
				}
			}
			for t, ob := range batch {
				margins[t] = [4]float64{ob.c, ob.c, ob.c, ob.c}
				if ob.v32 == nil {
					for b := range nb {
						margins[t][b] += dotMixed(xb[b], ob.v)
					}
				}
			}
			for c0 := 0; c0 < d; c0 += chunk {
				c1 := min(d, c0+chunk)
				for b := range xc {
					xc[b] = xb[b][c0:c1]
				}
				for t, ob := range batch {
					if ob.v32 != nil {
						s := dot4(&xc, ob.v32[c0:c1])
						for b := range s {
							margins[t][b] += float64(s[b])
						}
					}
				}
			}
			for t, ob := range batch {
				coefs[t] = [4]float32{}
				for b := range nb {
					if data.fold[i+b] == ob.exclude {
						continue
					}
					m := margins[t][b]
					p := sigmoid(m)
					if data.target[i+b] {
						sums[t][1] += softplus(-m)
						p--
					} else {
						sums[t][1] += softplus(m)
					}
					sums[t][0] += p
					coefs[t][b] = float32(p)
				}
			}
			for c0 := 0; c0 < d; c0 += chunk {
				c1 := min(d, c0+chunk)
				for b := range xc {
					xc[b] = xb[b][c0:c1]
				}
				for t := range batch {
					axpy4(&coefs[t], &xc, a32[t][c0:c1])
				}
			}
			since += nb
			if since >= flush || i+nb >= hi {
				for t := range batch {
					for j, v := range a32[t] {
						a64[t][j] += float64(v)
					}
					clear(a32[t])
				}
				since = 0
			}
		}
	})
	for t, ob := range batch {
		var sr, loss float64
		for k := range ls.workers {
			sr += ls.sums[k][t][0]
			loss += ls.sums[k][t][1]
		}
		// ob.grad holds Σ r x for now; finish() completes it.
		for j := range ob.v {
			var gx float64
			for k := range ls.workers {
				gx += ls.acc64[k][t][j]
			}
			ob.grad[j] = gx
		}
		ob.grad[len(ob.v)] = sr
		ob.f = loss
	}
	for _, ob := range batch {
		close(ob.done)
	}
}

// finish turns the sums of a pass into f and ∇f at params.
func (ls *lockstep) finish(ob *objective, params []float64) {
	d := len(ob.v)
	w := params[:d]
	n := ob.n
	sr := ob.grad[d]
	var ww float64
	for j := range d {
		ob.grad[j] = (ob.grad[j]-ob.mean[j]*sr)/ob.scale[j]/n + w[j]*ob.invC/n
		ww += w[j] * w[j]
	}
	ob.grad[d] = sr / n
	ob.f = ob.f/n + ww*ob.invC/(2*n)
	ob.at = append(ob.at[:0], params...)
}

// softplus returns log(1 + e^u) without overflow.
func softplus(u float64) float64 {
	if u > 0 {
		return u + math.Log1p(math.Exp(-u))
	}
	return math.Log1p(math.Exp(u))
}

// sigmoid returns 1/(1 + e^−u).
func sigmoid(u float64) float64 {
	if u >= 0 {
		return 1 / (1 + math.Exp(-u))
	}
	e := math.Exp(u)
	return e / (1 + e)
}

// minimize runs L-BFGS on ob for C from params, which it overwrites with the
// solution.
//
// The gradient is accumulated in float32 blocks, so it is precise to about
// 1e-7 of its terms; should the line search fail where no further decrease
// can be resolved, that point is accepted as converged.
func (ls *lockstep) minimize(ob *objective, C float64, params []float64, tol float64, maxIter int) (*optimize.Result, error) {
	ob.invC = 1 / C
	ob.at = nil
	problem := optimize.Problem{
		Func: func(x []float64) float64 {
			ls.evaluate(ob, x)
			return ob.f
		},
		Grad: func(grad, x []float64) {
			ls.evaluate(ob, x)
			copy(grad, ob.grad)
		},
	}
	settings := &optimize.Settings{
		GradientThreshold: tol,
		MajorIterations:   maxIter,
		Converger:         &optimize.FunctionConverge{Relative: 1e-10, Iterations: 10},
	}
	res, err := optimize.Minimize(problem, params, settings, &optimize.LBFGS{Store: 20})
	if res == nil {
		return nil, err
	}
	if err != nil && !errors.Is(err, optimize.ErrLinesearcherFailure) && res.Status != optimize.IterationLimit {
		return nil, err
	}
	if !finite(res.X) {
		return nil, errors.New("solver diverged")
	}
	copy(params, res.X)
	return res, nil
}

// gradNorm returns the largest absolute component of g.
func gradNorm(g []float64) float64 {
	var m float64
	for _, v := range g {
		m = math.Max(m, math.Abs(v))
	}
	return m
}

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

type cSelection struct {
	C           float64
	params      []float64 // all-rows solution at C, to be refined
	mean, scale []float64 // all-rows standardisation
	cv          *CVResult
	passes      int // passes over the data
}

// selectC chooses C by grouped cross-validation: the fold problems and the
// all-rows problem follow the path of Cs in lockstep.
func (l Logistic) selectC(d *Dataset, rows []int, target []bool, tol float64, maxIter int) (*cSelection, error) {
	cs := l.Cs
	if len(cs) == 0 {
		cs = DefaultCs
	}
	cs = slices.Clone(cs)
	slices.Sort(cs)
	if !(cs[0] > 0) || math.IsInf(cs[len(cs)-1], 0) {
		return nil, fmt.Errorf("logistic: candidate Cs %v must be positive and finite", cs)
	}
	k := l.Folds
	if k == 0 {
		k = 5
	}
	folds, err := GroupKFold(d, rows, k, l.Seed)
	if err != nil {
		return nil, fmt.Errorf("logistic: choosing C: %w", err)
	}
	data := &logisticData{x: d.X, rows: rows, target: target, fold: make([]int, len(rows)), folds: k}
	entry := make(map[int]int, len(rows))
	for i, r := range rows {
		entry[r] = i
	}
	for f, fold := range folds {
		for _, r := range fold.Test {
			data.fold[entry[r]] = f
		}
	}
	means, scales := foldMoments(data, l.Workers)
	dim := d.X.Cols

	// K fold problems (excluding their fold) and the all-rows problem.
	sols := make([][][]float64, k+1) // [problem][C] params
	errs := make([]error, k+1)
	ls := newLockstep(data, k+1, l.Workers)
	var wg sync.WaitGroup
	for f := 0; f <= k; f++ {
		exclude := f
		if f == k {
			exclude = -1
		}
		ntrain := 0
		for _, g := range data.fold {
			if g != exclude {
				ntrain++
			}
		}
		ob := newObjective(dim, exclude, ntrain, means[f], scales[f], true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ls.leave()
			params := initParams(data, exclude)
			for _, C := range cs {
				if _, err := ls.minimize(ob, C, params, tol, maxIter); err != nil {
					errs[f] = fmt.Errorf("logistic: fold %d, C=%g: %w", f+1, C, err)
					return
				}
				sols[f] = append(sols[f], slices.Clone(params))
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	// Held-out scores: each entry by its own fold's models, one per C.
	type linear struct {
		v []float64
		c float64
	}
	models := make([][]linear, k) // [fold][C]
	for f := range k {
		for _, params := range sols[f] {
			m := linear{v: make([]float64, dim), c: params[dim]}
			for j := range dim {
				m.v[j] = params[j] / scales[f][j]
				m.c -= m.v[j] * means[f][j]
			}
			models[f] = append(models[f], m)
		}
	}
	scores := make([][]float64, len(cs)) // [C][entry]
	for c := range scores {
		scores[c] = make([]float64, len(data.rows))
	}
	parallelFor(len(data.rows), workers(l.Workers, len(data.rows)/64), func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			row := d.X.Row(data.rows[i])
			for c, m := range models[data.fold[i]] {
				scores[c][i] = dotMixed(row, m.v) + m.c
			}
		}
	})
	aucs := make([][]float64, len(cs))
	meanAUC := make([]float64, len(cs))
	positive := data.target
	top := 0
	for c := range cs {
		for f, fold := range folds {
			var s []float64
			var cl []bool
			for _, r := range fold.Test {
				s = append(s, scores[c][entry[r]])
				cl = append(cl, positive[entry[r]])
			}
			auc, err := AUROC(s, cl)
			if err != nil {
				return nil, fmt.Errorf("logistic: choosing C: fold %d: %w (use fewer folds)", f+1, err)
			}
			aucs[c] = append(aucs[c], auc)
		}
		meanAUC[c] = stat.Mean(aucs[c], nil)
		if meanAUC[c] > meanAUC[top] {
			top = c
		}
	}
	// One-standard-error rule: the smallest C within one standard error of
	// the best mean fold AUROC.
	se := stat.StdDev(aucs[top], nil) / math.Sqrt(float64(k))
	best := top
	for c := top - 1; c >= 0; c-- {
		if meanAUC[c] >= meanAUC[top]-se {
			best = c
		}
	}
	bestMean := meanAUC[best]
	pooled, err := BootstrapAUROC(scores[best], positive, 0, 0.95, l.Seed)
	if err != nil {
		return nil, err
	}
	cv := &CVResult{Folds: k, FoldAUROC: aucs[best], MeanAUROC: bestMean, Pooled: pooled, Rows: data.rows, Scores: scores[best]}
	return &cSelection{C: cs[best], params: sols[k][best], mean: means[k], scale: scales[k], cv: cv, passes: ls.passes}, nil
}
