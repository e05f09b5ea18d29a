package bindings

/*
#include <stdlib.h>
#include "llama.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unicode/utf8"
	"unsafe"
)

// ErrEmptyPrompt is returned for a prompt with no text or no tokens.
var ErrEmptyPrompt = errors.New("empty prompt")

// maxTextBytes bounds the text Tokenize accepts (llama.cpp counts in int32).
const maxTextBytes = 1 << 28

// Tokenize converts text to token ids with the model's tokenizer. addSpecial adds BOS/EOS as
// the model is configured to; parseSpecial turns control-token text such as "<s>" into the
// control token instead of plain text. Text that is not valid UTF-8 is an error.
func (m *Model) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	if err := m.acquire(); err != nil {
		return nil, err
	}
	defer m.release()
	if len(text) > maxTextBytes {
		return nil, fmt.Errorf("tokenize: text of %d bytes is too long", len(text))
	}
	if !utf8.ValidString(text) {
		return nil, errors.New("tokenize: text is not valid UTF-8")
	}
	if !m.byteFall {
		for _, r := range text {
			piece := string(r)
			if r == ' ' {
				piece = "\u2581"
			}
			if !m.pieces[piece] {
				return nil, fmt.Errorf("tokenize: character %q is not in the vocabulary and the vocabulary has no byte tokens", r)
			}
		}
	}
	if text == "" && !addSpecial {
		return nil, nil
	}
	ctext := C.CString(text)
	defer C.free(unsafe.Pointer(ctext))
	n := len(text) + 8
	for {
		buf := make([]int32, n)
		got := C.llama_tokenize(m.vocab, ctext, C.int32_t(len(text)), (*C.llama_token)(unsafe.Pointer(&buf[0])),
			C.int32_t(len(buf)), C.bool(addSpecial), C.bool(parseSpecial))
		if got >= 0 {
			return buf[:got], nil
		}
		if got == C.INT32_MIN || int(-got) <= n {
			return nil, errors.New("tokenize: llama.cpp failed")
		}
		n = int(-got)
	}
}

// checkTokens validates token ids before they reach llama.cpp.
func (m *Model) checkTokens(tokens []int32) error {
	for i, t := range tokens {
		if t < 0 || t >= m.nVocab {
			return fmt.Errorf("token %d at position %d is outside the vocabulary of %d", t, i, m.nVocab)
		}
	}
	return nil
}

// TokenPiece returns the text of one token; control tokens are rendered (e.g. "<s>").
func (m *Model) TokenPiece(token int32) (string, error) {
	if err := m.acquire(); err != nil {
		return "", err
	}
	defer m.release()
	return m.pieceLocked(token, true)
}

// TextPiece returns the text a generated token adds to the output, as Generate writes it:
// control tokens render empty.
func (m *Model) TextPiece(token int32) (string, error) {
	if err := m.acquire(); err != nil {
		return "", err
	}
	defer m.release()
	return m.pieceLocked(token, false)
}

func (m *Model) pieceLocked(token int32, special bool) (string, error) {
	if err := m.checkTokens([]int32{token}); err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	for {
		n := C.llama_token_to_piece(m.vocab, C.llama_token(token), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)), 0, C.bool(special))
		if n >= 0 {
			return string(buf[:n]), nil
		}
		buf = make([]byte, -n)
	}
}

// Pieces returns the text of each token (see TokenPiece).
func (m *Model) Pieces(tokens []int32) ([]string, error) {
	if err := m.acquire(); err != nil {
		return nil, err
	}
	defer m.release()
	out := make([]string, len(tokens))
	for i, t := range tokens {
		p, err := m.pieceLocked(t, true)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// Detokenize converts tokens back to text, dropping BOS/EOS; the inverse of Tokenize.
func (m *Model) Detokenize(tokens []int32) (string, error) {
	if err := m.acquire(); err != nil {
		return "", err
	}
	defer m.release()
	if err := m.checkTokens(tokens); err != nil {
		return "", fmt.Errorf("detokenize: %w", err)
	}
	if len(tokens) == 0 {
		return "", nil
	}
	n := 16 * len(tokens)
	for {
		buf := make([]byte, n)
		got := C.llama_detokenize(m.vocab, (*C.llama_token)(unsafe.Pointer(&tokens[0])), C.int32_t(len(tokens)),
			(*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)), C.bool(true), C.bool(false))
		if got >= 0 {
			return string(buf[:got]), nil
		}
		if int(-got) <= n {
			return "", errors.New("detokenize: llama.cpp failed")
		}
		n = int(-got)
	}
}

// IsEndOfGeneration reports whether a token ends generation (EOS, EOT, …).
func (m *Model) IsEndOfGeneration(token int32) bool {
	if m.acquire() != nil {
		return false
	}
	defer m.release()
	if token < 0 || token >= m.nVocab {
		return false
	}
	return bool(C.llama_vocab_is_eog(m.vocab, C.llama_token(token)))
}
