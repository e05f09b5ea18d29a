package models

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Tokenizer models (tokenizer.ggml.model) and the BPE pre-tokenizer (tokenizer.ggml.pre) the
// vocabularies here are written with.
const (
	ModelSPM = "llama" // SentencePiece: llama 2, Mistral
	ModelBPE = "gpt2"  // GPT-2 byte-level BPE: Qwen2, Llama 3
	// PreQwen2 is Qwen2's pre-tokenizer. llama.cpp splits text with its regex
	//
	//	(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
	//
	// and, unlike "llama-bpe" and "gpt-2", neither skips the merges of a word that is a token
	// (ignore_merges) nor cleans the spaces before punctuation when it detokenizes
	// (clean_spaces), so detokenizing gives back the exact text.
	PreQwen2 = "qwen2"
)

// tinyBPEControls are the control tokens of the tiny BPE vocabulary, ids 0, 1 and 2: BOS and
// EOS, and ChatML's turn markers (so ChatMLTemplate formats into control tokens).
var tinyBPEControls = []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}

// MinBPEVocab is the smallest tiny BPE vocabulary: its 3 control tokens, the 256 byte tokens
// and one merge (without any, tokenizer.ggml.merges would be an empty array, which GGUF
// stores without a string element type).
const MinBPEVocab = 3 + 256 + 1

// byteLevel is GPT-2's bytes_to_unicode: byte b is written as the character byteLevel[b]
// (printable Latin-1 bytes as themselves, the others as U+0100 onwards in byte order, so a
// space is "Ġ" and a newline "Ċ"). byteOrder lists the bytes in GPT-2's token order, the
// printable ones first; fromByteLevel inverts byteLevel.
var byteLevel, byteOrder, fromByteLevel = func() ([256]rune, [256]byte, map[rune]byte) {
	var enc [256]rune
	var order [256]byte
	dec := make(map[rune]byte, 256)
	printable := func(b int) bool { return b >= 0x21 && b <= 0x7E || b >= 0xA1 && b <= 0xAC || b >= 0xAE }
	i := 0
	for b := 0; b < 256; b++ {
		if printable(b) {
			enc[b], order[i] = rune(b), byte(b)
			i++
		}
	}
	n := 0
	for b := 0; b < 256; b++ {
		if !printable(b) {
			enc[b], order[i] = rune(256+n), byte(b)
			i++
			n++
		}
	}
	for b, r := range enc {
		dec[r] = byte(b)
	}
	return enc, order, dec
}()

// byteLevelEncode writes text's bytes in the byte-level alphabet, one character per byte.
func byteLevelEncode(text string) string {
	var sb strings.Builder
	for i := 0; i < len(text); i++ {
		sb.WriteRune(byteLevel[text[i]])
	}
	return sb.String()
}

// NewBPEVocab builds a GPT-2 byte-level BPE vocabulary: the control tokens first (controls[0]
// is BOS and EOS, as <|endoftext|> is GPT-2's), then the 256 single-byte tokens in GPT-2's
// order, then one token per merge, in rank order. Each merge is "a b": a and b are tokens
// already present and a+b is the merged token (added unless some earlier token spells it).
// Tokens are written in the byte-level alphabet (a space is "Ġ"), never with a real space.
// It is tokenized with the Qwen2 pre-tokenizer and adds no BOS, as Qwen2 does.
func NewBPEVocab(controls, merges []string) (*Vocab, error) {
	if len(controls) == 0 {
		return nil, fmt.Errorf("models: a BPE vocabulary needs a control token for BOS and EOS")
	}
	b := newBPEBuilder(controls)
	for i, m := range merges {
		l, r, ok := strings.Cut(m, " ")
		if !ok || l == "" || r == "" || strings.Contains(r, " ") {
			return nil, fmt.Errorf("models: merge %d %q is not two tokens separated by one space", i, m)
		}
		if err := b.addMerge(l, r); err != nil {
			return nil, fmt.Errorf("models: merge %d: %w", i, err)
		}
	}
	return b.vocab()
}

