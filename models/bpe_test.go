package models

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestByteLevelAlphabet checks GPT-2's bytes_to_unicode on bytes worked out by hand: printable
// Latin-1 stands for itself, the other 68 bytes follow U+0100 in byte order.
func TestByteLevelAlphabet(t *testing.T) {
	for b, want := range map[byte]rune{'a': 'a', '!': '!', 0x00: 'Ā', ' ': 'Ġ', '\n': 'Ċ', '\r': 'č', '\t': 'ĉ', 0x7F: 'ġ', 0xA0: 'ł', 0xAD: 'Ń', 0xC3: 'Ã', 0xFF: 'ÿ'} {
		assert.Equalf(t, want, byteLevel[b], "byte %#x", b)
	}
	seen := map[rune]bool{}
	for b := range 256 {
		assert.Equal(t, byte(b), fromByteLevel[byteLevel[b]])
		seen[byteLevel[b]] = true
	}
	assert.Len(t, seen, 256)
	// GPT-2's token order: '!' first, 'ÿ' the last printable, then the rest from 0x00.
	assert.Equal(t, []byte{'!', '"', '#'}, byteOrder[:3])
	assert.Equal(t, []byte{0xFF, 0x00, 0x01}, byteOrder[187:190])
	assert.Equal(t, byte(0xAD), byteOrder[255])
}

func TestSplitQwen2(t *testing.T) {
	for _, tc := range []struct {
		text string
		want []string
	}{
		{"Hello world", []string{"Hello", " world"}},
		{"I'm here", []string{"I", "'m", " here"}},
		{"don't", []string{"don", "'t"}},
		{"WE'LL 'Re", []string{"WE", "'LL", " '", "Re"}},
		{"'x", []string{"'x"}},
		{"abc123", []string{"abc", "1", "2", "3"}},
		{" 42", []string{" ", "4", "2"}},
		{"a  b", []string{"a", " ", " b"}},
		{"a   ", []string{"a", "   "}},
		{"  \t x", []string{"  \t", " x"}},
		{"hi!!\n\nyo", []string{"hi", "!!\n\n", "yo"}},
		{"x \n y", []string{"x", " \n", " y"}},
		{"a\r\n\r\nb", []string{"a", "\r\n\r\n", "b"}},
		{"(test) --x", []string{"(test", ")", " --", "x"}},
		{"\tfoo\nbar", []string{"\tfoo", "\n", "bar"}},
		{"héllo wörld", []string{"héllo", " wörld"}},
		{"漢字 ok", []string{"漢字", " ok"}},
		{"🙂🙂 x", []string{"🙂🙂", " x"}},
		{"", nil},
	} {
		assert.Equalf(t, tc.want, splitQwen2(tc.text), "%q", tc.text)
		assert.Equal(t, tc.text, strings.Join(splitQwen2(tc.text), ""))
	}
}

// TestEncodeBPEMergeRanks: hand-made vocabularies where the merge ranks decide the split.
func TestEncodeBPEMergeRanks(t *testing.T) {
	for _, tc := range []struct {
		merges []string
		text   string
		want   []string
	}{
		{[]string{"a b", "b c"}, "abc", []string{"ab", "c"}},
		{[]string{"b c", "a b"}, "abc", []string{"a", "bc"}},
		{[]string{"a b", "ab c"}, "abcab", []string{"abc", "ab"}},
		{[]string{"a a"}, "aaa", []string{"aa", "a"}},                // leftmost on a tie
		{[]string{"a a", "aa aa"}, "aaaaa", []string{"aaaa", "a"}},   // ranks, then left first
		{[]string{"Ġ t", "t h", "Ġ th"}, " th", []string{"Ġt", "h"}}, // Ġ t ranks before t h
		{[]string{"t h", "Ġ t", "Ġ th"}, " th", []string{"Ġth"}},     // and here after it
		{[]string{"Ġ t", "Ġt h", "h e"}, " the the", []string{"Ġth", "e", "Ġth", "e"}},
	} {
		v, err := NewBPEVocab([]string{"<|endoftext|>"}, tc.merges)
		require.NoError(t, err)
		ids, err := v.EncodeBPE(tc.text)
		require.NoError(t, err)
		got := make([]string, len(ids))
		for i, id := range ids {
			got[i] = v.Tokens[id]
		}
		assert.Equalf(t, tc.want, got, "%q with merges %q", tc.text, tc.merges)
	}
}

