package probe

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/x448/float16"
)

// testExample describes a synthetic example: its activation value at (layer,
// token, j) is a deterministic function, so a read can be checked anywhere.
func actValue(id, layer, tok, j int) float32 {
	// Multiples of 1/64 below 2048 are exact in float16.
	return float32((id*131+layer*17+tok*7+j*3)%4096-2048) / 64
}

func testActs(id int, layers []int, rows, d int) [][]float32 {
	acts := make([][]float32, len(layers))
	for li, l := range layers {
		a := make([]float32, rows*d)
		for r := 0; r < rows; r++ {
			for j := 0; j < d; j++ {
				a[r*d+j] = actValue(id, l, r, j)
			}
		}
		acts[li] = a
	}
	return acts
}

func boolp(b bool) *bool { return &b }

func testManifest(positions Position, dtype string) Manifest {
	return Manifest{
		Model:     ModelInfo{Path: "m.gguf", Fingerprint: "sha256:abc", Arch: "llama", NEmbd: 8, NLayer: 4},
		Layers:    []int{1, 3},
		Positions: positions,
		DType:     dtype,
		NEmbd:     8,
		Meta:      map[string]string{"prompts": "test.jsonl"},
	}
}

// testEx returns example number i: label alternating, group i/3, i%5+1 tokens.
func testEx(i int) Example {
	n := i%5 + 1
	toks := make([]int32, n)
	pieces := make([]string, n)
	for k := range toks {
		toks[k] = int32(100 + k)
		pieces[k] = fmt.Sprint("t", k)
	}
	var label *bool
	if i%4 != 3 {
		label = boolp(i%2 == 0)
	}
	return Example{
		ID: fmt.Sprintf("ex-%03d", i), Prompt: fmt.Sprintf("prompt %d", i), Label: label,
		Group: fmt.Sprintf("g%d", i/3), Tokens: toks, Pieces: pieces,
		Meta: map[string]string{"source": "unit"},
	}
}

func appendTest(t testing.TB, w *StoreWriter, m Manifest, i int) {
	ex := testEx(i)
	rows := 1
	if m.Positions == PositionAll {
		rows = len(ex.Tokens)
	}
	require.NoError(t, w.Append(ex, testActs(i, m.Layers, rows, m.NEmbd)))
}

// checkStore reads every example of every layer and compares it with
// actValue; it returns the example ids in order.
func checkStore(t testing.TB, dir string, tol float64) []string {
	s, err := OpenStore(dir)
	require.NoError(t, err)
	m := s.Manifest
	var ids []string
	for i, e := range m.Examples {
		var id int
		_, err := fmt.Sscanf(e.ID, "ex-%d", &id)
		require.NoError(t, err)
		ids = append(ids, e.ID)
		want := testEx(id)
		assert.Equal(t, want.Label, e.Label)
		assert.Equal(t, want.Group, e.Group)
		assert.Equal(t, want.Tokens, e.Tokens)
		assert.Equal(t, want.Pieces, e.Pieces)
		assert.Equal(t, len(want.Tokens), e.NTokens)
		for _, l := range m.Layers {
			x, err := s.ReadExample(l, i)
			require.NoError(t, err)
			for r := 0; r < x.Rows; r++ {
				for j := 0; j < x.Cols; j++ {
					require.InDelta(t, actValue(id, l, r, j), x.Data[r*x.Cols+j], tol)
				}
			}
		}
	}
	_, err = s.ReadExample(m.Layers[0], len(m.Examples))
	require.ErrorContains(t, err, "out of range")
	_, err = s.ReadExample(m.Layers[0], -1)
	require.ErrorContains(t, err, "out of range")
	return ids
}

