/* metrics.h - Prometheus metrics: a registry of counters, gauges and histograms recorded with
 * relaxed atomics, and GET /metrics (text format 0.0.4) on a port of its own (--metrics-listen,
 * env MM_METRICS_LISTEN, default 0.0.0.0:2112; "off" disables it).
 *
 * Names follow KServe ModelMesh where it has the metric (modelmesh_invoke_model_milliseconds,
 * modelmesh_api_request_milliseconds, ...: histograms in milliseconds with ModelMesh's buckets,
 * METRICS_MS_BUCKETS); ours are named mm_<module>_<what> (mm_route_forwarded_total, ...).
 *
 * Labels. A family has up to three, rendered in this order (ModelMesh's):
 *   - one label with a fixed list of values given at registration (e.g. method="ModelInfer",
 *     kind="range"); the value is passed as its index in the list;
 *   - code: the gRPC status name (OK, NOT_FOUND, ...), passed as the status number 0..16;
 *   - modelId: bounded. The registry hands out at most per_model distinct model ids
 *     (metrics_model, --metrics-per-model, env MM_METRICS_PER_MODEL, default 100); every
 *     other id, an id longer than METRICS_MAX_MODEL_ID, and the empty id are summed under
 *     modelId="__other__". per_model 0: no modelId label at all.
 * Every series is preallocated when its family is registered (a cross product of the label
 * values; calloc'ed, so the pages of series never recorded are not touched); labelled series
 * that were never recorded are not rendered.
 *
 * Hot path: metric_add / metric_set / metric_observe are a few relaxed atomic operations on the
 * preallocated series: no allocation, no lock, no syscall. metrics_model is lock-free: a hash
 * of the id and a bounded probe of a fixed table, a new id inserted by CAS (a thread that meets
 * a slot being written waits for that one write to finish). Call it once per request and keep
 * the handle. Every recording function accepts a NULL family (metrics off) and does nothing.
 *
 * Threading: all recording functions and metrics_model from any thread. metrics_register from
 * one thread at a time (a family is published with a release store, so the exposition may run
 * meanwhile). metrics_render from any thread (the server's). metrics_free after the server
 * and every recording thread have stopped.
 * Lifetime: the registry owns its families; names, help and label values are not copied
 * (literals). */
#ifndef MM_METRICS_H
#define MM_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/buf.h"
#include "mm/error.h"

#define METRICS_DEFAULT_LISTEN "0.0.0.0:2112"
#define METRICS_DEFAULT_PER_MODEL 100u
#define METRICS_MAX_PER_MODEL 10000u /* the bound of --metrics-per-model */
#define METRICS_MAX_MODEL_ID 256u    /* longer model ids count under __other__ */
#define METRICS_OTHER_MODEL "__other__"
#define METRICS_MAX_FAMILIES 128u
#define METRICS_MAX_BUCKETS 32u
#define METRICS_MAX_VALUES 64u     /* values of the fixed label */
#define METRICS_MAX_CONNECTIONS 16u /* the server's bounds */
#define METRICS_IDLE_TIMEOUT_S 10u
#define METRICS_MEMORY_BYTES 16384u

/* The --help lines of the two flags, as the programs print them. */
#define METRICS_USAGE                                                                              \
    "  --metrics-listen ADDR        Prometheus GET /metrics; port 0 picks one, off disables it\n" \
    "                               (env MM_METRICS_LISTEN; default " METRICS_DEFAULT_LISTEN ")\n"  \
    "  --metrics-per-model N        at most N model ids get a modelId label, the rest are\n"       \
    "                               summed as __other__; 0: no modelId label (env\n"              \
    "                               MM_METRICS_PER_MODEL; default 100)\n"

/* ModelMesh's millisecond buckets (upper bounds), METRICS_MS_BUCKETS_N of them. */
#define METRICS_MS_BUCKETS_N 19u
extern const double metrics_ms_buckets[METRICS_MS_BUCKETS_N];

/* gRPC status names by number (0..16), as the code label renders them. */
#define METRICS_CODES 17u
extern const char *const metrics_code_names[METRICS_CODES];

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metrics;
struct metric;
struct metrics_server;

