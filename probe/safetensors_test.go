package probe

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/x448/float16"
)

// TestSafetensorsReferenceBytes compares the writer with the byte-exact output
// of the reference implementation's serialization test (safetensors
// tensor.rs, test_serialization): tensor "attn.0", F32, shape [1, 2, 3],
// values 0..5.
func TestSafetensorsReferenceBytes(t *testing.T) {
	want := []byte{
		64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
		116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
		58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
		101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63,
		0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
	}
	var buf bytes.Buffer
	data := appendF32(nil, []float32{0, 1, 2, 3, 4, 5})
	require.NoError(t, writeSafetensors(&buf, []stWriteTensor{{Name: "attn.0", DType: "F32", Shape: []int64{1, 2, 3}, Data: data}}, nil))
	require.Equal(t, want, buf.Bytes())

	// The reference's padded variant: a shorter name forces 7 spaces of padding.
	buf.Reset()
	require.NoError(t, writeSafetensors(&buf, []stWriteTensor{{Name: "attn0", DType: "F32", Shape: []int64{1, 1, 2, 3}, Data: data}}, nil))
	require.Equal(t, uint64(72), binary.LittleEndian.Uint64(buf.Bytes()))
	require.Equal(t, "       ", string(buf.Bytes()[8+72-7:8+72]))

	// The reference's empty file with metadata.
	buf.Reset()
	require.NoError(t, writeSafetensors(&buf, nil, map[string]string{"framework": "pt"}))
	require.Equal(t, append([]byte{40, 0, 0, 0, 0, 0, 0, 0}, []byte(`{"__metadata__":{"framework":"pt"}}     `)...), buf.Bytes())
}

func encodeST(t testing.TB, tensors []stWriteTensor, meta map[string]string) []byte {
	var buf bytes.Buffer
	require.NoError(t, writeSafetensors(&buf, tensors, meta))
	return buf.Bytes()
}

