package probe

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// v1Manifest is a version 1 manifest.json as the writer of that version wrote it: the header,
// then one shard and one example per line, every example inline.
const v1Manifest = `{"version":1,"complete":true,"model":{"path":"m.gguf","fingerprint":"sha256:old","arch":"llama","n_embd":4,"n_layer":3},"layers":[0,2],"point":"residual","positions":"last","dtype":"f32","n_embd":4,"rows":3,"meta":{"kv_type":"f16","prompt_set":"sha256:0123 (3 prompts)","tool":"probe v0"},
"shards":[
 {"file":"shard-00000.safetensors","rows":2,"examples":2},
 {"file":"shard-00001.safetensors","rows":1,"examples":1}
],
"examples":[
 {"id":"a","prompt":"Human: a","label":true,"group":"g1","tokens":[1,5],"pieces":["<s>","a"],"n_tokens":2,"shard":0,"row":0,"rows":1},
 {"id":"b","prompt":"Human: b","label":false,"group":"g1","tokens":[1,6,7],"pieces":["<s>","b","c"],"n_tokens":3,"shard":0,"row":1,"rows":1,"meta":{"family":"x"}},
 {"id":"c","prompt":"Human: c","label":null,"tokens":[1,8],"pieces":["<s>","c"],"n_tokens":2,"shard":1,"row":2,"rows":1}
]
}
`

// v1Value is the value of the version 1 store's row r, layer l, column j.
func v1Value(l, r, j int) float32 { return float32(10*l+r) + float32(j)/4 }

// writeV1Store writes a store in version 1 of the format: three examples in two shards.
func writeV1Store(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	row := 0
	for i, rows := range []int{2, 1} {
		var tensors []stWriteTensor
		for _, l := range []int{0, 2} {
			vals := make([]float32, 0, rows*4)
			for r := row; r < row+rows; r++ {
				for j := range 4 {
					vals = append(vals, v1Value(l, r, j))
				}
			}
			tensors = append(tensors, stWriteTensor{Name: layerTensorName(l), DType: dtypeF32,
				Shape: []int64{int64(rows), 4}, Data: appendF32(nil, vals)})
		}
		meta := map[string]string{"format": "probe activations", "point": "residual", "positions": "last"}
		require.NoError(t, writeShardFile(filepath.Join(dir, shardName(i)), tensors, meta))
		row += rows
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, ManifestName), []byte(v1Manifest), 0o644))
	return dir
}

// requireV1Rows checks that the store in dir begins with the version 1 store's rows and
// examples.
func requireV1Rows(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := OpenStore(dir)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(s.Manifest.Examples), 3)
	for _, layer := range []int{0, 2} {
		ds, err := LoadDataset(s, layer, PositionLast)
		require.NoError(t, err)
		for r := range 3 {
			for j := range 4 {
				require.Equal(t, v1Value(layer, r, j), ds.X.Row(r)[j])
			}
		}
		assert.Equal(t, []Label{Positive, Negative, Unknown}, ds.Labels[:3])
		assert.Equal(t, []string{"g1", "g1", ""}, ds.Groups[:3])
		assert.Equal(t, []string{"a", "b", "c"}, ds.IDs[:3])
	}
	e := s.Manifest.Examples[1]
	assert.Equal(t, Example{ID: "b", Prompt: "Human: b", Label: boolp(false), Group: "g1", Tokens: []int32{1, 6, 7},
		Pieces: []string{"<s>", "b", "c"}, NTokens: 3, Shard: 0, Row: 1, Rows: 1, Meta: map[string]string{"family": "x"}}, e)
	return s
}

