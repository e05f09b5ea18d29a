#include <stdio.h>
#include <string.h>
#include "ggml.h"
#include "log.h"

// The first error of the current call, per thread: llama.cpp logs a failure on the thread that
// made the failing call, and the Go side reads it back on that thread (withLogError).
static _Thread_local char probe_last_error[1024];
static _Thread_local int probe_last_is_error = 0;
static _Thread_local enum ggml_log_level probe_prev_level = GGML_LOG_LEVEL_NONE;
static int probe_log_verbose = 0;

// probe_log keeps the first error line llama.cpp or ggml logged, so that a failed call can say
// why, and prints everything to stderr only when verbose logging is on.
void probe_log(enum ggml_log_level level, const char * text, void * user_data) {
	(void) user_data;
	if (level == GGML_LOG_LEVEL_CONT) {
		level = probe_prev_level;
	} else {
		probe_prev_level = level;
	}
	if (probe_log_verbose) {
		fputs(text, stderr);
	}
	if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN) {
		// Keep the first error (the cause; later ones say "failed to load model"), or the
		// first warning while there is no error.
		if (!probe_last_is_error && (level == GGML_LOG_LEVEL_ERROR || probe_last_error[0] == '\0')) {
			strncpy(probe_last_error, text, sizeof(probe_last_error) - 1);
			probe_last_error[sizeof(probe_last_error) - 1] = '\0';
			probe_last_is_error = level == GGML_LOG_LEVEL_ERROR;
		}
	}
}

void probe_log_set_verbose(int v) { probe_log_verbose = v; }

void probe_log_take_error(char * buf, size_t n) {
	strncpy(buf, probe_last_error, n - 1);
	buf[n - 1] = '\0';
	probe_last_error[0] = '\0';
	probe_last_is_error = 0;
}
