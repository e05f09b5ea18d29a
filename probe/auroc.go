package probe

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	"gonum.org/v1/gonum/stat"
)

// ErrOneClass is returned by the ranking metrics when the positive or the
// negative class is empty, so that the AUROC is undefined.
var ErrOneClass = errors.New("AUROC undefined: one class has no rows")

// checkScores panics on a length mismatch and returns an error for NaN scores
// or an empty class; it returns the class sizes.
func checkScores(scores []float64, positive []bool) (nPos, nNeg int, err error) {
	if len(scores) != len(positive) {
		panic("probe: scores and classes have different lengths")
	}
	for i, s := range scores {
		if math.IsNaN(s) {
			return 0, 0, fmt.Errorf("score %d is NaN", i)
		}
		if positive[i] {
			nPos++
		} else {
			nNeg++
		}
	}
	if nPos == 0 || nNeg == 0 {
		return nPos, nNeg, fmt.Errorf("%w (%d positive, %d negative)", ErrOneClass, nPos, nNeg)
	}
	return nPos, nNeg, nil
}

// AUROC returns the area under the ROC curve of scores, where a higher score
// predicts the positive class: the probability that a random positive
// outscores a random negative, counting ties as one half,
//
//	AUROC = P(S₊ > S₋) + ½·P(S₊ = S₋) = (R₊ − n₊(n₊+1)/2) / (n₊·n₋),
//
// with R₊ the sum of the positives' ranks among all scores, tied scores taking
// the mean of their ranks (midranks): the Mann–Whitney U statistic divided by
// n₊·n₋. It equals the trapezoidal area under the ROC curve over all distinct
// thresholds (as from gonum's stat.ROC).
//
// positive[i] tells whether row i is positive. AUROC panics if the lengths
// differ, and returns an error wrapping ErrOneClass if either class is empty
// and an error if a score is NaN. ±Inf scores are ranked normally.
func AUROC(scores []float64, positive []bool) (float64, error) {
	nPos, nNeg, err := checkScores(scores, positive)
	if err != nil {
		return math.NaN(), err
	}
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return scores[idx[a]] < scores[idx[b]] })
	var rankSum float64
	for i := 0; i < len(idx); {
		j := i + 1
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		mid := float64(i+1+j) / 2 // mean of ranks i+1 … j
		for k := i; k < j; k++ {
			if positive[idx[k]] {
				rankSum += mid
			}
		}
		i = j
	}
	np, nn := float64(nPos), float64(nNeg)
	return (rankSum - np*(np+1)/2) / (np * nn), nil
}

// AUROCInterval is a bootstrap confidence interval for the AUROC.
type AUROCInterval struct {
	AUROC     float64 `json:"auroc"`
	Low       float64 `json:"low"`
	High      float64 `json:"high"`
	Level     float64 `json:"level"`
	Resamples int     `json:"resamples"`
}