func TestStoreRoundTrip(t *testing.T) {
	for _, positions := range []Position{PositionAll, PositionLast} {
		for _, dtype := range []string{DTypeF32, DTypeF16} {
			t.Run(string(positions)+"/"+dtype, func(t *testing.T) {
				dir := t.TempDir()
				m := testManifest(positions, dtype)
				// Small shards: several examples per shard, several shards.
				w, err := CreateStore(dir, m, StoreOptions{ShardBytes: 300})
				require.NoError(t, err)
				for i := 0; i < 23; i++ {
					appendTest(t, w, m, i)
					// One example: at most 2 layers × 5 rows × 8 values, and a record of
					// under 200 bytes.
					require.LessOrEqual(t, w.bufferedBytes(), int64(300)+2*8*5*4+200, "buffer bounded by one shard plus one example")
					var capacity int
					for _, b := range w.buf {
						capacity += cap(b)
					}
					require.LessOrEqual(t, capacity, 300+2*8*5*4+2*(1<<16), "allocated buffers bounded too")
				}
				require.True(t, w.Done("ex-007"))
				require.False(t, w.Done("ex-099"))
				require.NoError(t, w.Close())
				require.NoError(t, w.Close(), "second Close is a no-op")

				ids := checkStore(t, dir, 0)
				require.Len(t, ids, 23)
				s, err := OpenStore(dir)
				require.NoError(t, err)
				require.True(t, s.Manifest.Complete)
				require.GreaterOrEqual(t, len(s.Manifest.Shards), 3)
				assert.Equal(t, m.Meta, s.Manifest.Meta)
				assert.Equal(t, m.Model, s.Manifest.Model)
				assert.Equal(t, PointResidual, s.Manifest.Point)

				// Whole-layer reads equal per-example reads, and selected rows
				// in any order across shards equal the same rows of the layer.
				all, err := s.ReadLayer(3)
				require.NoError(t, err)
				require.Equal(t, s.Manifest.Rows, all.Rows)
				rows := []int{all.Rows - 1, 0, 1, 2, 5, 4}
				sel, err := s.ReadRows(3, rows)
				require.NoError(t, err)
				for k, r := range rows {
					require.Equal(t, all.Row(r), sel.Row(k))
				}
				_, err = s.ReadRows(2, rows)
				require.ErrorContains(t, err, "no layer 2")
				_, err = s.ReadRows(3, []int{all.Rows})
				require.Error(t, err)

				// Shards are named in order, each with its examples file, and no temporary
				// files remain.
				entries, err := os.ReadDir(dir)
				require.NoError(t, err)
				want := []string{ManifestName}
				for i := range s.Manifest.Shards {
					want = append(want, examplesName(i), shardName(i))
				}
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				require.ElementsMatch(t, want, names)
			})
		}
	}
}

func TestStoreF16Rounding(t *testing.T) {
	dir := t.TempDir()
	m := testManifest(PositionLast, DTypeF16)
	m.Layers = []int{0}
	w, err := CreateStore(dir, m, StoreOptions{})
	require.NoError(t, err)
	vals := []float32{0.1, -1.0 / 3, 1000.7, 1e-6, -65504, 65504, 3.14159, 0}
	require.NoError(t, w.Append(Example{ID: "a"}, [][]float32{vals}))
	big := append([]float32{}, vals...)
	big[0] = 70000
	require.ErrorContains(t, w.Append(Example{ID: "b"}, [][]float32{big}), "float16 range")
	require.NoError(t, w.Close())
	s, err := OpenStore(dir)
	require.NoError(t, err)
	x, err := s.ReadLayer(0)
	require.NoError(t, err)
	for j, v := range vals {
		require.Equal(t, float16.Fromfloat32(v).Float32(), x.Data[j])
		require.InDelta(t, v, x.Data[j], math.Abs(float64(v))*1e-3+1e-7)
	}
}

