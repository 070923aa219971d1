/* metrics.c - the registry, lock-free recording and the text exposition (metrics.h).
 *
 * A family's series are one calloc'ed array of 64-bit atomic cells, indexed by
 * ((model * nvalues + value) * ncodes + code) * stride: a counter or gauge is one cell, a
 * histogram nbuckets + 2 (a count per bucket, one past the last bound, and the sum in
 * thousandths). The cumulative buckets and the count are computed when rendering, from one read
 * of each cell, so that +Inf always equals _count in what is served.
 *
 * Model ids: an open-addressed table of 2 * per_model (a power of two) slots; a slot goes
 * empty -> writing -> ready by CAS and release store, and is never emptied again. Handles are
 * handed out in insertion order (1..per_model); by_handle maps a handle back to its slot for
 * the exposition. Once per_model handles are out, unknown ids are not inserted at all. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/hash.h"
#include "mm/httpd.h"
#include "mm/metrics.h"
#include "mm/opts.h"

const double metrics_ms_buckets[METRICS_MS_BUCKETS_N] = {
    0.5, 1, 2, 5, 10, 20, 50, 75, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 60000, 120000,
    300000};

const char *const metrics_code_names[METRICS_CODES] = {
    "OK",        "CANCELLED",          "UNKNOWN",          "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED", "NOT_FOUND",  "ALREADY_EXISTS",   "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",      "DATA_LOSS",
    "UNAUTHENTICATED"};

#define MODEL_PROBES 32u /* slots looked at before an id counts as __other__ */

enum { SLOT_EMPTY, SLOT_WRITING, SLOT_READY };

struct model_slot {
    _Atomic uint32_t state;
    uint32_t handle; /* METRIC_MODEL_OTHER when it came too late */
    uint64_t hash;
    uint32_t len;
    char id[METRICS_MAX_MODEL_ID];
};

struct metric {
    struct metrics *reg;
    const char *name, *help, *label;
    const char *const *values;
    enum metric_type type;
    bool by_code, by_model;
    unsigned nvalues, ncodes, nmodels, nbuckets, stride;
    double bounds[METRICS_MAX_BUCKETS];
    size_t ncells;
    _Atomic uint64_t *cells;
};

struct metrics {
    unsigned per_model;
    size_t mask; /* slots - 1 */
    struct model_slot *slots;
    _Atomic(struct model_slot *) *by_handle; /* [0, per_model]; 0 unused */
    _Atomic uint32_t handed;                  /* handles handed out (may pass per_model) */
    _Atomic unsigned nfamilies;
    struct metric *families[METRICS_MAX_FAMILIES];
};

int metrics_parse_per_model(const char *s, unsigned *out, struct mm_error *err)
{
    uint64_t v;
    int rc = opts_u64("--metrics-per-model", s, 0, METRICS_MAX_PER_MODEL, &v, err);
    if (rc < 0)
        return rc;
    *out = (unsigned)v;
    return 0;
}

int metrics_new(const struct metrics_config *cfg, struct metrics **out, struct mm_error *err)
{
    *out = NULL;
    if (cfg->per_model > METRICS_MAX_PER_MODEL)
        return mm_error_set(err, -EINVAL, "metrics: per-model %u above the bound %u",
                            cfg->per_model, METRICS_MAX_PER_MODEL);
    struct metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return mm_error_set(err, -ENOMEM, "metrics: out of memory");
    m->per_model = cfg->per_model;
    if (m->per_model) {
        size_t n = 16;
        while (n < 2 * (size_t)m->per_model)
            n *= 2;
        m->mask = n - 1;
        m->slots = calloc(n, sizeof(*m->slots));
        m->by_handle = calloc((size_t)m->per_model + 1, sizeof(*m->by_handle));
        if (!m->slots || !m->by_handle) {
            metrics_free(m);
            return mm_error_set(err, -ENOMEM, "metrics: out of memory for %u model ids",
                                m->per_model);
        }
    }
    *out = m;
    return 0;
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    unsigned n = atomic_load(&m->nfamilies);
    for (unsigned i = 0; i < n; i++) {
        free(m->families[i]->cells);
        free(m->families[i]);
    }
    free(m->slots);
    free(m->by_handle);
    free(m);
}

