package probe

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rule
		err  string
	}{
		{"max", Rule{Kind: RuleMax}, ""},
		{"mean", Rule{Kind: RuleMean}, ""},
		{"ema:0.25", Rule{Kind: RuleEMA, Alpha: 0.25}, ""},
		{"kofn:2/4", Rule{Kind: RuleKofN, K: 2, N: 4}, ""},
		{"ema", Rule{}, "want ema:ALPHA"},
		{"ema:0", Rule{}, "alpha 0 outside (0, 1]"},
		{"ema:1.5", Rule{}, "alpha 1.5 outside"},
		{"kofn:3/2", Rule{}, "want 1 ≤ k ≤ n"},
		{"kofn:0/2", Rule{}, "want 1 ≤ k ≤ n"},
		{"kofn:2", Rule{}, "want kofn:K/N"},
		{"kofn:1/100000", Rule{}, "want 1 ≤ k ≤ n ≤ 4096"},
		{"max:3", Rule{}, "takes no argument"},
		{"median", Rule{}, "want max, mean, ema:ALPHA or kofn:K/N"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			r, err := ParseRule(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, r)
			back, err := ParseRule(r.String())
			require.NoError(t, err)
			assert.Equal(t, r, back, "String round trip")
		})
	}
}

// TestRuleRunning checks each rule's running statistic against values worked out by hand.
func TestRuleRunning(t *testing.T) {
	s := []float64{1, 3, -1, 5}
	inf := math.Inf(-1)
	for _, tc := range []struct {
		rule Rule
		want []float64
	}{
		{Rule{Kind: RuleMax}, []float64{1, 3, -1, 5}},
		{Rule{Kind: RuleMean}, []float64{1, 2, 1, 2}},
		// 1; 0.5·3+0.5·1 = 2; 0.5·(−1)+0.5·2 = 0.5; 0.5·5+0.5·0.5 = 2.75
		{Rule{Kind: RuleEMA, Alpha: 0.5}, []float64{1, 2, 0.5, 2.75}},
		// second largest of the last three: −∞ (one score), 1, 1, 3
		{Rule{Kind: RuleKofN, K: 2, N: 3}, []float64{inf, 1, 1, 3}},
		{Rule{Kind: RuleKofN, K: 1, N: 1}, []float64{1, 3, -1, 5}},
	} {
		t.Run(tc.rule.String(), func(t *testing.T) {
			assert.InDeltaSlice(t, tc.want, tc.rule.Running(s), 1e-12)
		})
	}
}

// TestKofNFiresWhereItMust builds score sequences and checks the token where k of the last n
// exceed the threshold, against a direct count.
func TestKofNFiresWhereItMust(t *testing.T) {
	r := Rule{Kind: RuleKofN, K: 3, N: 5}
	// Above 0.5 at tokens 1, 4, 6 and 7: the windows ending at 5 hold {1, 4} (two), ending at 6
	// hold {4, 6} (token 1 left the window at 6: tokens 2..6), ending at 7 {4, 6, 7}: fires at 7.
	s := []float64{0, 1, 0, 0, 1, 0, 1, 1, 0}
	assert.Equal(t, 7, r.FirstFire(s, 0.5))
	assert.Equal(t, -1, r.FirstFire(s[:7], 0.5), "two in every window before token 7")
	assert.Equal(t, -1, r.FirstFire(s, 1), "no score exceeds 1")
	// Against brute force on random sequences.
	rng := newTestRand(4)
	for trial := range 200 {
		k, n := 1+rng.IntN(4), 0
		n = k + rng.IntN(4)
		r := Rule{Kind: RuleKofN, K: k, N: n}
		s := make([]float64, 1+rng.IntN(30))
		for i := range s {
			s[i] = rng.NormFloat64()
		}
		thr := rng.NormFloat64()
		want := -1
		for t := range s {
			c := 0
			for i := max(0, t-n+1); i <= t; i++ {
				if s[i] > thr {
					c++
				}
			}
			if c >= k {
				want = t
				break
			}
		}
		require.Equal(t, want, r.FirstFire(s, thr), "trial %d: %s on %v at %v", trial, r, s, thr)
	}
}