// TestStoreVersion1: a store written in version 1 of the format (every example inline in
// manifest.json) still loads, merges with a version 2 store, and resumes: ResumeStore converts
// it to version 2 first.
func TestStoreVersion1(t *testing.T) {
	dir := writeV1Store(t)
	m, err := LoadManifest(dir)
	require.NoError(t, err)
	assert.Equal(t, 1, m.Version)
	assert.Equal(t, 3, m.NExamples)
	h, err := LoadManifestHeader(dir)
	require.NoError(t, err)
	assert.Len(t, h.Examples, 3, "a version 1 header keeps its inline examples")
	var ids []string
	require.NoError(t, ForEachExample(dir, h, func(e *Example) error { ids = append(ids, e.ID); return nil }))
	assert.Equal(t, []string{"a", "b", "c"}, ids)
	requireV1Rows(t, dir)

	t.Run("merge", func(t *testing.T) {
		v2 := t.TempDir()
		w, err := CreateStore(v2, Manifest{Model: m.Model, Layers: m.Layers, Positions: PositionLast, DType: DTypeF32,
			NEmbd: 4, Meta: map[string]string{"kv_type": "f16"}}, StoreOptions{})
		require.NoError(t, err)
		require.NoError(t, w.Append(Example{ID: "d", Tokens: []int32{1, 9}}, [][]float32{{1, 2, 3, 4}, {5, 6, 7, 8}}))
		require.NoError(t, w.Close())
		dst := filepath.Join(t.TempDir(), "m")
		require.NoError(t, Merge(dst, dir, v2))
		s := requireV1Rows(t, dst)
		assert.Equal(t, ManifestVersion, s.Manifest.Version)
		assert.Len(t, s.Manifest.Examples, 4)
		x, err := s.ReadExample(2, 3)
		require.NoError(t, err)
		assert.Equal(t, []float32{5, 6, 7, 8}, x.Data)
		_, err = os.Stat(filepath.Join(dst, examplesName(1)))
		require.NoError(t, err, "the version 1 source's examples are written to examples files")

		require.ErrorContains(t, Merge(filepath.Join(t.TempDir(), "m"), dir, dst), `example id "a" is in both`)
	})

	t.Run("resume", func(t *testing.T) {
		w, err := ResumeStore(dir, StoreOptions{})
		require.NoError(t, err)
		got := w.Manifest()
		assert.Equal(t, ManifestVersion, got.Version)
		assert.Nil(t, got.Examples)
		assert.Equal(t, 3, got.NExamples)
		assert.True(t, w.Done("b"))
		data, err := os.ReadFile(filepath.Join(dir, ManifestName))
		require.NoError(t, err)
		assert.NotContains(t, string(data), `"examples":[`, "the manifest is a header now")
		assert.Contains(t, string(data), `"examples_file":"shard-00001.examples.jsonl"`)
		require.ErrorContains(t, w.Append(Example{ID: "c"}, [][]float32{{0, 0, 0, 0}, {0, 0, 0, 0}}), `duplicate example id "c"`)
		require.NoError(t, w.Append(Example{ID: "d", Tokens: []int32{1, 2}}, [][]float32{{1, 2, 3, 4}, {5, 6, 7, 8}}))
		require.NoError(t, w.Close())
		s := requireV1Rows(t, dir)
		assert.Equal(t, "sha256:0123 (3 prompts)", s.Manifest.Meta["prompt_set"])
		assert.Equal(t, []string{"a", "b", "c", "d"}, []string{s.Manifest.Examples[0].ID, s.Manifest.Examples[1].ID,
			s.Manifest.Examples[2].ID, s.Manifest.Examples[3].ID})
	})
}