func TestStoreAppendErrors(t *testing.T) {
	dir := t.TempDir()
	m := testManifest(PositionAll, DTypeF32)
	w, err := CreateStore(dir, m, StoreOptions{})
	require.NoError(t, err)
	ok := testActs(0, m.Layers, 2, 8)
	cases := []struct {
		name string
		ex   Example
		acts [][]float32
		msg  string
	}{
		{"empty id", Example{}, ok, "empty example id"},
		{"layers", Example{ID: "a"}, ok[:1], "2 layers"},
		{"partial row", Example{ID: "a"}, [][]float32{ok[0][:7], ok[1][:7]}, "whole number of rows"},
		{"ragged", Example{ID: "a"}, [][]float32{ok[0], ok[1][:8]}, "has 8 values"},
		{"tokens", Example{ID: "a", Tokens: []int32{1, 2, 3}}, ok, "2 rows for 3 tokens"},
		{"pieces", Example{ID: "a", Tokens: []int32{1, 2}, Pieces: []string{"x"}}, ok, "1 pieces"},
		{"nan", Example{ID: "a"}, [][]float32{ok[0], append([]float32{float32(math.NaN())}, ok[1][1:]...)}, "non-finite"},
	}
	for _, c := range cases {
		require.ErrorContains(t, w.Append(c.ex, c.acts), c.msg, c.name)
	}
	require.NoError(t, w.Append(Example{ID: "a"}, ok))
	require.ErrorContains(t, w.Append(Example{ID: "a"}, ok), "duplicate")
	require.NoError(t, w.Close())
	require.Panics(t, func() { _ = w.Append(Example{ID: "b"}, ok) })

	last := testManifest(PositionLast, DTypeF32)
	w2, err := CreateStore(t.TempDir(), last, StoreOptions{})
	require.NoError(t, err)
	require.ErrorContains(t, w2.Append(Example{ID: "a"}, ok), "2 rows in a positions=last store")

	bad := testManifest("first", DTypeF32)
	_, err = CreateStore(t.TempDir(), bad, StoreOptions{})
	require.ErrorIs(t, err, ErrManifest)
	bad = testManifest(PositionAll, "bf16")
	_, err = CreateStore(t.TempDir(), bad, StoreOptions{})
	require.ErrorIs(t, err, ErrManifest)
	bad = testManifest(PositionAll, DTypeF32)
	bad.Version = 1
	_, err = CreateStore(t.TempDir(), bad, StoreOptions{})
	require.ErrorContains(t, err, "version 1: this build writes version 2")
}

func TestCreateStoreRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	m := testManifest(PositionLast, DTypeF32)
	w, err := CreateStore(dir, m, StoreOptions{})
	require.NoError(t, err)
	appendTest(t, w, m, 0)
	require.NoError(t, w.Close())
	_, err = CreateStore(dir, m, StoreOptions{})
	require.ErrorIs(t, err, ErrStoreExists)
	checkStore(t, dir, 0) // untouched

	// Shard or examples files without a manifest are refused too.
	for _, name := range []string{"shard-00000.safetensors", "shard-00000.examples.jsonl"} {
		dir2 := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir2, name), []byte("x"), 0o644))
		_, err = CreateStore(dir2, m, StoreOptions{})
		require.ErrorIs(t, err, ErrStoreExists, name)
	}
}

// TestStoreResume simulates crashes at several points of a dump and checks
// that resuming gives the same store as an uninterrupted dump.
func TestStoreResume(t *testing.T) {
	m := testManifest(PositionAll, DTypeF16)
	const n = 30
	ref := t.TempDir()
	w, err := CreateStore(ref, m, StoreOptions{ShardBytes: 400})
	require.NoError(t, err)
	for i := 0; i < n; i++ {
		appendTest(t, w, m, i)
	}
	require.NoError(t, w.Close())
	refIDs := checkStore(t, ref, 0)

	for _, crashAt := range []int{0, 1, 7, 13, 29} {
		for _, leftover := range []string{"", "tmp", "renamed"} {
			t.Run(fmt.Sprint(crashAt, leftover), func(t *testing.T) {
				dir := t.TempDir()
				w, err := CreateStore(dir, m, StoreOptions{ShardBytes: 400})
				require.NoError(t, err)
				for i := 0; i < crashAt; i++ {
					appendTest(t, w, m, i)
				}
				// Crash: the writer is dropped with buffered examples, once the
				// shard it writes in the background (if any) is on disk: the test's
				// process lives on, and so would that write. Leave the debris an
				// interrupted shard write could leave.
				require.NoError(t, w.wait())
				committed := w.Manifest()
				require.Nil(t, committed.Examples, "the writer keeps no examples")
				next := filepath.Join(dir, shardName(len(committed.Shards)))
				nextExamples := filepath.Join(dir, examplesName(len(committed.Shards)))
				switch leftover {
				case "tmp":
					require.NoError(t, os.WriteFile(next+".tmp", []byte("partial"), 0o644))
					require.NoError(t, os.WriteFile(filepath.Join(dir, ManifestName+".tmp"), []byte("{"), 0o644))
					// What the atomic writer (internal/safefile) leaves when killed mid-write.
					require.NoError(t, os.WriteFile(filepath.Join(dir, "."+filepath.Base(next)+".tmp-123"), []byte("partial"), 0o600))
					require.NoError(t, os.WriteFile(filepath.Join(dir, "."+ManifestName+".tmp-456"), []byte("{"), 0o600))
					require.NoError(t, os.WriteFile(filepath.Join(dir, "."+filepath.Base(nextExamples)+".tmp-789"), []byte(`{"id"`), 0o600))
				case "renamed": // renamed, but the manifest was not rewritten
					require.NoError(t, os.WriteFile(nextExamples, []byte(`{"id":"ex-999","label":null,"n_tokens":1,"rows":1}`+"\n"), 0o644))
					require.NoError(t, os.WriteFile(next, []byte("complete but unlisted"), 0o644))
				}
				// The crashed directory is a valid, incomplete store.
				s, err := OpenStore(dir)
				require.NoError(t, err, "store readable after a crash")
				require.False(t, s.Manifest.Complete)
				_, err = CreateStore(dir, m, StoreOptions{})
				require.ErrorIs(t, err, ErrStoreExists)

				w, err = ResumeStore(dir, StoreOptions{ShardBytes: 400})
				require.NoError(t, err)
				done := 0
				for i := 0; i < n; i++ {
					if w.Done(testEx(i).ID) {
						done++
						continue
					}
					appendTest(t, w, m, i)
				}
				require.Equal(t, committed.NExamples, done)
				require.NoError(t, w.Close())
				ids := checkStore(t, dir, 0)
				require.ElementsMatch(t, refIDs, ids)
				require.Equal(t, refIDs, ids, "examples in the original order")
				for _, left := range []string{next + ".tmp", filepath.Join(dir, "."+filepath.Base(next)+".tmp-123"), filepath.Join(dir, "."+ManifestName+".tmp-456"),
					filepath.Join(dir, "."+filepath.Base(nextExamples)+".tmp-789")} {
					_, err = os.Stat(left)
					require.True(t, errors.Is(err, os.ErrNotExist), left)
				}
			})
		}
	}
}

