package probe

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/floats/scalar"
	"gonum.org/v1/gonum/stat"
)

// scoresOf joins positive and negative scores into scores and classes.
func scoresOf(pos, neg []float64) ([]float64, []bool) {
	s := append(append([]float64{}, pos...), neg...)
	c := make([]bool, len(s))
	for i := range pos {
		c[i] = true
	}
	return s, c
}

func TestAUROCHandComputed(t *testing.T) {
	cases := []struct {
		name     string
		pos, neg []float64
		want     float64
	}{
		{"perfect", []float64{3, 4}, []float64{1, 2}, 1},
		{"inverted", []float64{1}, []float64{2}, 0},
		// pairs (1,2)<, (1,3)<, (2,2)=, (2,3)<: ½ of 4
		{"one tie", []float64{1, 2}, []float64{2, 3}, 0.125},
		{"all equal", []float64{5, 5, 5}, []float64{5, 5}, 0.5},
		// 0.9 and 0.8 beat all three; 0.4 loses to 0.7, ties 0.4, beats 0.1: 7.5/9
		{"mixed", []float64{0.9, 0.8, 0.4}, []float64{0.7, 0.4, 0.1}, 7.5 / 9},
		// 2 beats 1 and ties 2 twice... pos {2,2}, neg {1,2,2}: each pos: 1 + ½ + ½ = 2; 4/6
		{"tie block", []float64{2, 2}, []float64{1, 2, 2}, 4.0 / 6},
		{"infinities", []float64{math.Inf(1), 0}, []float64{math.Inf(-1), 1}, 0.75},
	}
	for _, c := range cases {
		s, cl := scoresOf(c.pos, c.neg)
		got, err := AUROC(s, cl)
		require.NoError(t, err, c.name)
		assert.InDelta(t, c.want, got, 1e-12, c.name)
		// Reversing the scores' order changes nothing.
		slices.Reverse(s)
		slices.Reverse(cl)
		got, err = AUROC(s, cl)
		require.NoError(t, err)
		assert.InDelta(t, c.want, got, 1e-12, c.name+" reversed")
	}
}

func TestAUROCErrors(t *testing.T) {
	_, err := AUROC([]float64{1, 2}, []bool{true, true})
	require.ErrorIs(t, err, ErrOneClass)
	_, err = AUROC([]float64{1, 2}, []bool{false, false})
	require.ErrorIs(t, err, ErrOneClass)
	_, err = AUROC(nil, nil)
	require.ErrorIs(t, err, ErrOneClass)
	_, err = AUROC([]float64{1, math.NaN()}, []bool{true, false})
	require.ErrorContains(t, err, "NaN")
	require.Panics(t, func() { _, _ = AUROC([]float64{1}, []bool{true, false}) })
	_, err = BootstrapAUROC([]float64{1, 2}, []bool{true, true}, 10, 0.95, 1)
	require.ErrorIs(t, err, ErrOneClass)
	_, err = ROC([]float64{1}, []bool{true})
	require.ErrorIs(t, err, ErrOneClass)
	_, err = TPRAtFPR([]float64{1}, []bool{false}, 0.01)
	require.ErrorIs(t, err, ErrOneClass)
}

// rocAreaGonum is the trapezoidal area under gonum's stat.ROC curve.
func rocAreaGonum(scores []float64, positive []bool) float64 {
	y := slices.Clone(scores)
	c := slices.Clone(positive)
	stat.SortWeightedLabeled(y, c, nil)
	tpr, fpr, _ := stat.ROC(nil, y, c, nil)
	var area float64
	for i := 1; i < len(tpr); i++ {
		area += math.Abs(fpr[i]-fpr[i-1]) * (tpr[i] + tpr[i-1]) / 2
	}
	return area
}

