//go:build !amd64 || purego

package probe

const useAVX2 = false

func dotImpl(x, y []float32) float32 { return dotGeneric(x, y) }

func axpyImpl(a float32, x, y []float32) { axpyGeneric(a, x, y) }

func dotMixedImpl(x []float32, v []float64) float64 { return dotMixedGeneric(x, v) }

func dot4Impl(x *[4][]float32, v []float32) [4]float32 { return dot4Generic(x, v) }

func axpy4Impl(a *[4]float32, x *[4][]float32, y []float32) { axpy4Generic(a, x, y) }
