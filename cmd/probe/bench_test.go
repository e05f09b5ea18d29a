package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBenchReport runs probe bench on a tiny bench model, one round, and checks the report
// against its own raw figures: every configuration measured, each ratio the quotient of the
// figures it names, the dump RSS of both prompt counts, and what was skipped said.
func TestBenchReport(t *testing.T) {
	t.Setenv(childEnv, "run") // bench's children are this test binary: make it run their command lines
	dir := t.TempDir()
	r := mustRun(t, "bench", "--dir", dir, "--embd", "64", "--layers", "2", "--vocab", "512", "--types", "F16,Q8_0",
		"--rounds", "1", "--prompts", "2", "--prompt-tokens", "8", "--upstream=false", "--rss", "20,40", "-t", "2", "--json")
	rep := decodeJSON[benchReport](t, r.stdout)
	for _, typ := range []string{"F16", "Q8_0"} {
		for _, name := range []string{"decode", "capture one, positions last", "capture one, positions all",
			"capture all, positions last", "capture all, positions all", "capture all, positions all, logits"} {
			fig := rep.figure(name, typ)
			require.NotNil(t, fig, "%s %s", typ, name)
			assert.Equal(t, 16, fig.Tokens, "two prompts of 8 tokens")
			require.Len(t, fig.Seconds, 1)
			assert.InDelta(t, float64(fig.Tokens)/fig.Seconds[0], fig.TokPerSec, 1e-9*fig.TokPerSec)
		}
	}
	for _, name := range []string{"dump, decode only", "dump f32", "dump f16", "32 × 64 batched", "32 × 64 one at a time",
		"256 × 8 batched", "256 × 8 one at a time"} {
		require.NotNil(t, rep.figure(name, "Q8_0"), name)
	}
	assert.Equal(t, 32*64, rep.figure("32 × 64 batched", "Q8_0").Tokens)
	assert.Equal(t, 256*8, rep.figure("256 × 8 one at a time", "Q8_0").Tokens)
	q := func(a, b string) float64 { return rep.figure(a, "Q8_0").TokPerSec / rep.figure(b, "Q8_0").TokPerSec }
	assert.InDelta(t, q("capture all, positions all", "decode"), rep.CaptureAllRatio, 1e-12)
	assert.InDelta(t, q("capture one, positions all", "decode"), rep.CaptureOneRatio, 1e-12)
	assert.InDelta(t, q("capture all, positions all", "capture all, positions all, logits"), rep.LogitsCost, 1e-12)
	assert.InDelta(t, q("dump f32", "dump, decode only"), rep.DumpRatio, 1e-12)
	assert.InDelta(t, q("32 × 64 batched", "32 × 64 one at a time"), rep.BatchedSpeedup, 1e-12)
	assert.InDelta(t, q("256 × 8 batched", "256 × 8 one at a time"), rep.BatchedShortSpeedup, 1e-12)
	require.Len(t, rep.RSS, 2)
	assert.InDelta(t, float64(rep.RSS["40"])/float64(rep.RSS["20"]), rep.RSSGrowth, 1e-12)
	assert.Greater(t, rep.RSS["20"], int64(1<<20))
	assert.Zero(t, rep.UpstreamRatio)
	assert.Zero(t, rep.NativeSpeedup)
	assert.Contains(t, rep.Skipped, "upstream: --upstream=false")
	assert.FileExists(t, filepath.Join(dir, "bench-64-2-512-q8_0.gguf"))

	// The text table names every ratio.
	r = mustRun(t, "bench", "--dir", dir, "--embd", "64", "--layers", "2", "--vocab", "512", "--types", "Q8_0",
		"--rounds", "1", "--prompts", "1", "--prompt-tokens", "4", "--upstream=false", "--rss=", "-t", "2")
	for _, want := range []string{"capture all layers, positions all / decode only", "probe dump to disk, F32 / decode only",
		"decode only / upstream llama.cpp", "not measured", "skipped: upstream: --upstream=false"} {
		assert.Contains(t, r.stdout, want)
	}
}

func TestBenchFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--rounds", "0"}, "--rounds 0: want 1 or more"},
		{[]string{"--rss", "100,10"}, "--rss [100 10]: want two prompt counts, the smaller first"},
		{[]string{"--rss", "many"}, `--rss "many": want two prompt counts`},
		{[]string{"--types", "Q3_X"}, "--types Q3_X: want one of"},
		{[]string{"--embd", "0"}, "bench model: model config: every size must be positive"},
		{[]string{"--prompt-tokens", "1"}, "want at least 1 prompt of 2 tokens"},
	} {
		requireFails(t, probeCmd(t, "", append([]string{"bench", "--dir", t.TempDir()}, tc.args...)...), tc.want)
	}
}