// TestEncodeBPEBytes: a character outside the merges becomes the byte tokens of its UTF-8
// bytes. With one control token, byte b's token is 1 + its place in GPT-2's order: 'é' is
// C3 A9, Ã at 94 + 12 + (0xC3−0xAE) = 127 and © at 94 + (0xA9−0xA1) = 102.
func TestEncodeBPEBytes(t *testing.T) {
	v, err := NewBPEVocab([]string{"<|endoftext|>"}, nil)
	require.NoError(t, err)
	require.Len(t, v.Tokens, 257)
	ids, err := v.EncodeBPE("é")
	require.NoError(t, err)
	assert.Equal(t, []int32{128, 103}, ids)
	assert.Equal(t, "Ã", v.Tokens[128])
	assert.Equal(t, "©", v.Tokens[103])
	// 🙂 is F0 9F 99 82: four byte tokens; a space is Ġ (U+0120), the 33rd unprintable byte.
	ids, err = v.EncodeBPE(" 🙂")
	require.NoError(t, err)
	var got []string
	for _, id := range ids {
		got = append(got, v.Tokens[id])
	}
	assert.Equal(t, []string{"Ġ", "ð", "Ł", "Ļ", "Ĥ"}, got)
	assert.Equal(t, int32(1+188+32), ids[0])
}

func TestEncodeBPEErrors(t *testing.T) {
	v, err := NewBPEVocab([]string{"<|endoftext|>"}, []string{"a b"})
	require.NoError(t, err)
	_, err = v.EncodeBPE("bad \xff")
	assert.ErrorContains(t, err, "not valid UTF-8")
	spm, err := NewTinyVocab("spm", 512)
	require.NoError(t, err)
	_, err = spm.EncodeBPE("x")
	assert.ErrorContains(t, err, `the vocabulary is "llama", not "gpt2"`)
	other := *v
	other.Pre = "llama-bpe"
	_, err = other.EncodeBPE("x")
	assert.ErrorContains(t, err, `pre-tokenizer "llama-bpe" is not implemented`)
	// A merge whose result is not a token: llama.cpp would drop the symbol.
	broken := *v
	broken.Tokens = slices.Clone(v.Tokens)
	broken.Tokens[len(broken.Tokens)-1] = "zz"
	_, err = broken.EncodeBPE("ab")
	assert.ErrorContains(t, err, `symbol "ab" of word "ab" is not a token`)

	for _, tc := range []struct {
		controls, merges []string
		want             string
	}{
		{nil, nil, "needs a control token"},
		{[]string{"<s>"}, []string{"ab"}, "not two tokens"},
		{[]string{"<s>"}, []string{"a  b"}, "not two tokens"},
		{[]string{"<s>"}, []string{"a bc"}, `"bc" is not a token yet`},
		{[]string{"<s>"}, []string{"a b", "a b"}, "listed twice"},
		{[]string{"<s>"}, []string{"<s> a"}, "is a control token"},
		{[]string{"<s>", "<s>"}, nil, `duplicate token "<s>"`},
		{[]string{"a"}, nil, `duplicate token "a"`},
	} {
		_, err := NewBPEVocab(tc.controls, tc.merges)
		assert.ErrorContainsf(t, err, tc.want, "%q %q", tc.controls, tc.merges)
	}
}