// TestManifestDoesNotGrowWithExamples: manifest.json lists shards, not examples, so a store of
// a hundred times more examples in as many shards has a manifest of the same size (but for the
// digits of its counts), and no example id is in it.
func TestManifestDoesNotGrowWithExamples(t *testing.T) {
	m := testManifest(PositionLast, DTypeF32)
	sizes := map[int][]int{}
	for _, perShard := range []int{5, 500} {
		dir := t.TempDir()
		w, err := CreateStore(dir, m, StoreOptions{ShardBytes: 1 << 30})
		require.NoError(t, err)
		for shard := range 3 {
			for k := range perShard {
				appendTest(t, w, m, shard*perShard+k)
			}
			require.NoError(t, w.Flush())
			st, err := os.Stat(filepath.Join(dir, ManifestName))
			require.NoError(t, err)
			sizes[perShard] = append(sizes[perShard], int(st.Size()))
		}
		require.NoError(t, w.Close())
		data, err := os.ReadFile(filepath.Join(dir, ManifestName))
		require.NoError(t, err)
		require.NotContains(t, string(data), "ex-0", "no example in the manifest")
		s, err := OpenStore(dir)
		require.NoError(t, err)
		require.Len(t, s.Manifest.Examples, 3*perShard)
	}
	// Counts of 5 and 15 against 500 and 1500: two more digits for the rows and examples of the
	// store and of each shard; one example more (an id, a prompt, tokens and pieces) alone
	// would add over 100 bytes.
	for i := range 3 {
		assert.LessOrEqual(t, sizes[500][i]-sizes[5][i], 4+4*(i+1), "after flush %d: %v", i+1, sizes)
	}
	assert.Less(t, sizes[5][2]-sizes[5][1], 128, "a shard adds one line of about 100 bytes")
}

// TestForEachExampleStreams: ForEachExample reads a version 2 store's examples shard by shard,
// the same examples LoadManifest loads, and stops at fn's error.
func TestForEachExampleStreams(t *testing.T) {
	m := testManifest(PositionAll, DTypeF16)
	dir := t.TempDir()
	w, err := CreateStore(dir, m, StoreOptions{ShardBytes: 300})
	require.NoError(t, err)
	for i := range 17 {
		appendTest(t, w, m, i)
	}
	require.NoError(t, w.Close())
	full, err := LoadManifest(dir)
	require.NoError(t, err)
	h, err := LoadManifestHeader(dir)
	require.NoError(t, err)
	require.Nil(t, h.Examples)
	require.Equal(t, 17, h.NExamples)
	require.Greater(t, len(h.Shards), 3)
	var got []Example
	require.NoError(t, ForEachExample(dir, h, func(e *Example) error { got = append(got, *e); return nil }))
	require.Len(t, got, 17)
	row := 0
	for i, e := range got {
		want := testEx(i)
		require.Equal(t, want.ID, e.ID)
		require.Equal(t, want.Tokens, e.Tokens)
		require.Equal(t, want.Meta, e.Meta)
		require.Equal(t, row, e.Row)
		require.Equal(t, len(want.Tokens), e.Rows)
		row += e.Rows
	}
	require.Equal(t, full.Examples, got, "what LoadManifest loads")
	stop := fmt.Errorf("enough")
	n := 0
	err = ForEachExample(dir, h, func(e *Example) error {
		if n++; n == 5 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 5, n)
}

// BenchmarkStoreFlush appends 100 examples and flushes them as one shard, to a store that
// already holds 1,000 or 100,000 examples (in shards of 1,000): a flush writes the shard, its
// examples file and a header of one line per shard, so its cost must not grow with the
// examples written before (version 1 rewrote every example at every flush). writer_heap_MiB
// is the heap the writer holds after the examples already written (an id hash each).
func BenchmarkStoreFlush(b *testing.B) {
	m := testManifest(PositionLast, DTypeF32)
	for _, before := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("examples=%d", before), func(b *testing.B) {
			dir := b.TempDir()
			var ms0, ms1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms0)
			w, err := CreateStore(dir, m, StoreOptions{ShardBytes: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			next := 0
			add := func(n int) {
				for range n {
					appendTest(b, w, m, next)
					next++
				}
				if err := w.Flush(); err != nil {
					b.Fatal(err)
				}
			}
			for next < before {
				add(1000)
			}
			runtime.GC()
			runtime.ReadMemStats(&ms1)
			st, err := os.Stat(filepath.Join(dir, ManifestName))
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() { // (b.Loop times only the loop)
				add(100)
			}
			b.ReportMetric(float64(int64(ms1.HeapAlloc)-int64(ms0.HeapAlloc))/(1<<20), "writer_heap_MiB")
			b.ReportMetric(float64(st.Size()), "manifest_bytes")
			if got := w.Manifest().NExamples; got != next {
				b.Fatalf("the store holds %d examples, %d appended", got, next)
			}
		})
	}
}

