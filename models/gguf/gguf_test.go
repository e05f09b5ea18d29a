package gguf

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sample() ([]KV, []Tensor) {
	kvs := []KV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "a.u8", Value: uint8(7)}, {Key: "a.i8", Value: int8(-7)},
		{Key: "a.u16", Value: uint16(700)}, {Key: "a.i16", Value: int16(-700)},
		{Key: "a.u32", Value: uint32(70000)}, {Key: "a.i32", Value: int32(-70000)},
		{Key: "a.u64", Value: uint64(1 << 40)}, {Key: "a.i64", Value: int64(-1 << 40)},
		{Key: "a.f32", Value: float32(1.5)}, {Key: "a.f64", Value: 2.25},
		{Key: "a.bool", Value: true}, {Key: "a.str", Value: "héllo"},
		{Key: "a.strs", Value: []string{"x", "", "▁y"}},
		{Key: "a.f32s", Value: []float32{1, -2, 3.5}},
		{Key: "a.i32s", Value: []int32{1, -2, 3}},
	}
	ts := []Tensor{
		F32("w", []float32{1, 2, 3, 4, 5, 6}, 3, 2),
		F32("b", []float32{-1}, 1),
		F32("big", make([]float32, 1000), 10, 100),
	}
	return kvs, ts
}

func TestRoundTrip(t *testing.T) {
	kvs, ts := sample()
	path := filepath.Join(t.TempDir(), "x.gguf")
	require.NoError(t, WriteFile(path, kvs, ts))
	g, err := Open(path)
	require.NoError(t, err)
	assert.Equal(t, uint32(3), g.Version)
	assert.Equal(t, kvs, g.KV)
	require.Len(t, g.Tensors, 3)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	w, err := g.ReadTensorFloat32(f, "w")
	require.NoError(t, err)
	assert.Equal(t, []float32{1, 2, 3, 4, 5, 6}, w)
	assert.Equal(t, []uint64{3, 2}, g.Tensors[0].Shape)
	for _, ti := range g.Tensors {
		assert.Zero(t, (g.DataOffset+ti.Offset)%32, "tensor %s aligned", ti.Name)
	}
	u, ok := g.Uint("a.u32")
	assert.True(t, ok)
	assert.Equal(t, uint64(70000), u)
	_, ok = g.Uint("a.i8")
	assert.False(t, ok, "negative value is not a uint")
	fv, ok := g.Float("a.f32")
	assert.True(t, ok)
	assert.Equal(t, 1.5, fv)
	assert.Equal(t, "héllo", g.String("a.str"))
	assert.Equal(t, "", g.String("a.u8"))
}

func TestWriteErrors(t *testing.T) {
	var buf bytes.Buffer
	require.ErrorContains(t, Write(&buf, []KV{{Key: "k", Value: struct{}{}}}, nil), "unsupported value type")
	require.ErrorContains(t, Write(&buf, nil, []Tensor{{Name: "t", Shape: []uint64{4}, Type: TypeF32, Data: make([]byte, 8)}}), "needs 16 bytes, have 8")
	require.ErrorContains(t, Write(&buf, nil, []Tensor{F32("t", []float32{1}, 1), F32("t", []float32{1}, 1)}), "duplicate tensor")
	require.ErrorContains(t, Write(&buf, nil, []Tensor{{Name: "q", Shape: []uint64{10}, Type: TypeQ8_0, Data: make([]byte, 34)}}), "not a whole number of 32-element blocks")
	require.Panics(t, func() { F32("t", []float32{1, 2}, 3) })
}

func TestReadErrors(t *testing.T) {
	kvs, ts := sample()
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, kvs, ts))
	good := buf.Bytes()
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not a GGUF file"},
		{"magic", []byte("GGUX\x03\x00\x00\x00"), "not a GGUF file"},
		{"version", append([]byte("GGUF"), 9, 0, 0, 0), "unsupported GGUF version 9"},
		{"truncated header", good[:40], "unexpected end of file"},
		{"truncated data", good[:len(good)-100], "truncated file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(tc.data), int64(len(tc.data)))
			require.ErrorContains(t, err, tc.want)
		})
	}
	// A huge string length must not allocate: corrupt the first key's length.
	bad := append([]byte(nil), good...)
	copy(bad[24:32], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	_, err := Read(bytes.NewReader(bad), int64(len(bad)))
	require.ErrorContains(t, err, "string of")
}

// FuzzRead: no input makes the reader panic or hang; whatever it accepts has tensors inside
// the file.
func FuzzRead(f *testing.F) {
	kvs, ts := sample()
	var buf bytes.Buffer
	if err := Write(&buf, kvs, ts); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:100])
	f.Add([]byte("GGUF"))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := Read(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		for _, ti := range g.Tensors {
			if g.DataOffset+ti.Offset+ti.Size > uint64(len(data)) {
				t.Fatalf("tensor %q outside the file", ti.Name)
			}
		}
	})
}

func TestTypes(t *testing.T) {
	n, err := TypeQ4_K.RowBytes(512)
	require.NoError(t, err)
	assert.Equal(t, uint64(288), n)
	assert.Equal(t, "Q8_0", TypeQ8_0.String())
	ft, err := ParseFileType("q4_k_m")
	require.NoError(t, err)
	assert.Equal(t, FileType(15), ft)
	assert.Equal(t, "Q4_K_M", ft.String())
	_, err = ParseFileType("Q9")
	require.Error(t, err)
}
