package probe

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
)

// Fold is one split of a cross-validation: the row indices to train on and
// the row indices to test on.
type Fold struct {
	Train []int
	Test  []int
}

// groupKey is the unit that grouped splitting keeps together: the row's
// group, or its example id when it has none (so the token rows of one prompt
// stay together).
func groupKey(d *Dataset, i int) string {
	if d.Groups[i] != "" {
		return "g:" + d.Groups[i]
	}
	return "id:" + d.IDs[i]
}

// groupName returns the group or id that a groupKey was made from.
func groupName(key string) string {
	_, name, _ := strings.Cut(key, ":")
	return name
}

// GroupKFold splits the rows idx of d (all rows if nil) into k folds such
// that no group is in two folds: every row of a group is tested in the same
// fold, and trained on in the others. Rows without a group are grouped by
// example id. Groups are shuffled with seed, then dealt, largest first, to
// the fold that so far holds the smallest share of the labels the group
// brings (positive, negative, unknown): the folds come out balanced in size
// and stratified by label as far as the groups allow.
//
// It returns an error if k < 2 or there are fewer groups than folds.
func GroupKFold(d *Dataset, idx []int, k int, seed uint64) ([]Fold, error) {
	if k < 2 {
		return nil, fmt.Errorf("grouped cross-validation needs at least 2 folds, not %d", k)
	}
	if idx == nil {
		idx = d.Where(func(int) bool { return true })
	}
	type group struct {
		rows   []int
		counts [3]int // by Label
	}
	byKey := map[string]*group{}
	var keys []string
	var total [3]int
	for _, i := range idx {
		key := groupKey(d, i)
		g, ok := byKey[key]
		if !ok {
			g = &group{}
			byKey[key] = g
			keys = append(keys, key)
		}
		g.rows = append(g.rows, i)
		g.counts[d.Labels[i]]++
		total[d.Labels[i]]++
	}
	if len(keys) < k {
		return nil, fmt.Errorf("grouped %d-fold cross-validation needs at least %d groups, have %d", k, k, len(keys))
	}
	slices.Sort(keys) // map order is random; start from a fixed order
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	rng.Shuffle(len(keys), func(a, b int) { keys[a], keys[b] = keys[b], keys[a] })
	slices.SortStableFunc(keys, func(a, b string) int { return cmp.Compare(len(byKey[b].rows), len(byKey[a].rows)) })

	var load [][3]int = make([][3]int, k)
	size := make([]int, k)
	tests := make([][]int, k)
	for _, key := range keys {
		g := byKey[key]
		best, bestCost := 0, 0.0
		for f := 0; f < k; f++ {
			var cost float64
			for c := range 3 {
				if g.counts[c] > 0 {
					cost += float64(g.counts[c]) * float64(load[f][c]) / float64(total[c])
				}
			}
			if f == 0 || cost < bestCost || (cost == bestCost && size[f] < size[best]) {
				best, bestCost = f, cost
			}
		}
		for c := range 3 {
			load[best][c] += g.counts[c]
		}
		size[best] += len(g.rows)
		tests[best] = append(tests[best], g.rows...)
	}
	folds := make([]Fold, k)
	for f := range folds {
		slices.Sort(tests[f])
		folds[f].Test = tests[f]
		for g := range folds {
			if g != f {
				folds[f].Train = append(folds[f].Train, tests[g]...)
			}
		}
		slices.Sort(folds[f].Train)
	}
	return folds, nil
}

// CVResult is the outcome of a cross-validation.
type CVResult struct {
	Folds     int       `json:"folds"`
	FoldAUROC []float64 `json:"fold_auroc"`
	// MeanAUROC is the mean of the folds' AUROCs.
	MeanAUROC float64 `json:"mean_auroc"`
	// Pooled is the AUROC of all out-of-fold scores taken together, with a
	// bootstrap interval. Scores of different folds come from different
	// models, so Pooled can differ slightly from MeanAUROC.
	Pooled AUROCInterval `json:"pooled"`
	// Rows are the labelled rows scored, and Scores their out-of-fold scores.
	Rows   []int     `json:"-"`
	Scores []float64 `json:"-"`
}

// CrossValidate estimates how well method generalises across groups: for
// each of k grouped folds (GroupKFold) it fits method on the other folds'
// rows (copied into a new dataset; unsupervised methods use what they need
// of them, Mahalanobis the negatives) and scores the fold's labelled rows.
// It returns each fold's AUROC, their mean, and the pooled AUROC with a 95%
// bootstrap interval. A fold whose test rows lack a class is an error: use
// fewer folds.
func CrossValidate(method Method, d *Dataset, k int, seed uint64) (*CVResult, error) {
	folds, err := GroupKFold(d, nil, k, seed)
	if err != nil {
		return nil, err
	}
	res := &CVResult{Folds: k}
	var sum float64
	for f, fold := range folds {
		p, err := method.Fit(d.Subset(fold.Train))
		if err != nil {
			return nil, fmt.Errorf("cross-validation fold %d: %w", f+1, err)
		}
		var rows []int
		for _, i := range fold.Test {
			if d.Labels[i] != Unknown {
				rows = append(rows, i)
			}
		}
		scores := p.ScoreRows(d.X, rows, nil)
		auc, err := AUROC(scores, d.Positives(rows))
		if err != nil {
			return nil, fmt.Errorf("cross-validation fold %d: %w (use fewer folds)", f+1, err)
		}
		res.FoldAUROC = append(res.FoldAUROC, auc)
		sum += auc
		res.Rows = append(res.Rows, rows...)
		res.Scores = append(res.Scores, scores...)
	}
	res.MeanAUROC = sum / float64(k)
	res.Pooled, err = BootstrapAUROC(res.Scores, d.Positives(res.Rows), 0, 0.95, seed)
	if err != nil {
		return nil, err
	}
	return res, nil
}
