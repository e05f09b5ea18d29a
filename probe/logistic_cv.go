package probe

// Choosing Logistic's C by grouped cross-validation.

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"gonum.org/v1/gonum/stat"
)

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
	sols, passes, err := l.solvePath(data, cs, means, scales, tol, maxIter)
	if err != nil {
		return nil, err
	}
	scores := heldoutScores(data, sols[:k], means, scales, l.Workers)
	positive := data.target
	aucs := make([][]float64, len(cs)) // [C][fold]
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
	}
	best := oneStandardError(aucs)
	bestMean := stat.Mean(aucs[best], nil)
	pooled, err := BootstrapAUROC(scores[best], positive, 0, 0.95, l.Seed)
	if err != nil {
		return nil, err
	}
	cv := &CVResult{Folds: k, FoldAUROC: aucs[best], MeanAUROC: bestMean, Pooled: pooled, Rows: data.rows, Scores: scores[best]}
	return &cSelection{C: cs[best], params: sols[k][best], mean: means[k], scale: scales[k], cv: cv, passes: passes}, nil
}

// oneStandardError picks a candidate by the one-standard-error rule. aucs[c] are the fold
// AUROCs of candidate c, candidates ordered from the most regularised (smallest C) up. With
// top the candidate of the best mean fold AUROC m and se = sd(aucs[top]) / √k its standard
// error over k folds, it returns the smallest c with mean(aucs[c]) ≥ m − se: the simplest
// model that is not measurably worse than the best (Hastie, Tibshirani & Friedman, The
// Elements of Statistical Learning, §7.10). Ties for the best mean go to the smaller C.
func oneStandardError(aucs [][]float64) int {
	means := make([]float64, len(aucs))
	top := 0
	for c, a := range aucs {
		means[c] = stat.Mean(a, nil)
		if means[c] > means[top] {
			top = c
		}
	}
	se := stat.StdDev(aucs[top], nil) / math.Sqrt(float64(len(aucs[top])))
	for c := range top {
		if means[c] >= means[top]-se {
			return c
		}
	}
	return top
}

// solvePath solves the K fold problems (each leaving its fold out) and the all-rows problem
// (index K) along the path of Cs, in lockstep, each C warm-started from the previous one.
// It returns sols[problem][C] and the number of passes made over the data.
func (l Logistic) solvePath(data *logisticData, cs []float64, means, scales [][]float64, tol float64, maxIter int) ([][][]float64, int, error) {
	k, dim := data.folds, data.x.Cols
	sols := make([][][]float64, k+1)
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
	return sols, ls.passes, errors.Join(errs...)
}

// heldoutScores scores every entry with its own fold's model, one per C: scores[C][entry].
func heldoutScores(data *logisticData, sols [][][]float64, means, scales [][]float64, workersWanted int) [][]float64 {
	dim := data.x.Cols
	type linear struct {
		v []float64
		c float64
	}
	models := make([][]linear, len(sols)) // [fold][C], on raw rows
	for f := range sols {
		for _, params := range sols[f] {
			m := linear{v: make([]float64, dim), c: params[dim]}
			for j := range dim {
				m.v[j] = params[j] / scales[f][j]
				m.c -= m.v[j] * means[f][j]
			}
			models[f] = append(models[f], m)
		}
	}
	scores := make([][]float64, len(sols[0]))
	for c := range scores {
		scores[c] = make([]float64, len(data.rows))
	}
	parallelFor(len(data.rows), workers(workersWanted, len(data.rows)/64), func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			row := data.x.Row(data.rows[i])
			for c, m := range models[data.fold[i]] {
				scores[c][i] = dotMixed(row, m.v) + m.c
			}
		}
	})
	return scores
}
