package probe

// The solver behind Logistic: the objective, and the lockstep scheduler that lets several
// L-BFGS runs share each pass over the data.

import (
	"errors"
	"math"
	"slices"
	"sync"

	"gonum.org/v1/gonum/optimize"
)

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
		ls.passes++
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
	ls.passes++
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