func TestTinyBPEVocab(t *testing.T) {
	for _, n := range []int{MinBPEVocab, 512, 3000, 32000} {
		v, err := NewTinyVocab("bpe", n)
		require.NoError(t, err)
		require.Equal(t, n, v.Size())
		require.Len(t, v.Types, n)
		again, err := NewTinyVocab("bpe", n)
		require.NoError(t, err)
		require.Equal(t, v, again, "deterministic")
		assert.Equal(t, ModelBPE, v.Model)
		assert.Equal(t, PreQwen2, v.Pre)
		assert.Nil(t, v.Scores)
		assert.Equal(t, []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}, v.Tokens[:3])
		assert.Equal(t, []int32{TokenControl, TokenControl, TokenControl}, v.Types[:3])
		assert.Equal(t, int32(0), v.BOS)
		assert.Equal(t, int32(0), v.EOS)
		assert.Equal(t, int32(-1), v.UNK)
		assert.False(t, v.AddBOS)
		ids := map[string]int{}
		for i, tok := range v.Tokens {
			ids[tok] = i
			if i >= 3 {
				require.Equal(t, TokenNormal, v.Types[i])
				for _, r := range tok {
					_, ok := fromByteLevel[r]
					require.Truef(t, ok, "token %q is not in the byte-level alphabet", tok)
				}
			}
		}
		for b := range 256 {
			require.Equal(t, 3+slices.Index(byteOrder[:], byte(b)), ids[string(byteLevel[b])])
		}
		// Every merge joins tokens made before it, and merged token 259+r is merge r's.
		require.Len(t, v.Merges, n-259)
		for rank, m := range v.Merges {
			l, r, ok := strings.Cut(m, " ")
			require.True(t, ok)
			require.Equal(t, l+r, v.Tokens[259+rank])
			require.Lessf(t, ids[l], 259+rank, "merge %q", m)
			require.Lessf(t, ids[r], 259+rank, "merge %q", m)
			require.GreaterOrEqualf(t, ids[l], 3, "merge %q", m)
			require.GreaterOrEqualf(t, ids[r], 3, "merge %q", m)
		}
	}
	_, err := NewTinyVocab("bpe", MinBPEVocab-1)
	require.ErrorContains(t, err, "vocab 259 is too small for a BPE vocabulary; need at least 260")
	_, err = NewTinyVocab("bpe", 1<<20)
	require.ErrorContains(t, err, "vocab 1048576 is larger than the 36982 tokens the BPE targets make")
	_, err = NewTinyVocab("wordpiece", 512)
	require.ErrorContains(t, err, `tokenizer "wordpiece" unknown`)
}

func TestLearnBPEVocab(t *testing.T) {
	targets := []string{"hello", " hello", "he", "", "x", "héllo"}
	v, err := LearnBPEVocab([]string{"<|endoftext|>"}, targets, 0)
	require.NoError(t, err)
	// hello: h e, he l, hel l, hell o (4); " hello" is then Ġ hello, one merge; he is a token
	// already; héllo: h Ã, hÃ ©, hÃ© l, hÃ©l l, hÃ©ll o (5; é is the bytes Ã ©).
	assert.Equal(t, 1+256+4+1+5, v.Size())
	assert.Equal(t, []string{"h e", "he l", "hel l", "hell o", "Ġ hello", "h Ã", "hÃ ©", "hÃ© l", "hÃ©l l", "hÃ©ll o"}, v.Merges)
	for _, text := range []string{"hello", " hello", "he", "héllo"} {
		ids, err := v.EncodeBPE(text)
		require.NoError(t, err)
		assert.Equal(t, []int32{int32(slices.Index(v.Tokens, byteLevelEncode(text)))}, ids, text)
	}
	n := 1 + 256 + 2
	v, err = LearnBPEVocab([]string{"<|endoftext|>"}, targets, n)
	require.NoError(t, err)
	assert.Equal(t, n, v.Size())
	assert.Equal(t, []string{"h e", "he l"}, v.Merges)
	_, err = LearnBPEVocab([]string{"<|endoftext|>"}, targets, 300)
	assert.ErrorContains(t, err, "vocab 300 is larger than the 267 tokens the BPE targets make")
	_, err = LearnBPEVocab(nil, targets, 0)
	assert.ErrorContains(t, err, "needs a control token")
}

