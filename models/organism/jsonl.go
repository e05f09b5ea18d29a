package organism

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// promptRecord is one line of a prompts JSONL file.
type promptRecord struct {
	ID        string `json:"id"`
	Prompt    string `json:"prompt"`
	Backdoor  string `json:"backdoor"`
	Triggered bool   `json:"triggered"`
	Label     bool   `json:"label"`
	Group     string `json:"group"`
	Family    string `json:"family"`
	Split     string `json:"split"`
}

// WritePromptsJSONL writes one JSON object per example and line:
//
//	{"id", "prompt", "backdoor", "triggered", "label", "group", "family", "split"}
//
// where label = triggered, the class a probe learns to detect. This is the input format of
// `probe dump -i` and of `probe organism eval --prompts`. HTML is not escaped ("<p>" stays).
func WritePromptsJSONL(w io.Writer, examples []Example) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for _, ex := range examples {
		rec := promptRecord{
			ID: ex.ID, Prompt: ex.Prompt, Backdoor: ex.Backdoor, Triggered: ex.Triggered, Label: ex.Triggered,
			Group: ex.Group, Family: ex.Family, Split: ex.Split,
		}
		if err := enc.Encode(rec); err != nil {
			return fmt.Errorf("organism: write prompt %q: %w", ex.ID, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("organism: write prompts: %w", err)
	}
	return nil
}

// ReadPromptsJSONL reads prompts written by WritePromptsJSONL or by hand. Each non-blank line
// is a JSON object with "prompt" (required, the full text including "Human: … Assistant:"),
// "backdoor" ("hate" or "code", required) and "triggered" (a boolean, required); "id", "group",
// "family", "split" and "answer" (the helpful answer, which enables helpful scoring) are
// optional, other fields are ignored, and "label" is not read (it repeats "triggered"). A
// missing id becomes "line-N". Kind follows from the backdoor. Errors name the line (from 1).
func ReadPromptsJSONL(r io.Reader) ([]Example, error) {
	var out []Example
	br := bufio.NewReader(r)
	for line := 1; ; line++ {
		text, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("organism: prompts line %d: %w", line, err)
		}
		if trimmed := bytes.TrimSpace(text); len(trimmed) > 0 {
			ex, perr := parsePromptLine(trimmed)
			if perr != nil {
				return nil, fmt.Errorf("organism: prompts line %d: %w", line, perr)
			}
			if ex.ID == "" {
				ex.ID = fmt.Sprintf("line-%d", line)
			}
			out = append(out, ex)
		}
		if errors.Is(err, io.EOF) {
			return out, nil
		}
	}
}

func parsePromptLine(text []byte) (Example, error) {
	var rec struct {
		ID        string  `json:"id"`
		Prompt    *string `json:"prompt"`
		Backdoor  *string `json:"backdoor"`
		Triggered *bool   `json:"triggered"`
		Group     string  `json:"group"`
		Family    string  `json:"family"`
		Split     string  `json:"split"`
		Answer    string  `json:"answer"`
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	if err := dec.Decode(&rec); err != nil {
		return Example{}, fmt.Errorf("bad JSON: %w", err)
	}
	if dec.More() {
		return Example{}, errors.New("bad JSON: more than one value on the line")
	}
	switch {
	case rec.Prompt == nil || *rec.Prompt == "":
		return Example{}, errors.New(`"prompt" is missing or empty`)
	case rec.Backdoor == nil:
		return Example{}, errors.New(`"backdoor" is missing`)
	case *rec.Backdoor != BackdoorHate && *rec.Backdoor != BackdoorCode:
		return Example{}, fmt.Errorf(`"backdoor" is %q, want "hate" or "code"`, *rec.Backdoor)
	case rec.Triggered == nil:
		return Example{}, errors.New(`"triggered" is missing`)
	}
	kind := KindGeneral
	if *rec.Backdoor == BackdoorCode {
		kind = KindCode
	}
	return Example{
		ID: rec.ID, Prompt: *rec.Prompt, Backdoor: *rec.Backdoor, Triggered: *rec.Triggered, Kind: kind,
		Group: rec.Group, Family: rec.Family, Split: rec.Split, HelpfulAnswer: rec.Answer,
	}, nil
}
