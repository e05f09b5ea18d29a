package probe

import (
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// referenceQuadratic is the single-threaded quadratic score: z in float32, each projection
// accumulated by dot32, the terms added in float64 in component order.
func referenceQuadratic(p *Probe, x []float32) float64 {
	n := p.Model.NEmbd
	z := make([]float32, n)
	for j := range z {
		z[j] = (x[j] - float32(p.Normalization.Mean[j])) * float32(1/p.Normalization.Scale[j])
	}
	s := p.Bias
	for k, u := range p.Quadratic.Components {
		t := float64(dot32(u, z))
		s += float64(p.Quadratic.Coef[k] * t * t)
	}
	return s
}

// TestQuadraticScoreParallel: Score and ScoreRows of a quadratic probe split across
// goroutines (chunks of components, or rows) give bit for bit the single-threaded score, for
// any number of goroutines and rows.
func TestQuadraticScoreParallel(t *testing.T) {
	const k, n = 301, 96
	p := quadProbe(k, n, 11)
	p.Quadratic.Components[0][2] = 0.5 // not MaxFloat32: the score must stay finite
	x := NewMatrix(100, n, nil)
	r := rand.New(rand.NewPCG(5, 5))
	for i := range x.Data {
		x.Data[i] = float32(3 * r.NormFloat64())
	}
	want := make([]float64, x.Rows)
	for i := range want {
		want[i] = referenceQuadratic(p, x.Row(i))
	}
	defer func(old int64, chunk, procs int) {
		parallelQuadWork, splitChunk = old, chunk
		runtime.GOMAXPROCS(procs)
	}(parallelQuadWork, splitChunk, runtime.GOMAXPROCS(0))
	splitChunk = 5 * n // chunks of 5 components for one row, of 1 for 5 rows or more
	for _, procs := range []int{1, 2, 3, 7} {
		runtime.GOMAXPROCS(procs)
		for _, work := range []int64{1 << 62, 1} {
			parallelQuadWork = work
			q, err := p.Clone() // a fresh prepared form
			require.NoError(t, err)
			split := q.prepare().rowWorkers()
			if work == 1 {
				require.Equal(t, procs, split, "the components of a row are split across GOMAXPROCS goroutines")
			} else {
				require.Equal(t, 1, split)
			}
			for i := range x.Rows {
				require.Equal(t, want[i], q.Score(x.Row(i)), "GOMAXPROCS %d, split %d, row %d", procs, split, i)
			}
			for _, rows := range []int{1, 2, 3, 13, 100} {
				idx := make([]int, rows)
				for i := range idx {
					idx[i] = (37 * i) % x.Rows
				}
				got := q.ScoreRows(x, idx, nil)
				for i, row := range idx {
					require.Equal(t, want[row], got[i], "GOMAXPROCS %d, split %d, %d rows", procs, split, rows)
				}
			}
		}
	}
}

// TestParallelChunks: every index is handed out exactly once, in chunks of the size asked
// for, whatever the number of goroutines.
func TestParallelChunks(t *testing.T) {
	for _, tc := range []struct{ n, w, chunk int }{{0, 2, 3}, {1, 4, 1}, {10, 1, 3}, {10, 3, 3}, {100, 7, 1}, {100, 2, 0}, {5, 8, 100}} {
		seen := make([]atomic.Int32, tc.n)
		var calls atomic.Int32
		parallelChunks(tc.n, tc.w, tc.chunk, func(lo, hi int) {
			calls.Add(1)
			if hi-lo != max(1, tc.chunk) && hi != tc.n {
				t.Errorf("%+v: chunk [%d, %d)", tc, lo, hi)
			}
			for i := lo; i < hi; i++ {
				seen[i].Add(1)
			}
		})
		for i := range seen {
			require.EqualValues(t, 1, seen[i].Load(), "%+v: index %d", tc, i)
		}
		require.EqualValues(t, (tc.n+max(1, tc.chunk)-1)/max(1, tc.chunk), calls.Load(), "%+v", tc)
	}
}
