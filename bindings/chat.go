package bindings

/*
#include <stdlib.h>
#include "llama.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// ChatMessage is one message of a chat: a role ("system", "user", "assistant") and its text.
type ChatMessage struct {
	Role    string
	Content string
}

// ValidChatRole reports whether a chat message's role is one chat templates know: system,
// user or assistant.
func ValidChatRole(role string) bool {
	return role == "system" || role == "user" || role == "assistant"
}

// ErrNoChatTemplate is returned by ApplyChatTemplate for a model without a chat template.
var ErrNoChatTemplate = errors.New("the model has no chat template")

// ChatTemplate returns the model's chat template from its GGUF metadata
// (tokenizer.chat_template), or "" if it has none.
func (m *Model) ChatTemplate() string {
	if m.acquire() != nil {
		return ""
	}
	defer m.release()
	t := C.llama_model_chat_template(m.c, nil)
	if t == nil {
		return ""
	}
	return C.GoString(t)
}

// ApplyChatTemplate formats messages as a prompt with a chat template — tmpl, or the model's
// own when tmpl is "" — ending with the start of an assistant turn. llama.cpp recognises the
// common templates (llama 2 and 3, chatml, gemma, phi, mistral, …) by their text or name; a
// template it does not know is an error, as is a model without one (ErrNoChatTemplate).
func (m *Model) ApplyChatTemplate(tmpl string, msgs []ChatMessage) (string, error) {
	if tmpl == "" {
		if tmpl = m.ChatTemplate(); tmpl == "" {
			return "", ErrNoChatTemplate
		}
	}
	if len(msgs) == 0 {
		return "", errors.New("chat template: no messages")
	}
	ctmpl := C.CString(tmpl)
	defer C.free(unsafe.Pointer(ctmpl))
	cmsgs := make([]C.struct_llama_chat_message, len(msgs))
	var frees []unsafe.Pointer
	defer func() {
		for _, p := range frees {
			C.free(p)
		}
	}()
	total := 0
	for i, msg := range msgs {
		r, c := C.CString(msg.Role), C.CString(msg.Content)
		frees = append(frees, unsafe.Pointer(r), unsafe.Pointer(c))
		cmsgs[i] = C.struct_llama_chat_message{role: r, content: c}
		total += len(msg.Role) + len(msg.Content)
	}
	// Go memory that holds only C pointers may be passed to C.
	arr := &cmsgs[0]
	size := 2*total + 256
	for range 2 {
		buf := make([]byte, size)
		n := C.llama_chat_apply_template(ctmpl, arr, C.size_t(len(cmsgs)), C.bool(true), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)))
		if n < 0 {
			return "", fmt.Errorf("chat template not supported by llama.cpp (%.40q…)", tmpl)
		}
		if int(n) <= len(buf) {
			return string(buf[:n]), nil
		}
		size = int(n)
	}
	return "", errors.New("chat template: the formatted prompt kept growing")
}

// TokenizeFormatted tokenizes a prompt made by a chat template: the control tokens its
// markers spell (<|im_start|>, <|begin_of_text|>, …) are parsed as control tokens, and a BOS
// the template wrote itself is not doubled by the one the model adds.
func (m *Model) TokenizeFormatted(text string) ([]int32, error) {
	toks, err := m.Tokenize(text, true, true)
	if err != nil {
		return nil, err
	}
	if len(toks) >= 2 && toks[0] == toks[1] && toks[0] == m.bos() {
		toks = toks[1:]
	}
	return toks, nil
}

// bos is the model's BOS token, or -1.
func (m *Model) bos() int32 {
	if m.acquire() != nil {
		return -1
	}
	defer m.release()
	return int32(C.llama_vocab_bos(m.vocab))
}