// FuzzExamplesFile checks that reading a shard's examples file never panics, and that what is
// accepted fits the shard: its examples' rows add up to the shard's and lie inside it.
func FuzzExamplesFile(f *testing.F) {
	dir := f.TempDir()
	m := testManifest(PositionAll, DTypeF32)
	w, err := CreateStore(dir, m, StoreOptions{ShardBytes: 1 << 20})
	require.NoError(f, err)
	for i := range 3 {
		appendTest(f, w, m, i)
	}
	require.NoError(f, w.Close())
	data, err := os.ReadFile(filepath.Join(dir, examplesName(0)))
	require.NoError(f, err)
	f.Add(data)
	f.Add([]byte(`{"id":"a","label":null,"n_tokens":6,"rows":6}` + "\n"))
	f.Add([]byte("{}\n{}\n{}\n"))
	h, err := LoadManifestHeader(dir)
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, data []byte) {
		d := t.TempDir()
		for _, name := range []string{ManifestName, shardName(0)} {
			b, err := os.ReadFile(filepath.Join(dir, name))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(d, name), b, 0o644))
		}
		require.NoError(t, os.WriteFile(filepath.Join(d, examplesName(0)), data, 0o644))
		got, err := LoadManifest(d)
		if err != nil {
			return
		}
		rows := 0
		for _, e := range got.Examples {
			if e.Row != rows || e.Rows <= 0 {
				t.Fatalf("accepted example %q at row %d of %d rows, want row %d", e.ID, e.Row, e.Rows, rows)
			}
			rows += e.Rows
		}
		if rows != h.Shards[0].Rows || len(got.Examples) != h.Shards[0].Examples {
			t.Fatalf("accepted %d examples of %d rows for a shard of %d of %d", len(got.Examples), rows, h.Shards[0].Examples, h.Shards[0].Rows)
		}
	})
}

// holdShardWrites makes the writer's background shard writes wait: each sends its shard
// index on started, then blocks until release is closed and returns fail(idx).
func holdShardWrites(t *testing.T, fail func(int) error) (started chan int, release chan struct{}) {
	started, release = make(chan int, 16), make(chan struct{})
	beforeShardWrite = func(idx int) error {
		started <- idx
		<-release
		return fail(idx)
	}
	t.Cleanup(func() { beforeShardWrite = nil })
	return started, release
}

// heldWriter creates a store in a temporary directory whose shard writes fail(idx) once
// released (holdShardWrites), with a 1-byte shard size: a shard holds one example at least, so
// each Append after the first hands the example before it over as a shard.
func heldWriter(t *testing.T, fail func(int) error) (w *StoreWriter, m Manifest, dir string, started chan int, release chan struct{}) {
	dir = t.TempDir()
	m = testManifest(PositionLast, DTypeF32)
	started, release = holdShardWrites(t, fail)
	w, err := CreateStore(dir, m, StoreOptions{ShardBytes: 1})
	require.NoError(t, err)
	return w, m, dir, started, release
}

// requireIncomplete checks that the manifest in dir lists shards shards and is not complete.
func requireIncomplete(t *testing.T, dir string, shards int) {
	t.Helper()
	on, err := LoadManifestHeader(dir)
	require.NoError(t, err)
	assert.Len(t, on.Shards, shards)
	assert.False(t, on.Complete)
}

// requireWaiting checks that nothing arrives on done within 100 ms: the call behind it waits
// (for a shard write held by holdShardWrites).
func requireWaiting(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s returned (%v) while a shard it must wait for was unwritten", what, err)
	case <-time.After(100 * time.Millisecond):
	}
}

