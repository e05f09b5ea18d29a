package probe

// Float32 vector kernels used by the training and scoring loops. The amd64
// build uses AVX2/FMA assembly when the CPU has it (kernels_amd64.go); every
// other build, and the purego build tag, uses the portable loops below. Both
// are tested against each other and against float64 references.

// dotGeneric returns Σ_i x[i]·y[i] accumulated in float32 over eight lanes.
func dotGeneric(x, y []float32) float32 {
	y = y[:len(x)]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	n := len(x) &^ 7
	for i := 0; i < n; i += 8 {
		s0 += x[i] * y[i]
		s1 += x[i+1] * y[i+1]
		s2 += x[i+2] * y[i+2]
		s3 += x[i+3] * y[i+3]
		s4 += x[i+4] * y[i+4]
		s5 += x[i+5] * y[i+5]
		s6 += x[i+6] * y[i+6]
		s7 += x[i+7] * y[i+7]
	}
	for i := n; i < len(x); i++ {
		s0 += x[i] * y[i]
	}
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

// dotMixedGeneric returns Σ_i x[i]·v[i] for float32 x and float64 v,
// accumulated in float64 over four lanes.
func dotMixedGeneric(x []float32, v []float64) float64 {
	v = v[:len(x)]
	var s0, s1, s2, s3 float64
	n := len(x) &^ 3
	for i := 0; i < n; i += 4 {
		s0 += float64(x[i]) * v[i]
		s1 += float64(x[i+1]) * v[i+1]
		s2 += float64(x[i+2]) * v[i+2]
		s3 += float64(x[i+3]) * v[i+3]
	}
	for i := n; i < len(x); i++ {
		s0 += float64(x[i]) * v[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpyGeneric computes y[i] += a·x[i].
func axpyGeneric(a float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += a * v
	}
}

// dot32 returns Σ_i x[i]·y[i]. It panics if len(y) < len(x).
func dot32(x, y []float32) float32 {
	if len(y) < len(x) {
		panic("probe: vector length mismatch")
	}
	return dotImpl(x, y)
}

// dotMixed returns Σ_i x[i]·v[i] accumulated in float64: float32 data
// against float64 weights, exact products and a float64 sum, at nearly the
// speed of dot32 (the loop is bound by reading x). It panics if
// len(v) < len(x).
func dotMixed(x []float32, v []float64) float64 {
	if len(v) < len(x) {
		panic("probe: vector length mismatch")
	}
	return dotMixedImpl(x, v)
}

// dot4Generic returns x_b·v for the four rows x_b, each accumulated in
// float32.
func dot4Generic(x *[4][]float32, v []float32) (s [4]float32) {
	for b := range x {
		s[b] = dotGeneric(x[b], v)
	}
	return s
}

// axpy4Generic computes y += Σ_b a[b]·x[b].
func axpy4Generic(a *[4]float32, x *[4][]float32, y []float32) {
	y = y[:len(x[0])]
	x1, x2, x3 := x[1][:len(y)], x[2][:len(y)], x[3][:len(y)]
	for i, v := range x[0] {
		y[i] += (a[0]*v + a[1]*x1[i]) + (a[2]*x2[i] + a[3]*x3[i])
	}
}

// dot4 returns the four dot products x[b]·v, b = 0…3, reading v once for
// all four rows. Every x[b] must have the length of v, or dot4 panics.
func dot4(x *[4][]float32, v []float32) [4]float32 {
	for _, xb := range x {
		if len(xb) != len(v) {
			panic("probe: vector length mismatch")
		}
	}
	return dot4Impl(x, v)
}

// axpy4 computes y += a[0]·x[0] + a[1]·x[1] + a[2]·x[2] + a[3]·x[3],
// reading and writing y once. Every x[b] must have the length of y, or
// axpy4 panics.
func axpy4(a *[4]float32, x *[4][]float32, y []float32) {
	for _, xb := range x {
		if len(xb) != len(y) {
			panic("probe: vector length mismatch")
		}
	}
	axpy4Impl(a, x, y)
}

// axpy32 computes y[i] += a·x[i]. It panics if len(y) < len(x).
func axpy32(a float32, x, y []float32) {
	if len(y) < len(x) {
		panic("probe: vector length mismatch")
	}
	axpyImpl(a, x, y)
}
