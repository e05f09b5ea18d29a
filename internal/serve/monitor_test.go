package serve

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMonitorText checks how a monitor releases generated text: a tail that could begin a stop
// string or ends inside a UTF-8 sequence waits for the next token, and a stop string cuts the
// text where it begins.
func TestMonitorText(t *testing.T) {
	tests := []struct {
		name     string
		stops    []string
		pieces   []string
		released []string // text released per token, then at the end ("" when none)
		content  string
		accepted int  // tokens the callback accepted
		stopped  bool // a stop string ended it
	}{
		{name: "no stops", pieces: []string{"a", " b", " c"}, released: []string{"a", " b", " c"}, content: "a b c", accepted: 3},
		{name: "split UTF-8", pieces: []string{"caf\xc3", "\xa9 ok", " \xe2\x82", "\xac"},
			released: []string{"caf", "é ok", " ", "€"}, content: "café ok €", accepted: 4},
		{name: "held prefix, then no stop", stops: []string{"END"}, pieces: []string{"the E", "N", "Z", "!"},
			released: []string{"the ", "ENZ", "!"}, content: "the ENZ!", accepted: 4},
		{name: "stop across tokens", stops: []string{"END"}, pieces: []string{"the E", "N", "D", "!"},
			released: []string{"the "}, content: "the ", accepted: 2, stopped: true},
		{name: "stop inside a token", stops: []string{"xx", "ab"}, pieces: []string{"hello", " grab", "bed"},
			content: "hello gr", accepted: 1, stopped: true},
		{name: "earliest stop wins", stops: []string{"cd", "bcd"}, pieces: []string{"abcde"},
			content: "a", accepted: 0, stopped: true},
		{name: "held text released at the end", stops: []string{"xyz"}, pieces: []string{"wx"},
			content: "wx", accepted: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMonitor(nil, tc.stops, nil)
			q := newEventQueue()
			m.queue = q
			accepted := 0
			for i, p := range tc.pieces {
				if !m.onToken(Token{Index: i, Piece: p}) {
					break
				}
				accepted++
			}
			m.finish()
			q.push(event{kind: evDone})
			var released []string
			var sb strings.Builder
			for _, ev := range q.wait() {
				if ev.kind == evText {
					sb.WriteString(ev.text)
					if ev.text != "" {
						released = append(released, ev.text)
					}
				}
			}
			assert.Equal(t, tc.content, sb.String())
			assert.Equal(t, tc.content, m.content())
			assert.Equal(t, tc.accepted, accepted)
			assert.Equal(t, tc.stopped, m.stopString)
			if tc.released != nil {
				assert.Equal(t, tc.released, released)
			}
			for _, s := range tc.stops {
				assert.NotContains(t, m.content(), s)
			}
		})
	}
}

// TestMonitorNonFinite checks that a NaN score fails the request instead of passing it.
func TestMonitorNonFinite(t *testing.T) {
	ts := newTestServer(t)
	lp := ts.srv.probes.Load().byName["bomb"]
	m := newMonitor([]activeProbe{{loadedProbe: lp, stop: true}}, nil, ts.srv.metrics)
	nan := fakeRow("x", 2)
	nan[0] = float32(math.NaN())
	assert.False(t, m.onToken(Token{Residual: map[int][]float32{2: nan}}))
	require.ErrorContains(t, m.failure(), "non-finite score")
}
