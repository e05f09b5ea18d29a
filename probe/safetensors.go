package probe

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/x448/float16"
)

// A small reader and writer for the safetensors format
// (https://github.com/huggingface/safetensors):
//
//	8 bytes     N, little-endian uint64: the header length
//	N bytes     JSON header: {"__metadata__": {"k": "v", …},
//	                          "name": {"dtype": "F32", "shape": [r, c], "data_offsets": [b, e]}, …}
//	rest        the byte buffer; tensor data lies at [b, e) of it, C order, little endian.
//
// The reader enforces the rules of the reference implementation, so that a file
// it accepts is one that safetensors.numpy.load_file accepts too: header at most
// 100,000,000 bytes, valid UTF-8 JSON, metadata values strings, tensors sorted by
// offset cover the buffer contiguously from 0, each tensor's byte length equals
// its element count times its dtype size, and the buffer ends the file exactly.
// The writer pads the header with spaces to a multiple of 8 bytes, as the
// reference does, so the data is aligned.
//
// Only the header is read when a file is opened; tensor data is read with
// ReadAt over the byte range asked for (a set of rows of one tensor).

// maxSafetensorsHeader is the reference implementation's header size limit.
const maxSafetensorsHeader = 100_000_000

// Safetensors dtype names used by the activation store.
const (
	dtypeF32 = "F32"
	dtypeF16 = "F16"
)

// dtypeSizes is the element size in bytes of every dtype the format defines.
var dtypeSizes = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8,
}

// stTensor describes one tensor of a safetensors file. Begin and End are
// absolute file offsets of its data.
type stTensor struct {
	Name       string
	DType      string
	Shape      []int64
	Begin, End int64
}

// stHeader is a parsed safetensors header.
type stHeader struct {
	Tensors   []stTensor // sorted by offset
	Meta      map[string]string
	DataStart int64 // 8 + N
	Size      int64 // file size
}

// tensor returns the tensor called name.
func (h *stHeader) tensor(name string) (stTensor, bool) {
	for _, t := range h.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return stTensor{}, false
}

type stTensorJSON struct {
	DType       string    `json:"dtype"`
	Shape       *[]uint64 `json:"shape"`
	DataOffsets *[]uint64 `json:"data_offsets"`
}

// errSafetensors wraps every format violation found by the reader.
var errSafetensors = errors.New("invalid safetensors file")

func stErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errSafetensors, fmt.Sprintf(format, args...))
}

// readSafetensorsHeader parses and validates the header of a safetensors file
// of the given size read through r.
func readSafetensorsHeader(r io.ReaderAt, size int64) (*stHeader, error) {
	if size < 8 {
		return nil, stErrorf("file of %d bytes is shorter than the 8-byte header length", size)
	}
	var lenBuf [8]byte
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("read header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > maxSafetensorsHeader {
		return nil, stErrorf("header length %d exceeds %d", n, maxSafetensorsHeader)
	}
	if int64(n) > size-8 {
		return nil, stErrorf("header length %d exceeds the file (%d bytes): truncated?", n, size)
	}
	raw := make([]byte, n)
	if _, err := r.ReadAt(raw, 8); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	return parseSafetensorsHeader(raw, size)
}

