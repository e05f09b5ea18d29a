package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"
)

// maxStops is how many stop strings a request may give (OpenAI's limit).
const maxStops = 4

// Kinds of generation.
const (
	kindChat = "chat"
	kindText = "text"
)

// handleChat serves POST /v1/chat/completions.
func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	var req generateRequest
	if e := decode(w, r, s.cfg.MaxBodyBytes, &req); e != nil {
		s.fail(w, r, e)
		return
	}
	prompt, e := s.chatPrompt(req.Messages)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	s.generate(w, r, kindChat, &req, prompt)
}

// handleCompletions serves POST /v1/completions.
func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	var req generateRequest
	if e := decode(w, r, s.cfg.MaxBodyBytes, &req); e != nil {
		s.fail(w, r, e)
		return
	}
	switch {
	case req.Prompt == nil:
		s.fail(w, r, badRequest("prompt", "prompt is missing"))
		return
	case len(req.Prompt) != 1:
		s.fail(w, r, badRequest("prompt", "prompt: want one prompt per request, got %d", len(req.Prompt)))
		return
	}
	s.generate(w, r, kindText, &req, req.Prompt[0])
}

// generation is one chat or text completion in progress.
type generation struct {
	kind    string
	id      string
	created int64
	model   string
	tokens  []int32
	job     *Job
	mon     *monitor
	report  bool // the response carries probe fields
	usage   bool // stream_options.include_usage
}

// generate builds the request's job and runs it, streaming or not.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, kind string, f *generateRequest, prompt string) {
	auditFrom(r.Context()).setPrompts(s.cfg.AuditText, prompt)
	g, e := s.newGeneration(r, kind, f, prompt)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	if f.Stream {
		s.stream(w, r, g)
	} else {
		s.complete(w, r, g)
	}
}

// newGeneration checks the request's settings against the limits and builds its job, with
// the probes it asks for and the watched ones.
func (s *Server) newGeneration(r *http.Request, kind string, f *generateRequest, prompt string) (*generation, *apiError) {
	if f.N != nil && *f.N != 1 {
		return nil, badRequest("n", "n %d: only one choice per request is supported", *f.N)
	}
	if len(f.Stop) > maxStops {
		return nil, badRequest("stop", "stop: %d strings, at most %d are allowed", len(f.Stop), maxStops)
	}
	for i, st := range f.Stop {
		if len(st) > maxStopBytes {
			return nil, badRequest("stop", "stop[%d] is %d bytes, over the limit of %d", i, len(st), maxStopBytes)
		}
	}
	active, e := s.probes.Load().resolve(f.Probe, s.cfg.OnFire)
	if e != nil {
		return nil, e
	}
	sampler, e := samplerOf(f)
	if e != nil {
		return nil, e
	}
	param := "prompt"
	if kind == kindChat {
		param = "messages"
	}
	tokens, e := s.tokenize(prompt, param)
	if e != nil {
		return nil, e
	}
	maxTokens, e := s.maxTokens(f, len(tokens))
	if e != nil {
		return nil, e
	}
	rec := auditFrom(r.Context())
	probes := make([]*loadedProbe, len(active))
	for i, ap := range active {
		probes[i] = ap.loadedProbe
		rec.addProbe(ap.name)
	}
	layers, mean := captureOf(probes)
	mon := newMonitor(active, f.Stop, s.metrics)
	g := &generation{
		kind: kind, id: newID("cmpl-"), created: time.Now().Unix(), model: s.info.Name, tokens: tokens, mon: mon,
		report: f.Probe != nil || len(active) > 0,
		usage:  f.StreamOptions != nil && f.StreamOptions.IncludeUsage,
		job: &Job{
			Prompt: tokens, Layers: layers, Mean: mean, MaxTokens: maxTokens, Sampler: sampler,
			OnPrompt: mon.onPrompt, OnToken: mon.onToken,
		},
	}
	if kind == kindChat {
		g.id = newID("chatcmpl-")
	}
	return g, nil
}

