package bindings

/*
#include <stdlib.h>
#include "llama.h"
#include "capture.h"
#include "free.h"

// probe_discover decodes two tokens in a scratch context whose cb_eval is probe_record_cb, so
// that r records the per-layer tensors of the model's graph. It returns 0, 1 when the context
// could not be made, 2 when the decode failed (its status in *status).
static int probe_discover(struct llama_model * m, probe_record * r, int n_threads, llama_token tok, int * status) {
	struct llama_context_params p = llama_context_default_params();
	p.n_ctx = 16;
	p.n_batch = 2;
	p.n_ubatch = 2;
	p.n_seq_max = 1;
	p.n_threads = n_threads;
	p.n_threads_batch = n_threads;
	p.kv_unified = true;
	p.no_perf = true;
	p.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED; // as NewContext
	p.cb_eval = probe_record_cb;
	p.cb_eval_user_data = r;
	struct llama_context * ctx = probe_init_from_model(m, p);
	if (ctx == NULL) {
		return 1;
	}
	struct llama_batch b = llama_batch_init(2, 0, 1);
	for (int i = 0; i < 2; i++) {
		b.token[i] = tok;
		b.pos[i] = i;
		b.n_seq_id[i] = 1;
		b.seq_id[i][0] = 0;
		b.logits[i] = i == 1;
	}
	b.n_tokens = 2;
	*status = llama_decode(ctx, b);
	llama_batch_free(b);
	probe_llama_free(ctx);
	return *status != 0 ? 2 : 0;
}
*/
import "C"

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"unsafe"
)

// Point is a place in a transformer block where activations are captured.
type Point string

// Capture points. Residual is the residual stream after the block (llama.cpp's l_out-N);
// AttnOut is the attention output added to the stream (attn_out-N, or attn_post_norm-N where
// the graph normalises it first, as gemma2 does); MLPOut is the feed-forward output (ffn_out-N);
// AttnHeads is the attention heads' output before the output projection, heads concatenated
// (kqv_out-N): n_head·head_dim values, which need not be n_embd (gemma).
const (
	Residual  Point = "residual"
	AttnOut   Point = "attn_out"
	MLPOut    Point = "mlp_out"
	AttnHeads Point = "attn_heads"
)

// pointNames lists, for each capture point in the order of its index in capture.c, the graph
// names that may hold it, in order of preference: a model's graph name for the point is the
// first candidate its graph names exactly once at every layer (graphPoints).
var pointNames = []struct {
	point Point
	names []string
}{
	{Residual, []string{"l_out"}},
	{AttnOut, []string{"attn_out", "attn_post_norm"}},
	{MLPOut, []string{"ffn_out"}},
	{AttnHeads, []string{"kqv_out"}},
}

// AllPoints lists every capture point probe knows, in a fixed order.
func AllPoints() []Point {
	out := make([]Point, len(pointNames))
	for i, pn := range pointNames {
		out[i] = pn.point
	}
	return out
}

// ParsePoint checks a capture point's name.
func ParsePoint(s string) (Point, error) {
	if _, err := Point(s).index(); err != nil {
		return "", err
	}
	return Point(s), nil
}

// index is the point's row in capture.c's tables.
func (p Point) index() (int, error) {
	for i, pn := range pointNames {
		if pn.point == p {
			return i, nil
		}
	}
	names := make([]string, len(pointNames))
	for i, pn := range pointNames {
		names[i] = string(pn.point)
	}
	return 0, fmt.Errorf("unknown capture point %q (want %s)", p, strings.Join(names, ", "))
}

// candidates lists the graph names of p as "l_out-N" for messages.
func (p Point) candidates() string {
	i, err := p.index()
	if err != nil {
		return ""
	}
	var out []string
	for _, n := range pointNames[i].names {
		out = append(out, n+"-N")
	}
	return strings.Join(out, " or ")
}

// PointInfo is a capture point a model's graph offers.
type PointInfo struct {
	Point Point `json:"point"`
	// Graph is the name the graph gives the point's tensor, without the layer: "l_out" for
	// l_out-0, l_out-1, …
	Graph string `json:"graph"`
	// Width is the number of values per row (per token). When it differs between layers it is
	// 0 and Widths gives it layer by layer.
	Width  int   `json:"width"`
	Widths []int `json:"widths,omitempty"`
}

// widthAt returns the point's width at a layer.
func (pi PointInfo) widthAt(layer int) int {
	if pi.Width > 0 || layer < 0 || layer >= len(pi.Widths) {
		return pi.Width
	}
	return pi.Widths[layer]
}