// parseSafetensorsHeader validates the JSON header raw of a file of size bytes.
func parseSafetensorsHeader(raw []byte, size int64) (*stHeader, error) {
	if !utf8.Valid(raw) {
		return nil, stErrorf("header is not valid UTF-8")
	}
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, stErrorf("header JSON: %v", err)
	}
	h := &stHeader{DataStart: 8 + int64(len(raw)), Size: size}
	for name, msg := range entries {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &h.Meta); err != nil {
				return nil, stErrorf("__metadata__ must map strings to strings: %v", err)
			}
			continue
		}
		var tj stTensorJSON
		dec := json.NewDecoder(bytes.NewReader(msg))
		if err := dec.Decode(&tj); err != nil {
			return nil, stErrorf("tensor %q: %v", name, err)
		}
		elem, ok := dtypeSizes[tj.DType]
		if !ok {
			return nil, stErrorf("tensor %q: unknown dtype %q", name, tj.DType)
		}
		if tj.Shape == nil || tj.DataOffsets == nil || len(*tj.DataOffsets) != 2 {
			return nil, stErrorf("tensor %q: shape and data_offsets [begin, end] are required", name)
		}
		count := uint64(1)
		shape := make([]int64, len(*tj.Shape))
		for i, d := range *tj.Shape {
			hi, lo := bits.Mul64(count, d)
			if hi != 0 || lo > math.MaxInt64 {
				return nil, stErrorf("tensor %q: shape overflows", name)
			}
			count = lo
			shape[i] = int64(d)
		}
		hi, nbytes := bits.Mul64(count, uint64(elem))
		b, e := (*tj.DataOffsets)[0], (*tj.DataOffsets)[1]
		if hi != 0 || nbytes > math.MaxInt64 || e < b || e-b != nbytes {
			return nil, stErrorf("tensor %q: data_offsets [%d, %d] do not hold %v %s", name, b, e, shape, tj.DType)
		}
		if e > uint64(size) {
			return nil, stErrorf("tensor %q: data_offsets end %d beyond the file: truncated?", name, e)
		}
		h.Tensors = append(h.Tensors, stTensor{
			Name: name, DType: tj.DType, Shape: shape,
			Begin: h.DataStart + int64(b), End: h.DataStart + int64(e),
		})
	}
	slices.SortFunc(h.Tensors, func(a, b stTensor) int {
		if c := cmp.Compare(a.Begin, b.Begin); c != 0 {
			return c
		}
		return cmp.Compare(a.End, b.End)
	})
	next := h.DataStart
	for _, t := range h.Tensors {
		if t.Begin != next {
			return nil, stErrorf("tensor %q: data_offsets leave a gap or overlap", t.Name)
		}
		next = t.End
	}
	if next > size {
		return nil, stErrorf("tensor data ends at byte %d but the file has %d bytes: truncated?", next, size)
	}
	if next != size {
		return nil, stErrorf("tensor data ends at byte %d but the file has %d bytes", next, size)
	}
	return h, nil
}

// stWriteTensor is one tensor to be written: its data already encoded in its
// dtype, little endian.
type stWriteTensor struct {
	Name  string
	DType string
	Shape []int64
	Data  []byte
}

