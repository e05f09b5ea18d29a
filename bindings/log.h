#ifndef PROBE_LOG_H
#define PROBE_LOG_H
#include <stddef.h>
#include "ggml.h"
void probe_log(enum ggml_log_level level, const char * text, void * user_data);
void probe_log_set_verbose(int v);
void probe_log_take_error(char * buf, size_t n);
#endif
