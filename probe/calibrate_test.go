package probe

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFPRUpperBound checks the Clopper–Pearson bound against its closed form for no false
// positives and, otherwise, against the binomial tail it is defined by, summed here term by
// term: P(Bin(n, u) ≤ k) = 0.05 at u = FPRUpperBound(k, n, 0.95).
func TestFPRUpperBound(t *testing.T) {
	for _, n := range []int{1, 10, 100, 3000} {
		require.InDelta(t, 1-math.Pow(0.05, 1/float64(n)), FPRUpperBound(0, n, 0.95), 1e-12, "n %d", n)
		require.Equal(t, 1.0, FPRUpperBound(n, n, 0.95))
	}
	binomCDF := func(k, n int, p float64) float64 {
		s := 0.0
		for i := 0; i <= k; i++ {
			lc, _ := math.Lgamma(float64(n + 1))
			a, _ := math.Lgamma(float64(i + 1))
			b, _ := math.Lgamma(float64(n - i + 1))
			s += math.Exp(lc - a - b + float64(i)*math.Log(p) + float64(n-i)*math.Log1p(-p))
		}
		return s
	}
	for _, tc := range []struct{ k, n int }{{1, 100}, {5, 100}, {30, 3000}, {12, 1000}, {99, 100}} {
		u := FPRUpperBound(tc.k, tc.n, 0.95)
		require.Greater(t, u, float64(tc.k)/float64(tc.n))
		require.InDelta(t, 0.05, binomCDF(tc.k, tc.n, u), 1e-9, "%+v", tc)
	}
	// A calibration records it: 3000 clean rows at a 1% target allow 30 false positives.
	clean := make([]float64, 3000)
	for i := range clean {
		clean[i] = float64(i)
	}
	cal, err := CalibrateThreshold(clean, 0.01)
	require.NoError(t, err)
	require.Equal(t, 0.01, cal.AchievedFPR)
	require.InDelta(t, FPRUpperBound(30, 3000, 0.95), cal.FPRUpper95, 1e-15)
	require.InDelta(t, 0.0133, cal.FPRUpper95, 5e-4) // about 1.33%: under the 2% a lab may ask
}