struct metric_desc {
    const char *name; /* [a-zA-Z_:][a-zA-Z0-9_:]*; counters should end in _total */
    const char *help;
    enum metric_type type;
    const char *label;          /* NULL, or the name of the fixed label (e.g. "method") */
    const char *const *values;  /* its values, nvalues of them (1..METRICS_MAX_VALUES) */
    unsigned nvalues;
    bool by_code;               /* the code label */
    bool by_model;              /* the modelId label (bounded; absent when per_model is 0) */
    const double *buckets;      /* histograms: ascending upper bounds, +Inf implied; NULL =
                                 * metrics_ms_buckets */
    unsigned nbuckets;          /* 1..METRICS_MAX_BUCKETS */
};

struct metrics_config {
    unsigned per_model; /* distinct model ids with a label, 0..METRICS_MAX_PER_MODEL */
};

/* A model id's label: 0 is __other__ (and the only value when per_model is 0). */
typedef uint32_t metric_model_t;
#define METRIC_MODEL_OTHER 0u

int metrics_new(const struct metrics_config *cfg, struct metrics **out, struct mm_error *err);
/* NULL is fine. */
void metrics_free(struct metrics *m);

/* Registers a family; *out stays valid until metrics_free. Registering a name again with the
 * same type and labels returns the family already there (two modules may both ask for it);
 * with a different shape it is -EEXIST. -EINVAL for a bad description, -ENOSPC past
 * METRICS_MAX_FAMILIES, -ENOMEM. m NULL: *out = NULL and 0 (metrics off). */
int metrics_register(struct metrics *m, const struct metric_desc *d, struct metric **out,
                     struct mm_error *err);

/* The label handle of model id id[0, len): the id's own while fewer than per_model ids have
 * one, else METRIC_MODEL_OTHER. m NULL: METRIC_MODEL_OTHER. Lock-free, allocation-free. */
metric_model_t metrics_model(struct metrics *m, const char *id, size_t len);

/* Recording. value: index into the fixed label's values (0 without one); code: gRPC status
 * number (0 without the code label); out-of-range indices are clamped to the last value (a
 * code above 16 renders as UNKNOWN). */
void metric_add(struct metric *c, metric_model_t model, unsigned value, unsigned code,
                uint64_t n);                                        /* counters */
void metric_set(struct metric *g, metric_model_t model, unsigned value, unsigned code,
                int64_t v);                                         /* gauges */
void metric_gauge_add(struct metric *g, metric_model_t model, unsigned value, unsigned code,
                      int64_t delta);                               /* gauges */
void metric_observe(struct metric *h, metric_model_t model, unsigned value, unsigned code,
                    double v); /* histograms; the sum is kept in thousandths of the unit */

/* Shorthands for a family without labels. */
static inline void metric_inc0(struct metric *c)
{
    metric_add(c, METRIC_MODEL_OTHER, 0, 0, 1);
}
static inline void metric_set0(struct metric *g, int64_t v)
{
    metric_set(g, METRIC_MODEL_OTHER, 0, 0, v);
}
static inline void metric_observe0(struct metric *h, double v)
{
    metric_observe(h, METRIC_MODEL_OTHER, 0, 0, v);
}

/* Appends the exposition (text format 0.0.4) of every family to out. 0 or -ENOMEM. */
int metrics_render(struct metrics *m, struct mm_buf *out);

/* Serves GET|HEAD /metrics from m on listen (httpd.h addresses) from a thread of its own;
 * *port is the bound port. Other paths 404, other methods 405. */
int metrics_server_new(struct metrics *m, const char *listen, struct metrics_server **out,
                       int *port, struct mm_error *err);
/* NULL is fine. Stops the server before the registry may be freed. */
void metrics_server_free(struct metrics_server *s);

/* Parses --metrics-per-model's value (0..METRICS_MAX_PER_MODEL). */
int metrics_parse_per_model(const char *s, unsigned *out, struct mm_error *err);

/* The programs' two flags, as given (strings). */
struct metrics_opts {
    const char *listen;    /* --metrics-listen */
    const char *per_model; /* --metrics-per-model */
};
/* From env MM_METRICS_LISTEN and MM_METRICS_PER_MODEL, else the defaults. */
void metrics_opts_init(struct metrics_opts *o);
/* The registry and its server as o says: with listen "off", *reg and *srv are NULL (nothing is
 * recorded) and 0 is returned; else *port is the bound port. 0 or -errno with err naming the
 * flag. */
int metrics_start(const struct metrics_opts *o, struct metrics **reg, struct metrics_server **srv,
                  int *port, struct mm_error *err);

#endif
