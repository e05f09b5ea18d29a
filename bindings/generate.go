package bindings

/*
#include "llama.h"
#include "capture.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// SamplerOptions configures token sampling. Temperature 0 (the default) is greedy decoding.
type SamplerOptions struct {
	Temperature float32 // 0: greedy
	TopK        int     // 0: off
	TopP        float32 // 0 or 1: off
	Seed        uint32
}

// GenerateOptions configures Generate.
type GenerateOptions struct {
	MaxTokens int // 0: until an end-of-generation token or the context is full
	Sampler   SamplerOptions
	Stop      []string // generation stops when the text contains one; the text is cut before it
	// Layers are the layers whose rows each Step carries (negative from the end).
	Layers []int
	// Point is the capture point of those rows; Residual when empty.
	Point Point
}

// Step is one generated token, handed to Generate's callback before the token is emitted.
type Step struct {
	Index int // 0 for the first generated token
	Token int32
	Piece string // the token's text (control tokens render empty)
	// Residual maps each requested layer to the rows of GenerateOptions.Point (the residual
	// stream unless another point was asked for) at the position whose logits produced this
	// token: for step 0 that is the last prompt token, so a probe scored there fires before any
	// output exists.
	Residual map[int][]float32
}

// Stop reasons of a generation.
const (
	StopEOG       = "eog"        // the model produced an end-of-generation token
	StopString    = "stop"       // a stop string appeared
	StopMaxTokens = "max_tokens" // MaxTokens were generated
	StopContext   = "context"    // the context is full
	StopCallback  = "callback"   // the callback asked to stop
)

// Generation is the result of Generate.
type Generation struct {
	PromptTokens int
	Tokens       []int32 // emitted tokens
	Text         string  // their text, cut before a stop string
	StopReason   string
}

// Generate samples a continuation of the prompt. For each sampled token fn (if not nil) is
// called with the token and the residual stream at the requested layers; returning false stops
// generation and discards that token (so a monitor can stop output before it appears).
func (c *Context) Generate(ctx context.Context, prompt []int32, opts GenerateOptions, fn func(Step) bool) (*Generation, error) {
	end, err := c.begin()
	if err != nil {
		return nil, err
	}
	defer end()
	if err := c.checkSequences([][]int32{prompt}); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	if opts.MaxTokens < 0 {
		return nil, fmt.Errorf("generate: max tokens %d is negative", opts.MaxTokens)
	}
	s := opts.Sampler
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	point := opts.Point
	if point == "" {
		point = Residual
	}
	var layers []int
	if len(opts.Layers) > 0 {
		spec, err := c.resolve(CaptureSpec{Layers: opts.Layers, Points: []Point{point}, Positions: PositionsLast})
		if err != nil {
			return nil, fmt.Errorf("generate: %w", err)
		}
		layers = spec.Layers
	}
	if err := c.setRequest([]Point{point}, layers); err != nil {
		return nil, err
	}
	smpl := newSampler(s)
	defer C.llama_sampler_free(smpl)

	c.clearMemory()
	defer c.clearMemory()
	out := &Generation{PromptTokens: len(prompt)}
	var text strings.Builder
	pending := prompt
	pos := 0
	for i := 0; ; i++ {
		// Feed the pending tokens in batches; the last one's logits and residual are kept.
		for len(pending) > 0 {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			n := min(len(pending), c.opts.NBatch)
			batch := make([]batchToken, n)
			for j := range batch {
				batch[j] = batchToken{token: pending[j], pos: int32(pos + j), logits: j == n-1 && n == len(pending)}
			}
			c.resetRows()
			if err := c.decode(batch); err != nil {
				return out, fmt.Errorf("generate: %w", err)
			}
			if c.cap.error != 0 {
				return out, fmt.Errorf("generate: tensor %s: %s", C.GoString(&c.cap.error_name[0]), captureErrors[int(c.cap.error)])
			}
			pos += n
			pending = pending[n:]
		}
		// A model whose weights hold NaN or Inf gives non-finite logits: llama.cpp's sampler
		// would assert (temperature > 0) or pick garbage (greedy).
		if err := c.checkLogits(-1); err != nil {
			return out, fmt.Errorf("generate: %w", err)
		}
		tok := int32(C.llama_sampler_sample(smpl, c.c, -1))
		if bool(C.llama_vocab_is_eog(c.m.vocab, C.llama_token(tok))) {
			out.StopReason = StopEOG
			break
		}
		piece, err := c.m.pieceLocked(tok, false)
		if err != nil {
			return out, fmt.Errorf("generate: %w", err)
		}
		if fn != nil {
			step := Step{Index: i, Token: tok, Piece: piece}
			if len(layers) > 0 {
				step.Residual = c.lastRows(layers)
				if step.Residual == nil {
					return out, fmt.Errorf("generate: architecture %q produced no %s rows", c.m.info.Arch, point)
				}
			}
			if !fn(step) {
				out.StopReason = StopCallback
				break
			}
		}
		out.Tokens = append(out.Tokens, tok)
		text.WriteString(piece)
		if cut, ok := cutAtStop(text.String(), opts.Stop); ok {
			out.Text = cut
			out.StopReason = StopString
			return out, nil
		}
		if opts.MaxTokens > 0 && len(out.Tokens) >= opts.MaxTokens {
			out.StopReason = StopMaxTokens
			break
		}
		if pos >= c.opts.NCtx {
			out.StopReason = StopContext
			break
		}
		pending = []int32{tok}
	}
	out.Text = text.String()
	return out, nil
}

// check refuses options llama.cpp's sampler would assert on. Written so that NaN fails every
// comparison.
func (s SamplerOptions) check() error {
	if !(s.Temperature >= 0 && s.Temperature <= 1e6) || s.TopK < 0 || !(s.TopP >= 0 && s.TopP <= 1) {
		return fmt.Errorf("bad sampler options %+v (0 ≤ temperature ≤ 1e6, top-k ≥ 0, 0 ≤ top-p ≤ 1)", s)
	}
	return nil
}

// checkLogits returns an error when the logits of batch token i (−1: the last) hold NaN or
// ±Inf: llama.cpp's sampler would assert (temperature > 0) or pick garbage (greedy).
func (c *Context) checkLogits(i int32) error {
	lp := C.llama_get_logits_ith(c.c, C.int32_t(i))
	if lp == nil {
		if i < 0 {
			return errors.New("no logits for the last token")
		}
		return fmt.Errorf("no logits for batch token %d", i)
	}
	for i, v := range unsafe.Slice((*float32)(unsafe.Pointer(lp)), int(c.m.nVocab)) {
		if v-v != 0 {
			return fmt.Errorf("model %s gave a non-finite logit (%v for token %d): its weights are broken", c.m.info.Path, v, i)
		}
	}
	return nil
}

// lastRows copies the last captured row of each slot of a one-point request (the newest
// position).
func (c *Context) lastRows(layers []int) map[int][]float32 {
	slots := unsafe.Slice(c.cap.slots, int(c.cap.n_slots))
	out := make(map[int][]float32, len(layers))
	for k, l := range layers {
		s := &slots[k]
		if s.rows == 0 {
			return nil
		}
		ne0 := int(s.ne0)
		all := unsafe.Slice((*float32)(unsafe.Pointer(s.data)), int(s.rows)*ne0)
		out[l] = append([]float32(nil), all[(int(s.rows)-1)*ne0:]...)
	}
	return out
}

func cutAtStop(text string, stops []string) (string, bool) {
	cut := -1
	for _, s := range stops {
		if s == "" {
			continue
		}
		if i := strings.Index(text, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut < 0 {
		return text, false
	}
	return text[:cut], true
}

func newSampler(s SamplerOptions) *C.struct_llama_sampler {
	chain := C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
	if s.Temperature == 0 {
		C.llama_sampler_chain_add(chain, C.llama_sampler_init_greedy())
		return chain
	}
	if s.TopK > 0 {
		C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_k(C.int32_t(s.TopK)))
	}
	if s.TopP > 0 && s.TopP < 1 {
		C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_p(C.float(s.TopP), 1))
	}
	C.llama_sampler_chain_add(chain, C.llama_sampler_init_temp(C.float(s.Temperature)))
	C.llama_sampler_chain_add(chain, C.llama_sampler_init_dist(C.uint32_t(s.Seed)))
	return chain
}