// GraphTensor is a per-layer tensor the graph names that is no capture point: "attn_norm" for
// attn_norm-0, attn_norm-1, …
type GraphTensor struct {
	Name string `json:"name"`
	// Layers is the number of layers that name it.
	Layers int `json:"layers"`
	// Widths are the distinct row widths (ne[0]) of its tensors, in graph order: Qcur has
	// n_embd before its reshape into heads and head_dim after.
	Widths []int `json:"widths"`
}

// GraphPoints is what a model's llama.cpp graph offers for capture (Model.CapturePoints).
type GraphPoints struct {
	// Points are the capture points the graph names at every layer, in the order of AllPoints.
	Points []PointInfo `json:"points"`
	// Other are the other per-layer tensors the graph names, in graph order.
	Other []GraphTensor `json:"other,omitempty"`
}

// Lookup returns the model's capture point p, or an error naming the points it offers.
func (g *GraphPoints) Lookup(p Point) (PointInfo, error) {
	if _, err := ParsePoint(string(p)); err != nil {
		return PointInfo{}, err
	}
	for _, pi := range g.Points {
		if pi.Point == p {
			return pi, nil
		}
	}
	return PointInfo{}, fmt.Errorf("the model's graph offers no capture point %q (it does not name %s once at every layer); it offers %s",
		p, p.candidates(), g.offered())
}

// offered lists the points as "residual (l_out), mlp_out (ffn_out)", or "none".
func (g *GraphPoints) offered() string {
	if len(g.Points) == 0 {
		return "none"
	}
	var out []string
	for _, pi := range g.Points {
		out = append(out, fmt.Sprintf("%s (%s)", pi.Point, pi.Graph))
	}
	return strings.Join(out, ", ")
}

func (g *GraphPoints) clone() *GraphPoints {
	out := &GraphPoints{Points: slices.Clone(g.Points), Other: slices.Clone(g.Other)}
	for i := range out.Points {
		out.Points[i].Widths = slices.Clone(out.Points[i].Widths)
	}
	for i := range out.Other {
		out.Other[i].Widths = slices.Clone(out.Other[i].Widths)
	}
	return out
}

// seenTensor is one graph node named "<name>-<layer>", with its row width.
type seenTensor struct {
	name  string
	layer int
	width int
}

// graphPoints works out the capture points of a graph of nLayer blocks from its per-layer
// nodes, in graph order. A point's graph name is the first of its candidates (pointNames) that
// names exactly one node at every layer: a name given to several nodes of a layer (Qcur,
// before and after its reshape) could not say which rows are the point's.
func graphPoints(seen []seenTensor, nLayer int) *GraphPoints {
	type agg struct {
		count  []int // nodes per layer
		width  []int // width of the layer's first node
		widths []int // distinct widths in graph order
		layers int   // layers (any index) naming it
		other  map[int]bool
	}
	byName := map[string]*agg{}
	var order []string
	for _, s := range seen {
		a := byName[s.name]
		if a == nil {
			a = &agg{count: make([]int, nLayer), width: make([]int, nLayer), other: map[int]bool{}}
			byName[s.name] = a
			order = append(order, s.name)
		}
		if s.layer < nLayer {
			if a.count[s.layer] == 0 {
				a.width[s.layer] = s.width
				a.layers++
			}
			a.count[s.layer]++
		} else if !a.other[s.layer] {
			a.other[s.layer] = true
			a.layers++
		}
		if !slices.Contains(a.widths, s.width) {
			a.widths = append(a.widths, s.width)
		}
	}
	g := &GraphPoints{}
	used := map[string]bool{}
	for _, pn := range pointNames {
		for _, name := range pn.names {
			a := byName[name]
			if a == nil || nLayer == 0 || slices.ContainsFunc(a.count, func(n int) bool { return n != 1 }) {
				continue
			}
			pi := PointInfo{Point: pn.point, Graph: name, Width: a.width[0]}
			for _, w := range a.width {
				if w != pi.Width {
					pi.Width, pi.Widths = 0, slices.Clone(a.width)
					break
				}
			}
			g.Points = append(g.Points, pi)
			used[name] = true
			break
		}
	}
	for _, name := range order {
		if !used[name] {
			a := byName[name]
			g.Other = append(g.Other, GraphTensor{Name: name, Layers: a.layers, Widths: a.widths})
		}
	}
	return g
}

