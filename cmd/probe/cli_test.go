package main

import (
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCommandsHaveHelp(t *testing.T) {
	for _, tc := range []struct {
		cmd   string
		flags []string
	}{
		{"dump", []string{"--resume", "--shard", "--positions"}},
		{"merge", []string{"--output"}},
		{"train", []string{"--data", "--layer", "--method", "--position", "--pairs", "--cv", "--target-fpr", "--calib", "--seed", "--orient", "--json", "--output", "--model", "--ngl", "--threads", "--ctx-size", "--batch-size"}},
		{"eval", []string{"--probe", "--data", "--roc", "--json"}},
		{"sweep", []string{"--data", "--method", "--eval", "--cv", "--plot", "--json", "--layers"}},
		{"scan", []string{"--model", "--probe", "--prompt", "--input", "--json", "--ngl", "--threads", "--ctx-size", "--batch-size"}},
		{"generate", []string{"--model", "--prompt", "--probe", "--stop-on-fire", "--n-predict", "--temp", "--top-k", "--top-p", "--seed", "--json", "--color"}},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			r := mustRun(t, tc.cmd, "--help")
			require.Contains(t, r.stdout, "Usage:")
			for _, f := range tc.flags {
				require.Contains(t, r.stdout, f)
			}
		})
	}
}

func TestUnknownCommandAndFlags(t *testing.T) {
	r := probeCmd(t, "", "trian")
	requireFails(t, r, `unknown command "trian"`)
	for _, cmd := range []string{"train", "eval", "sweep", "scan", "generate", "merge", "dump"} {
		r := probeCmd(t, "", cmd, "--no-such-flag")
		requireFails(t, r, "unknown flag: --no-such-flag", "probe "+cmd+" --help")
		require.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)
		require.Empty(t, r.stdout)
	}
}

// TestGPULayersFlagAsLlamaCpp parses -ngl as llama.cpp users type it (one dash, three
// letters), which pflag alone reads as the shorthands -n -g -l, on every command that loads a
// model; --ngl, --gpu-layers and -g stay.
func TestGPULayersFlagAsLlamaCpp(t *testing.T) {
	cmds := [][]string{{"dump"}, {"scan"}, {"generate"}, {"train"}, {"sweep"}, {"info"}, {"demo"}, {"organism", "eval"}}
	for _, cmd := range cmds {
		for _, tc := range []struct {
			args []string
			want int
		}{
			{[]string{"-ngl", "99"}, 99},
			{[]string{"-ngl", "-1"}, -1},
			{[]string{"-ngl=7"}, 7},
			{[]string{"--ngl", "3"}, 3},
			{[]string{"--gpu-layers", "-1"}, -1},
			{[]string{"-g", "5"}, 5},
		} {
			t.Run(strings.Join(append(cmd, tc.args...), " "), func(t *testing.T) {
				root := newRootCmd(strings.NewReader(""), io.Discard, io.Discard)
				args := llamaStyleArgs(append(append([]string{}, cmd...), tc.args...))
				c, rest, err := root.Find(args)
				require.NoError(t, err)
				require.NoError(t, c.ParseFlags(rest))
				n, err := c.Flags().GetInt("gpu-layers")
				require.NoError(t, err)
				require.Equal(t, tc.want, n)
			})
		}
	}
	// --no-gpu is a model flag too.
	root := newRootCmd(strings.NewReader(""), io.Discard, io.Discard)
	c, rest, err := root.Find([]string{"dump", "--no-gpu", "-ngl", "0"})
	require.NoError(t, err)
	require.NoError(t, c.ParseFlags(llamaStyleArgs(rest)))
	noGPU, err := c.Flags().GetBool("no-gpu")
	require.NoError(t, err)
	require.True(t, noGPU)
	// The whole command line goes through the rewrite.
	r := probeCmd(t, "", "info", "--devices", "-ngl", "2")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "CPU")
	// After "--" nothing is rewritten: it is a prompt, not a flag.
	require.Equal(t, []string{"--ngl", "1", "--", "-ngl"}, llamaStyleArgs([]string{"-ngl", "1", "--", "-ngl"}))
}
