package probe

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// The binary form of a probe file (version 3) is one safetensors file:
//
//	__metadata__   "probe": the probe's JSON document without its arrays (method, layer,
//	               point, position, model, bias, threshold, calibration, generation, training,
//	               members, meta: what a person reads);
//	               "data_sha256": "sha256:" + hex SHA-256 of the tensor data (all of it, in
//	               file order).
//	tensors        the arrays, named by their JSON path; an ensemble member's are prefixed
//	               "members.K.":
//	                 normalization.mean   F64 [n_embd]
//	                 normalization.scale  F64 [n_embd]
//	                 weights              F64 [n_embd]
//	                 quadratic.coef       F64 [k]
//	                 quadratic.components F32 [k, n_embd]
//
// Save writes it for a probe whose arrays hold more than binaryThreshold values (a quadratic
// probe at a real width) and plain JSON otherwise; ParseProbe tells the forms apart by the
// file's first 8 bytes, the header length of a safetensors file, whose top bytes are 0 (it is
// below 2^32), while JSON text never holds a 0 byte. The checksum covers the tensors only: every field of the document is
// validated on its own, while no validation could tell altered float values from real ones.

// binaryThreshold is the number of array values (normalisation, weights, coefficients and
// components, an ensemble's members' included) above which Save writes the binary form: a
// linear or spectral probe stays JSON at any real width, a Mahalanobis probe goes binary from
// 255 wide.
const binaryThreshold = 1 << 16

// Metadata keys of a binary probe file.
const (
	metaProbe  = "probe"
	metaSHA256 = "data_sha256"
)

// binaryVersion is the first probe file version with the binary form.
const binaryVersion = 3

// fileForm is a probe file's form.
type fileForm int

const (
	formAuto   fileForm = iota // JSON, or binary above binaryThreshold values
	formJSON                   // indented JSON
	formBinary                 // safetensors with the JSON document in its metadata
)

// arrayValues returns the number of values in the probe's arrays, its members' included.
func (p *Probe) arrayValues() int64 {
	var n int64
	if nm := p.Normalization; nm != nil {
		n += int64(len(nm.Mean) + len(nm.Scale))
	}
	n += int64(len(p.Weights))
	if q := p.Quadratic; q != nil {
		n += int64(len(q.Coef))
		for _, u := range q.Components {
			n += int64(len(u))
		}
	}
	for _, m := range p.Members {
		if m.Probe != nil {
			n += m.Probe.arrayValues()
		}
	}
	return n
}

// encodedProbe is a probe in its file form: JSON text, or the tensors and metadata of a
// safetensors file.
type encodedProbe struct {
	json    []byte
	tensors []stWriteTensor
	meta    map[string]string
}

// size returns the length of the file.
func (e *encodedProbe) size() int64 {
	if e.json != nil {
		return int64(len(e.json))
	}
	header, data := safetensorsHeader(e.tensors, e.meta)
	return 8 + int64(len(header)) + data
}

// writeTo writes the file to w.
func (e *encodedProbe) writeTo(w io.Writer) error {
	if e.json != nil {
		_, err := w.Write(e.json)
		return err
	}
	return writeSafetensors(w, e.tensors, e.meta)
}

// bytes returns the file.
func (e *encodedProbe) bytes() []byte {
	if e.json != nil {
		return e.json
	}
	var buf bytes.Buffer
	buf.Grow(int(e.size()))
	if err := e.writeTo(&buf); err != nil {
		panic("probe: " + err.Error()) // a bytes.Buffer does not fail
	}
	return buf.Bytes()
}

// encode validates the probe and returns its file form.
func (p *Probe) encode(form fileForm) (*encodedProbe, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if form == formAuto {
		form = formJSON
		if p.arrayValues() > binaryThreshold {
			form = formBinary
		}
	}
	if form == formJSON {
		data, err := json.MarshalIndent(p, "", " ")
		if err != nil {
			return nil, fmt.Errorf("encode probe: %w", err)
		}
		return &encodedProbe{json: append(data, '\n')}, nil
	}
	e := new(encodedProbe)
	top := splitArrays(p, "", &e.tensors)
	// A probe read from an older file is written in a form its version did not have.
	top.Version = max(top.Version, binaryVersion)
	doc, err := json.Marshal(top)
	if err != nil {
		return nil, fmt.Errorf("encode probe: %w", err)
	}
	e.meta = map[string]string{metaProbe: string(doc), metaSHA256: tensorSHA256(e.tensors)}
	return e, nil
}