// newTinyBPEVocab builds the tiny BPE vocabulary of n tokens: the ChatML control tokens, the
// byte tokens, then merges learnt (LearnBPEVocab) for these targets, in order: runs of
// whitespace, the contractions the pre-tokenizer splits off, the common English words of
// tinyWords with and without a leading space, all letter pairs, then letters, pairs and all
// three-letter strings after a space and without one.
func newTinyBPEVocab(n int) (*Vocab, error) {
	if n < MinBPEVocab {
		return nil, fmt.Errorf("model config: vocab %d is too small for a BPE vocabulary; need at least %d (3 control tokens, 256 byte tokens, one merge)", n, MinBPEVocab)
	}
	v, err := LearnBPEVocab(tinyBPEControls, tinyBPETargets(), n)
	if err != nil {
		return nil, fmt.Errorf("model config: %w", err)
	}
	return v, nil
}

// LearnBPEVocab builds a BPE vocabulary (as NewBPEVocab lays it out) whose merges make each
// target text one token, in order: a target is encoded with the merges so far and the first
// two of its pieces are merged, until it is one token. So every merge joins tokens already
// present, and each target is reached by BPE itself (as long as the pre-tokenizer keeps it one
// word). A target whose next join some earlier token already spells is left as BPE splits it,
// so that, as in GPT-2, each merge makes one new token: merged token len(controls)+256+r comes
// from merge r. It stops at exactly n tokens, or after the last target when n ≤ 0; there
// being fewer targets than n needs is an error.
func LearnBPEVocab(controls, targets []string, n int) (*Vocab, error) {
	if len(controls) == 0 {
		return nil, fmt.Errorf("models: a BPE vocabulary needs a control token for BOS and EOS")
	}
	b := newBPEBuilder(controls)
	for _, target := range targets {
		for n <= 0 || len(b.tokens) < n {
			syms := b.encodeWord(byteLevelEncode(target))
			if len(syms) < 2 {
				break
			}
			if _, made := b.ids[syms[0]+syms[1]]; made {
				break
			}
			if err := b.addMerge(syms[0], syms[1]); err != nil {
				return nil, err
			}
		}
		if len(b.tokens) == n {
			break
		}
	}
	if n > 0 && len(b.tokens) < n {
		return nil, fmt.Errorf("vocab %d is larger than the %d tokens the BPE targets make", n, len(b.tokens))
	}
	return b.vocab()
}