static bool name_ok(const char *s, bool metric)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                     (metric && c == ':');
        if (!alpha && !(p > s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static bool same_shape(const struct metric *f, const struct metric_desc *d)
{
    if (f->type != d->type || f->by_code != d->by_code || f->by_model != d->by_model)
        return false;
    if ((f->label == NULL) != (d->label == NULL))
        return false;
    if (f->label && (strcmp(f->label, d->label) != 0 || f->nvalues != d->nvalues))
        return false;
    return true;
}

int metrics_register(struct metrics *m, const struct metric_desc *d, struct metric **out,
                     struct mm_error *err)
{
    *out = NULL;
    if (!m)
        return 0;
    if (!name_ok(d->name, true) || !d->help)
        return mm_error_set(err, -EINVAL, "metrics: bad name '%s' (or no help)",
                            d->name ? d->name : "(null)");
    if (d->label && (!name_ok(d->label, false) || !d->values || d->nvalues == 0 ||
                     d->nvalues > METRICS_MAX_VALUES))
        return mm_error_set(err, -EINVAL, "metrics: %s: bad label '%s' or its %u values",
                            d->name, d->label, d->nvalues);
    if (d->type == METRIC_HISTOGRAM && d->buckets &&
        (d->nbuckets == 0 || d->nbuckets > METRICS_MAX_BUCKETS))
        return mm_error_set(err, -EINVAL, "metrics: %s: %u buckets (1..%u)", d->name,
                            d->nbuckets, METRICS_MAX_BUCKETS);
    unsigned n = atomic_load_explicit(&m->nfamilies, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++) {
        struct metric *f = m->families[i];
        if (strcmp(f->name, d->name) != 0)
            continue;
        if (!same_shape(f, d))
            return mm_error_set(err, -EEXIST, "metrics: %s registered already with other labels",
                                d->name);
        *out = f;
        return 0;
    }
    if (n >= METRICS_MAX_FAMILIES)
        return mm_error_set(err, -ENOSPC, "metrics: %s: more than %u families", d->name,
                            METRICS_MAX_FAMILIES);
    struct metric *f = calloc(1, sizeof(*f));
    if (!f)
        return mm_error_set(err, -ENOMEM, "metrics: %s: out of memory", d->name);
    f->reg = m;
    f->name = d->name;
    f->help = d->help;
    f->type = d->type;
    f->label = d->label;
    f->values = d->values;
    f->by_code = d->by_code;
    f->by_model = d->by_model && m->per_model > 0;
    f->nvalues = d->label ? d->nvalues : 1;
    f->ncodes = d->by_code ? METRICS_CODES : 1;
    f->nmodels = f->by_model ? m->per_model + 1 : 1;
    f->stride = 1;
    if (d->type == METRIC_HISTOGRAM) {
        const double *b = d->buckets ? d->buckets : metrics_ms_buckets;
        f->nbuckets = d->buckets ? d->nbuckets : METRICS_MS_BUCKETS_N;
        for (unsigned i = 0; i < f->nbuckets; i++) {
            if (!isfinite(b[i]) || (i > 0 && b[i] <= b[i - 1])) {
                free(f);
                return mm_error_set(err, -EINVAL, "metrics: %s: buckets not ascending",
                                    d->name);
            }
            f->bounds[i] = b[i];
        }
        f->stride = f->nbuckets + 2;
    }
    f->ncells = (size_t)f->nmodels * f->nvalues * f->ncodes * f->stride;
    f->cells = calloc(f->ncells, sizeof(*f->cells));
    if (!f->cells) {
        size_t cells = f->ncells;
        free(f);
        return mm_error_set(err, -ENOMEM, "metrics: %s: out of memory for %zu cells", d->name,
                            cells);
    }
    m->families[n] = f;
    atomic_store_explicit(&m->nfamilies, n + 1, memory_order_release);
    *out = f;
    return 0;
}

metric_model_t metrics_model(struct metrics *m, const char *id, size_t len)
{
    if (!m || m->per_model == 0 || len == 0 || len > METRICS_MAX_MODEL_ID)
        return METRIC_MODEL_OTHER;
    uint64_t h = mm_hash(id, len);
    for (unsigned i = 0; i < MODEL_PROBES; i++) {
        struct model_slot *s = &m->slots[(h + i) & m->mask];
        uint32_t st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (st == SLOT_EMPTY) {
            if (atomic_load_explicit(&m->handed, memory_order_relaxed) >= m->per_model)
                return METRIC_MODEL_OTHER; /* full: unknown ids are not inserted */
            uint32_t expect = SLOT_EMPTY;
            if (atomic_compare_exchange_strong_explicit(&s->state, &expect, SLOT_WRITING,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire)) {
                uint32_t handle =
                    atomic_fetch_add_explicit(&m->handed, 1, memory_order_relaxed) + 1;
                s->hash = h;
                s->len = (uint32_t)len;
                memcpy(s->id, id, len);
                s->handle = handle <= m->per_model ? handle : METRIC_MODEL_OTHER;
                if (s->handle != METRIC_MODEL_OTHER)
                    atomic_store_explicit(&m->by_handle[handle], s, memory_order_release);
                atomic_store_explicit(&s->state, SLOT_READY, memory_order_release);
                return s->handle;
            }
            st = expect;
        }
        /* Another thread is writing this slot: its write is a few stores; wait for it. */
        while (st == SLOT_WRITING)
            st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (s->hash == h && s->len == len && memcmp(s->id, id, len) == 0)
            return s->handle;
    }
    return METRIC_MODEL_OTHER;
}

/* The first cell of a series, indices clamped. */
static _Atomic uint64_t *cell(struct metric *f, metric_model_t model, unsigned value,
                              unsigned code)
{
    if (model >= f->nmodels)
        model = METRIC_MODEL_OTHER;
    if (value >= f->nvalues)
        value = f->nvalues - 1;
    if (!f->by_code)
        code = 0;
    else if (code >= METRICS_CODES)
        code = 2; /* UNKNOWN */
    size_t i = (((size_t)model * f->nvalues + value) * f->ncodes + code) * f->stride;
    return &f->cells[i];
}

void metric_add(struct metric *c, metric_model_t model, unsigned value, unsigned code,
                uint64_t n)
{
    if (c)
        atomic_fetch_add_explicit(cell(c, model, value, code), n, memory_order_relaxed);
}

void metric_set(struct metric *g, metric_model_t model, unsigned value, unsigned code,
                int64_t v)
{
    if (g)
        atomic_store_explicit(cell(g, model, value, code), (uint64_t)v, memory_order_relaxed);
}

void metric_gauge_add(struct metric *g, metric_model_t model, unsigned value, unsigned code,
                      int64_t delta)
{
    if (g)
        atomic_fetch_add_explicit(cell(g, model, value, code), (uint64_t)delta,
                                  memory_order_relaxed);
}

void metric_observe(struct metric *h, metric_model_t model, unsigned value, unsigned code,
                    double v)
{
    if (!h)
        return;
    if (!(v >= 0)) /* negative or NaN: a clock step, count it as 0 */
        v = 0;
    _Atomic uint64_t *s = cell(h, model, value, code);
    unsigned b = 0;
    while (b < h->nbuckets && v > h->bounds[b])
        b++;
    atomic_fetch_add_explicit(&s[b], 1, memory_order_relaxed);
    double milli = v * 1000. + 0.5;
    atomic_fetch_add_explicit(&s[h->nbuckets + 1],
                              milli < 1.8e19 ? (uint64_t)milli : UINT64_MAX / 2,
                              memory_order_relaxed);
}

/* ---- exposition */

static int put_escaped(struct mm_buf *out, const char *s, size_t n, bool help)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = s[i] == '\\' ? "\\\\" : s[i] == '\n' ? "\\n"
                                              : (!help && s[i] == '"') ? "\\\""
                                                                       : NULL;
        if (!rep)
            continue;
        if (mm_buf_append(out, s + start, i - start) < 0 || mm_buf_append(out, rep, 2) < 0)
            return -ENOMEM;
        start = i + 1;
    }
    return mm_buf_append(out, s + start, n - start);
}

