#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "ggml.h"
#include "log.h"

static pthread_mutex_t probe_log_mu = PTHREAD_MUTEX_INITIALIZER;
static char probe_last_error[1024];
static int probe_last_is_error = 0;
static int probe_log_verbose = 0;
static enum ggml_log_level probe_prev_level = GGML_LOG_LEVEL_NONE;

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
		pthread_mutex_lock(&probe_log_mu);
		// Keep the first error (the cause; later ones say "failed to load model"), or the
		// first warning while there is no error.
		if (!probe_last_is_error && (level == GGML_LOG_LEVEL_ERROR || probe_last_error[0] == '\0')) {
			strncpy(probe_last_error, text, sizeof(probe_last_error) - 1);
			probe_last_error[sizeof(probe_last_error) - 1] = '\0';
			probe_last_is_error = level == GGML_LOG_LEVEL_ERROR;
		}
		pthread_mutex_unlock(&probe_log_mu);
	}
}

void probe_log_set_verbose(int v) { probe_log_verbose = v; }

void probe_log_take_error(char * buf, size_t n) {
	pthread_mutex_lock(&probe_log_mu);
	strncpy(buf, probe_last_error, n - 1);
	buf[n - 1] = '\0';
	probe_last_error[0] = '\0';
	probe_last_is_error = 0;
	pthread_mutex_unlock(&probe_log_mu);
}
