//go:build !purego

package probe

import "golang.org/x/sys/cpu"

var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func dotAVX2(x, y []float32) float32

//go:noescape
func axpyAVX2(a float32, x, y []float32)

//go:noescape
func dotMixedAVX2(x []float32, v []float64) float64

func dotMixedImpl(x []float32, v []float64) float64 {
	if useAVX2 {
		return dotMixedAVX2(x, v)
	}
	return dotMixedGeneric(x, v)
}

func dotImpl(x, y []float32) float32 {
	if useAVX2 {
		return dotAVX2(x, y)
	}
	return dotGeneric(x, y)
}

func axpyImpl(a float32, x, y []float32) {
	if useAVX2 {
		axpyAVX2(a, x, y)
		return
	}
	axpyGeneric(a, x, y)
}

//go:noescape
func dot4AVX2(x0, x1, x2, x3, v *float32, n int) (s0, s1, s2, s3 float32)

//go:noescape
func axpy4AVX2(a *[4]float32, x0, x1, x2, x3, y *float32, n int)

func dot4Impl(x *[4][]float32, v []float32) [4]float32 {
	if !useAVX2 || len(v) == 0 {
		return dot4Generic(x, v)
	}
	s0, s1, s2, s3 := dot4AVX2(&x[0][0], &x[1][0], &x[2][0], &x[3][0], &v[0], len(v))
	return [4]float32{s0, s1, s2, s3}
}

func axpy4Impl(a *[4]float32, x *[4][]float32, y []float32) {
	if !useAVX2 || len(y) == 0 {
		axpy4Generic(a, x, y)
		return
	}
	axpy4AVX2(a, &x[0][0], &x[1][0], &x[2][0], &x[3][0], &y[0], len(y))
}
