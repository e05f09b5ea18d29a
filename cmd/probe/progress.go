package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
)

// progress shows items done, tokens per second and the ETA on stderr: a bar on a terminal,
// a line every few seconds otherwise (logs, CI).
type progress struct {
	bar    *progressbar.ProgressBar
	w      io.Writer
	what   string
	total  int
	done   int
	tokens int
	start  time.Time
	last   time.Time
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// newProgress shows progress towards total items, or a count alone for a total of -1 (a
// stream of unknown length).
func newProgress(w io.Writer, total int, what string) *progress {
	p := &progress{w: w, what: what, total: total, start: time.Now(), last: time.Now()}
	if isTerminal(w) {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetWidth(30),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
	}
	return p
}

// progressHook, when set (by tests), is called after every progress step with the
// progress's name and the items done so far, on the goroutine doing the work.
var progressHook func(what string, done, total int)

// add records n items and their tokens.
func (p *progress) add(n, tokens int) {
	p.done += n
	p.tokens += tokens
	if progressHook != nil {
		progressHook(p.what, p.done, p.total)
	}
	rate := float64(p.tokens) / time.Since(p.start).Seconds()
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("%s %.0f tok/s", p.what, rate))
		_ = p.bar.Add(n)
		return
	}
	if time.Since(p.last) > 5*time.Second || p.done == p.total {
		p.last = time.Now()
		if p.total < 0 { // a stream of unknown length
			fmt.Fprintf(p.w, "%s: %d, %.0f tok/s\n", p.what, p.done, rate)
			return
		}
		eta := time.Duration(float64(time.Since(p.start)) / float64(p.done) * float64(p.total-p.done))
		fmt.Fprintf(p.w, "%s: %d/%d, %.0f tok/s, ETA %s\n", p.what, p.done, p.total, rate, eta.Round(time.Second))
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
