package probe

import (
	"gonum.org/v1/gonum/mat"
)

// Matrix is a dense, row-major matrix of float32 values: the activations of
// n rows (tokens or examples) by d features (n_embd). Row i occupies
// Data[i*Cols : (i+1)*Cols].
//
// Activations are kept in float32, as they are captured and stored, because a
// float64 copy of a 20,000 × 4,096 layer would double the memory of every
// training run. Matrix implements gonum's mat.Matrix, so any gonum routine can
// read it (mat.DenseCopyOf(m) makes a float64 copy when one is wanted).
type Matrix struct {
	Rows, Cols int
	Data       []float32
}

// NewMatrix returns a Matrix of r rows and c columns backed by data, which is
// used, not copied. If data is nil a new zeroed slice is allocated.
// NewMatrix panics if r or c is negative or len(data) != r*c.
func NewMatrix(r, c int, data []float32) *Matrix {
	if r < 0 || c < 0 {
		panic("probe: negative matrix dimension")
	}
	if data == nil {
		data = make([]float32, r*c)
	}
	if len(data) != r*c {
		panic("probe: matrix data length mismatch")
	}
	return &Matrix{Rows: r, Cols: c, Data: data}
}

// Dims returns the number of rows and columns; it implements mat.Matrix.
func (m *Matrix) Dims() (r, c int) { return m.Rows, m.Cols }

// At returns element (i, j) as a float64; it implements mat.Matrix.
func (m *Matrix) At(i, j int) float64 {
	if uint(i) >= uint(m.Rows) || uint(j) >= uint(m.Cols) {
		panic("probe: index out of range")
	}
	return float64(m.Data[i*m.Cols+j])
}

// T returns the transpose of m as a mat.Matrix view; it implements mat.Matrix.
func (m *Matrix) T() mat.Matrix { return mat.Transpose{Matrix: m} }

// Row returns row i as a slice that shares m's storage.
func (m *Matrix) Row(i int) []float32 {
	if uint(i) >= uint(m.Rows) {
		panic("probe: row index out of range")
	}
	return m.Data[i*m.Cols : (i+1)*m.Cols : (i+1)*m.Cols]
}

// Bytes returns the size of the matrix data in bytes (4·Rows·Cols).
func (m *Matrix) Bytes() int64 { return 4 * int64(m.Rows) * int64(m.Cols) }

// SelectRows returns a new Matrix holding copies of the rows idx, in order.
func (m *Matrix) SelectRows(idx []int) *Matrix {
	out := NewMatrix(len(idx), m.Cols, nil)
	for k, i := range idx {
		copy(out.Row(k), m.Row(i))
	}
	return out
}

// colMeans returns the mean of each column over the rows idx (all rows if idx
// is nil), μ_j = (1/n) Σ_i x_ij, accumulated in float64.
func (m *Matrix) colMeans(idx []int) []float64 {
	n := m.Rows
	if idx != nil {
		n = len(idx)
	}
	mean := make([]float64, m.Cols)
	if n == 0 {
		return mean
	}
	m.forRows(idx, func(_ int, x []float32) {
		for j, v := range x {
			mean[j] += float64(v)
		}
	})
	for j := range mean {
		mean[j] /= float64(n)
	}
	return mean
}

// colMoments returns the column means and population standard deviations
// over the rows idx (all if nil): σ_j = sqrt((1/n) Σ_i (x_ij − μ_j)²). It makes
// two passes so that large means do not cancel the variance.
func (m *Matrix) colMoments(idx []int) (mean, std []float64) {
	mean = m.colMeans(idx)
	std = make([]float64, m.Cols)
	n := 0
	m.forRows(idx, func(_ int, x []float32) {
		n++
		for j, v := range x {
			d := float64(v) - mean[j]
			std[j] += d * d
		}
	})
	for j := range std {
		if n > 0 {
			std[j] = sqrtPos(std[j] / float64(n))
		}
	}
	return mean, std
}

// forRows calls fn(i, row) for each row index in idx, or for every row if idx
// is nil.
func (m *Matrix) forRows(idx []int, fn func(i int, x []float32)) {
	if idx == nil {
		for i := 0; i < m.Rows; i++ {
			fn(i, m.Row(i))
		}
		return
	}
	for _, i := range idx {
		fn(i, m.Row(i))
	}
}