/* Writes "{a="x",b="y"" (no closing brace; nothing when there are no labels and open is
 * false). Returns whether a brace was opened. */
static int put_labels(struct mm_buf *out, struct metric *f, metric_model_t model, unsigned value,
                      unsigned code, bool *opened)
{
    *opened = false;
    const char *sep = "{";
    int rc = 0;
    if (f->label) {
        rc |= mm_buf_printf(out, "%s%s=\"", sep, f->label);
        rc |= put_escaped(out, f->values[value], strlen(f->values[value]), false);
        rc |= mm_buf_append(out, "\"", 1);
        sep = ",";
    }
    if (f->by_code) {
        rc |= mm_buf_printf(out, "%scode=\"%s\"", sep, metrics_code_names[code]);
        sep = ",";
    }
    if (f->by_model) {
        rc |= mm_buf_printf(out, "%smodelId=\"", sep);
        struct model_slot *s =
            model ? atomic_load_explicit(&f->reg->by_handle[model], memory_order_acquire) : NULL;
        if (s)
            rc |= put_escaped(out, s->id, s->len, false);
        else
            rc |= mm_buf_append(out, METRICS_OTHER_MODEL, strlen(METRICS_OTHER_MODEL));
        rc |= mm_buf_append(out, "\"", 1);
        sep = ",";
    }
    *opened = sep[0] == ',';
    return rc < 0 ? -ENOMEM : 0;
}

