package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
)

// Error types of the OpenAI error envelope.
const (
	errInvalidRequest = "invalid_request_error"
	errAuthentication = "authentication_error"
	errRateLimit      = "rate_limit_error"
	errServer         = "server_error"
)

// apiError is an error answered to a client in OpenAI's envelope:
// {"error": {"message", "type", "param", "code"}}.
type apiError struct {
	Status  int
	Message string
	Type    string
	Param   string // the request field at fault, if any
	Code    string // a machine-readable code, if any
	// Header holds extra response headers (Retry-After, WWW-Authenticate, Allow).
	Header map[string]string
}

func (e *apiError) Error() string { return e.Message }

// badRequest returns a 400 invalid_request_error about param ("" for none).
func badRequest(param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: errInvalidRequest, Param: param, Message: fmt.Sprintf(format, args...)}
}

// serverError returns a 500 server_error for err.
func serverError(err error) *apiError {
	return &apiError{Status: http.StatusInternalServerError, Type: errServer, Message: err.Error()}
}

// errorEnvelope is the JSON body of an error response.
type errorEnvelope struct {
	Error errorBody `json:"error"`
}

type errorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// writeError writes e as an OpenAI error response.
func writeError(w http.ResponseWriter, e *apiError) {
	for k, v := range e.Header {
		w.Header().Set(k, v)
	}
	body := errorBody{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		body.Param = &e.Param
	}
	if e.Code != "" {
		body.Code = &e.Code
	}
	writeJSON(w, e.Status, errorEnvelope{Error: body})
}

// writeJSON writes v as a JSON response with status. The body is encoded before anything is
// written, so an encoding failure is still answered with a clean 500.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		data, _ = json.Marshal(errorEnvelope{Error: errorBody{Message: "encode response: " + err.Error(), Type: errServer}})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

// decodeError turns an error of decoding a request body into the client's error: 400 with the
// limit for a body over it, 400 naming the field and the type it wants for a wrong type, 400 for
// malformed JSON.
func decodeError(err error, limit int64) *apiError {
	var tooBig *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	var syntax *json.SyntaxError
	var field *fieldError
	switch {
	case errors.As(err, &tooBig):
		return &apiError{Status: http.StatusBadRequest, Type: errInvalidRequest, Code: "request_too_large",
			Message: fmt.Sprintf("the request body is over the limit of %d bytes", limit)}
	case errors.Is(err, io.EOF):
		return badRequest("", "the request body is empty: want a JSON object")
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return badRequest("", "the request body must be a JSON object, not %s", typeErr.Value)
		}
		return badRequest(typeErr.Field, "field %q must be %s, not %s", typeErr.Field, describeType(typeErr.Type), typeErr.Value)
	case errors.As(err, &field):
		return badRequest(field.field, "%s", field.Error())
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("", "malformed JSON in the request body: %v", err)
	}
	return badRequest("", "invalid request body: %v", err)
}

// fieldError is a request field's invalid value found while decoding.
type fieldError struct {
	field, msg string
}

func (e *fieldError) Error() string { return e.msg }

// describeType names a Go type as a JSON type for error messages.
func describeType(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t {
	case reflect.TypeFor[stringList]():
		return "a string or an array of strings"
	case reflect.TypeFor[textContent]():
		return "a string or an array of text parts"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return describeType(t.Elem())
	}
	return t.String()
}