// splitArrays returns a copy of p without its arrays (and its members without theirs), and
// appends the arrays to ts as tensors named prefix + their JSON path.
func splitArrays(p *Probe, prefix string, ts *[]stWriteTensor) *Probe {
	// Copy every exported field, so that a field added to Probe reaches the document.
	q := new(Probe)
	src, dst := reflect.ValueOf(p).Elem(), reflect.ValueOf(q).Elem()
	for i := range src.NumField() {
		if src.Type().Field(i).IsExported() {
			dst.Field(i).Set(src.Field(i))
		}
	}
	n := int64(p.Model.NEmbd)
	add := func(name, dtype string, shape []int64, data []byte) {
		*ts = append(*ts, stWriteTensor{Name: prefix + name, DType: dtype, Shape: shape, Data: data})
	}
	if nm := p.Normalization; nm != nil {
		add("normalization.mean", dtypeF64, []int64{n}, appendF64(nil, nm.Mean))
		add("normalization.scale", dtypeF64, []int64{n}, appendF64(nil, nm.Scale))
		q.Normalization = nil
	}
	if len(p.Weights) > 0 {
		add("weights", dtypeF64, []int64{n}, appendF64(nil, p.Weights))
		q.Weights = nil
	}
	if qd := p.Quadratic; qd != nil {
		k := int64(len(qd.Components))
		add("quadratic.coef", dtypeF64, []int64{int64(len(qd.Coef))}, appendF64(nil, qd.Coef))
		data := make([]byte, 0, 4*k*n)
		for _, u := range qd.Components {
			data = appendF32(data, u)
		}
		add("quadratic.components", dtypeF32, []int64{k, n}, data)
		q.Quadratic = nil
	}
	if len(p.Members) > 0 {
		q.Members = make([]Member, len(p.Members))
		for k, m := range p.Members {
			m.Probe = splitArrays(m.Probe, prefix+"members."+strconv.Itoa(k)+".", ts)
			q.Members[k] = m
		}
	}
	return q
}

// isBinaryProbe reports whether data is (or was cut from) a probe file's binary form: bytes 4
// to 7 of a safetensors file are the top bytes of its header length, 0, and JSON text holds no
// 0 byte.
func isBinaryProbe(data []byte) bool { return bytes.IndexByte(data[:min(8, len(data))], 0) >= 0 }

// parseBinaryProbe decodes a probe file's binary form; ParseProbe validates the result.
func parseBinaryProbe(data []byte) (*Probe, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrProbeFile, fmt.Sprintf(format, args...))
	}
	h, err := readSafetensorsHeader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProbeFile, err)
	}
	doc, ok := h.Meta[metaProbe]
	if !ok {
		return nil, bad("a safetensors file without a probe document (no %q in its __metadata__): not a probe file", metaProbe)
	}
	p, err := decodeJSONProbe([]byte(doc))
	if err != nil {
		return nil, err
	}
	if p.Version < binaryVersion && p.Version >= 1 {
		return nil, bad("version %d in the binary form, which version %d introduced", p.Version, binaryVersion)
	}
	if where := arraysInDocument(p, ""); where != "" {
		return nil, bad("the document holds %s: a binary probe file keeps its arrays in tensors", where)
	}
	want, ok := h.Meta[metaSHA256]
	if !ok {
		return nil, bad("no %q in the metadata", metaSHA256)
	}
	sum := sha256.Sum256(data[h.DataStart:])
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != want {
		return nil, bad("the tensor data's SHA-256 is %s, the file records %s: the file is corrupt or was altered", got, want)
	}
	targets := map[string]*Probe{}
	collectTargets(p, "", targets)
	for _, t := range h.Tensors {
		if err := attachTensor(t, data, targets); err != nil {
			return nil, err
		}
	}
	for prefix, q := range targets {
		if q.Quadratic != nil && (q.Quadratic.Coef == nil) != (q.Quadratic.Components == nil) {
			return nil, bad("tensor %squadratic.coef or %squadratic.components without the other", prefix, prefix)
		}
		if q.Normalization != nil && (q.Normalization.Mean == nil) != (q.Normalization.Scale == nil) {
			return nil, bad("tensor %snormalization.mean or %snormalization.scale without the other", prefix, prefix)
		}
	}
	return p, nil
}

