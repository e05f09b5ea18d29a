package probe

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func randVec(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

func TestKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 3, 7, 8, 9, 31, 32, 33, 64, 100, 257, 4096} {
		x, y := randVec(r, n), randVec(r, n+5) // y longer than x is allowed
		var want float64
		for i := range x {
			want += float64(x[i]) * float64(y[i])
		}
		tol := 1e-5 * math.Sqrt(float64(n+1)) * 4
		require.InDelta(t, want, float64(dotGeneric(x, y)), tol, "generic n=%d", n)
		require.InDelta(t, want, float64(dot32(x, y)), tol, "dot32 n=%d (avx2 %v)", n, useAVX2)

		v := make([]float64, n+2)
		var wantMixed float64
		for i := range v {
			v[i] = r.NormFloat64() / 3
			if i < n {
				wantMixed += float64(x[i]) * v[i]
			}
		}
		require.InDelta(t, wantMixed, dotMixedGeneric(x, v), 1e-12*float64(n+1))
		require.InDelta(t, wantMixed, dotMixed(x, v), 1e-12*float64(n+1))

		a := float32(0.37)
		g1, g2 := randVec(r, n+3), make([]float32, n+3)
		copy(g2, g1)
		ref := make([]float64, n+3)
		for i := range ref {
			ref[i] = float64(g1[i])
			if i < n {
				ref[i] += float64(a) * float64(x[i])
			}
		}
		axpyGeneric(a, x, g1)
		axpy32(a, x, g2)
		for i := range ref {
			require.InDelta(t, ref[i], float64(g1[i]), 1e-5, "axpy generic n=%d i=%d", n, i)
			require.InDelta(t, ref[i], float64(g2[i]), 1e-5, "axpy32 n=%d i=%d", n, i)
		}
	}
	require.Panics(t, func() { dot32(make([]float32, 3), make([]float32, 2)) })
	require.Panics(t, func() { dot4(&[4][]float32{make([]float32, 3), nil, nil, nil}, make([]float32, 3)) })
	require.Panics(t, func() { axpy4(&[4]float32{}, &[4][]float32{make([]float32, 3), nil, nil, nil}, make([]float32, 3)) })
	require.Panics(t, func() { axpy32(1, make([]float32, 3), make([]float32, 2)) })
	require.Panics(t, func() { dotMixed(make([]float32, 3), make([]float64, 2)) })
}

func TestKernels4(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{0, 1, 5, 15, 16, 17, 31, 32, 33, 100, 4096} {
		var x [4][]float32
		for b := range x {
			x[b] = randVec(r, n)
		}
		v := randVec(r, n)
		got := dot4(&x, v)
		gen := dot4Generic(&x, v)
		a := [4]float32{0.5, -1.25, 2, 0.125}
		y1, y2 := randVec(r, n), make([]float32, n)
		copy(y2, y1)
		want := make([]float64, n)
		for i := range want {
			want[i] = float64(y1[i])
		}
		for b := range x {
			var ref float64
			for i := range v {
				ref += float64(x[b][i]) * float64(v[i])
				want[i] += float64(a[b]) * float64(x[b][i])
			}
			tol := 1e-5 * math.Sqrt(float64(n+1)) * 4
			require.InDelta(t, ref, float64(got[b]), tol, "dot4 n=%d b=%d", n, b)
			require.InDelta(t, ref, float64(gen[b]), tol, "dot4Generic n=%d b=%d", n, b)
		}
		axpy4(&a, &x, y1)
		axpy4Generic(&a, &x, y2)
		for i := range want {
			require.InDelta(t, want[i], float64(y1[i]), 1e-5, "axpy4 n=%d i=%d", n, i)
			require.InDelta(t, want[i], float64(y2[i]), 1e-5, "axpy4Generic n=%d i=%d", n, i)
		}
	}
}
