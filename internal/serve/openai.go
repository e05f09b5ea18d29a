package serve

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
)

// This file holds the wire types of the API: OpenAI's request and response shapes and the
// probe extension's.

// stringList is a JSON string or array of strings (OpenAI's prompt, stop and input).
type stringList []string

// UnmarshalJSON reads a string, an array of strings or null.
func (l *stringList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*l = nil
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = stringList{s}
		return nil
	case len(b) > 0 && b[0] == '[':
		var ss []string
		if err := json.Unmarshal(b, &ss); err == nil {
			*l = ss
			return nil
		}
		return &json.UnmarshalTypeError{Value: "an array of other values", Type: reflect.TypeFor[stringList]()}
	}
	return &json.UnmarshalTypeError{Value: jsonKind(b), Type: reflect.TypeFor[stringList]()}
}

// textContent is a chat message's content: a string, or an array of text parts
// ({"type": "text", "text": …}) which are joined.
type textContent string

// UnmarshalJSON reads a string, an array of text parts or null.
func (c *textContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*c = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = textContent(s)
		return nil
	case len(b) > 0 && b[0] == '[':
		var parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(b, &parts); err != nil {
			return &json.UnmarshalTypeError{Value: "an array of other values", Type: reflect.TypeFor[textContent]()}
		}
		var sb strings.Builder
		for _, p := range parts {
			if p.Type != "text" {
				return &fieldError{field: "messages.content", msg: "message content part of type " + quote(p.Type) + ": only text parts are supported"}
			}
			sb.WriteString(p.Text)
		}
		*c = textContent(sb.String())
		return nil
	}
	return &json.UnmarshalTypeError{Value: jsonKind(b), Type: reflect.TypeFor[textContent]()}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// jsonKind names the kind of the JSON value b for error messages.
func jsonKind(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}

// chatMessage is a message of a chat request.
type chatMessage struct {
	Role    string      `json:"role"`
	Content textContent `json:"content"`
}

// probeExt is the request's probe extension: probes to apply on top of the watched ones, and
// what to do when one fires.
type probeExt struct {
	Names  []string `json:"names"`
	OnFire string   `json:"on_fire"`
}

// streamOptions are OpenAI's stream_options.
type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// generateRequest is a POST /v1/chat/completions body (with messages) or a POST
// /v1/completions one (with prompt); each route ignores the other's field.
type generateRequest struct {
	Model               string         `json:"model"`
	Messages            []chatMessage  `json:"messages"`
	Prompt              stringList     `json:"prompt"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
	Temperature         *float64       `json:"temperature"`
	TopP                *float64       `json:"top_p"`
	Seed                *int64         `json:"seed"`
	N                   *int           `json:"n"`
	Stop                stringList     `json:"stop"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	Probe               *probeExt      `json:"probe"`
}

// usage counts a request's tokens.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func newUsage(prompt, completion int) usage {
	return usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
}

// verdict is one probe's judgement of the prompt (TokenIndex -1) or of a generated token.
// Score is what was compared with Threshold: the raw score for the prompt, the rule's running
// statistic for a generated token. Rule is "prompt" for the prompt, else the generation rule
// ("max" for a probe without a generation calibration).
type verdict struct {
	Probe      string  `json:"probe"`
	Score      float64 `json:"score"`
	Threshold  float64 `json:"threshold"`
	Layer      int     `json:"layer"`
	TokenIndex int     `json:"token_index"`
	Fired      bool    `json:"fired"`
	Rule       string  `json:"rule"`
}

// tokenScores are the raw probe scores of one generated token that was sent.
type tokenScores struct {
	Index  int                `json:"index"`
	Token  string             `json:"token"`
	Scores map[string]float64 `json:"scores"`
}

// probeReport is the top-level "probe" object of a non-streaming response.
type probeReport struct {
	Prompt []verdict     `json:"prompt"`
	Tokens []tokenScores `json:"tokens"`
	Fired  []verdict     `json:"fired"` // the first fire of each probe, in order
	// Result is the verdict of the probe that stopped the generation, else the first fire,
	// else null.
	Result *verdict `json:"verdict"`
}

// chunkProbe is the "probe" object of a streamed chunk: the prompt's verdicts on the first
// chunk, a token's scores (and the fires at it) on the token's chunk, every fire on the last.
type chunkProbe struct {
	Prompt []verdict          `json:"prompt,omitempty"`
	Index  *int               `json:"index,omitempty"`
	Scores map[string]float64 `json:"scores,omitempty"`
	Fired  []verdict          `json:"fired,omitempty"`
	Result *verdict           `json:"verdict,omitempty"`
}

// chatCompletion is a non-streaming chat response.
type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   usage        `json:"usage"`
	Probe   *probeReport `json:"probe,omitempty"`
}

type chatChoice struct {
	Index        int        `json:"index"`
	Message      chatOutMsg `json:"message"`
	Logprobs     any        `json:"logprobs"`
	FinishReason string     `json:"finish_reason"`
	ProbeVerdict *verdict   `json:"probe_verdict,omitempty"`
}

type chatOutMsg struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// chatChunk is a streamed chat chunk.
type chatChunk struct {
	ID      string      `json:"id"`
	Object  string      `json:"object"`
	Created int64       `json:"created"`
	Model   string      `json:"model"`
	Choices []chatDelta `json:"choices"`
	Usage   *usage      `json:"usage,omitempty"`
	Probe   *chunkProbe `json:"probe,omitempty"`
}

type chatDelta struct {
	Index        int      `json:"index"`
	Delta        deltaMsg `json:"delta"`
	Logprobs     any      `json:"logprobs"`
	FinishReason *string  `json:"finish_reason"`
	ProbeVerdict *verdict `json:"probe_verdict,omitempty"`
}

type deltaMsg struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// textCompletion is a text completion, whole or a streamed chunk.
type textCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []textChoice `json:"choices"`
	Usage   *usage       `json:"usage,omitempty"`
	Probe   any          `json:"probe,omitempty"` // *probeReport or *chunkProbe
}

type textChoice struct {
	Index        int      `json:"index"`
	Text         string   `json:"text"`
	Logprobs     any      `json:"logprobs"`
	FinishReason *string  `json:"finish_reason"`
	ProbeVerdict *verdict `json:"probe_verdict,omitempty"`
}

// newID returns a response id with prefix.
func newID(prefix string) string {
	return prefix + strings.ToLower(rand.Text())
}

// decode reads the request body as JSON into v, at most limit bytes; unknown fields are
// ignored, wrong types and trailing data are errors.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) *apiError {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		return decodeError(err, limit)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return decodeError(err, limit)
		}
		return badRequest("", "trailing data after the JSON object in the request body")
	}
	return nil
}