static int render_series(struct mm_buf *out, struct metric *f, metric_model_t model,
                         unsigned value, unsigned code, _Atomic uint64_t *s)
{
    bool sparse = f->by_model || f->by_code; /* only series that were recorded */
    bool opened;
    int rc = 0;
    if (f->type != METRIC_HISTOGRAM) {
        uint64_t v = atomic_load_explicit(s, memory_order_relaxed);
        if (sparse && v == 0)
            return 0;
        rc |= mm_buf_append(out, f->name, strlen(f->name));
        rc |= put_labels(out, f, model, value, code, &opened);
        if (f->type == METRIC_GAUGE)
            rc |= mm_buf_printf(out, "%s %" PRId64 "\n", opened ? "}" : "", (int64_t)v);
        else
            rc |= mm_buf_printf(out, "%s %" PRIu64 "\n", opened ? "}" : "", v);
        return rc < 0 ? -ENOMEM : 0;
    }
    uint64_t counts[METRICS_MAX_BUCKETS + 1], total = 0;
    for (unsigned b = 0; b <= f->nbuckets; b++) {
        counts[b] = atomic_load_explicit(&s[b], memory_order_relaxed);
        total += counts[b];
    }
    if (sparse && total == 0)
        return 0;
    uint64_t sum = atomic_load_explicit(&s[f->nbuckets + 1], memory_order_relaxed), cum = 0;
    for (unsigned b = 0; b <= f->nbuckets; b++) {
        cum += counts[b];
        rc |= mm_buf_printf(out, "%s_bucket", f->name);
        rc |= put_labels(out, f, model, value, code, &opened);
        if (b < f->nbuckets)
            rc |= mm_buf_printf(out, "%sle=\"%.17g\"} %" PRIu64 "\n", opened ? "," : "{",
                                f->bounds[b], cum);
        else
            rc |= mm_buf_printf(out, "%sle=\"+Inf\"} %" PRIu64 "\n", opened ? "," : "{", cum);
    }
    rc |= mm_buf_printf(out, "%s_sum", f->name);
    rc |= put_labels(out, f, model, value, code, &opened);
    rc |= mm_buf_printf(out, "%s %" PRIu64 ".%03u\n", opened ? "}" : "", sum / 1000,
                        (unsigned)(sum % 1000));
    rc |= mm_buf_printf(out, "%s_count", f->name);
    rc |= put_labels(out, f, model, value, code, &opened);
    rc |= mm_buf_printf(out, "%s %" PRIu64 "\n", opened ? "}" : "", total);
    return rc < 0 ? -ENOMEM : 0;
}