func TestStoreFlushCheckpoint(t *testing.T) {
	dir := t.TempDir()
	m := testManifest(PositionLast, DTypeF32)
	w, err := CreateStore(dir, m, StoreOptions{})
	require.NoError(t, err)
	appendTest(t, w, m, 0)
	appendTest(t, w, m, 1)
	require.NoError(t, w.Flush())
	// A signal handler flushes and exits without Close.
	s, err := OpenStore(dir)
	require.NoError(t, err)
	require.Len(t, s.Manifest.Examples, 2)
	require.False(t, s.Manifest.Complete)
	w, err = ResumeStore(dir, StoreOptions{})
	require.NoError(t, err)
	require.True(t, w.Done("ex-001"))
	appendTest(t, w, m, 2)
	require.NoError(t, w.Close())
	require.Equal(t, []string{"ex-000", "ex-001", "ex-002"}, checkStore(t, dir, 0))
}

func TestOpenStoreCorrupt(t *testing.T) {
	build := func(t *testing.T) string {
		dir := t.TempDir()
		m := testManifest(PositionLast, DTypeF32)
		// Two examples per shard: 64 bytes of rows and a record of about 200 each.
		w, err := CreateStore(dir, m, StoreOptions{ShardBytes: 500})
		require.NoError(t, err)
		for i := 0; i < 6; i++ {
			appendTest(t, w, m, i)
		}
		require.NoError(t, w.Close())
		return dir
	}
	t.Run("truncated shard", func(t *testing.T) {
		dir := build(t)
		p := filepath.Join(dir, shardName(1))
		st, err := os.Stat(p)
		require.NoError(t, err)
		require.NoError(t, os.Truncate(p, st.Size()-3))
		_, err = OpenStore(dir)
		require.ErrorContains(t, err, "shard-00001")
		_, err = ResumeStore(dir, StoreOptions{})
		require.Error(t, err)
	})
	t.Run("missing shard", func(t *testing.T) {
		dir := build(t)
		require.NoError(t, os.Remove(filepath.Join(dir, shardName(0))))
		_, err := OpenStore(dir)
		require.Error(t, err)
	})
	t.Run("wrong shape", func(t *testing.T) {
		dir := build(t)
		m, err := LoadManifest(dir)
		require.NoError(t, err)
		m.NEmbd, m.Model.NEmbd = 4, 4
		require.NoError(t, writeManifest(dir, m))
		_, err = OpenStore(dir)
		require.ErrorContains(t, err, "want F32 [")
	})
	t.Run("truncated manifest", func(t *testing.T) {
		dir := build(t)
		p := filepath.Join(dir, ManifestName)
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p, data[:len(data)/2], 0o644))
		_, err = OpenStore(dir)
		require.ErrorIs(t, err, ErrManifest)
	})
	t.Run("no manifest", func(t *testing.T) {
		_, err := OpenStore(t.TempDir())
		require.ErrorIs(t, err, os.ErrNotExist)
	})
	// A shard's examples file must hold exactly the shard's examples.
	exFile := func(dir string, i int) string { return filepath.Join(dir, examplesName(i)) }
	t.Run("missing examples file", func(t *testing.T) {
		dir := build(t)
		require.NoError(t, os.Remove(exFile(dir, 1)))
		_, err := OpenStore(dir)
		require.ErrorIs(t, err, os.ErrNotExist)
		require.ErrorContains(t, err, examplesName(1))
		_, err = ResumeStore(dir, StoreOptions{})
		require.ErrorContains(t, err, examplesName(1))
	})
	for _, tc := range []struct {
		name string
		edit func(lines []string) []string
		want string
	}{
		{"examples file cut short", func(l []string) []string { return l[:len(l)-1] }, "examples of 1 rows, the shard has 2 of 2"},
		{"examples file with an extra line", func(l []string) []string { return append(l, l[0]) }, "line 3: invalid store manifest: more than the shard's 2 examples"},
		{"examples file not JSON", func(l []string) []string { return []string{l[0], "{"} }, "line 2: invalid store manifest: unexpected EOF"},
		{"example of two rows", func(l []string) []string {
			return []string{l[0], strings.Replace(l[1], `"rows":1`, `"rows":2`, 1)}
		}, `line 2: invalid store manifest: example "ex-003": 2 rows in a positions=last store`},
		{"example without id", func(l []string) []string {
			return []string{l[0], strings.Replace(l[1], `"id":"ex-003"`, `"id":""`, 1)}
		}, "line 2: invalid store manifest: example at row 3: empty id"},
		{"id repeated", func(l []string) []string {
			return []string{l[0], strings.Replace(l[1], `"id":"ex-003"`, `"id":"ex-002"`, 1)}
		}, `duplicate id "ex-002"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := build(t)
			m, err := LoadManifestHeader(dir)
			require.NoError(t, err)
			require.Equal(t, 2, m.Shards[1].Examples, "the cases assume two examples in shard 1")
			data, err := os.ReadFile(exFile(dir, 1))
			require.NoError(t, err)
			lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			require.NoError(t, os.WriteFile(exFile(dir, 1), []byte(strings.Join(tc.edit(lines), "\n")+"\n"), 0o644))
			_, err = OpenStore(dir)
			require.ErrorIs(t, err, ErrManifest)
			require.ErrorContains(t, err, tc.want)
			_, err = ResumeStore(dir, StoreOptions{})
			require.ErrorIs(t, err, ErrManifest, "a damaged examples file is not resumed")
		})
	}
	t.Run("examples inline in a version 2 manifest", func(t *testing.T) {
		dir := build(t)
		p := filepath.Join(dir, ManifestName)
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		data = []byte(strings.Replace(string(data), `"shards":[`, `"examples":[],"shards":[`, 1))
		require.NoError(t, os.WriteFile(p, data, 0o644))
		_, err = OpenStore(dir)
		require.ErrorContains(t, err, "version 2 lists its examples in the shards' examples files, not in the manifest")
	})
}

func TestManifestValidate(t *testing.T) {
	dir := t.TempDir()
	m0 := testManifest(PositionAll, DTypeF32)
	w, err := CreateStore(dir, m0, StoreOptions{ShardBytes: 200})
	require.NoError(t, err)
	for i := 0; i < 5; i++ {
		appendTest(t, w, m0, i)
	}
	require.NoError(t, w.Close())
	good, err := LoadManifest(dir)
	require.NoError(t, err)
	require.NoError(t, good.Validate())

	mutate := []struct {
		name string
		fn   func(m *Manifest)
	}{
		{"version", func(m *Manifest) { m.Version = 99 }},
		{"n_embd", func(m *Manifest) { m.NEmbd = 0 }},
		{"model n_embd", func(m *Manifest) { m.Model.NEmbd = 9 }},
		{"no layers", func(m *Manifest) { m.Layers = nil }},
		{"repeated layer", func(m *Manifest) { m.Layers = []int{1, 1} }},
		{"path in shard name", func(m *Manifest) { m.Shards[0].File = "../shard-00000.safetensors" }},
		{"shard order", func(m *Manifest) { m.Shards[0].File = shardName(1) }},
		{"dup id", func(m *Manifest) { m.Examples[1].ID = m.Examples[0].ID }},
		{"row gap", func(m *Manifest) { m.Examples[1].Row++ }},
		{"rows vs tokens", func(m *Manifest) { m.Examples[1].NTokens++ }},
		{"shard rows", func(m *Manifest) { m.Shards[0].Rows++ }},
		{"total rows", func(m *Manifest) { m.Rows++ }},
		{"example shard", func(m *Manifest) { m.Examples[0].Shard = 7 }},
		{"shard without examples", func(m *Manifest) {
			m.Shards = append(m.Shards, ShardInfo{File: shardName(len(m.Shards)), Rows: 1, Examples: 1, ExamplesFile: examplesName(len(m.Shards))})
		}},
		{"examples file name", func(m *Manifest) { m.Shards[0].ExamplesFile = "../x.jsonl" }},
		{"example count", func(m *Manifest) { m.NExamples++ }},
		{"examples loaded", func(m *Manifest) { m.Examples = m.Examples[:len(m.Examples)-1] }},
	}
	for _, c := range mutate {
		data, err := json.Marshal(good)
		require.NoError(t, err)
		var m Manifest
		require.NoError(t, json.Unmarshal(data, &m))
		c.fn(&m)
		require.ErrorIs(t, m.Validate(), ErrManifest, c.name)
	}

	// The heads' output (attn_heads) is n_head·head_dim wide, which need not be the model's
	// n_embd; every other point's rows are n_embd wide.
	for _, tc := range []struct {
		point string
		err   string
	}{
		{PointAttnHeads, ""},
		{PointResidual, "n_embd 8 differs from the model's 9"},
		{PointMLPOut, "n_embd 8 differs from the model's 9"},
	} {
		m := good
		m.Point, m.Model.NEmbd = tc.point, 9
		if tc.err == "" {
			require.NoError(t, m.Validate(), tc.point)
		} else {
			require.ErrorContains(t, m.Validate(), tc.err, tc.point)
		}
	}
}

// FuzzManifest checks that ParseManifest never panics and that an accepted
// manifest is self-consistent enough for the reader's arithmetic.
func FuzzManifest(f *testing.F) {
	dir := f.TempDir()
	m0 := testManifest(PositionAll, DTypeF32)
	w, err := CreateStore(dir, m0, StoreOptions{ShardBytes: 200})
	require.NoError(f, err)
	for i := 0; i < 4; i++ {
		appendTest(f, w, m0, i)
	}
	require.NoError(f, w.Close())
	data, err := os.ReadFile(filepath.Join(dir, ManifestName))
	require.NoError(f, err)
	f.Add(data)
	f.Add([]byte(`{"version":1,"model":{"fingerprint":"x","n_embd":4},"layers":[0],"point":"residual","positions":"last","dtype":"f32","n_embd":4,"rows":0,"shards":[],"examples":[]}`))
	f.Add([]byte(`{"version":1,"layers":[0],"positions":"last","dtype":"f32","n_embd":4,"rows":1,"shards":[{"file":"shard-00000.safetensors","rows":1,"examples":1}],"examples":[{"id":"a","rows":1,"n_tokens":3}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		total := 0
		for _, s := range m.Shards {
			total += s.Rows
		}
		if total != m.Rows {
			t.Fatalf("accepted manifest with %d shard rows, %d rows", total, m.Rows)
		}
		starts := m.shardStarts()
		for _, e := range m.Examples {
			if e.Shard < 0 || e.Shard >= len(m.Shards) || e.Row < starts[e.Shard] || e.Row+e.Rows > starts[e.Shard]+m.Shards[e.Shard].Rows {
				t.Fatalf("accepted example %q outside its shard", e.ID)
			}
		}
	})
}

func TestMerge(t *testing.T) {
	m := testManifest(PositionAll, DTypeF32)
	mk := func(t *testing.T, ids []int, mm Manifest, closeIt bool) string {
		dir := t.TempDir()
		w, err := CreateStore(dir, mm, StoreOptions{ShardBytes: 300})
		require.NoError(t, err)
		for _, i := range ids {
			appendTest(t, w, mm, i)
		}
		if closeIt {
			require.NoError(t, w.Close())
		} else {
			require.NoError(t, w.Flush())
		}
		return dir
	}
	part := func(i string) Manifest {
		p := m
		p.Meta = map[string]string{"prompts": "test.jsonl", "shard": i}
		return p
	}
	a := mk(t, []int{0, 2, 4, 6, 8, 10}, part("0/3"), true)
	b := mk(t, []int{1, 3, 5, 7, 9}, part("1/3"), true)
	c := mk(t, []int{11}, part("2/3"), true)
	dst := filepath.Join(t.TempDir(), "merged")
	require.NoError(t, Merge(dst, a, b, c))
	ids := checkStore(t, dst, 0)
	require.Equal(t, []string{"ex-000", "ex-002", "ex-004", "ex-006", "ex-008", "ex-010", "ex-001", "ex-003", "ex-005", "ex-007", "ex-009", "ex-011"}, ids)
	s, err := OpenStore(dst)
	require.NoError(t, err)
	require.True(t, s.Manifest.Complete)
	require.Equal(t, map[string]string{"prompts": "test.jsonl", "merged_sources": "3"}, s.Manifest.Meta)
	// Merged data equal to the sources' rows, concatenated.
	all, err := s.ReadLayer(1)
	require.NoError(t, err)
	row := 0
	for _, src := range []string{a, b, c} {
		ss, err := OpenStore(src)
		require.NoError(t, err)
		x, err := ss.ReadLayer(1)
		require.NoError(t, err)
		require.Equal(t, x.Data, all.Data[row*8:(row+x.Rows)*8])
		row += x.Rows
	}

	t.Run("duplicate id", func(t *testing.T) {
		d := filepath.Join(t.TempDir(), "m")
		err := Merge(d, a, mk(t, []int{4}, m, true))
		require.ErrorContains(t, err, `"ex-004"`)
		_, statErr := os.Stat(d)
		require.True(t, errors.Is(statErr, os.ErrNotExist), "nothing left behind")
	})
	t.Run("incompatible", func(t *testing.T) {
		other := m
		other.Layers = []int{1, 2}
		err := Merge(filepath.Join(t.TempDir(), "m"), a, mk(t, []int{20}, other, true))
		require.ErrorContains(t, err, "layers [1 3] vs [1 2]")
		other = m
		other.Model.Fingerprint = "sha256:other"
		err = Merge(filepath.Join(t.TempDir(), "m"), a, mk(t, []int{20}, other, true))
		require.ErrorContains(t, err, "fingerprint")
		other = m
		other.DType = DTypeF16
		err = Merge(filepath.Join(t.TempDir(), "m"), a, mk(t, []int{20}, other, true))
		require.ErrorContains(t, err, "dtype")
		// Parts dumped with different KV-cache types are different data: refused, as a
		// resumed dump refuses them, rather than joined with the field dropped.
		f16, f32 := part("0/2"), part("1/2")
		f16.Meta["kv_type"], f32.Meta["kv_type"] = "f16", "f32"
		err = Merge(filepath.Join(t.TempDir(), "m"), mk(t, []int{30}, f16, true), mk(t, []int{31}, f32, true))
		require.ErrorContains(t, err, `kv_type "f16" vs "f32"`)
		f32.Meta["kv_type"] = "f16"
		require.NoError(t, Merge(filepath.Join(t.TempDir(), "m"), mk(t, []int{30}, f16, true), mk(t, []int{31}, f32, true)))
	})
	t.Run("incomplete", func(t *testing.T) {
		err := Merge(filepath.Join(t.TempDir(), "m"), a, mk(t, []int{20}, m, false))
		require.ErrorContains(t, err, "incomplete")
	})
	t.Run("destination exists", func(t *testing.T) {
		require.ErrorIs(t, Merge(a, b), ErrStoreExists)
		checkStore(t, a, 0)
	})
}
