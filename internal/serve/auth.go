package serve

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// authorize checks the request's bearer key against every configured key in constant time.
// It returns nil when no keys are configured.
func (s *Server) authorize(r *http.Request) *apiError {
	if len(s.keys) == 0 {
		return nil
	}
	unauthorized := func(code, msg string) *apiError {
		return &apiError{Status: http.StatusUnauthorized, Type: errAuthentication, Code: code, Message: msg,
			Header: map[string]string{"WWW-Authenticate": `Bearer realm="probe"`}}
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return unauthorized("missing_api_key", "missing API key: send the header Authorization: Bearer KEY")
	}
	scheme, key, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return unauthorized("invalid_api_key", "the Authorization header must be: Bearer KEY")
	}
	// Keys are compared as SHA-256 digests, so the time taken reveals neither a key's
	// content nor its length.
	given := sha256.Sum256([]byte(strings.TrimSpace(key)))
	match := 0
	for _, k := range s.keys {
		match |= subtle.ConstantTimeCompare(given[:], k)
	}
	if match != 1 {
		return unauthorized("invalid_api_key", "invalid API key")
	}
	return nil
}
