package probe

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// xorData: the class is the sign of x₀·x₁, invisible to any linear probe,
// plus d−2 small noise dimensions.
func xorData(seed uint64, n, d int) *Dataset {
	r := rand.New(rand.NewPCG(seed, 3))
	x := NewMatrix(n, d, nil)
	labels := make([]Label, n)
	for i := range n {
		row := x.Row(i)
		a, b := 2.0, 2.0
		if r.IntN(2) == 0 {
			a = -a
		}
		if r.IntN(2) == 0 {
			b = -b
		}
		row[0] = float32(a + 0.5*r.NormFloat64())
		row[1] = float32(b + 0.5*r.NormFloat64())
		for j := 2; j < d; j++ {
			row[j] = float32(0.3 * r.NormFloat64())
		}
		labels[i] = Negative
		if a*b > 0 {
			labels[i] = Positive
		}
	}
	return NewDataset(x, labels, nil, nil)
}

func accuracy(pred []bool, d *Dataset) float64 {
	ok := 0
	for i, p := range pred {
		if p == (d.Labels[i] == Positive) {
			ok++
		}
	}
	return float64(ok) / float64(len(pred))
}

// TestTreeBaseline shows what golearn's CART adds: on XOR-structured data it
// finds the signal that no linear probe can, and on linearly separable data
// it does no better than the linear probe.
func TestTreeBaseline(t *testing.T) {
	train, test := xorData(1, 600, 12), xorData(2, 400, 12)
	tree, err := TreeBaseline{Seed: 1}.Fit(train)
	require.NoError(t, err)
	require.Greater(t, accuracy(tree.Predict(test.X, nil), test), 0.95, "tree on XOR")
	lin, err := Logistic{C: 1}.Fit(train)
	require.NoError(t, err)
	auc, err := AUROC(lin.ScoreRows(test.X, nil, nil), test.Positives(nil))
	require.NoError(t, err)
	require.InDelta(t, 0.5, auc, 0.1, "a linear probe cannot see XOR")

	shift := make([]float64, 10)
	shift[0], shift[1] = 1.5, -1
	lt, _ := gaussianData(5, 300, 300, 10, shift)
	ltest, _ := gaussianData(6, 300, 300, 10, shift)
	tree, err = TreeBaseline{Seed: 1}.Fit(lt)
	require.NoError(t, err)
	lin, err = Logistic{C: 1}.Fit(lt)
	require.NoError(t, err)
	linAcc := ConfusionAt(lin.ScoreRows(ltest.X, nil, nil), ltest.Positives(nil), 0).Accuracy()
	treeAcc := accuracy(tree.Predict(ltest.X, []int(nil)), ltest)
	require.Greater(t, treeAcc, 0.6)
	require.GreaterOrEqual(t, linAcc, treeAcc-0.02, "linear signal: the tree finds nothing more")

	// A row cap still learns XOR.
	small, err := TreeBaseline{MaxRows: 200, Seed: 2}.Fit(train)
	require.NoError(t, err)
	require.Greater(t, accuracy(small.Predict(test.X, nil), test), 0.9)

	_, err = TreeBaseline{}.Fit(NewDataset(NewMatrix(2, 2, nil), []Label{Positive, Positive}, nil, nil))
	require.Error(t, err)
	require.Panics(t, func() { tree.Predict(NewMatrix(1, 3, nil), nil) })
}