// samplerOf reads the sampling settings: OpenAI's defaults are temperature 1 and top_p 1; a
// request without a seed gets a random one.
func samplerOf(f *generateRequest) (Sampler, *apiError) {
	sm := Sampler{Temperature: 1, TopP: 1, Seed: rand.Uint32()}
	if t := f.Temperature; t != nil {
		if !(*t >= 0 && *t <= 2) {
			return sm, badRequest("temperature", "temperature %v: want a number from 0 to 2", *t)
		}
		sm.Temperature = float32(*t)
	}
	if p := f.TopP; p != nil {
		if !(*p >= 0 && *p <= 1) {
			return sm, badRequest("top_p", "top_p %v: want a number from 0 to 1", *p)
		}
		sm.TopP = float32(*p)
		if *p == 0 {
			sm.Temperature = 0 // nothing but the most likely token: greedy
		}
	}
	if f.Seed != nil {
		sm.Seed = uint32(uint64(*f.Seed))
	}
	return sm, nil
}

// tokenize tokenizes a prompt and checks it against the prompt limit.
func (s *Server) tokenize(prompt, param string) ([]int32, *apiError) {
	if prompt == "" {
		return nil, badRequest(param, "the prompt is empty")
	}
	tokens, err := s.eng.Tokenize(prompt)
	if err != nil {
		return nil, serverError(fmt.Errorf("tokenize the prompt: %w", err))
	}
	if len(tokens) == 0 {
		return nil, badRequest(param, "the prompt has no tokens")
	}
	if len(tokens) > s.cfg.MaxPromptTokens {
		return nil, &apiError{Status: http.StatusBadRequest, Type: errInvalidRequest, Param: param, Code: "context_length_exceeded",
			Message: fmt.Sprintf("the prompt is %d tokens, over the limit of %d tokens", len(tokens), s.cfg.MaxPromptTokens)}
	}
	return tokens, nil
}

// maxTokens returns the tokens a generation may sample: the request's max_completion_tokens
// or max_tokens, at most Config.MaxTokens and what the context leaves after the prompt; by
// default as many as both allow.
func (s *Server) maxTokens(f *generateRequest, nPrompt int) (int, *apiError) {
	room := s.info.NCtx - nPrompt
	if room < 1 {
		return 0, &apiError{Status: http.StatusBadRequest, Type: errInvalidRequest, Code: "context_length_exceeded",
			Message: fmt.Sprintf("the prompt of %d tokens leaves no room to generate in the context of %d tokens", nPrompt, s.info.NCtx)}
	}
	n, param := f.MaxCompletionTokens, "max_completion_tokens"
	if n == nil {
		n, param = f.MaxTokens, "max_tokens"
	}
	switch {
	case n == nil:
		return min(s.cfg.MaxTokens, room), nil
	case *n < 1:
		return 0, badRequest(param, "%s %d: want at least 1", param, *n)
	case *n > s.cfg.MaxTokens:
		return 0, badRequest(param, "%s %d is over the limit of %d tokens", param, *n, s.cfg.MaxTokens)
	case *n > room:
		return 0, badRequest(param, "%s %d is over the limit of %d tokens that the context of %d leaves after the prompt's %d tokens",
			param, *n, room, s.info.NCtx, nPrompt)
	}
	return *n, nil
}

// runError answers a failed Run: 429 when the queue is full, 499 when the client went away
// (the only cancellation: the request's, or a stream's whose client stopped reading), 500
// otherwise.
func runError(r *http.Request, err error) *apiError {
	switch {
	case errors.Is(err, ErrQueueFull):
		return &apiError{Status: http.StatusTooManyRequests, Type: errRateLimit, Code: "queue_full",
			Message: "the server is busy: every slot is taken and the queue is full; retry shortly",
			Header:  map[string]string{"Retry-After": "1"}}
	case r.Context().Err() != nil || errors.Is(err, context.Canceled):
		return &apiError{Status: statusClientClosed, Type: errInvalidRequest, Message: "the client closed the request"}
	}
	return serverError(fmt.Errorf("run the model: %w", err))
}

// statusClientClosed is the status recorded for a request whose client went away.
const statusClientClosed = 499

