package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
)

// maxInputs bounds the prompts of one /v1/score or /v1/moderations request.
const maxInputs = 256

// scoreRequest is a POST /v1/score body: prompts (one string or several) or a chat, and the
// probes to score them with (all loaded ones by default).
type scoreRequest struct {
	Prompt   stringList    `json:"prompt"`
	Messages []chatMessage `json:"messages"`
	Probes   []string      `json:"probes"`
}

// probeScore is one probe's score of a prompt.
type probeScore struct {
	Probe     string  `json:"probe"`
	Score     float64 `json:"score"`
	Threshold float64 `json:"threshold"`
	Fired     bool    `json:"fired"`
	Layer     int     `json:"layer"`
}

type scoreResult struct {
	Index        int          `json:"index"`
	PromptTokens int          `json:"prompt_tokens"`
	Scores       []probeScore `json:"scores"`
}

type scoreResponse struct {
	Model   string        `json:"model"`
	Results []scoreResult `json:"results"`
}

// moderationRequest is a POST /v1/moderations body in OpenAI's shape, with the probes as
// categories (all loaded ones by default).
type moderationRequest struct {
	Input  stringList `json:"input"`
	Model  string     `json:"model"`
	Probes []string   `json:"probes"`
}

type moderationResult struct {
	Flagged        bool               `json:"flagged"`
	Categories     map[string]bool    `json:"categories"`
	CategoryScores map[string]float64 `json:"category_scores"`
}

type moderationResponse struct {
	ID      string             `json:"id"`
	Model   string             `json:"model"`
	Results []moderationResult `json:"results"`
}

// handleScore serves POST /v1/score.
func (s *Server) handleScore(w http.ResponseWriter, r *http.Request) {
	var req scoreRequest
	if e := decode(w, r, s.cfg.MaxBodyBytes, &req); e != nil {
		s.fail(w, r, e)
		return
	}
	prompts, e := s.prompts(req.Prompt, req.Messages)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	results, e := s.scoreAll(r, prompts, req.Probes)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	resp := scoreResponse{Model: s.info.Name, Results: make([]scoreResult, len(results))}
	for i, res := range results {
		resp.Results[i] = scoreResult{Index: i, PromptTokens: res.tokens, Scores: res.scores}
	}
	writeJSON(w, http.StatusOK, resp)
}

// handleModerations serves POST /v1/moderations.
func (s *Server) handleModerations(w http.ResponseWriter, r *http.Request) {
	var req moderationRequest
	if e := decode(w, r, s.cfg.MaxBodyBytes, &req); e != nil {
		s.fail(w, r, e)
		return
	}
	if req.Input == nil {
		s.fail(w, r, badRequest("input", "input is missing"))
		return
	}
	prompts, e := s.prompts(req.Input, nil)
	if e != nil {
		e.Param = "input"
		s.fail(w, r, e)
		return
	}
	results, e := s.scoreAll(r, prompts, req.Probes)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	resp := moderationResponse{ID: newID("modr-"), Model: s.info.Name, Results: make([]moderationResult, len(results))}
	for i, res := range results {
		m := moderationResult{Categories: map[string]bool{}, CategoryScores: map[string]float64{}}
		for _, sc := range res.scores {
			m.Categories[sc.Probe] = sc.Fired
			m.CategoryScores[sc.Probe] = sc.Score
			m.Flagged = m.Flagged || sc.Fired
		}
		resp.Results[i] = m
	}
	writeJSON(w, http.StatusOK, resp)
}

// chatPrompt formats a request's chat messages with the model's template.
func (s *Server) chatPrompt(messages []chatMessage) (string, *apiError) {
	if len(messages) == 0 {
		return "", badRequest("messages", "messages is empty: want at least one message")
	}
	msgs := make([]Message, len(messages))
	for i, m := range messages {
		if m.Role == "" {
			return "", badRequest("messages", "messages[%d] has no role", i)
		}
		msgs[i] = Message{Role: m.Role, Content: string(m.Content)}
	}
	p, err := s.eng.ChatPrompt(msgs)
	if err != nil {
		return "", badRequest("messages", "format the chat: %v", err)
	}
	return p, nil
}

// prompts returns the prompts of a request that gives either prompt (one string or several)
// or messages (one chat, formatted with the model's template).
func (s *Server) prompts(prompt stringList, messages []chatMessage) ([]string, *apiError) {
	switch {
	case prompt != nil && messages != nil:
		return nil, badRequest("messages", "give prompt or messages, not both")
	case messages != nil:
		p, e := s.chatPrompt(messages)
		if e != nil {
			return nil, e
		}
		return []string{p}, nil
	case prompt == nil:
		return nil, badRequest("prompt", "prompt is missing: give prompt or messages")
	case len(prompt) == 0:
		return nil, badRequest("prompt", "prompt is an empty array")
	case len(prompt) > maxInputs:
		return nil, badRequest("prompt", "%d prompts: at most %d per request", len(prompt), maxInputs)
	}
	for i, p := range prompt {
		if p == "" {
			return nil, badRequest("prompt", "prompt %d is empty", i)
		}
	}
	return prompt, nil
}