// TestCalibrateGeneration: the threshold lets through at most the target fraction of clean
// generations, counted per generation, and the bound is the Clopper–Pearson formula's.
func TestCalibrateGeneration(t *testing.T) {
	rng := newTestRand(9)
	clean := make([][]float64, 400)
	for i := range clean {
		clean[i] = make([]float64, 5+rng.IntN(40))
		for j := range clean[i] {
			clean[i][j] = rng.NormFloat64()
		}
	}
	for _, r := range []Rule{{Kind: RuleMax}, {Kind: RuleMean}, {Kind: RuleEMA, Alpha: 0.3}, {Kind: RuleKofN, K: 2, N: 4}} {
		g, err := CalibrateGeneration(r, clean, 0.01, false)
		require.NoError(t, err)
		fired := 0
		for _, s := range clean {
			if r.FirstFire(s, g.Threshold) >= 0 {
				fired++
			}
		}
		// k = ⌊0.01·400⌋ = 4 generations may fire, and continuous scores leave no ties.
		assert.Equal(t, 4, fired, r.String())
		assert.Equal(t, 400, g.Calibration.NClean)
		assert.InDelta(t, 0.01, g.Calibration.AchievedFPR, 1e-12)
		// 1 − (bound) = P(Bin(400, bound) ≤ 4) = 0.05, i.e. Beta(5, 396)'s 95% quantile ≈ 0.0235.
		assert.InDelta(t, FPRUpperBound(4, 400, 0.95), g.Calibration.FPRUpper95, 1e-12)
		assert.InDelta(t, 0.0233, g.Calibration.FPRUpper95, 0.001)
	}
	_, err := CalibrateGeneration(Rule{Kind: RuleMax}, nil, 0.01, false)
	require.ErrorContains(t, err, "no clean generations")
	_, err = CalibrateGeneration(Rule{Kind: RuleMax}, [][]float64{{1}, {}}, 0.01, false)
	require.ErrorContains(t, err, "generation 1 has no tokens")
	_, err = CalibrateGeneration(Rule{Kind: RuleKofN, K: 3, N: 3}, [][]float64{{1}, {2, 3}}, 0.01, false)
	require.ErrorContains(t, err, "never applies")
}

// TestCalibrateGenerationPerPosition: scores that drift along a generation are standardised by
// the clean moments at each position (hand-checked on a small set), positions reached by fewer
// than MinPositionCount generations share pooled moments, and the calibrated monitor fires on
// the target fraction of the clean generations.
func TestCalibrateGenerationPerPosition(t *testing.T) {
	rng := newTestRand(11)
	clean := make([][]float64, 300)
	for i := range clean {
		n := 3
		if i < 40 {
			n = 6 // positions 3..5 are reached by 40 < MinPositionCount generations
		}
		clean[i] = make([]float64, n)
		for j := range clean[i] {
			clean[i][j] = 10*float64(j) + float64(j+1)*rng.NormFloat64()
		}
	}
	g, err := CalibrateGeneration(Rule{Kind: RuleMax}, clean, 0.02, true)
	require.NoError(t, err)
	require.Len(t, g.Standardize, 4, "positions 0, 1, 2 and the pooled rest")
	for pos := range 3 {
		var xs []float64
		for _, s := range clean {
			xs = append(xs, s[pos])
		}
		m, sd := meanSD(xs)
		assert.InDelta(t, m, g.Standardize[pos].Mean, 1e-9)
		assert.InDelta(t, sd, g.Standardize[pos].SD, 1e-9)
	}
	var rest []float64
	for _, s := range clean[:40] {
		rest = append(rest, s[3:]...)
	}
	m, sd := meanSD(rest)
	assert.InDelta(t, m, g.Standardize[3].Mean, 1e-9)
	assert.InDelta(t, sd, g.Standardize[3].SD, 1e-9)
	fired := 0
	for _, s := range clean {
		if g.FirstFire(s) >= 0 {
			fired++
		}
	}
	assert.Equal(t, 6, fired, "⌊0.02·300⌋ generations")
	// Standardised, a score is judged against its position: 15 at position 0 is far out
	// (clean mean 0, sd 1), at position 1 it is ordinary (mean 10, sd 2).
	assert.Equal(t, 0, g.FirstFire([]float64{15, 10, 20}))
	assert.Equal(t, -1, g.FirstFire([]float64{0, 15 - 5, 20}))
}