// arraysInDocument names the first array the document of a binary file holds itself ("" for
// none): they belong in tensors.
func arraysInDocument(p *Probe, prefix string) string {
	switch {
	case p.Normalization != nil:
		return prefix + "normalization"
	case p.Weights != nil:
		return prefix + "weights"
	case p.Quadratic != nil:
		return prefix + "quadratic"
	}
	for k, m := range p.Members {
		if m.Probe != nil {
			if where := arraysInDocument(m.Probe, prefix+"members["+strconv.Itoa(k)+"].probe."); where != "" {
				return where
			}
		}
	}
	return ""
}

// collectTargets maps each tensor prefix ("" and "members.K.") to the probe its tensors fill.
func collectTargets(p *Probe, prefix string, targets map[string]*Probe) {
	targets[prefix] = p
	for k, m := range p.Members {
		if m.Probe != nil {
			collectTargets(m.Probe, prefix+"members."+strconv.Itoa(k)+".", targets)
		}
	}
}

// attachTensor decodes the tensor t of the file data into the array of the probe it names.
func attachTensor(t stTensor, data []byte, targets map[string]*Probe) error {
	cut := strings.LastIndex(t.Name, "members.")
	prefix := ""
	if cut >= 0 {
		// "members.K." followed by the array's path.
		rest := t.Name[cut+len("members."):]
		if dot := strings.IndexByte(rest, '.'); dot > 0 {
			prefix = t.Name[:cut+len("members.")+dot+1]
		}
	}
	field := strings.TrimPrefix(t.Name, prefix)
	p, ok := targets[prefix]
	if !ok || !slices.Contains([]string{"normalization.mean", "normalization.scale", "weights", "quadratic.coef", "quadratic.components"}, field) {
		return fmt.Errorf("%w: unknown tensor %q", ErrProbeFile, t.Name)
	}
	n := int64(p.Model.NEmbd)
	wantType, wantShape := dtypeF64, []int64{n}
	switch field {
	case "quadratic.coef":
		wantShape = []int64{-1}
	case "quadratic.components":
		wantType, wantShape = dtypeF32, []int64{-1, n}
	}
	shapeOK := len(t.Shape) == len(wantShape)
	for i := range wantShape {
		shapeOK = shapeOK && (wantShape[i] < 0 || t.Shape[i] == wantShape[i])
	}
	if t.DType != wantType || !shapeOK {
		return fmt.Errorf("%w: tensor %q is %s %s, want %s %s (n_embd %d)", ErrProbeFile, t.Name, t.DType, shapeText(t.Shape), wantType, shapeText(wantShape), n)
	}
	raw := data[t.Begin:t.End]
	switch field {
	case "normalization.mean", "normalization.scale":
		if p.Normalization == nil {
			p.Normalization = new(Normalization)
		}
		if field == "normalization.mean" {
			p.Normalization.Mean = decodeF64(raw)
		} else {
			p.Normalization.Scale = decodeF64(raw)
		}
	case "weights":
		p.Weights = decodeF64(raw)
	case "quadratic.coef", "quadratic.components":
		if p.Quadratic == nil {
			p.Quadratic = new(Quadratic)
		}
		if field == "quadratic.coef" {
			p.Quadratic.Coef = decodeF64(raw)
			break
		}
		k := int(t.Shape[0])
		all := make([]float32, int64(k)*n)
		decodeF32(all, raw)
		comps := make([][]float32, k)
		for i := range comps {
			comps[i] = all[int64(i)*n : int64(i+1)*n : int64(i+1)*n]
		}
		p.Quadratic.Components = comps
	}
	return nil
}

// shapeText writes a shape as [a, b], a wildcard dimension (−1) as k.
func shapeText(shape []int64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = strconv.FormatInt(d, 10)
		if d < 0 {
			parts[i] = "k"
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// dtypeF64 is the safetensors name of float64.
const dtypeF64 = "F64"

// appendF64 appends the little-endian encoding of x to b.
func appendF64(b []byte, x []float64) []byte {
	for _, v := range x {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	}
	return b
}

// decodeF64 decodes little-endian float64 values.
func decodeF64(b []byte) []float64 {
	out := make([]float64, len(b)/8)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out
}

// tensorSHA256 returns the checksum of the tensors' data, in order, as the metadata records it.
func tensorSHA256(ts []stWriteTensor) string {
	h := sha256.New()
	for _, t := range ts {
		h.Write(t.Data)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
