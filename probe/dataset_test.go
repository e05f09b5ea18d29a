package probe

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func buildStore(t *testing.T, positions Position, dtype string, n int) string {
	dir := t.TempDir()
	m := testManifest(positions, dtype)
	w, err := CreateStore(dir, m, StoreOptions{ShardBytes: 500})
	require.NoError(t, err)
	for i := range n {
		appendTest(t, w, m, i)
	}
	require.NoError(t, w.Close())
	return dir
}

func TestLoadDataset(t *testing.T) {
	dir := buildStore(t, PositionAll, DTypeF32, 17)
	s, err := OpenStore(dir)
	require.NoError(t, err)
	m := s.Manifest

	last, err := LoadDataset(s, 3, PositionLast)
	require.NoError(t, err)
	mean, err := LoadDataset(s, 3, PositionMean)
	require.NoError(t, err)
	all, err := LoadDataset(s, 3, PositionAll)
	require.NoError(t, err)
	def, err := LoadDataset(s, 3, "")
	require.NoError(t, err)
	require.Equal(t, last.X, def.X, "an all-positions store defaults to last")

	require.Equal(t, 17, last.Len())
	require.Equal(t, 17, mean.Len())
	require.Equal(t, m.Rows, all.Len())
	row := 0
	for i, e := range m.Examples {
		var id int
		_, err := fmt.Sscanf(e.ID, "ex-%d", &id)
		require.NoError(t, err)
		ex := testEx(id)
		for _, ds := range []*Dataset{last, mean} {
			assert.Equal(t, LabelOf(ex.Label), ds.Labels[i])
			assert.Equal(t, ex.Group, ds.Groups[i])
			assert.Equal(t, ex.ID, ds.IDs[i])
			assert.Equal(t, i, ds.Example[i])
		}
		for j := range 8 {
			// Last token row, and the mean over the example's tokens.
			require.Equal(t, actValue(id, 3, e.Rows-1, j), last.X.Row(i)[j])
			var sum float64
			for r := range e.Rows {
				sum += float64(actValue(id, 3, r, j))
			}
			require.InDelta(t, sum/float64(e.Rows), mean.X.Row(i)[j], 1e-6)
		}
		for r := range e.Rows {
			require.Equal(t, i, all.Example[row])
			require.Equal(t, ex.ID, all.IDs[row])
			require.Equal(t, actValue(id, 3, r, 0), all.X.Row(row)[0])
			row++
		}
	}
	assert.Equal(t, DatasetInfo{Layer: 3, Point: PointResidual, Position: PositionMean, Fingerprint: "sha256:abc", NEmbd: 8}, mean.Info)

	_, err = LoadDataset(s, 2, PositionLast)
	require.ErrorContains(t, err, "no layer 2 (layers [1 3])")
	_, err = LoadDataset(s, 3, "first")
	require.ErrorContains(t, err, `position "first"`)

	// A positions=last store holds only last rows.
	s2, err := OpenStore(buildStore(t, PositionLast, DTypeF16, 5))
	require.NoError(t, err)
	ds, err := LoadDataset(s2, 1, "")
	require.NoError(t, err)
	require.Equal(t, 5, ds.Len())
	require.Equal(t, PositionLast, ds.Info.Position)
	_, err = LoadDataset(s2, 1, PositionMean)
	require.ErrorContains(t, err, "needs a positions=all dump")
}

func TestDatasetHelpers(t *testing.T) {
	x := NewMatrix(5, 2, []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	ds := NewDataset(x, []Label{Positive, Negative, Unknown, Positive, Negative}, []string{"a", "a", "b", "c", "c"}, nil)
	pos, neg, unk := ds.Counts()
	require.Equal(t, [3]int{2, 2, 1}, [3]int{pos, neg, unk})
	require.Equal(t, []int{0, 1, 3, 4}, ds.Labelled())
	require.Equal(t, []string{"0", "1", "2", "3", "4"}, ds.IDs)
	require.Equal(t, []bool{true, false, false, true, false}, ds.Positives(nil))
	require.Equal(t, []bool{true, false}, ds.Positives([]int{3, 4}))
	require.NotNil(t, ds.Where(func(int) bool { return false }))
	sub := ds.Subset([]int{3, 1})
	require.Equal(t, []float32{6, 7, 2, 3}, sub.X.Data)
	require.Equal(t, []Label{Positive, Negative}, sub.Labels)
	require.Equal(t, []string{"c", "a"}, sub.Groups)
	sub.X.Data[0] = 99
	require.Equal(t, float32(6), x.Data[6], "Subset copies")
	require.Equal(t, 7.0, x.At(3, 1))
	r, c := x.Dims()
	require.Equal(t, [2]int{5, 2}, [2]int{r, c})
	require.Equal(t, 3.0, x.T().At(1, 1))
	require.Panics(t, func() { NewDataset(x, make([]Label, 4), nil, nil) })
	require.Panics(t, func() { NewMatrix(2, 2, make([]float32, 3)) })
	require.Panics(t, func() { x.Row(5) })

	tr, fa := true, false
	require.Equal(t, Positive, LabelOf(&tr))
	require.Equal(t, Negative, LabelOf(&fa))
	require.Equal(t, Unknown, LabelOf(nil))
	require.Equal(t, "positive negative unknown", fmt.Sprint(Positive, " ", Negative, " ", Unknown))
}

// TestNonFiniteShard: a shard value changed to NaN or ±Inf after the dump (the writer refuses
// them) is an error when read, in either stored type, never a row fed to a probe.
func TestNonFiniteShard(t *testing.T) {
	for _, tc := range []struct {
		dtype string
		bits  []byte // little-endian, written over the first value of the first tensor
		name  string
	}{
		{DTypeF32, []byte{0, 0, 0x80, 0x7f}, "+Inf"},
		{DTypeF32, []byte{0, 0, 0x80, 0xff}, "-Inf"},
		{DTypeF32, []byte{0, 0, 0xc0, 0x7f}, "NaN"},
		{DTypeF16, []byte{0x00, 0x7c}, "+Inf"},
		{DTypeF16, []byte{0x00, 0xfc}, "-Inf"},
		{DTypeF16, []byte{0x01, 0x7e}, "NaN"},
	} {
		t.Run(tc.dtype+" "+tc.name, func(t *testing.T) {
			dir := buildStore(t, PositionLast, tc.dtype, 5)
			s, err := OpenStore(dir)
			require.NoError(t, err)
			shard := filepath.Join(dir, s.Manifest.Shards[0].File)
			b, err := os.ReadFile(shard)
			require.NoError(t, err)
			headerLen := binary.LittleEndian.Uint64(b[:8])
			copy(b[8+headerLen:], tc.bits)
			require.NoError(t, os.WriteFile(shard, b, 0o644))

			s, err = OpenStore(dir)
			require.NoError(t, err)
			var hit bool
			for _, l := range s.Manifest.Layers {
				_, err := LoadDataset(s, l, PositionLast)
				if err != nil {
					require.ErrorContains(t, err, "non-finite value")
					hit = true
				}
			}
			require.True(t, hit, "the corrupted layer is refused")
		})
	}
}
