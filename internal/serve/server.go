package serve

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultMaxBodyBytes       = 1 << 20
	DefaultMaxTokens          = 4096
	DefaultMaxActivationBytes = 64 << 20
)

// Config configures a Server. Zero limits take their defaults.
type Config struct {
	// ProbesDir is the directory whose *.json files are the probes ("" for none). A probe is
	// named by its file name without .json. Probes for another model, or reading layers or
	// capture points the server cannot give them, are refused and listed by GET /v1/probes.
	ProbesDir string
	// Watch names probes applied to every generation, whether the client asks or not. Each
	// must be loaded from ProbesDir.
	Watch []string
	// OnFire is what a watched probe's fire does to a generation: OnFireStop ("stop", the
	// default) ends it before the firing token is sent, OnFireFlag ("flag") reports the fire
	// and lets it go on. Probes a request names follow the request's on_fire.
	OnFire string
	// APIKeys, if not empty, are the keys clients must send as "Authorization: Bearer KEY" on
	// every route but GET /health (GET /metrics included).
	APIKeys []string
	// AuditLog is the path of the audit log, appended one JSON line per request to the
	// generation, scoring and activation routes ("" for none).
	AuditLog string
	// AuditText logs the prompts' text in the audit log; without it only their SHA-256.
	AuditText bool
	// MaxBodyBytes bounds a request body (default DefaultMaxBodyBytes, 1 MiB).
	MaxBodyBytes int64
	// MaxPromptTokens bounds a prompt's tokens (default and at most the model's context).
	MaxPromptTokens int
	// MaxTokens bounds the tokens a request may generate (default DefaultMaxTokens, 4096);
	// the prompt and max_tokens must also fit the context.
	MaxTokens int
	// MaxActivationBytes bounds the rows /v1/activations returns, rows×n_embd×4×layers
	// (default DefaultMaxActivationBytes, 64 MiB).
	MaxActivationBytes int64
}

// Server is the HTTP service of probe serve: an OpenAI-compatible API over an Engine whose
// prompts and generated tokens are watched with probes. Make one with New.
type Server struct {
	cfg     Config
	keys    [][]byte
	eng     Engine
	info    ModelInfo
	log     *slog.Logger
	started time.Time

	probes   atomic.Pointer[probeSet]
	reloadMu sync.Mutex
	ready    atomic.Bool

	metrics *metrics
	audit   *auditLog // nil without an audit log
	routes  map[string]*route
}

// route is one path of the API and its handlers by method.
type route struct {
	methods map[string]http.HandlerFunc
	public  bool // no key needed
	audited bool // one audit line per request
	engine  bool // needs the model: 503 until the server is ready
}

// New returns a server of eng with the probes of cfg.ProbesDir loaded. It fails if the
// configuration is invalid, a watched probe is not loaded or the audit log cannot be opened.
// The server answers 503 on the model's routes until SetReady(true).
func New(cfg Config, eng Engine, logger *slog.Logger) (*Server, error) {
	if eng == nil {
		return nil, errors.New("serve: no engine")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	info := eng.Model()
	if info.NCtx <= 0 || info.NEmbd <= 0 || info.NLayer <= 0 {
		return nil, fmt.Errorf("serve: the engine reports a context of %d, n_embd %d and %d layers", info.NCtx, info.NEmbd, info.NLayer)
	}
	if err := cfg.setDefaults(info); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	s := &Server{cfg: cfg, eng: eng, info: info, log: logger, started: time.Now(), metrics: newMetrics(eng)}
	for _, k := range cfg.APIKeys {
		h := sha256.Sum256([]byte(k))
		s.keys = append(s.keys, h[:])
	}
	set, err := loadProbes(cfg.ProbesDir, cfg.Watch, info, logger)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	s.probes.Store(set)
	logger.Info("probes loaded", "loaded", set.names, "refused", len(set.refused), "watch", set.watch)
	if cfg.AuditLog != "" {
		if s.audit, err = openAudit(cfg.AuditLog); err != nil {
			return nil, fmt.Errorf("serve: %w", err)
		}
	}
	s.routes = map[string]*route{
		"/v1/chat/completions": {methods: post(s.handleChat), audited: true, engine: true},
		"/v1/completions":      {methods: post(s.handleCompletions), audited: true, engine: true},
		"/v1/score":            {methods: post(s.handleScore), audited: true, engine: true},
		"/v1/moderations":      {methods: post(s.handleModerations), audited: true, engine: true},
		"/v1/activations":      {methods: post(s.handleActivations), audited: true, engine: true},
		"/v1/models":           {methods: get(s.handleModels)},
		"/v1/probes":           {methods: get(s.handleProbes)},
		"/health":              {methods: get(s.handleHealth), public: true},
		"/metrics":             {methods: get(s.metrics.handler().ServeHTTP)},
	}
	return s, nil
}

func post(h http.HandlerFunc) map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{http.MethodPost: h}
}

func get(h http.HandlerFunc) map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{http.MethodGet: h, http.MethodHead: h}
}