// A full shard is written while Append fills the next one; one shard at most is in flight,
// the directory holds a valid store of the shards written meanwhile, and Close waits.
func TestStoreWriterOverlapsWrites(t *testing.T) {
	w, m, dir, started, release := heldWriter(t, func(int) error { return nil })
	appendTest(t, w, m, 0)
	appended := make(chan error, 1)
	go func() { appended <- w.Append(testEx(1), testActs(1, m.Layers, 1, m.NEmbd)) }()
	select {
	case err := <-appended:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Append waited for the shard it handed over to be written")
	}
	require.Equal(t, 0, <-started)
	on, err := LoadManifestHeader(dir)
	require.NoError(t, err)
	assert.Empty(t, on.Shards, "the manifest lists shard 0 before it is written")
	assert.Empty(t, w.Manifest().Shards, "Manifest reports shard 0 before it is written")

	// Shard 1 is full too: the next Append waits for shard 0.
	go func() { appended <- w.Append(testEx(2), testActs(2, m.Layers, 1, m.NEmbd)) }()
	requireWaiting(t, appended, "Append filling a second shard")
	close(release)
	require.NoError(t, <-appended)
	require.Equal(t, 1, <-started)
	assert.Len(t, w.Manifest().Shards, 1, "shard 0 is committed once Append has waited for it")
	require.NoError(t, w.Close())
	man := w.Manifest()
	assert.True(t, man.Complete)
	assert.Len(t, man.Shards, 3)
	assert.Equal(t, 3, man.NExamples)
	assert.Equal(t, []string{"ex-000", "ex-001", "ex-002"}, checkStore(t, dir, 0))
}

// An error writing a shard in the background is returned by the next call, and by every
// later one; the store keeps the shards written before it.
func TestStoreWriterBackgroundError(t *testing.T) {
	for _, next := range []string{"append", "flush", "close"} {
		t.Run(next, func(t *testing.T) {
			w, m, dir, started, release := heldWriter(t, func(idx int) error {
				if idx == 1 {
					return errors.New("disk full")
				}
				return nil
			})
			close(release)
			for i := range 3 { // shards 0 and 1 handed over, example 2 buffered
				appendTest(t, w, m, i)
			}
			require.Equal(t, 0, <-started)
			require.Equal(t, 1, <-started)
			var got error
			switch next {
			case "append":
				// An Append that fills no shard (and so waits for nothing) returns the
				// error once the write has ended.
				w.shardBytes = 1 << 30
				for len(w.inflight) == 0 {
					time.Sleep(time.Millisecond)
				}
				got = w.Append(testEx(3), testActs(3, m.Layers, 1, m.NEmbd))
			case "flush":
				got = w.Flush()
			case "close":
				got = w.Close()
			}
			require.ErrorContains(t, got, "write shard-00001.safetensors: disk full")
			var we *StoreWriteError
			require.ErrorAs(t, got, &we)
			require.ErrorContains(t, w.Flush(), "disk full")
			require.ErrorContains(t, w.Close(), "disk full")
			requireIncomplete(t, dir, 1)
			r, err := ResumeStore(dir, StoreOptions{})
			require.NoError(t, err)
			require.NoError(t, r.Close())
			assert.Equal(t, []string{"ex-000"}, checkStore(t, dir, 0))
		})
	}
}

// Abort waits for the shard being written and drops what the writer buffers: the store holds
// the shards written, incomplete, and nothing is written after Abort returns.
func TestStoreWriterAbort(t *testing.T) {
	w, m, dir, started, release := heldWriter(t, func(int) error { return nil })
	appendTest(t, w, m, 0)
	appendTest(t, w, m, 1) // shard 0 handed over; example 1 buffered
	require.Equal(t, 0, <-started)
	aborted := make(chan error, 1)
	go func() { aborted <- w.Abort() }()
	requireWaiting(t, aborted, "Abort")
	close(release)
	require.NoError(t, <-aborted)
	require.NoError(t, w.Abort(), "a second Abort does nothing")
	require.NoError(t, w.Close(), "Close after Abort does nothing")
	requireIncomplete(t, dir, 1)
	assert.Equal(t, []string{"ex-000"}, checkStore(t, dir, 0))
	shards, err := filepath.Glob(filepath.Join(dir, "shard-*"))
	require.NoError(t, err)
	assert.Len(t, shards, 2, "shard 0 and its examples file, nothing of example 1")
}