// tinyBPETargets are the texts the tiny BPE vocabulary learns, in rank order.
func tinyBPETargets() []string {
	targets := []string{"  ", "   ", "    ", "\n\n", "\r\n", "\t\t", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"}
	for _, w := range tinyWords {
		targets = append(targets, " "+w, w)
	}
	letters := "abcdefghijklmnopqrstuvwxyz"
	for _, a := range letters {
		for _, b := range letters {
			targets = append(targets, string([]rune{a, b}))
		}
	}
	for _, a := range letters {
		targets = append(targets, " "+string(a))
	}
	for _, a := range letters {
		for _, b := range letters {
			targets = append(targets, " "+string([]rune{a, b}))
		}
	}
	for _, prefix := range []string{"", " "} {
		for _, a := range letters {
			for _, b := range letters {
				for _, c := range letters {
					targets = append(targets, prefix+string([]rune{a, b, c}))
				}
			}
		}
	}
	return targets
}

// bpeBuilder grows a BPE vocabulary merge by merge, and encodes with the merges so far.
type bpeBuilder struct {
	tokens []string
	types  []int32
	ids    map[string]int32
	ranks  map[[2]string]int
	merges []string
}

func newBPEBuilder(controls []string) *bpeBuilder {
	b := &bpeBuilder{ids: map[string]int32{}, ranks: map[[2]string]int{}}
	for _, c := range controls {
		b.add(c, TokenControl)
	}
	for _, c := range byteOrder {
		b.add(string(byteLevel[c]), TokenNormal)
	}
	return b
}

// add appends a token; a duplicate keeps its first id here and is reported by vocab.
func (b *bpeBuilder) add(tok string, typ int32) {
	if _, ok := b.ids[tok]; !ok {
		b.ids[tok] = int32(len(b.tokens))
	}
	b.tokens = append(b.tokens, tok)
	b.types = append(b.types, typ)
}

func (b *bpeBuilder) addMerge(l, r string) error {
	for _, part := range []string{l, r} {
		id, ok := b.ids[part]
		if !ok {
			return fmt.Errorf("merge %q %q: %q is not a token yet", l, r, part)
		}
		if b.types[id] == TokenControl {
			return fmt.Errorf("merge %q %q: %q is a control token", l, r, part)
		}
	}
	if _, dup := b.ranks[[2]string{l, r}]; dup {
		return fmt.Errorf("merge %q %q is listed twice", l, r)
	}
	b.ranks[[2]string{l, r}] = len(b.merges)
	b.merges = append(b.merges, l+" "+r)
	if _, ok := b.ids[l+r]; !ok {
		b.add(l+r, TokenNormal)
	}
	return nil
}

func (b *bpeBuilder) vocab() (*Vocab, error) {
	v := &Vocab{
		Model: ModelBPE, Pre: PreQwen2, Tokens: b.tokens, Types: b.types, Merges: b.merges,
		UNK: -1, BOS: 0, EOS: 0, AddBOS: false,
	}
	if err := v.checkTokens(); err != nil {
		return nil, err
	}
	return v, nil
}

// encodeWord applies the merges to one pre-tokenized word given in the byte-level alphabet,
// as llama.cpp's llm_tokenizer_bpe_session does: the word starts as one symbol per character,
// and the adjacent pair of lowest merge rank, leftmost on ties, is merged until no pair has a
// merge. It returns the symbols' texts.
func (b *bpeBuilder) encodeWord(word string) []string {
	syms := make([]string, 0, utf8.RuneCountInString(word))
	for _, r := range word {
		syms = append(syms, string(r))
	}
	for len(syms) > 1 {
		best, at := -1, -1
		for i := 0; i+1 < len(syms); i++ {
			if rank, ok := b.ranks[[2]string{syms[i], syms[i+1]}]; ok && (best < 0 || rank < best) {
				best, at = rank, i
			}
		}
		if at < 0 {
			break
		}
		syms[at] += syms[at+1]
		syms = append(syms[:at+1], syms[at+2:]...)
	}
	return syms
}

// EncodeBPE tokenizes text with a GPT-2 byte-level BPE vocabulary (Model "gpt2") as llama.cpp
// does with llama_tokenize(text, add_special=false, parse_special=false): no BOS, and control
// tokens' text is plain text.
//
//  1. The text is split into words by the pre-tokenizer. Only Pre "qwen2" (PreQwen2) is
//     implemented: its regex is matched by hand (Go's regexp has no lookahead), alternatives
//     in order and each greedy, as std::regex matches it. \p{L} and \p{N} are Go's
//     unicode.IsLetter and unicode.IsNumber, \s is unicode.IsSpace (the White_Space set
//     llama.cpp uses); every other character is [^\s\p{L}\p{N}]. That is exact for ASCII
//     (tested against llama.cpp, as are samples of non-ASCII letters, digits, marks, symbols
//     and spaces); beyond it, llama.cpp's Unicode tables may differ from Go's on characters
//     one of them does not yet know.
//  2. Each word's bytes are written in GPT-2's bytes_to_unicode alphabet.
//  3. Starting from one symbol per byte, the adjacent pair with the lowest merge rank,
//     leftmost on ties, is merged until no adjacent pair has a merge.
//  4. Each symbol becomes its token id.
//
// It returns an error for text that is not valid UTF-8, another tokenizer or pre-tokenizer, or
// a symbol that is not a token (a merge whose result is missing, or a byte without a token,
// which llama.cpp would drop). It indexes the vocabulary on each call.
func (v *Vocab) EncodeBPE(text string) ([]int32, error) {
	if v.Model != ModelBPE {
		return nil, fmt.Errorf("encode bpe: the vocabulary is %q, not %q", v.model(), ModelBPE)
	}
	if v.Pre != PreQwen2 {
		return nil, fmt.Errorf("encode bpe: pre-tokenizer %q is not implemented (only %q)", v.Pre, PreQwen2)
	}
	if !utf8.ValidString(text) {
		return nil, fmt.Errorf("encode bpe: text is not valid UTF-8")
	}
	b := &bpeBuilder{ids: make(map[string]int32, len(v.Tokens)), ranks: make(map[[2]string]int, len(v.Merges))}
	for i, t := range v.Tokens {
		b.ids[t] = int32(i)
	}
	for i, m := range v.Merges {
		// As llama.cpp splits a merge: at its first space after the first byte; the first
		// rank of a pair listed twice counts.
		var pair [2]string
		if sp := strings.IndexByte(m[min(1, len(m)):], ' '); sp >= 0 {
			sp += min(1, len(m))
			pair = [2]string{m[:sp], m[sp+1:]}
		}
		if _, dup := b.ranks[pair]; !dup {
			b.ranks[pair] = i
		}
	}
	var out []int32
	for _, word := range splitQwen2(text) {
		for _, sym := range b.encodeWord(byteLevelEncode(word)) {
			id, ok := b.ids[sym]
			if !ok {
				return nil, fmt.Errorf("encode bpe: symbol %q of word %q is not a token", sym, word)
			}
			out = append(out, id)
		}
	}
	return out, nil
}

// Character classes of the pre-tokenizer regexes.
func isLetter(r rune) bool { return !unicode.IsSpace(r) && unicode.IsLetter(r) }
func isNumber(r rune) bool { return !unicode.IsSpace(r) && unicode.IsNumber(r) }
func isOther(r rune) bool  { return !unicode.IsSpace(r) && !unicode.IsLetter(r) && !unicode.IsNumber(r) }
func isCRLF(r rune) bool   { return r == '\r' || r == '\n' }

// splitQwen2 splits text as the Qwen2 pre-tokenizer regex does (see PreQwen2), trying its
// alternatives in order at each position:
//
//	(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])  a contraction
//	[^\r\n\p{L}\p{N}]?\p{L}+                                   letters, after one optional
//	                                                           character of no other class
//	\p{N}                                                      one digit
//	 ?[^\s\p{L}\p{N}]+[\r\n]*                                  punctuation and symbols
//	\s*[\r\n]+                                                 whitespace to its last newline
//	\s+(?!\S)                                                  whitespace but the last before
//	                                                           a non-space
//	\s+                                                        whitespace
func splitQwen2(text string) []string {
	rs := []rune(text)
	var words []string
	for pos := 0; pos < len(rs); {
		end := qwen2Match(rs, pos)
		words = append(words, string(rs[pos:end]))
		pos = end
	}
	return words
}

// qwen2Match returns where the Qwen2 regex's match at rs[pos] ends.
func qwen2Match(rs []rune, pos int) int {
	n := len(rs)
	c := rs[pos]
	// The contractions.
	if c == '\'' && pos+1 < n {
		c1 := rs[pos+1] | 0x20 // ASCII lower case; no other character lands on these letters
		if rs[pos+1] < 128 && (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
			return pos + 2
		}
		if pos+2 < n && rs[pos+1] < 128 && rs[pos+2] < 128 {
			switch string([]rune{c1, rs[pos+2] | 0x20}) {
			case "re", "ve", "ll":
				return pos + 3
			}
		}
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+
	start := pos
	if !isLetter(c) && !isNumber(c) && !isCRLF(c) && pos+1 < n && isLetter(rs[pos+1]) {
		start = pos + 1
	}
	if isLetter(rs[start]) {
		end := start
		for end < n && isLetter(rs[end]) {
			end++
		}
		return end
	}
	// \p{N}
	if isNumber(c) {
		return pos + 1
	}
	// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
	start = pos
	if c == ' ' {
		start = pos + 1
	}
	if start < n && isOther(rs[start]) {
		end := start
		for end < n && isOther(rs[end]) {
			end++
		}
		for end < n && isCRLF(rs[end]) {
			end++
		}
		return end
	}
	if !unicode.IsSpace(c) {
		return pos + 1 // unreachable: every character is a letter, number, space or other
	}
	end, lastNL := pos, -1
	for end < n && unicode.IsSpace(rs[end]) {
		if isCRLF(rs[end]) {
			lastNL = end
		}
		end++
	}
	switch {
	case lastNL >= 0: // \s*[\r\n]+
		return lastNL + 1
	case end < n && end-pos > 1: // \s+(?!\S), giving back the space before a non-space
		return end - 1
	default: // \s+(?!\S) to the end of the text, or \s+
		return end
	}
}