int metrics_render(struct metrics *m, struct mm_buf *out)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    unsigned n = atomic_load_explicit(&m->nfamilies, memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        struct metric *f = m->families[i];
        if (mm_buf_printf(out, "# HELP %s ", f->name) < 0 ||
            put_escaped(out, f->help, strlen(f->help), true) < 0 ||
            mm_buf_printf(out, "\n# TYPE %s %s\n", f->name, types[f->type]) < 0)
            return -ENOMEM;
        /* Models whose handle is not published yet are skipped this time. */
        uint32_t handed = atomic_load_explicit(&m->handed, memory_order_acquire);
        unsigned nmodels = f->by_model && handed + 1 < f->nmodels ? handed + 1 : f->nmodels;
        for (unsigned mo = 0; mo < nmodels; mo++) {
            if (mo && !atomic_load_explicit(&m->by_handle[mo], memory_order_acquire))
                continue;
            for (unsigned v = 0; v < f->nvalues; v++)
                for (unsigned c = 0; c < f->ncodes; c++)
                    if (render_series(out, f, mo, v, c, cell(f, mo, v, c)) < 0)
                        return -ENOMEM;
        }
    }
    return 0;
}

/* ---- the server */

struct metrics_server {
    struct metrics *reg;
    struct MHD_Daemon *daemon;
};

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **ctx)
{
    struct metrics_server *s = cls;
    static const char text[] = "text/plain; charset=utf-8";
    if (strcmp(url, "/metrics") != 0) {
        static const char nf[] = "not found: the metrics are at /metrics\n";
        return httpd_reply(c, MHD_HTTP_NOT_FOUND, text, nf, sizeof(nf) - 1, NULL);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char na[] = "method not allowed: GET or HEAD\n";
        return httpd_reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, text, na, sizeof(na) - 1,
                           "GET, HEAD");
    }
    struct mm_buf b = {0};
    enum MHD_Result rc;
    if (metrics_render(s->reg, &b) < 0) {
        static const char oom[] = "out of memory rendering the metrics\n";
        rc = httpd_reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, text, oom, sizeof(oom) - 1, NULL);
    } else {
        rc = httpd_reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                         b.data ? b.data : "", b.len, NULL);
    }
    mm_buf_free(&b);
    return rc;
}

int metrics_server_new(struct metrics *m, const char *listen, struct metrics_server **out,
                       int *port, struct mm_error *err)
{
    *out = NULL;
    struct metrics_server *s = calloc(1, sizeof(*s));
    if (!s)
        return mm_error_set(err, -ENOMEM, "metrics server: out of memory");
    s->reg = m;
    struct httpd_config hc = {.flag = "--metrics-listen",
                              .listen = listen ? listen : METRICS_DEFAULT_LISTEN,
                              .max_connections = METRICS_MAX_CONNECTIONS,
                              .idle_timeout_s = METRICS_IDLE_TIMEOUT_S,
                              .memory_bytes = METRICS_MEMORY_BYTES,
                              .handler = on_request,
                              .handler_cls = s};
    int rc = httpd_start(&hc, &s->daemon, port, err);
    if (rc < 0) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void metrics_opts_init(struct metrics_opts *o)
{
    const char *l = getenv("MM_METRICS_LISTEN"), *p = getenv("MM_METRICS_PER_MODEL");
    o->listen = l && l[0] ? l : METRICS_DEFAULT_LISTEN;
    o->per_model = p && p[0] ? p : NULL;
}

int metrics_start(const struct metrics_opts *o, struct metrics **reg, struct metrics_server **srv,
                  int *port, struct mm_error *err)
{
    *reg = NULL;
    *srv = NULL;
    struct metrics_config cfg = {.per_model = METRICS_DEFAULT_PER_MODEL};
    int rc = o->per_model ? metrics_parse_per_model(o->per_model, &cfg.per_model, err) : 0;
    if (rc < 0 || httpd_is_off(o->listen))
        return rc;
    rc = metrics_new(&cfg, reg, err);
    if (rc < 0)
        return rc;
    rc = metrics_server_new(*reg, o->listen, srv, port, err);
    if (rc < 0) {
        metrics_free(*reg);
        *reg = NULL;
    }
    return rc;
}

void metrics_server_free(struct metrics_server *s)
{
    if (!s)
        return;
    httpd_stop(s->daemon);
    free(s);
}
