package probe

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"

	"github.com/sjwhitworth/golearn/base"
	"github.com/sjwhitworth/golearn/trees"
)

// TreeBaseline is a nonlinear baseline classifier, to check that a linear
// probe captures what a nonlinear model can find: a CART decision tree
// (golearn's trees.CARTDecisionTreeClassifier, Gini impurity) on the rows'
// coordinates along their top principal components,
//
//	u_k = (x − μ)·v_k,  k = 1 … Components,
//
// with μ and v_k the mean and leading covariance eigenvectors of the labelled
// training rows. If the tree beats the linear probe's accuracy by a wide
// margin, the signal is not linear in the activations.
//
// The tree predicts classes, not scores: compare it by accuracy or by the
// confusion matrix, not by AUROC. golearn's CART split search grows with the
// square of the rows (measured: 1,000 rows in about 1.5 s, 4,000 in about
// 15 s), so at most MaxRows labelled rows, drawn at random, are used. Of
// golearn, only this tree is used: its liblinear models and its random
// forest do not build without cgo, and its kNN needs cgo for its Euclidean
// path (see the package README).
type TreeBaseline struct {
	// MaxDepth bounds the tree's depth (default 6).
	MaxDepth int
	// Components is the number of principal components the tree sees
	// (default 16).
	Components int
	// MaxRows bounds the training rows (default 2,000).
	MaxRows int
	// Seed seeds the row sample and the principal-component iteration.
	Seed uint64
}

// TreeModel is a fitted TreeBaseline.
type TreeModel struct {
	mean  []float64
	comps [][]float32 // unit principal directions
	tree  *trees.CARTDecisionTreeClassifier
}

// Fit fits the tree to d's labelled rows.
func (t TreeBaseline) Fit(d *Dataset) (*TreeModel, error) {
	if _, _, err := classRows(d, "tree baseline"); err != nil {
		return nil, err
	}
	depth, k := t.MaxDepth, t.Components
	if depth <= 0 {
		depth = 6
	}
	if k <= 0 {
		k = 16
	}
	rows := d.Labelled()
	maxRows := t.MaxRows
	if maxRows <= 0 {
		maxRows = 2000
	}
	if len(rows) > maxRows {
		rng := rand.New(rand.NewPCG(t.Seed, 0x7ee))
		rng.Shuffle(len(rows), func(a, b int) { rows[a], rows[b] = rows[b], rows[a] })
		rows = rows[:maxRows]
		slices.Sort(rows)
	}
	train := d.Subset(rows)
	mean := train.X.colMeans(nil)
	vecs, _, _, err := topEigenvectors(train.X, mean, min(k, train.X.Cols), t.Seed, 1e-4, 100)
	if err != nil {
		return nil, fmt.Errorf("tree baseline: %w", err)
	}
	m := &TreeModel{mean: mean, comps: make([][]float32, len(vecs))}
	for i, v := range vecs {
		m.comps[i] = make([]float32, len(v))
		for j := range v {
			m.comps[i][j] = float32(v[j])
		}
	}
	labels := make([]float64, len(rows))
	for i, l := range train.Labels {
		if l == Positive {
			labels[i] = 1
		}
	}
	grid := m.grid(train.X, nil, labels)
	m.tree = trees.NewDecisionTreeClassifier(trees.GINI, int64(depth), []int64{0, 1})
	if err := m.tree.Fit(grid); err != nil {
		return nil, fmt.Errorf("tree baseline: %w", err)
	}
	if m.tree.RootNode == nil {
		return nil, errors.New("tree baseline: golearn returned no tree")
	}
	return m, nil
}

// grid projects the rows idx of x (all if nil) onto the components and wraps
// them, with class labels, in a golearn DenseInstances.
func (m *TreeModel) grid(x *Matrix, idx []int, labels []float64) *base.DenseInstances {
	if x.Cols != len(m.mean) {
		panic("probe: tree baseline applied to rows of another width")
	}
	n := x.Rows
	if idx != nil {
		n = len(idx)
	}
	inst := base.NewDenseInstances()
	specs := make([]base.AttributeSpec, len(m.comps))
	for c := range m.comps {
		specs[c] = inst.AddAttribute(base.NewFloatAttribute("pc" + strconv.Itoa(c)))
	}
	class := base.NewFloatAttribute("positive")
	classSpec := inst.AddAttribute(class)
	if err := inst.AddClassAttribute(class); err != nil {
		panic("probe: " + err.Error())
	}
	if err := inst.Extend(n); err != nil {
		panic("probe: " + err.Error())
	}
	z := make([]float32, x.Cols)
	for r := range n {
		i := r
		if idx != nil {
			i = idx[r]
		}
		for j, v := range x.Row(i) {
			z[j] = v - float32(m.mean[j])
		}
		for c, u := range m.comps {
			inst.Set(specs[c], r, base.PackFloatToBytes(float64(dot32(z, u))))
		}
		var y float64
		if labels != nil {
			y = labels[r]
		}
		inst.Set(classSpec, r, base.PackFloatToBytes(y))
	}
	return inst
}

// Predict returns the tree's class for the rows idx of x (all if nil): true
// for positive. It panics if x has another width than the training rows.
func (m *TreeModel) Predict(x *Matrix, idx []int) []bool {
	pred := m.tree.Predict(m.grid(x, idx, nil))
	out := make([]bool, len(pred))
	for i, p := range pred {
		out[i] = p == 1
	}
	return out
}