// BootstrapAUROC returns the AUROC of scores with a percentile bootstrap
// confidence interval at level (0.95 if ≤ 0) from resamples resamples (2000
// if ≤ 0). The bootstrap is stratified: each resample draws n₊ positives and
// n₋ negatives with replacement, so both classes are always present. The
// interval is [q_{(1−level)/2}, q_{(1+level)/2}] of the resampled AUROCs.
//
// Each resample costs O(n) rather than a sort: the negatives are sorted once,
// each positive's position among them is found once, and a resample only
// re-weights these counts. The seed makes the result reproducible.
func BootstrapAUROC(scores []float64, positive []bool, resamples int, level float64, seed uint64) (AUROCInterval, error) {
	if resamples <= 0 {
		resamples = 2000
	}
	if level <= 0 {
		level = 0.95
	}
	if level >= 1 {
		panic("probe: bootstrap level must be below 1")
	}
	auc, err := AUROC(scores, positive)
	if err != nil {
		return AUROCInterval{}, err
	}
	var pos, neg []float64
	for i, s := range scores {
		if positive[i] {
			pos = append(pos, s)
		} else {
			neg = append(neg, s)
		}
	}
	slices.Sort(neg)
	// lo[i]: negatives strictly below pos[i]; hi[i]: negatives ≤ pos[i].
	lo := make([]int, len(pos))
	hi := make([]int, len(pos))
	for i, s := range pos {
		lo[i] = sort.SearchFloat64s(neg, s)
		hi[i] = sort.Search(len(neg), func(k int) bool { return neg[k] > s })
	}
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	negCount := make([]float64, len(neg)+1) // prefix sums of resampled multiplicities
	mult := make([]int, len(neg))
	boot := make([]float64, resamples)
	np, nn := float64(len(pos)), float64(len(neg))
	for b := range boot {
		clear(mult)
		for range neg {
			mult[rng.IntN(len(neg))]++
		}
		for k, m := range mult {
			negCount[k+1] = negCount[k] + float64(m)
		}
		var sum float64
		for range pos {
			i := rng.IntN(len(pos))
			below, ties := negCount[lo[i]], negCount[hi[i]]-negCount[lo[i]]
			sum += below + ties/2
		}
		boot[b] = sum / (np * nn)
	}
	slices.Sort(boot)
	alpha := (1 - level) / 2
	return AUROCInterval{
		AUROC:     auc,
		Low:       stat.Quantile(alpha, stat.Empirical, boot, nil),
		High:      stat.Quantile(1-alpha, stat.Empirical, boot, nil),
		Level:     level,
		Resamples: resamples,
	}, nil
}

// ROCPoint is one point of an ROC curve: the rates of rows whose score is at
// least Threshold.
type ROCPoint struct {
	Threshold float64 `json:"threshold"`
	FPR       float64 `json:"fpr"`
	TPR       float64 `json:"tpr"`
}

// ROC returns the ROC curve of scores: for each distinct score t, in
// decreasing order, the false and true positive rates of the rule "score ≥ t",
//
//	FPR(t) = #{negatives ≥ t} / n₋,  TPR(t) = #{positives ≥ t} / n₊,
//
// preceded by the point (0, 0) whose Threshold is the largest finite float64
// (nothing fires). The last point is (1, 1). Its trapezoidal area equals
// AUROC. Errors are as for AUROC.
func ROC(scores []float64, positive []bool) ([]ROCPoint, error) {
	nPos, nNeg, err := checkScores(scores, positive)
	if err != nil {
		return nil, err
	}
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	pts := []ROCPoint{{Threshold: math.MaxFloat64}}
	tp, fp := 0, 0
	for i := 0; i < len(idx); {
		t := scores[idx[i]]
		for i < len(idx) && scores[idx[i]] == t {
			if positive[idx[i]] {
				tp++
			} else {
				fp++
			}
			i++
		}
		pts = append(pts, ROCPoint{Threshold: t, FPR: float64(fp) / float64(nNeg), TPR: float64(tp) / float64(nPos)})
	}
	return pts, nil
}

// OperatingPoint is the detector's behaviour at one threshold: it fires when
// score > Threshold.
type OperatingPoint struct {
	Threshold float64 `json:"threshold"`
	FPR       float64 `json:"fpr"`
	TPR       float64 `json:"tpr"`
}

// TPRAtFPR returns the true positive rate at the threshold that
// CalibrateThreshold picks on the negatives' scores for targetFPR: the
// largest detection rate whose false positive rate on these negatives does not
// exceed the target. Errors are as for AUROC, plus targetFPR outside (0, 1).
func TPRAtFPR(scores []float64, positive []bool, targetFPR float64) (OperatingPoint, error) {
	nPos, _, err := checkScores(scores, positive)
	if err != nil {
		return OperatingPoint{}, err
	}
	var neg []float64
	for i, s := range scores {
		if !positive[i] {
			neg = append(neg, s)
		}
	}
	cal, err := CalibrateThreshold(neg, targetFPR)
	if err != nil {
		return OperatingPoint{}, err
	}
	tp := 0
	for i, s := range scores {
		if positive[i] && s > cal.Threshold {
			tp++
		}
	}
	return OperatingPoint{Threshold: cal.Threshold, FPR: cal.AchievedFPR, TPR: float64(tp) / float64(nPos)}, nil
}