// rawST builds a file from a literal header and data, without validation.
func rawST(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

func TestSafetensorsRoundTrip(t *testing.T) {
	a := []float32{1, -2, 3.5, 0.25, 1e-3, -65504, 7, 8}
	h16 := make([]float32, len(a))
	for i, v := range a {
		h16[i] = float16.Fromfloat32(v).Float32()
	}
	file := encodeST(t, []stWriteTensor{
		{Name: "layer.3", DType: "F32", Shape: []int64{4, 2}, Data: appendF32(nil, a)},
		{Name: "layer.10", DType: "F16", Shape: []int64{4, 2}, Data: appendF16(nil, a)},
	}, map[string]string{"format": "probe activations", "quote": `a"b`})
	r := bytes.NewReader(file)
	h, err := readSafetensorsHeader(r, int64(len(file)))
	require.NoError(t, err)
	require.Equal(t, int64(0), h.DataStart%8, "data aligned to 8 bytes")
	require.Equal(t, map[string]string{"format": "probe activations", "quote": `a"b`}, h.Meta)

	t32, ok := h.tensor("layer.3")
	require.True(t, ok)
	got := make([]float32, 8)
	_, err = t32.readRows(r, 0, got, nil)
	require.NoError(t, err)
	require.Equal(t, a, got)

	t16, ok := h.tensor("layer.10")
	require.True(t, ok)
	got = make([]float32, 4)
	_, err = t16.readRows(r, 2, got, nil) // rows 2 and 3
	require.NoError(t, err)
	require.Equal(t, h16[4:], got)

	_, err = t16.readRows(r, 3, make([]float32, 4), nil)
	require.Error(t, err, "rows beyond the tensor")
}

func TestSafetensorsInvalid(t *testing.T) {
	good := encodeST(t, []stWriteTensor{{Name: "x", DType: "F32", Shape: []int64{2, 2}, Data: make([]byte, 16)}}, nil)
	huge := binary.LittleEndian.AppendUint64(nil, 200_000_000)
	cases := []struct {
		name string
		file []byte
	}{
		{"empty", nil},
		{"short length", []byte{1, 2, 3}},
		{"header too large", append(huge, '{', '}')},
		{"header past end", binary.LittleEndian.AppendUint64(nil, 100)},
		{"truncated data", good[:len(good)-1]},
		{"extra data", append(append([]byte{}, good...), 0)},
		{"not json", rawST("{nope", nil)},
		{"not utf8", rawST("{\"\xff\":1}", nil)},
		{"json array", rawST("[]", nil)},
		{"trailing json", rawST(`{}{}`, nil)},
		{"unknown dtype", rawST(`{"x":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}`, make([]byte, 16))},
		{"missing offsets", rawST(`{"x":{"dtype":"F32","shape":[1]}}`, make([]byte, 4))},
		{"missing shape", rawST(`{"x":{"dtype":"F32","data_offsets":[0,4]}}`, make([]byte, 4))},
		{"negative shape", rawST(`{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, make([]byte, 4))},
		{"size mismatch", rawST(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, make([]byte, 4))},
		{"reversed offsets", rawST(`{"x":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, make([]byte, 4))},
		{"gap", rawST(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8))},
		{"overlap", rawST(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4))},
		{"shape overflow", rawST(`{"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, make([]byte, 4))},
		{"metadata not strings", rawST(`{"__metadata__":{"a":1}}`, nil)},
		{"offsets beyond file", rawST(`{"x":{"dtype":"U8","shape":[100],"data_offsets":[0,100]}}`, make([]byte, 4))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := readSafetensorsHeader(bytes.NewReader(c.file), int64(len(c.file)))
			require.Error(t, err)
		})
	}
	_, err := readSafetensorsHeader(bytes.NewReader(good), int64(len(good)))
	require.NoError(t, err)
	_, err = readSafetensorsHeader(bytes.NewReader(good[:len(good)-1]), int64(len(good)-1))
	assert.True(t, errors.Is(err, errSafetensors))
}

// FuzzSafetensorsHeader checks that no input makes the header parser or the
// row reader panic, and that whatever it accepts obeys the format's rules.
// The seeds run as an ordinary test.
func FuzzSafetensorsHeader(f *testing.F) {
	f.Add(encodeST(f, []stWriteTensor{{Name: "layer.0", DType: "F32", Shape: []int64{2, 3}, Data: make([]byte, 24)}}, map[string]string{"k": "v"}))
	f.Add(encodeST(f, []stWriteTensor{
		{Name: "layer.1", DType: "F16", Shape: []int64{3, 2}, Data: appendF16(nil, []float32{1, 2, 3, 4, 5, 6})},
		{Name: "layer.2", DType: "F32", Shape: []int64{3, 2}, Data: appendF32(nil, []float32{1, 2, 3, 4, 5, math.Pi})},
	}, nil))
	f.Add(rawST(`{}`, nil))
	f.Add(rawST(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Add(rawST(`{"x":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]}}`, make([]byte, 3)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, file []byte) {
		r := bytes.NewReader(file)
		h, err := readSafetensorsHeader(r, int64(len(file)))
		if err != nil {
			return
		}
		next := h.DataStart
		for _, tn := range h.Tensors {
			if tn.Begin != next || tn.End < tn.Begin {
				t.Fatalf("accepted non-contiguous tensor %+v", tn)
			}
			next = tn.End
			if (tn.DType == dtypeF32 || tn.DType == dtypeF16) && len(tn.Shape) == 2 && tn.Shape[1] > 0 && tn.Shape[0] > 0 && tn.Shape[0]*tn.Shape[1] < 1<<16 {
				dst := make([]float32, tn.Shape[0]*tn.Shape[1])
				if _, err := tn.readRows(r, 0, dst, nil); err != nil {
					t.Fatalf("accepted tensor %q unreadable: %v", tn.Name, err)
				}
			}
		}
		if next != int64(len(file)) {
			t.Fatalf("accepted file whose data ends at %d of %d", next, len(file))
		}
	})
}

// TestSafetensorsPython loads a store's shards with the reference Python
// implementation, safetensors.numpy.load_file, when it is installed (it is
// skipped otherwise), and compares every value with the Go reader.
func TestSafetensorsPython(t *testing.T) {
	if err := exec.Command("python3", "-c", "import numpy, safetensors.numpy").Run(); err != nil {
		t.Skip("python3 with numpy and safetensors not available")
	}
	for _, dtype := range []string{DTypeF32, DTypeF16} {
		dir := buildStore(t, PositionAll, dtype, 9)
		s, err := OpenStore(dir)
		require.NoError(t, err)
		script := `
import json, sys
from safetensors.numpy import load_file
out = []
for f in sys.argv[1:]:
    t = load_file(f)
    out.append({k: v.astype("float64").ravel().tolist() for k, v in t.items()})
print(json.dumps(out))
`
		args := []string{"-c", script}
		for _, sh := range s.Manifest.Shards {
			args = append(args, filepath.Join(dir, sh.File))
		}
		outb, err := exec.Command("python3", args...).Output()
		require.NoError(t, err)
		var shards []map[string][]float64
		require.NoError(t, json.Unmarshal(outb, &shards))
		for _, l := range s.Manifest.Layers {
			x, err := s.ReadLayer(l)
			require.NoError(t, err)
			var py []float64
			for _, sh := range shards {
				py = append(py, sh[layerTensorName(l)]...)
			}
			require.Len(t, py, len(x.Data))
			for i, v := range x.Data {
				require.Equal(t, float64(v), py[i])
			}
		}
	}
}

// TestWriteSafetensorsF32 writes two matrices and reads them back through the reader the
// store uses.
func TestWriteSafetensorsF32(t *testing.T) {
	a := NewMatrix(2, 3, []float32{1, 2, 3, 4, 5, 6})
	b := NewMatrix(1, 3, []float32{-1, 0.5, 7})
	var buf bytes.Buffer
	require.NoError(t, WriteSafetensorsF32(&buf, []string{"layer.1", "layer.4"}, []*Matrix{a, b}, map[string]string{"k": "v"}))
	raw := buf.Bytes()
	h, err := readSafetensorsHeader(bytes.NewReader(raw), int64(len(raw)))
	require.NoError(t, err)
	for name, m := range map[string]*Matrix{"layer.1": a, "layer.4": b} {
		tn, ok := h.tensor(name)
		require.True(t, ok, name)
		dst := make([]float32, m.Rows*m.Cols)
		_, err := tn.readRows(bytes.NewReader(raw), 0, dst, nil)
		require.NoError(t, err)
		require.Equal(t, m.Data, dst)
	}
	require.Error(t, WriteSafetensorsF32(&buf, []string{"x"}, nil, nil))
}
