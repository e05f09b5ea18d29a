package main

import (
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
