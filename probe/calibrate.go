package probe

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/stat/distuv"
)

// DefaultTargetFPR is the false positive rate a probe is calibrated to when
// none is given.
const DefaultTargetFPR = 0.01

// Calibration records how a probe's threshold was chosen: the target false
// positive rate, the rate achieved on the clean calibration rows, and how
// many there were. With n clean rows the achieved rate moves in steps of 1/n,
// and its sampling error on new data is about √(FPR(1−FPR)/n).
type Calibration struct {
	Threshold   float64 `json:"threshold"`
	TargetFPR   float64 `json:"target_fpr"`
	AchievedFPR float64 `json:"achieved_fpr"`
	NClean      int     `json:"n_clean"`
	// FPRUpper95 is the one-sided 95% Clopper–Pearson upper bound on the false positive rate
	// of the threshold on new clean data from the calibration set's distribution, given
	// AchievedFPR·NClean false positives in NClean rows (FPRUpperBound). Probe files written
	// before it existed leave it 0.
	FPRUpper95 float64 `json:"fpr_upper_95,omitempty"`
}

// FPRUpperBound returns the one-sided Clopper–Pearson upper confidence bound, at level conf,
// on a rate p from k events in n trials: the p at which seeing k or fewer events has
// probability 1−conf, P(Bin(n, p) ≤ k) = 1−conf, which is the conf-quantile of
// Beta(k+1, n−k). For k = 0 it is 1 − (1−conf)^(1/n); for k = n it is 1. n must be positive
// and 0 ≤ k ≤ n, conf in (0, 1) (programmer errors panic). (Clopper & Pearson, Biometrika
// 1934.)
func FPRUpperBound(k, n int, conf float64) float64 {
	if n <= 0 || k < 0 || k > n || !(conf > 0 && conf < 1) {
		panic(fmt.Sprintf("probe: FPRUpperBound(%d, %d, %v)", k, n, conf))
	}
	if k == n {
		return 1
	}
	return distuv.Beta{Alpha: float64(k + 1), Beta: float64(n - k)}.Quantile(conf)
}

// CalibrateThreshold returns the threshold t for the rule "fire when score >
// t" whose false positive rate on the clean scores is the largest not above
// targetFPR. With the clean scores sorted in decreasing order s₁ ≥ s₂ ≥ … ≥ sₙ
// and k = ⌊targetFPR·n⌋ false positives allowed, t = s₍ₖ₊₁₎: at most k clean
// scores exceed it (fewer if s₍ₖ₊₁₎ is tied with higher ones). On new clean
// data from the same distribution the expected false positive rate is about
// (k+1)/(n+1) for continuous scores; with n < 1/targetFPR no false positive is
// allowed and t is the largest clean score.
//
// It returns an error for no clean scores, a NaN score or a target outside
// (0, 1).
func CalibrateThreshold(clean []float64, targetFPR float64) (Calibration, error) {
	if !(targetFPR > 0 && targetFPR < 1) {
		return Calibration{}, fmt.Errorf("calibrate: target FPR %v outside (0, 1)", targetFPR)
	}
	n := len(clean)
	if n == 0 {
		return Calibration{}, errors.New("calibrate: no clean rows")
	}
	s := slices.Clone(clean)
	for _, v := range s {
		if math.IsNaN(v) {
			return Calibration{}, errors.New("calibrate: NaN score")
		}
	}
	slices.Sort(s)
	slices.Reverse(s)
	k := min(n-1, int(math.Floor(targetFPR*float64(n)+1e-9)))
	t := s[k]
	fp := 0
	for _, v := range s {
		if v > t {
			fp++
		}
	}
	return Calibration{Threshold: t, TargetFPR: targetFPR, AchievedFPR: float64(fp) / float64(n), NClean: n,
		FPRUpper95: FPRUpperBound(fp, n, 0.95)}, nil
}