// complete runs a generation and answers it whole.
func (s *Server) complete(w http.ResponseWriter, r *http.Request, g *generation) {
	res, err := s.eng.Run(r.Context(), g.job)
	g.mon.finish()
	if err == nil {
		err = g.mon.failure()
	}
	s.account(r, g, res, err)
	if err != nil {
		s.fail(w, r, runError(r, err))
		return
	}
	finish := g.mon.finishReason(res)
	u := newUsage(len(g.tokens), len(res.Tokens))
	var report *probeReport
	if g.report {
		report = g.mon.report()
	}
	var pv *verdict
	if finish == "content_filter" {
		pv = g.mon.stopVerdict()
	}
	content := g.mon.content()
	if g.kind == kindChat {
		writeJSON(w, http.StatusOK, chatCompletion{
			ID: g.id, Object: "chat.completion", Created: g.created, Model: g.model, Usage: u, Probe: report,
			Choices: []chatChoice{{Message: chatOutMsg{Role: "assistant", Content: content}, FinishReason: finish, ProbeVerdict: pv}},
		})
		return
	}
	resp := textCompletion{
		ID: g.id, Object: "text_completion", Created: g.created, Model: g.model, Usage: &u,
		Choices: []textChoice{{Text: content, FinishReason: &finish, ProbeVerdict: pv}},
	}
	if report != nil {
		resp.Probe = report
	}
	writeJSON(w, http.StatusOK, resp)
}

// account records a finished generation in the metrics and the audit record.
func (s *Server) account(r *http.Request, g *generation, res *JobResult, err error) {
	rec := auditFrom(r.Context())
	rec.addVerdicts(0, g.mon.verdicts())
	if err != nil {
		return
	}
	s.metrics.promptTokens.Add(float64(len(g.tokens)))
	s.metrics.generatedTokens.Add(float64(len(res.Tokens)))
	if rec != nil {
		rec.FinishReason = g.mon.finishReason(res)
	}
}

// stream runs a generation and streams it as server-sent events. Headers wait for the prompt
// to be decoded, so that a full queue is still answered with a plain 429.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, g *generation) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	q := newEventQueue()
	g.mon.queue = q
	go func() {
		res, err := s.eng.Run(ctx, g.job)
		g.mon.finish()
		q.push(event{kind: evDone, res: res, err: err})
	}()
	var sse *sseWriter
	start := func() {
		if sse == nil {
			sse = newSSEWriter(w)
		}
	}
	for {
		for _, ev := range q.wait() {
			switch ev.kind {
			case evPrompt:
				start()
				if c := g.firstChunk(ev.prompt); c != nil {
					sse.send(c)
				}
			case evText:
				start()
				if ev.text == "" && (ev.index < 0 || !g.report) {
					continue
				}
				var p *chunkProbe
				if g.report && ev.index >= 0 {
					idx := ev.index
					p = &chunkProbe{Index: &idx, Scores: ev.scores, Fired: ev.fired}
				}
				sse.send(g.textChunk(ev.text, p))
			case evDone:
				s.endStream(w, r, g, sse, ev.res, ev.err)
				return
			}
			if sse != nil && sse.err != nil {
				cancel() // the client is gone: free the slot
			}
		}
	}
}

// endStream writes a stream's last chunks, or the error that ended it.
func (s *Server) endStream(w http.ResponseWriter, r *http.Request, g *generation, sse *sseWriter, res *JobResult, err error) {
	if err == nil {
		err = g.mon.failure()
	}
	s.account(r, g, res, err)
	if err != nil {
		e := runError(r, err)
		if sse == nil {
			s.fail(w, r, e)
			return
		}
		auditFrom(r.Context()).fail(e)
		if sse.err == nil && r.Context().Err() == nil {
			s.log.Error("stream failed", "id", g.id, "err", err)
			sse.send(errorEnvelope{Error: errorBody{Message: e.Message, Type: e.Type}})
			sse.done()
		}
		return
	}
	if sse == nil {
		sse = newSSEWriter(w)
	}
	finish := g.mon.finishReason(res)
	var pv *verdict
	if finish == "content_filter" {
		pv = g.mon.stopVerdict()
	}
	var p *chunkProbe
	if g.report {
		p = g.mon.finalProbe()
	}
	sse.send(g.finalChunk(finish, pv, p))
	if g.usage {
		sse.send(g.usageChunk(newUsage(len(g.tokens), len(res.Tokens))))
	}
	sse.done()
}