// CapturePoints returns the capture points the model's llama.cpp graph offers, each with its
// graph tensor name and row width, and the other per-layer tensors the graph names. They are
// discovered once per model, by decoding two tokens in a scratch context whose eval callback
// records the name and width of every graph node (and copies nothing), and cached; concurrent
// calls wait for the one discovery. An error says why they are unknown (the model fails to
// decode, or its architecture is known not to name the residual stream); every capture then
// fails with it.
func (m *Model) CapturePoints() (*GraphPoints, error) {
	if err := m.acquire(); err != nil {
		return nil, fmt.Errorf("capture points: %w", err)
	}
	defer m.release()
	g, err := m.graphPointsLocked()
	if err != nil {
		return nil, err
	}
	return g.clone(), nil
}

// graphPointsLocked is CapturePoints for a caller that holds the model's read lock; the result
// is shared and must not be changed.
func (m *Model) graphPointsLocked() (*GraphPoints, error) {
	m.pointsMu.Lock()
	defer m.pointsMu.Unlock()
	if m.points == nil && m.pointsErr == nil {
		m.points, m.pointsErr = m.discoverPoints()
		if m.pointsErr != nil {
			m.pointsErr = fmt.Errorf("capture points of %s are unknown: %w", m.info.Path, m.pointsErr)
		}
	}
	return m.points, m.pointsErr
}

// discoverPoints runs the discovery decode (see CapturePoints). The read lock is held.
func (m *Model) discoverPoints() (*GraphPoints, error) {
	if archsWithoutResidual[m.info.Arch] {
		return nil, fmt.Errorf("architecture %q does not name the residual stream (l_out) in its llama.cpp graph; capture is not supported for it", m.info.Arch)
	}
	tok := C.llama_vocab_bos(m.vocab)
	if tok < 0 || int32(tok) >= m.nVocab {
		tok = 0
	}
	rec := (*C.probe_record)(C.calloc(1, C.size_t(unsafe.Sizeof(C.probe_record{}))))
	if rec == nil {
		return nil, fmt.Errorf("out of memory")
	}
	defer func() {
		C.probe_record_free(rec)
		C.free(unsafe.Pointer(rec))
	}()
	var rc, status C.int
	reason := withLogError(func() {
		rc = C.probe_discover(m.c, rec, C.int(min(runtime.NumCPU(), 8)), tok, &status)
	})
	switch {
	case rc == 1:
		return nil, fmt.Errorf("a scratch context could not be made: %s", orStr(reason, "llama.cpp gave no reason"))
	case rc != 0:
		return nil, fmt.Errorf("decoding two tokens failed: %s", orStr(reason, fmt.Sprintf("status %d", int(status))))
	case rec.oom != 0:
		return nil, fmt.Errorf("out of memory recording the graph's tensors")
	}
	raw := unsafe.Slice(rec.seen, int(rec.n))
	seen := make([]seenTensor, len(raw))
	for i := range raw {
		seen[i] = seenTensor{name: C.GoString(&raw[i].name[0]), layer: int(raw[i].layer), width: int(raw[i].ne0)}
	}
	return graphPoints(seen, m.info.Layers), nil
}

func orStr(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// splitGraphName splits a graph tensor name as the capture and record callbacks do
// ("l_out-3" → "l_out", 3); ok is false for a name that is not "<name>-<layer>". It and
// matchGraphName expose capture.c's matching to the tests, which cannot use cgo themselves.
func splitGraphName(name string) (prefix string, layer int, ok bool) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	var l C.int
	n := C.probe_split_name(cs, &l)
	if n < 0 {
		return "", 0, false
	}
	return name[:n], int(l), true
}

// matchGraphName is the capture callback's match of a tensor name against a name table (the
// graph name of each point, "" for none): the point's index and the layer, or ok false.
func matchGraphName(table [C.PROBE_MAX_POINTS]string, name string) (point, layer int, ok bool) {
	c := (*C.probe_capture)(C.calloc(1, C.size_t(unsafe.Sizeof(C.probe_capture{}))))
	defer C.free(unsafe.Pointer(c))
	for p, n := range table {
		if n == "" {
			continue
		}
		cn := C.CString(n)
		rc := C.probe_capture_set_name(c, C.int(p), cn)
		C.free(unsafe.Pointer(cn))
		if rc != 0 {
			return 0, 0, false
		}
	}
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	var l C.int
	pi := C.probe_capture_match(c, cs, &l)
	if pi < 0 {
		return 0, 0, false
	}
	return int(pi), int(l), true
}