// safetensorsHeader returns the encoded, space-padded JSON header for tensors
// written in the order given, and the total data length.
func safetensorsHeader(tensors []stWriteTensor, meta map[string]string) ([]byte, int64) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	first := true
	sep := func() {
		if !first {
			buf.WriteByte(',')
		}
		first = false
	}
	if len(meta) > 0 {
		sep()
		buf.WriteString(`"__metadata__":`)
		keys := make([]string, 0, len(meta))
		for k := range meta {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		buf.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeJSONString(&buf, k)
			buf.WriteByte(':')
			writeJSONString(&buf, meta[k])
		}
		buf.WriteByte('}')
	}
	var off int64
	for _, t := range tensors {
		sep()
		writeJSONString(&buf, t.Name)
		buf.WriteString(`:{"dtype":`)
		writeJSONString(&buf, t.DType)
		buf.WriteString(`,"shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.WriteString(strconv.FormatInt(d, 10))
		}
		end := off + int64(len(t.Data))
		fmt.Fprintf(&buf, `],"data_offsets":[%d,%d]}`, off, end)
		off = end
	}
	buf.WriteByte('}')
	for buf.Len()%8 != 0 {
		buf.WriteByte(' ')
	}
	return buf.Bytes(), off
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, err := json.Marshal(s)
	if err != nil {
		panic("probe: " + err.Error()) // a Go string always marshals
	}
	buf.Write(b)
}

// writeSafetensors writes a complete safetensors file to w. It panics if a
// tensor's data length does not match its shape and dtype.
func writeSafetensors(w io.Writer, tensors []stWriteTensor, meta map[string]string) error {
	for _, t := range tensors {
		n := dtypeSizes[t.DType]
		for _, d := range t.Shape {
			n *= d
		}
		if n != int64(len(t.Data)) {
			panic(fmt.Sprintf("probe: tensor %q: %d bytes for shape %v %s", t.Name, len(t.Data), t.Shape, t.DType))
		}
	}
	header, _ := safetensorsHeader(tensors, meta)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(header)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return err
	}
	if _, err := w.Write(header); err != nil {
		return err
	}
	for _, t := range tensors {
		if _, err := w.Write(t.Data); err != nil {
			return err
		}
	}
	return nil
}

// readRows reads rows [row0, row0+len(dst)/cols) of the 2-D F32 or F16 tensor t
// from r into dst, converting to float32. buf is scratch space that may be
// reused between calls; the (possibly grown) buffer is returned.
func (t stTensor) readRows(r io.ReaderAt, row0 int, dst []float32, buf []byte) ([]byte, error) {
	if len(t.Shape) != 2 {
		return buf, fmt.Errorf("tensor %q: shape %v is not 2-D", t.Name, t.Shape)
	}
	cols := int(t.Shape[1])
	if cols == 0 || len(dst)%cols != 0 {
		panic("probe: destination is not a whole number of rows")
	}
	nrows := len(dst) / cols
	if row0 < 0 || int64(row0+nrows) > t.Shape[0] {
		return buf, fmt.Errorf("tensor %q: rows [%d, %d) outside [0, %d)", t.Name, row0, row0+nrows, t.Shape[0])
	}
	elem := dtypeSizes[t.DType]
	if t.DType != dtypeF32 && t.DType != dtypeF16 {
		return buf, fmt.Errorf("tensor %q: dtype %s is not F32 or F16", t.Name, t.DType)
	}
	// Read in chunks of at most 4 MiB so that the scratch space stays small.
	const chunk = 4 << 20
	rowBytes := int64(cols) * elem
	rowsPer := max(1, int(chunk/rowBytes))
	for done := 0; done < nrows; {
		k := min(rowsPer, nrows-done)
		nb := int(int64(k) * rowBytes)
		if cap(buf) < nb {
			buf = make([]byte, nb)
		}
		b := buf[:nb]
		off := t.Begin + int64(row0+done)*rowBytes
		if _, err := r.ReadAt(b, off); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return buf, fmt.Errorf("tensor %q: read rows: %w", t.Name, err)
		}
		out := dst[done*cols : (done+k)*cols]
		if t.DType == dtypeF32 {
			decodeF32(out, b)
		} else {
			decodeF16(out, b)
		}
		done += k
	}
	return buf, nil
}

// decodeF32 decodes little-endian float32 values from b into dst.
func decodeF32(dst []float32, b []byte) {
	b = b[:4*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}

// decodeF16 decodes little-endian IEEE half-precision values from b into dst.
func decodeF16(dst []float32, b []byte) {
	b = b[:2*len(dst)]
	for i := range dst {
		dst[i] = float16.Frombits(binary.LittleEndian.Uint16(b[2*i:])).Float32()
	}
}

// appendF32 appends the little-endian encoding of x to b.
func appendF32(b []byte, x []float32) []byte {
	for _, v := range x {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// appendF16 appends the little-endian IEEE half-precision encoding of x to b,
// rounding to nearest even; values beyond ±65504 become ±Inf.
func appendF16(b []byte, x []float32) []byte {
	for _, v := range x {
		b = binary.LittleEndian.AppendUint16(b, float16.Fromfloat32(v).Bits())
	}
	return b
}

// WriteSafetensorsF32 writes float32 matrices as one safetensors file: each named tensor
// F32 with the shape [rows, cols] of its Matrix, in the order of names, with the metadata.
func WriteSafetensorsF32(w io.Writer, names []string, mats []*Matrix, meta map[string]string) error {
	if len(names) != len(mats) {
		return fmt.Errorf("safetensors: %d names for %d matrices", len(names), len(mats))
	}
	ts := make([]stWriteTensor, len(mats))
	for i, m := range mats {
		ts[i] = stWriteTensor{Name: names[i], DType: "F32", Shape: []int64{int64(m.Rows), int64(m.Cols)}, Data: appendF32(nil, m.Data)}
	}
	return writeSafetensors(w, ts, meta)
}