// firstChunk is a stream's first chunk: the assistant's role (chat) and the prompt's
// verdicts. A text completion without probes has none.
func (g *generation) firstChunk(prompt []verdict) any {
	var p *chunkProbe
	if g.report {
		p = &chunkProbe{Prompt: prompt}
		if p.Prompt == nil {
			p.Prompt = []verdict{}
		}
	}
	if g.kind == kindChat {
		empty := ""
		return chatChunk{ID: g.id, Object: "chat.completion.chunk", Created: g.created, Model: g.model, Probe: p,
			Choices: []chatDelta{{Delta: deltaMsg{Role: "assistant", Content: &empty}}}}
	}
	if p == nil {
		return nil
	}
	return textCompletion{ID: g.id, Object: "text_completion", Created: g.created, Model: g.model, Probe: p,
		Choices: []textChoice{{}}}
}

// textChunk is a chunk of generated text with its token's probe scores.
func (g *generation) textChunk(text string, p *chunkProbe) any {
	if g.kind == kindChat {
		return chatChunk{ID: g.id, Object: "chat.completion.chunk", Created: g.created, Model: g.model, Probe: p,
			Choices: []chatDelta{{Delta: deltaMsg{Content: &text}}}}
	}
	c := textCompletion{ID: g.id, Object: "text_completion", Created: g.created, Model: g.model,
		Choices: []textChoice{{Text: text}}}
	if p != nil {
		c.Probe = p
	}
	return c
}

// finalChunk is the chunk that ends the choice.
func (g *generation) finalChunk(finish string, pv *verdict, p *chunkProbe) any {
	if g.kind == kindChat {
		return chatChunk{ID: g.id, Object: "chat.completion.chunk", Created: g.created, Model: g.model, Probe: p,
			Choices: []chatDelta{{FinishReason: &finish, ProbeVerdict: pv}}}
	}
	c := textCompletion{ID: g.id, Object: "text_completion", Created: g.created, Model: g.model,
		Choices: []textChoice{{FinishReason: &finish, ProbeVerdict: pv}}}
	if p != nil {
		c.Probe = p
	}
	return c
}

// usageChunk is the chunk with the usage that stream_options.include_usage asks for.
func (g *generation) usageChunk(u usage) any {
	if g.kind == kindChat {
		return chatChunk{ID: g.id, Object: "chat.completion.chunk", Created: g.created, Model: g.model, Usage: &u, Choices: []chatDelta{}}
	}
	return textCompletion{ID: g.id, Object: "text_completion", Created: g.created, Model: g.model, Usage: &u, Choices: []textChoice{}}
}

// maxStopBytes bounds one stop string; sseWriteTimeout bounds one write of a stream.
const (
	maxStopBytes    = 1024
	sseWriteTimeout = 30 * time.Second
)

// sseWriter writes server-sent events, flushing each. After a failed write it writes nothing
// more and keeps the error.
type sseWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

func newSSEWriter(w http.ResponseWriter) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &sseWriter{w: w, rc: http.NewResponseController(w)}
}

// send writes v as one "data: JSON" event.
func (s *sseWriter) send(v any) {
	data, err := json.Marshal(v)
	if err != nil {
		s.err = fmt.Errorf("encode event: %w", err)
		return
	}
	s.write(append(append([]byte("data: "), data...), '\n', '\n'))
}

// done writes the stream's end, "data: [DONE]".
func (s *sseWriter) done() { s.write([]byte("data: [DONE]\n\n")) }

func (s *sseWriter) write(b []byte) {
	if s.err != nil {
		return
	}
	// A client that stops reading must not hold its slot: each write has 30 s.
	_ = s.rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
	if _, err := s.w.Write(b); err != nil {
		s.err = err
		return
	}
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.err = err
	}
}
