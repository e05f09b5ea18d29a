package models

import (
	"fmt"
	"math"
	"slices"
)

// Architectures the tiny-model generator and the reference forward pass implement, by their
// GGUF general.architecture names. Each differs from llama in what the reference checks:
//   - qwen2: biases on the query, key and value projections; NEOX RoPE (the two halves of a
//     head rotate together, not adjacent pairs).
//   - phi3: query, key and value in one fused matrix (attn_qkv), gate and up in one fused
//     matrix (ffn_up of twice the width, gate first); NEOX RoPE.
//   - gemma: the embedding scaled by √n_embd; heads of their own size, so n_head × head_dim
//     need not be n_embd; GeGLU (tanh GELU) instead of SwiGLU; the output tied to the
//     embedding; NEOX RoPE.
//   - gemma2: gemma plus RMS norms after attention and after the feed-forward network, tanh
//     soft-capping of attention scores and of the final logits, and sliding-window attention
//     on every other layer (layers 0, 2, 4, …).
const (
	ArchLlama  = "llama"
	ArchQwen2  = "qwen2"
	ArchPhi3   = "phi3"
	ArchGemma  = "gemma"
	ArchGemma2 = "gemma2"
)

// Archs lists the architectures models implements.
var Archs = []string{ArchLlama, ArchQwen2, ArchPhi3, ArchGemma, ArchGemma2}

// ArchName is the configuration's architecture, llama when Arch is empty.
func (c LlamaConfig) ArchName() string {
	if c.Arch == "" {
		return ArchLlama
	}
	return c.Arch
}

func (c LlamaConfig) isGemma() bool {
	a := c.ArchName()
	return a == ArchGemma || a == ArchGemma2
}

// neoxRope says whether RoPE rotates the pairs (i, i+head_dim/2), llama.cpp's NEOX mode,
// rather than adjacent pairs (llama's NORM mode).
func (c LlamaConfig) neoxRope() bool { return c.ArchName() != ArchLlama }

// TiedOutput says whether the output projection is the token embedding (gemma, gemma2: their
// GGUF files have no output.weight).
func (c LlamaConfig) TiedOutput() bool { return c.isGemma() }

// QDim is the width of the attention heads together: NHead × HeadDim.
func (c LlamaConfig) QDim() int { return c.NHead * c.HeadDim() }

// IsSWALayer says whether layer l attends through a sliding window (gemma2's even layers).
func (c LlamaConfig) IsSWALayer(l int) bool {
	return c.ArchName() == ArchGemma2 && c.SlidingWindow > 0 && l%2 == 0
}

// validateArch checks the fields that depend on the architecture.
func (c LlamaConfig) validateArch() error {
	a := c.ArchName()
	if !slices.Contains(Archs, a) {
		return fmt.Errorf("model config: architecture %q unknown (want one of %v)", c.Arch, Archs)
	}
	if c.HeadSize < 0 || c.SlidingWindow < 0 || c.AttnSoftcap < 0 || c.FinalSoftcap < 0 ||
		math.IsInf(float64(c.AttnSoftcap), 0) || math.IsInf(float64(c.FinalSoftcap), 0) ||
		c.AttnSoftcap != c.AttnSoftcap || c.FinalSoftcap != c.FinalSoftcap {
		return fmt.Errorf("model config: head size, sliding window and soft-caps must be non-negative and finite: %+v", c)
	}
	if c.HeadSize > 0 && !c.isGemma() && c.HeadSize*c.NHead != c.NEmbd {
		return fmt.Errorf("model config: head size %d × %d heads is not n_embd %d; only gemma and gemma2 have heads of their own size", c.HeadSize, c.NHead, c.NEmbd)
	}
	if a == ArchGemma2 {
		if c.SlidingWindow == 0 || c.AttnSoftcap == 0 || c.FinalSoftcap == 0 {
			return fmt.Errorf("model config: gemma2 needs a sliding window and both soft-caps: %+v", c)
		}
	} else if c.SlidingWindow != 0 || c.AttnSoftcap != 0 || c.FinalSoftcap != 0 {
		return fmt.Errorf("model config: sliding window and soft-caps are gemma2's; %s has none", a)
	}
	return nil
}

// TinyArchConfig is the tiny test model of an architecture: TinyConfig with, for gemma and
// gemma2, heads of 24 (4 × 24 = 96 ≠ n_embd 64), and for gemma2 a window of 4 tokens and
// soft-caps small enough to bend random scores (2 for attention, 3 for the logits; real
// Gemma 2 uses 50 and 30).
func TinyArchConfig(arch string) LlamaConfig {
	c := TinyConfig()
	c.Arch = arch
	switch arch {
	case ArchGemma:
		c.HeadSize = 24
	case ArchGemma2:
		c.HeadSize, c.SlidingWindow, c.AttnSoftcap, c.FinalSoftcap = 24, 4, 2, 3
	}
	return c
}

// gelu is the tanh approximation of GELU that Gemma uses (and ggml's GELU).
func gelu(x float64) float64 {
	return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
}

// ropeNeox rotates the pairs (i, i+headDim/2) of every head of v by pos·θ^(−2i/headDim):
// llama.cpp's NEOX mode.
func ropeNeox(v []float64, headDim, pos int, theta float32) {
	half := headDim / 2
	for h := 0; h < len(v)/headDim; h++ {
		for i := 0; i < half; i++ {
			ang := float64(pos) * math.Pow(float64(theta), -2*float64(i)/float64(headDim))
			sin, cos := math.Sincos(ang)
			a, b := v[h*headDim+i], v[h*headDim+i+half]
			v[h*headDim+i] = a*cos - b*sin
			v[h*headDim+i+half] = a*sin + b*cos
		}
	}
}