func TestAUROCAgainstGonumROC(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 50; trial++ {
		n := 2 + r.IntN(300)
		s := make([]float64, n)
		c := make([]bool, n)
		c[0], c[1] = true, false
		for i := range s {
			if i > 1 {
				c[i] = r.Float64() < 0.3
			}
			mu := 0.0
			if c[i] {
				mu = 0.8
			}
			// Rounding makes many ties.
			s[i] = math.Round((mu+r.NormFloat64())*4) / 4
		}
		got, err := AUROC(s, c)
		require.NoError(t, err)
		require.InDelta(t, rocAreaGonum(s, c), got, 1e-12, "trial %d", trial)

		// Our ROC points are gonum's, and their area is the AUROC.
		pts, err := ROC(s, c)
		require.NoError(t, err)
		require.Equal(t, ROCPoint{Threshold: math.MaxFloat64}, pts[0])
		last := pts[len(pts)-1]
		require.Equal(t, 1.0, last.FPR)
		require.Equal(t, 1.0, last.TPR)
		var area float64
		for i := 1; i < len(pts); i++ {
			require.Less(t, pts[i].Threshold, pts[i-1].Threshold)
			area += (pts[i].FPR - pts[i-1].FPR) * (pts[i].TPR + pts[i-1].TPR) / 2
		}
		require.InDelta(t, got, area, 1e-12)
		y := slices.Clone(s)
		cl := slices.Clone(c)
		stat.SortWeightedLabeled(y, cl, nil)
		tpr, fpr, thresh := stat.ROC(nil, y, cl, nil)
		require.Len(t, pts, len(tpr))
		for i, p := range pts {
			require.InDelta(t, fpr[i], p.FPR, 1e-12)
			require.InDelta(t, tpr[i], p.TPR, 1e-12)
			if i > 0 {
				require.Equal(t, thresh[i], p.Threshold)
			}
		}
	}
}

func TestBootstrapAUROC(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const nPos, nNeg = 150, 250
	var pos, neg []float64
	for range nPos {
		pos = append(pos, 1+r.NormFloat64())
	}
	for range nNeg {
		neg = append(neg, r.NormFloat64())
	}
	s, c := scoresOf(pos, neg)
	ci, err := BootstrapAUROC(s, c, 4000, 0.95, 7)
	require.NoError(t, err)
	auc, _ := AUROC(s, c)
	require.Equal(t, auc, ci.AUROC)
	require.Less(t, ci.Low, auc)
	require.Greater(t, ci.High, auc)

	// Independent check 1: a naive stratified bootstrap that re-sorts.
	naive := make([]float64, 2000)
	for b := range naive {
		var bp, bn []float64
		for range nPos {
			bp = append(bp, pos[r.IntN(nPos)])
		}
		for range nNeg {
			bn = append(bn, neg[r.IntN(nNeg)])
		}
		bs, bc := scoresOf(bp, bn)
		naive[b], _ = AUROC(bs, bc)
	}
	sort.Float64s(naive)
	lo := stat.Quantile(0.025, stat.Empirical, naive, nil)
	hi := stat.Quantile(0.975, stat.Empirical, naive, nil)
	assert.InDelta(t, lo, ci.Low, 0.01)
	assert.InDelta(t, hi, ci.High, 0.01)

	// Independent check 2: Hanley & McNeil's (1982) standard error.
	q1, q2 := auc/(2-auc), 2*auc*auc/(1+auc)
	se := math.Sqrt((auc*(1-auc) + (nPos-1)*(q1-auc*auc) + (nNeg-1)*(q2-auc*auc)) / (nPos * nNeg))
	width := ci.High - ci.Low
	assert.InEpsilon(t, 2*1.96*se, width, 0.2)

	// Reproducible with a seed.
	again, err := BootstrapAUROC(s, c, 4000, 0.95, 7)
	require.NoError(t, err)
	require.Equal(t, ci, again)
}

func TestTPRAtFPR(t *testing.T) {
	neg := make([]float64, 100)
	for i := range neg {
		neg[i] = float64(i + 1) // 1 … 100
	}
	pos := []float64{94, 95.5, 99, 200}
	s, c := scoresOf(pos, neg)
	op, err := TPRAtFPR(s, c, 0.05)
	require.NoError(t, err)
	// 5 false positives allowed: threshold is the 6th largest negative, 95.
	assert.Equal(t, 95.0, op.Threshold)
	assert.Equal(t, 0.05, op.FPR)
	assert.Equal(t, 0.75, op.TPR)

	op, err = TPRAtFPR(s, c, 0.01)
	require.NoError(t, err)
	assert.Equal(t, 99.0, op.Threshold)
	assert.Equal(t, 0.01, op.FPR)
	assert.Equal(t, 0.25, op.TPR)
}

