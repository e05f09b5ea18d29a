package bindings

/*
#include "llama.h"
#include "capture.h"
*/
import "C"

import (
	"context"
	"fmt"
	"slices"
	"unsafe"
)

// BatchToken is one token of a multi-sequence decode step (DecodeBatch): token Token of
// sequence Seq at position Pos. Output asks for its logits (to sample from); Capture asks for
// its residual rows at the step's layers.
type BatchToken struct {
	Seq     int
	Token   int32
	Pos     int
	Output  bool
	Capture bool
}

// BatchResult is what DecodeBatch captured: for each token of the batch with Capture, its
// rows of the capture point at each layer (Rows[i] is nil for a token without Capture).
type BatchResult struct {
	Rows []map[int][]float32
}

// DecodeBatch decodes tokens of several sequences in one llama_decode — the step of a
// continuous-batching scheduler, where running sequences add one token each and new ones
// their prompts — and copies the rows of the capture point (Residual when empty) of the tokens
// marked Capture at the layers (negative from the end; none: no capture). A token captured at
// the final layer is made an output too (llama.cpp computes the last layer only for outputs). Sequences must be in
// [0, NSeq) and positions continue each sequence's cache. The logits of output tokens stay
// in the context for Sampler.Sample until the next decode.
func (c *Context) DecodeBatch(ctx context.Context, toks []BatchToken, point Point, layers []int) (*BatchResult, error) {
	end, err := c.begin()
	if err != nil {
		return nil, err
	}
	defer end()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(toks) == 0 || len(toks) > c.opts.NBatch {
		return nil, fmt.Errorf("decode batch: %d tokens (want 1 to the batch size %d)", len(toks), c.opts.NBatch)
	}
	for i, t := range toks {
		if t.Seq < 0 || t.Seq >= c.opts.NSeq {
			return nil, fmt.Errorf("decode batch: token %d: sequence %d outside [0, %d)", i, t.Seq, c.opts.NSeq)
		}
		if t.Pos < 0 || t.Pos >= c.opts.NCtx {
			return nil, fmt.Errorf("decode batch: token %d: position %d outside the context of %d", i, t.Pos, c.opts.NCtx)
		}
		if err := c.m.checkTokens([]int32{t.Token}); err != nil {
			return nil, fmt.Errorf("decode batch: token %d: %w", i, err)
		}
	}
	if point == "" {
		point = Residual
	}
	var resolved []int
	if len(layers) > 0 {
		spec, err := c.resolve(CaptureSpec{Layers: layers, Points: []Point{point}, Positions: PositionsLast})
		if err != nil {
			return nil, fmt.Errorf("decode batch: %w", err)
		}
		resolved = spec.Layers
	}
	if err := c.setRequest([]Point{point}, resolved); err != nil {
		return nil, err
	}
	lastLayer := slices.Contains(resolved, c.m.info.Layers-1)
	batch := make([]batchToken, len(toks))
	for i, t := range toks {
		batch[i] = batchToken{token: t.Token, pos: int32(t.Pos), seq: int32(t.Seq), logits: t.Output || t.Capture && lastLayer}
	}
	c.resetRows()
	if err := c.decode(batch); err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	if c.cap.error != 0 {
		return nil, fmt.Errorf("decode batch: tensor %s: %s", C.GoString(&c.cap.error_name[0]), captureErrors[int(c.cap.error)])
	}
	res := &BatchResult{Rows: make([]map[int][]float32, len(toks))}
	if len(resolved) == 0 {
		return res, nil
	}
	var outIdx []int
	for i, b := range batch {
		if b.logits {
			outIdx = append(outIdx, i)
		}
	}
	infos, err := c.pointInfos([]Point{point})
	if err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	d := infos[0].widthAt(resolved[0])
	slots := unsafe.Slice(c.cap.slots, int(c.cap.n_slots))
	for k, l := range resolved {
		s := &slots[k]
		rows := int(s.rows)
		if int(s.ne0) != d {
			return nil, fmt.Errorf("decode batch: layer %d has rows of %d values, expected %d", l, int(s.ne0), d)
		}
		var idx []int // batch index of each captured row
		switch rows {
		case len(batch):
		case len(outIdx):
			idx = outIdx
		default:
			return nil, fmt.Errorf("decode batch: layer %d has %d rows for %d tokens with %d outputs", l, rows, len(batch), len(outIdx))
		}
		src := unsafe.Slice((*float32)(unsafe.Pointer(s.data)), rows*d)
		for r := range rows {
			bi := r
			if idx != nil {
				bi = idx[r]
			}
			if !toks[bi].Capture {
				continue
			}
			if res.Rows[bi] == nil {
				res.Rows[bi] = make(map[int][]float32, len(resolved))
			}
			res.Rows[bi][l] = append([]float32(nil), src[r*d:(r+1)*d]...)
		}
	}
	for i, t := range toks {
		if t.Capture && len(res.Rows[i]) != len(resolved) {
			return nil, fmt.Errorf("decode batch: architecture %q produced no %s rows for token %d", c.m.info.Arch, point, i)
		}
	}
	return res, nil
}

// RemoveSequence drops a sequence's cells from the KV cache, so that its slot can start a new
// sequence at position 0.
func (c *Context) RemoveSequence(seq int) error {
	end, err := c.begin()
	if err != nil {
		return err
	}
	defer end()
	if seq < 0 || seq >= c.opts.NSeq {
		return fmt.Errorf("remove sequence %d: outside [0, %d)", seq, c.opts.NSeq)
	}
	C.llama_memory_seq_rm(C.llama_get_memory(c.c), C.llama_seq_id(seq), -1, -1)
	return nil
}

// ClearMemory empties the KV cache of every sequence.
func (c *Context) ClearMemory() error {
	end, err := c.begin()
	if err != nil {
		return err
	}
	defer end()
	c.clearMemory()
	return nil
}

// Sampler samples tokens of one sequence from the logits of a decode step. It is not safe for
// concurrent use; Close frees it.
type Sampler struct {
	s *C.struct_llama_sampler
}

// NewSampler makes a sampler (temperature 0: greedy). The options are checked as Generate
// checks them.
func NewSampler(o SamplerOptions) (*Sampler, error) {
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("sampler: %w", err)
	}
	return &Sampler{s: newSampler(o)}, nil
}

// Sample samples a token from the logits of the batch token at index i of the context's last
// DecodeBatch (which must have been an output), after checking they are finite.
func (s *Sampler) Sample(c *Context, i int) (int32, error) {
	end, err := c.begin()
	if err != nil {
		return 0, err
	}
	defer end()
	if err := c.checkLogits(int32(i)); err != nil {
		return 0, fmt.Errorf("sample: %w", err)
	}
	return int32(C.llama_sampler_sample(s.s, c.c, C.int32_t(i))), nil
}

// Close frees the sampler.
func (s *Sampler) Close() {
	if s.s != nil {
		C.llama_sampler_free(s.s)
		s.s = nil
	}
}