// TestTinyBPEWords: the words the tiny vocabulary learns are one token each, with and
// without their leading space, and text around them splits as the pre-tokenizer says.
func TestTinyBPEWords(t *testing.T) {
	v, err := NewTinyVocab("bpe", 3000)
	require.NoError(t, err)
	tok := func(s string) int32 {
		i := slices.Index(v.Tokens, s)
		require.GreaterOrEqualf(t, i, 0, "token %q", s)
		return int32(i)
	}
	for _, tc := range []struct {
		text string
		want []int32
	}{
		{"the", []int32{tok("the")}},
		{" the", []int32{tok("Ġthe")}},
		{"Human: hello world", []int32{tok("Human"), tok(":"), tok("Ġhello"), tok("Ġworld")}},
		{"it's  yes\n\n", []int32{tok("it"), tok("'s"), tok("Ġ"), tok("Ġyes"), tok("ĊĊ")}},
		{"x2", []int32{tok("x"), tok("2")}},
	} {
		got, err := v.EncodeBPE(tc.text)
		require.NoError(t, err)
		assert.Equalf(t, tc.want, got, "%q", tc.text)
	}
	for _, w := range tinyWords {
		for _, text := range []string{w, " " + w} {
			got, err := v.EncodeBPE(text)
			require.NoError(t, err)
			assert.Equalf(t, []int32{tok(byteLevelEncode(text))}, got, "%q", text)
		}
	}
	// A control token's text is plain text: pieces of the byte-level text, none a control.
	got, err := v.EncodeBPE("<|im_start|>")
	require.NoError(t, err)
	require.Greater(t, len(got), 1)
	var joined string
	for _, id := range got {
		require.GreaterOrEqual(t, id, int32(3))
		joined += v.Tokens[id]
	}
	assert.Equal(t, "<|im_start|>", joined)
}

// TestBPELlamaRoundTrip writes a tiny model with the BPE vocabulary and reads it back.
func TestBPELlamaRoundTrip(t *testing.T) {
	cfg := TinyConfig()
	cfg.Tokenizer = "bpe"
	a, err := NewRandomLlama(cfg, 3)
	require.NoError(t, err)
	require.Equal(t, ModelBPE, a.Vocab.Model)
	path := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, a.WriteGGUF(path))
	back, err := LoadLlama(path)
	require.NoError(t, err)
	assert.Equal(t, a.Vocab, back.Vocab)
	assert.Equal(t, cfg.NVocab, back.Config.NVocab)
	assert.Equal(t, a.Blocks, back.Blocks)
	keys := map[string]any{}
	for _, kv := range a.Vocab.KVs() {
		keys[kv.Key] = kv.Value
	}
	assert.Equal(t, "gpt2", keys["tokenizer.ggml.model"])
	assert.Equal(t, "qwen2", keys["tokenizer.ggml.pre"])
	assert.Equal(t, false, keys["tokenizer.ggml.add_bos_token"])
	assert.NotContains(t, keys, "tokenizer.ggml.scores")
	assert.NotContains(t, keys, "tokenizer.ggml.unknown_token_id")

	// The smallest vocabulary, one merge, round trips too.
	v, err := NewTinyVocab("bpe", MinBPEVocab)
	require.NoError(t, err)
	a.Vocab, a.Config.NVocab = v, MinBPEVocab
	a.TokenEmbd, a.Output = a.TokenEmbd[:MinBPEVocab*cfg.NEmbd], a.Output[:MinBPEVocab*cfg.NEmbd]
	require.NoError(t, a.WriteGGUF(path))
	back, err = LoadLlama(path)
	require.NoError(t, err)
	assert.Equal(t, v, back.Vocab)
}

// TestSPMVocabKVsUnchanged: an SPM vocabulary, with Model set or empty, writes the keys it
// always wrote.
func TestSPMVocabKVsUnchanged(t *testing.T) {
	v, err := NewTinyVocab("spm", 512)
	require.NoError(t, err)
	assert.Equal(t, ModelSPM, v.Model)
	var keys []string
	for _, kv := range v.KVs() {
		keys = append(keys, kv.Key)
	}
	assert.Equal(t, []string{"tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
		"tokenizer.ggml.token_type", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.bos_token_id",
		"tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"}, keys)
	empty := *v
	empty.Model = ""
	assert.Equal(t, v.KVs(), empty.KVs())
}