func TestConfusion(t *testing.T) {
	scores := []float64{0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.5}
	pos := []bool{true, true, false, true, false, false, true}
	c := ConfusionAt(scores, pos, 0.55) // fires: 0.9 0.8 0.7 0.6
	require.Equal(t, Confusion{TP: 3, FP: 1, TN: 2, FN: 1}, c)
	assert.InDelta(t, 0.75, c.Precision(), 1e-15)
	assert.InDelta(t, 0.75, c.Recall(), 1e-15)
	assert.InDelta(t, 0.75, c.F1(), 1e-15)
	assert.InDelta(t, 1.0/3, c.FPR(), 1e-15)
	assert.InDelta(t, 5.0/7, c.Accuracy(), 1e-15)
	// A score equal to the threshold does not fire.
	require.Equal(t, Confusion{TP: 1, FP: 1, TN: 2, FN: 3}, ConfusionAt([]float64{1, 1, 2, 0, 0, 0, 2}, pos, 1))
	// Empty denominators give 0.
	z := ConfusionAt([]float64{0, 0}, []bool{false, false}, 1)
	assert.Equal(t, 0.0, z.Precision())
	assert.Equal(t, 0.0, z.Recall())
	assert.Equal(t, 0.0, z.F1())
}

func TestCalibrateThreshold(t *testing.T) {
	// Hand cases.
	cal, err := CalibrateThreshold([]float64{5, 1, 4, 2, 3}, 0.2)
	require.NoError(t, err)
	assert.Equal(t, Calibration{Threshold: 4, TargetFPR: 0.2, AchievedFPR: 0.2, NClean: 5, FPRUpper95: FPRUpperBound(1, 5, 0.95)}, cal)
	cal, err = CalibrateThreshold([]float64{5, 1, 4, 2, 3}, 0.01) // no false positive allowed
	require.NoError(t, err)
	assert.Equal(t, 5.0, cal.Threshold)
	assert.Equal(t, 0.0, cal.AchievedFPR)
	cal, err = CalibrateThreshold([]float64{3, 3, 3, 1}, 0.5) // ties make it conservative
	require.NoError(t, err)
	assert.Equal(t, 3.0, cal.Threshold)
	assert.Equal(t, 0.0, cal.AchievedFPR)

	for _, bad := range []float64{0, 1, -0.1, math.NaN()} {
		_, err = CalibrateThreshold([]float64{1, 2}, bad)
		require.Error(t, err)
	}
	_, err = CalibrateThreshold(nil, 0.01)
	require.Error(t, err)

	// Held-out property: calibrated on n standard-normal clean scores, the
	// false positive rate on new clean data is 1 − Φ(t). Over many
	// calibrations its mean is (k+1)/(n+1) (an order statistic) and its
	// spread about √(p(1−p)/n).
	r := rand.New(rand.NewPCG(9, 9))
	const n, target, trials = 2000, 0.01, 300
	var rates []float64
	for range trials {
		clean := make([]float64, n)
		for i := range clean {
			clean[i] = r.NormFloat64()
		}
		cal, err := CalibrateThreshold(clean, target)
		require.NoError(t, err)
		require.LessOrEqual(t, cal.AchievedFPR, target)
		rates = append(rates, 0.5*math.Erfc(cal.Threshold/math.Sqrt2))
	}
	mean, std := stat.MeanStdDev(rates, nil)
	k := math.Floor(target * n)
	wantMean := (k + 1) / (n + 1)
	assert.InDelta(t, wantMean, mean, 4*std/math.Sqrt(trials), "mean held-out FPR")
	assert.InEpsilon(t, math.Sqrt(wantMean*(1-wantMean)/n), std, 0.25, "spread of held-out FPR")

	// And with one large calibration set the held-out rate is within
	// sampling error of the target.
	clean := make([]float64, 50000)
	for i := range clean {
		clean[i] = r.NormFloat64()
	}
	cal, err = CalibrateThreshold(clean, target)
	require.NoError(t, err)
	fresh := 0
	const m = 200000
	for range m {
		if r.NormFloat64() > cal.Threshold {
			fresh++
		}
	}
	se := math.Sqrt(target*(1-target)/50000 + target*(1-target)/m)
	assert.InDelta(t, target, float64(fresh)/m, 4*se)
	assert.True(t, scalar.EqualWithinAbs(cal.AchievedFPR, target, 1.0/50000))
}