// setDefaults fills the zero limits and checks the configuration.
func (c *Config) setDefaults(info ModelInfo) error {
	switch c.OnFire {
	case "":
		c.OnFire = OnFireStop
	case OnFireStop, OnFireFlag:
	default:
		return fmt.Errorf("on-fire %q: want %q or %q", c.OnFire, OnFireStop, OnFireFlag)
	}
	if slices.Contains(c.APIKeys, "") {
		return errors.New("an empty API key")
	}
	if c.MaxBodyBytes < 0 || c.MaxPromptTokens < 0 || c.MaxTokens < 0 || c.MaxActivationBytes < 0 {
		return errors.New("a negative limit")
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxPromptTokens == 0 || c.MaxPromptTokens > info.NCtx {
		c.MaxPromptTokens = info.NCtx
	}
	if c.MaxTokens == 0 {
		c.MaxTokens = DefaultMaxTokens
	}
	if c.MaxActivationBytes == 0 {
		c.MaxActivationBytes = DefaultMaxActivationBytes
	}
	return nil
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s }

// loadingError answers a request that needs the model while it loads.
func loadingError() *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: errServer, Code: "loading",
		Message: "the model is loading; retry shortly", Header: map[string]string{"Retry-After": "5"}}
}

// Loading answers requests while the model loads, before there is an engine to make a Server
// with: GET /health 503 {"status": "loading"}, every other route 503 in the error envelope —
// what a Server answers before SetReady(true).
func Loading() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			writeJSON(w, http.StatusServiceUnavailable, healthResponse{Status: "loading"})
			return
		}
		writeError(w, loadingError())
	})
}

// SetReady marks the server ready (GET /health answers 200 and the model's routes serve) or
// not (503).
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Reload reads the probes directory again and swaps the new set in atomically: a request in
// flight keeps the set it started with. If a watched probe is no longer loaded, or the
// directory cannot be read, the old set stays and the error is returned.
func (s *Server) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	set, err := loadProbes(s.cfg.ProbesDir, s.cfg.Watch, s.info, s.log)
	if err != nil {
		s.log.Error("reload failed: the probes stay as they were", "err", err)
		return fmt.Errorf("reload probes: %w", err)
	}
	s.probes.Store(set)
	s.log.Info("probes reloaded", "loaded", set.names, "refused", len(set.refused))
	return nil
}

// Close closes the audit log.
func (s *Server) Close() error {
	if s.audit == nil {
		return nil
	}
	return s.audit.close()
}

// ServeHTTP routes a request: key check, route and method (OpenAI-style 401, 404 and 405),
// readiness, then the handler, with the request counted, timed and, on the audited routes,
// written to the audit log.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	rt := s.routes[r.URL.Path]
	label := "other"
	if rt != nil {
		label = r.URL.Path
	}
	var rec *auditRecord
	if rt != nil && rt.audited && s.audit != nil {
		rec = &auditRecord{Time: start.UTC().Format(time.RFC3339Nano), Route: r.URL.Path, Verdicts: []auditVerdict{}}
		r = r.WithContext(withAudit(r.Context(), rec))
	}
	defer func() {
		code := strconv.Itoa(sw.code())
		s.metrics.requests.WithLabelValues(label, code).Inc()
		s.metrics.duration.WithLabelValues(label, code).Observe(time.Since(start).Seconds())
		// A refused key is counted in the metrics, not written: unauthenticated clients must
		// not be able to grow the audit log.
		if rec != nil && sw.code() != http.StatusUnauthorized {
			rec.Status = sw.code()
			if err := s.audit.write(rec); err != nil {
				s.log.Error("audit log", "err", err)
			}
		}
	}()
	s.route(sw, r, rt)
}

func (s *Server) route(w http.ResponseWriter, r *http.Request, rt *route) {
	if rt == nil || !rt.public {
		if e := s.authorize(r); e != nil {
			s.fail(w, r, e)
			return
		}
	}
	if rt == nil {
		s.fail(w, r, &apiError{Status: http.StatusNotFound, Type: errInvalidRequest, Code: "unknown_url",
			Message: fmt.Sprintf("unknown route: %s %s", r.Method, r.URL.Path)})
		return
	}
	h, ok := rt.methods[r.Method]
	if !ok {
		var allow []string
		for m := range rt.methods {
			allow = append(allow, m)
		}
		slices.Sort(allow)
		s.fail(w, r, &apiError{Status: http.StatusMethodNotAllowed, Type: errInvalidRequest, Code: "method_not_allowed",
			Message: fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", ")),
			Header:  map[string]string{"Allow": strings.Join(allow, ", ")}})
		return
	}
	if rt.engine && !s.ready.Load() {
		s.fail(w, r, loadingError())
		return
	}
	h(w, r)
}

// fail answers e and records it in the audit record.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, e *apiError) {
	auditFrom(r.Context()).fail(e)
	if e.Status >= 500 && e.Status != http.StatusServiceUnavailable {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", e.Status, "err", e.Message)
	}
	writeError(w, e)
}

// statusWriter records the status of a response. It unwraps for http.ResponseController, so
// a stream can flush through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap returns the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// code returns the status written, or 200 if none was (net/http's default).
func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
