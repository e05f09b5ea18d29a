package bindings

/*
#include <stdlib.h>
#include "llama.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
	"unsafe"
)

// ErrEmptyPrompt is returned for a prompt with no text or no tokens.
var ErrEmptyPrompt = errors.New("empty prompt")

// maxTextBytes bounds the text Tokenize accepts (llama.cpp counts in int32).
const maxTextBytes = 1 << 28

// maxBPERun bounds how many characters of one class (letters, digits, whitespace, anything
// else) may follow each other in text for a BPE vocabulary. llama.cpp's BPE pre-tokenizers
// split text with regexes, most of them (Qwen2's among them) run by std::regex, whose matcher
// recurses once per character it matches: a run of about 30,000 letters or spaces overflows
// an 8 MiB thread stack and kills the process (measured with Qwen2's pre-tokenizer). 4096
// stays within 2 MiB. SPM tokenizers use no regex and have no such bound.
const maxBPERun = 4096

// checkBPERuns refuses text with a run of more than maxBPERun characters of one class.
func checkBPERuns(text string) error {
	class := func(r rune) int {
		switch {
		case unicode.IsSpace(r):
			return 0
		case unicode.IsLetter(r):
			return 1
		case unicode.IsNumber(r):
			return 2
		}
		return 3
	}
	prev, run := -1, 0
	for i, r := range text {
		if c := class(r); c == prev {
			run++
		} else {
			prev, run = c, 1
		}
		if run > maxBPERun {
			return fmt.Errorf("tokenize: more than %d %s in a row (at byte %d): llama.cpp's BPE pre-tokenizer would overflow its stack",
				maxBPERun, [...]string{"whitespace characters", "letters", "digits", "symbols"}[prev], i)
		}
	}
	return nil
}

// Tokenize converts text to token ids with the model's tokenizer. addSpecial adds BOS/EOS as
// the model is configured to; parseSpecial turns control-token text such as "<s>" into the
// control token instead of plain text. Text that is not valid UTF-8 is an error, and so is
// text llama.cpp cannot tokenize without killing the process or losing part of it: for an SPM
// vocabulary without byte tokens, a character that is not a piece; for a BPE vocabulary, a
// byte without a token or a run of more than maxBPERun characters of one class.
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
	if m.bpe {
		if err := checkBPERuns(text); err != nil {
			return nil, err
		}
	}
	if !m.byteFall && m.bpeNoByte != nil {
		// A byte-level BPE vocabulary lacking some of the 256 byte tokens: llama.cpp would drop
		// those bytes.
		for i := 0; i < len(text); i++ {
			if m.bpeNoByte[text[i]] {
				return nil, fmt.Errorf("tokenize: byte 0x%02X of the text has no token in the BPE vocabulary", text[i])
			}
		}
	} else if !m.byteFall {
		// An SPM vocabulary without byte tokens: every character, a space as "▁", must be a
		// piece.
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