// promptResult is one prompt's scores.
type promptResult struct {
	tokens int
	scores []probeScore
}

// scoreAll scores prompts with the named probes (all loaded ones when names is nil): one job
// per prompt, run concurrently (at most one per slot) so the engine batches them.
func (s *Server) scoreAll(r *http.Request, prompts []string, names []string) ([]promptResult, *apiError) {
	rec := auditFrom(r.Context())
	rec.setPrompts(s.cfg.AuditText, prompts...)
	if names != nil && len(names) == 0 {
		return nil, badRequest("probes", "probes is empty: name probes, or leave it out to use every loaded probe")
	}
	probes, e := s.probes.Load().lookup(names, "probes")
	if e != nil {
		return nil, e
	}
	for _, lp := range probes {
		rec.addProbe(lp.name)
	}
	tokens := make([][]int32, len(prompts))
	for i, p := range prompts {
		if tokens[i], e = s.tokenize(p, "prompt"); e != nil {
			if len(prompts) > 1 {
				e.Message = fmt.Sprintf("prompt %d: %s", i, e.Message)
			}
			return nil, e
		}
	}
	layers, mean := captureOf(probes)
	results := make([]promptResult, len(prompts))
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	_, slots, _ := s.eng.Load()
	sem := make(chan struct{}, max(1, slots))
	errs := make([]error, len(prompts))
	var wg sync.WaitGroup
	for i := range prompts {
		results[i].tokens = len(tokens[i])
		if len(probes) == 0 {
			continue
		}
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			results[i].scores, errs[i] = s.scoreOne(ctx, tokens[i], probes, layers, mean)
			if errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	if err := firstError(errs); err != nil {
		return nil, runError(r, err)
	}
	for i, res := range results {
		if res.scores == nil {
			results[i].scores = []probeScore{}
		}
		vs := make([]verdict, len(res.scores))
		for k, sc := range res.scores {
			vs[k] = verdict{Probe: sc.Probe, Score: sc.Score, Threshold: sc.Threshold, Layer: sc.Layer, TokenIndex: -1, Fired: sc.Fired, Rule: "prompt"}
		}
		rec.addVerdicts(i, vs)
		s.metrics.promptTokens.Add(float64(res.tokens))
	}
	return results, nil
}

// firstError returns the first error that is not a cancellation, else the first error.
func firstError(errs []error) error {
	var first error
	for _, err := range errs {
		if err == nil {
			continue
		}
		if !errors.Is(err, context.Canceled) {
			return err
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// scoreOne runs one prompt-only job and scores the prompt's rows with every probe.
func (s *Server) scoreOne(ctx context.Context, tokens []int32, probes []*loadedProbe, layers []int, mean bool) ([]probeScore, error) {
	var scores []probeScore
	c := &capture{fn: func(rows PromptRows) error {
		for _, lp := range probes {
			v, err := scorePrompt(lp.p, rows)
			if err != nil {
				return fmt.Errorf("probe %q: %w", lp.name, err)
			}
			fired := lp.p.Fired(v)
			s.metrics.observeScore(lp.name, "prompt", v, fired)
			scores = append(scores, probeScore{Probe: lp.name, Score: v, Threshold: lp.p.Threshold, Fired: fired, Layer: lp.p.Layer})
		}
		return nil
	}}
	_, err := s.eng.Run(ctx, &Job{Prompt: tokens, Layers: layers, Mean: mean, OnPrompt: c.onPrompt})
	if cerr := c.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return scores, nil
}

// capture runs fn on a prompt-only job's rows, on the engine's goroutine (the rows may not
// outlive the callback), and keeps its error. A callback after close does nothing.
type capture struct {
	fn     func(PromptRows) error
	mu     sync.Mutex
	called bool
	done   bool
	err    error
}

func (c *capture) onPrompt(rows PromptRows) (ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done || c.called {
		return false
	}
	c.called = true
	defer func() {
		if r := recover(); r != nil {
			c.err = fmt.Errorf("reading the prompt's rows panicked: %v", r)
			ok = false
		}
	}()
	c.err = c.fn(rows)
	return c.err == nil
}

// close ends the capture and returns its error, or an error if the rows never came.
func (c *capture) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	if c.err == nil && !c.called {
		return errors.New("the engine ended the job without reporting the prompt's rows")
	}
	return c.err
}
