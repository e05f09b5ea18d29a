#include <stdlib.h>
#include <string.h>
#include "capture.h"
#include "ggml-backend.h"

int probe_split_name(const char * name, int * layer) {
	const char * dash = strrchr(name, '-');
	if (dash == NULL || dash == name) {
		return -1;
	}
	const char * s = dash + 1;
	if (*s < '0' || *s > '9' || (*s == '0' && s[1] != '\0')) {
		return -1; // no digits, or a leading zero
	}
	int l = 0;
	for (; *s >= '0' && *s <= '9'; s++) {
		l = l * 10 + (*s - '0');
		if (l >= PROBE_MAX_LAYERS) {
			return -1;
		}
	}
	if (*s != '\0') {
		return -1; // e.g. "l_out-3 (reshaped)"
	}
	*layer = l;
	return (int) (dash - name);
}

int probe_capture_match(const probe_capture * c, const char * name, int * layer) {
	int n = probe_split_name(name, layer);
	if (n < 0) {
		return -1;
	}
	for (int p = 0; p < PROBE_MAX_POINTS; p++) {
		const char * want = c->names[p];
		if (want[0] != '\0' && (int) strlen(want) == n && strncmp(name, want, (size_t) n) == 0) {
			return p;
		}
	}
	return -1;
}

// slot_for returns the slot a graph tensor name maps to, or -1.
static int slot_for(const probe_capture * c, const char * name) {
	int layer = 0;
	int p = probe_capture_match(c, name, &layer);
	if (p < 0) {
		return -1;
	}
	return c->want[p][layer] - 1;
}

bool probe_capture_cb(struct ggml_tensor * t, bool ask, void * user_data) {
	probe_capture * c = (probe_capture *) user_data;
	int idx = slot_for(c, t->name);
	if (ask) {
		c->asked++;
		return idx >= 0;
	}
	if (idx < 0 || c->error) {
		return true;
	}
	probe_slot * s = &c->slots[idx];
	int64_t ne0 = t->ne[0];
	int64_t rows = ggml_nrows(t);
	if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16) {
		c->error = 1;
	} else if (!ggml_is_contiguous(t)) {
		c->error = 2;
	} else if (s->ne0 != 0 && s->ne0 != ne0) {
		c->error = 3;
	} else if ((s->rows + rows) * ne0 > s->cap) {
		int64_t cap = (s->rows + rows) * ne0 * 2;
		float * d = (float *) realloc(s->data, (size_t) cap * sizeof(float));
		if (d == NULL) {
			c->error = 4;
		} else {
			s->data = d;
			s->cap = cap;
		}
	}
	if (c->error) {
		strncpy(c->error_name, t->name, GGML_MAX_NAME - 1);
		return true;
	}
	s->ne0 = ne0;
	float * dst = s->data + s->rows * ne0;
	if (t->type == GGML_TYPE_F32) {
		ggml_backend_tensor_get(t, dst, 0, (size_t) (rows * ne0) * sizeof(float));
	} else {
		size_t n = (size_t) (rows * ne0);
		ggml_fp16_t * tmp = (ggml_fp16_t *) malloc(n * sizeof(ggml_fp16_t));
		if (tmp == NULL) {
			c->error = 4;
			return true;
		}
		ggml_backend_tensor_get(t, tmp, 0, n * sizeof(ggml_fp16_t));
		ggml_fp16_to_fp32_row(tmp, dst, (int64_t) n);
		free(tmp);
	}
	s->rows += rows;
	c->matched++;
	// A graph computation (one micro-batch) holds each requested tensor once, so after the
	// n_slots-th copy of this computation nothing the caller reads is left to compute.
	if (c->stop_early && c->n_slots > 0 && c->matched % c->n_slots == 0) {
		c->stopped++;
		return false;
	}
	return true;
}

void probe_capture_clear(probe_capture * c) {
	memset(c->want, 0, sizeof(c->want));
	memset(c->names, 0, sizeof(c->names));
	for (int i = 0; i < c->n_slots; i++) {
		c->slots[i].rows = 0;
		c->slots[i].ne0 = 0;
	}
	c->n_slots = 0;
	c->error = 0;
	c->matched = 0;
	c->stop_early = 0;
	c->stopped = 0;
	c->asked = 0;
	c->error_name[0] = '\0';
}

int probe_capture_set_name(probe_capture * c, int point, const char * name) {
	size_t n = strlen(name);
	if (point < 0 || point >= PROBE_MAX_POINTS || n == 0 || n >= GGML_MAX_NAME) {
		return -1;
	}
	memcpy(c->names[point], name, n + 1);
	return 0;
}

int probe_capture_add(probe_capture * c, int point, int layer) {
	if (point < 0 || point >= PROBE_MAX_POINTS || layer < 0 || layer >= PROBE_MAX_LAYERS) {
		return -1;
	}
	if (c->n_slots == c->slot_cap) {
		probe_slot * slots = (probe_slot *) realloc(c->slots, (size_t) (c->slot_cap + 1) * sizeof(probe_slot));
		if (slots == NULL) {
			return -1;
		}
		c->slots = slots;
		memset(&c->slots[c->slot_cap], 0, sizeof(probe_slot));
		c->slot_cap++;
	}
	probe_slot * s = &c->slots[c->n_slots];
	s->rows = 0;
	s->ne0 = 0;
	c->want[point][layer] = c->n_slots + 1;
	return c->n_slots++;
}

int probe_capture_reserve(probe_capture * c, int64_t rows, int64_t ne0) {
	for (int i = 0; i < c->n_slots; i++) {
		probe_slot * s = &c->slots[i];
		if (s->cap < rows * ne0) {
			float * d = (float *) realloc(s->data, (size_t) (rows * ne0) * sizeof(float));
			if (d == NULL) {
				return -1;
			}
			s->data = d;
			s->cap = rows * ne0;
		}
	}
	return 0;
}

void probe_capture_reset_rows(probe_capture * c) {
	for (int i = 0; i < c->n_slots; i++) {
		c->slots[i].rows = 0;
	}
	c->error = 0;
	c->matched = 0;
	c->stopped = 0;
	c->asked = 0;
	c->error_name[0] = '\0';
}

void probe_capture_free(probe_capture * c) {
	for (int i = 0; i < c->slot_cap; i++) {
		free(c->slots[i].data);
	}
	free(c->slots);
	c->slots = NULL;
	c->n_slots = 0;
	c->slot_cap = 0;
}

bool probe_record_cb(struct ggml_tensor * t, bool ask, void * user_data) {
	probe_record * r = (probe_record *) user_data;
	if (!ask) {
		return true;
	}
	int layer = 0;
	int n = probe_split_name(t->name, &layer);
	if (n < 0) {
		return false;
	}
	if (r->n == r->cap) {
		int cap = r->cap == 0 ? 256 : r->cap * 2;
		probe_seen * s = (probe_seen *) realloc(r->seen, (size_t) cap * sizeof(probe_seen));
		if (s == NULL) {
			r->oom = 1;
			return false;
		}
		r->seen = s;
		r->cap = cap;
	}
	probe_seen * e = &r->seen[r->n++];
	memcpy(e->name, t->name, (size_t) n);
	e->name[n] = '\0';
	e->layer = layer;
	e->ne0 = t->ne[0];
	return false; // nothing is copied: the graph runs as without a callback
}

void probe_record_free(probe_record * r) {
	free(r->seen);
	r->seen = NULL;
	r->n = 0;
	r->cap = 0;
}
