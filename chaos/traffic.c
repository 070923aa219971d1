/* traffic.c - the chaos load: open-loop ModelInfer calls per model on one channel, each answer
 * checked, counted per phase and class (see traffic.h). */
#include "traffic.h"

#include <errno.h>
#include <ev.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grpc_predict_v2.pb-c.h"
#include "mm/error.h"
#include "mm/log.h"
#include "mm/rpc.h"

#define INFER "/inference.GRPCInferenceService/ModelInfer"
#define TICK_S 0.005       /* the sending timer */
#define WATCH_S 0.05       /* the hung-call watchdog */
#define HUNG_SLACK_MS 2000 /* past the deadline, a call with no callback is hung */
#define HELD_MS 1000.0     /* a model further behind than this restarts from now */
#define MAX_FEATURES 4096
#define MAX_IN_FLIGHT 65536
#define NAME_MAX_LEN 63

/* ---------------------------------------------------------------- the histogram */

#define HIST_UNITS_PER_MS 10000.0 /* units of 100 ns */
#define HIST_CLAMP_MS 120000.0
#define HIST_LINEAR 128 /* exact below this many units */
#define HIST_SUB 64     /* sub-buckets per power of two above */

static size_t hist_index(uint64_t x)
{
    if (x < HIST_LINEAR)
        return (size_t)x;
    unsigned msb = 63u - (unsigned)__builtin_clzll(x);
    unsigned shift = msb - 6; /* x >> shift in [64, 128) */
    return (size_t)HIST_SUB * shift + (size_t)(x >> shift);
}

/* The bucket's lower bound and width, in units. */
static void hist_bounds(size_t i, double *lo, double *width)
{
    if (i < HIST_LINEAR) {
        *lo = (double)i;
        *width = 1;
        return;
    }
    size_t shift = i / HIST_SUB - 1;
    size_t sub = i - HIST_SUB * shift;
    *lo = (double)((uint64_t)sub << shift);
    *width = (double)((uint64_t)1 << shift);
}

void traffic_histogram_add(struct traffic_histogram *h, double ms)
{
    if (!(ms >= 0)) /* NaN or negative: a clock step; counted as 0 */
        ms = 0;
    if (ms > h->max_ms || h->count == 0)
        h->max_ms = ms;
    double clamped = ms > HIST_CLAMP_MS ? HIST_CLAMP_MS : ms;
    size_t i = hist_index((uint64_t)(clamped * HIST_UNITS_PER_MS));
    if (i >= TRAFFIC_HIST_BUCKETS)
        i = TRAFFIC_HIST_BUCKETS - 1;
    h->buckets[i]++;
    h->count++;
}

double traffic_histogram_percentile(const struct traffic_histogram *h, double q)
{
    if (h->count == 0)
        return 0;
    if (!(q > 0))
        q = 0;
    if (q > 1)
        q = 1;
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < TRAFFIC_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            double lo, width;
            hist_bounds(i, &lo, &width);
            double ms = (lo + width / 2) / HIST_UNITS_PER_MS;
            return ms < h->max_ms ? ms : h->max_ms;
        }
    }
    return h->max_ms;
}

/* ---------------------------------------------------------------- state */

struct served {      /* an OK, right answer */
    int32_t sent_ms; /* since traffic_start */
    int32_t at_ms;
};

struct model {
    char name[NAME_MAX_LEN + 1];
    size_t name_len;
    float expected;
    enum traffic_class cls;
    double rate;
    double offset;  /* of the period, in [0, 1): the seed's spread */
    double next_ms; /* when the next call is due, since start */
    grpc_byte_buffer *request;
    struct served *served; /* TRAFFIC_SERVED_KEEP, a ring */
    size_t n_served;       /* ever: the next goes at n_served % TRAFFIC_SERVED_KEEP */
};

struct call { /* a slot of the in-flight bound */
    struct traffic *t;
    struct rpc_request *req;
    size_t model;
    uint64_t phase; /* the sequence number of the phase it was sent in */
    int64_t sent_ns;
    bool busy, hung;
};

struct phase {
    struct traffic_phase_report rep; /* percentiles filled when asked */
    struct traffic_histogram hist[TRAFFIC_CLASSES];
};

struct traffic {
    struct rpc_context *rpc;
    struct ev_loop *loop;
    struct rpc_channel *ch;
    char target[128];
    long deadline_ms;
    size_t max_in_flight;
    struct model *models;
    size_t n_models;
    struct call *calls;
    size_t *free_calls; /* a stack of indices into calls */
    size_t n_free;
    struct phase *phases; /* TRAFFIC_MAX_PHASES, a ring indexed by sequence number */
    uint64_t phase_seq;   /* the current phase's; phases before seq - MAX + 1 are gone */
    int64_t t0_ns;
    int64_t last_tick_ns; /* for held_ms */
    bool started, stopped;
    ev_timer tick, watch;
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double since_start_ms(const struct traffic *t, int64_t ns)
{
    return t->started ? (double)(ns - t->t0_ns) / 1e6 : 0;
}

int64_t traffic_now_ms(const struct traffic *t)
{
    return (int64_t)since_start_ms(t, mono_ns());
}

/* The phase of sequence number seq, or NULL if it was dropped. */
static struct phase *phase_of(struct traffic *t, uint64_t seq)
{
    if (seq > t->phase_seq || t->phase_seq - seq >= TRAFFIC_MAX_PHASES)
        return NULL;
    return &t->phases[seq % TRAFFIC_MAX_PHASES];
}

static void begin_phase(struct traffic *t, const char *label, int64_t now_ms)
{
    struct phase *p = &t->phases[t->phase_seq % TRAFFIC_MAX_PHASES];
    memset(p, 0, sizeof(*p));
    snprintf(p->rep.label, sizeof(p->rep.label), "%s", label ? label : "");
    p->rep.start_ms = now_ms;
    p->rep.end_ms = -1; /* open */
}

static void keep_failure(struct phase *p, const struct model *m, int code, const char *details,
                         int64_t at_ms)
{
    if (!p || p->rep.n_failures >= TRAFFIC_KEEP)
        return;
    struct traffic_failure *f = &p->rep.failures[p->rep.n_failures++];
    snprintf(f->model, sizeof(f->model), "%s", m->name);
    f->code = (grpc_status_code)code;
    snprintf(f->details, sizeof(f->details), "%s", details ? details : "");
    f->at_ms = at_ms;
}

/* ---------------------------------------------------------------- requests and answers */

static grpc_byte_buffer *encode_request(const char *name, const float *row, size_t n_features)
{
    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    Inference__ModelInferRequest__InferInputTensor in =
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    Inference__ModelInferRequest__InferInputTensor *ins[1] = {&in};
    Inference__InferTensorContents contents = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    int64_t shape[2] = {1, (int64_t)n_features};
    contents.fp32_contents = (float *)row;
    contents.n_fp32_contents = n_features;
    in.name = "input-0";
    in.datatype = "FP32";
    in.shape = shape;
    in.n_shape = 2;
    in.contents = &contents;
    req.model_name = (char *)name;
    req.id = "chaos";
    req.inputs = ins;
    req.n_inputs = 1;
    return rpc_encode(&req.base);
}

/* Whether an answer names model m: its id, or the concrete id of the InferenceService m
 * ("<m>__isvc-<hash>", as the controller names it). */
static bool names_model(const struct model *m, const char *answered)
{
    size_t n = strlen(answered);
    if (n == m->name_len)
        return memcmp(answered, m->name, n) == 0;
    return n > m->name_len + 2 && memcmp(answered, m->name, m->name_len) == 0 &&
           answered[m->name_len] == '_' && answered[m->name_len + 1] == '_';
}

/* Whether an OK response is m's right answer; why says what was wrong if not. */
static bool right_answer(const struct model *m, grpc_byte_buffer *response, char *why, size_t size)
{
    if (!response) {
        snprintf(why, size, "OK without a response message");
        return false;
    }
    ProtobufCMessage *msg = NULL;
    struct mm_error err = {0};
    if (rpc_decode(response, &inference__model_infer_response__descriptor, &msg, &err) < 0) {
        snprintf(why, size, "%.150s", err.msg);
        return false;
    }
    const Inference__ModelInferResponse *r = (const Inference__ModelInferResponse *)msg;
    bool ok = false;
    size_t i = 0;
    while (i < r->n_outputs && strcmp(r->outputs[i]->name, "predict") != 0)
        i++;
    float v = 0;
    bool have = false;
    if (!names_model(m, r->model_name)) {
        snprintf(why, size, "answered for model '%.60s'", r->model_name);
        goto out;
    }
    if (i == r->n_outputs) {
        snprintf(why, size, "no output named predict (%zu outputs)", r->n_outputs);
        goto out;
    }
    if (strcmp(r->outputs[i]->datatype, "FP32") != 0) {
        snprintf(why, size, "predict is %.20s, not FP32", r->outputs[i]->datatype);
        goto out;
    }
    if (r->n_raw_output_contents > 0) {
        if (i < r->n_raw_output_contents && r->raw_output_contents[i].len >= sizeof(float)) {
            memcpy(&v, r->raw_output_contents[i].data, sizeof(float));
            have = true;
        }
    } else if (r->outputs[i]->contents && r->outputs[i]->contents->n_fp32_contents > 0) {
        v = r->outputs[i]->contents->fp32_contents[0];
        have = true;
    }
    if (!have) {
        snprintf(why, size, "predict has no value");
        goto out;
    }
    if (!(fabs((double)v - (double)m->expected) <= 1e-6)) {
        snprintf(why, size, "predict[0] = %.9g, expected %.9g", (double)v, (double)m->expected);
        goto out;
    }
    ok = true;
out:
    protobuf_c_message_free_unpacked(msg, NULL);
    return ok;
}

static void count_hung(struct traffic *t, struct call *c, int64_t at_ns)
{
    struct model *m = &t->models[c->model];
    struct phase *p = phase_of(t, c->phase);
    c->hung = true;
    if (!p)
        return;
    p->rep.cls[m->cls].hung++;
    char why[160];
    snprintf(why, sizeof(why), "no answer %lld ms after it was sent (deadline %ld ms)",
             (long long)((at_ns - c->sent_ns) / 1000000), t->deadline_ms);
    keep_failure(p, m, -2, why, (int64_t)since_start_ms(t, at_ns));
}

static void release(struct traffic *t, struct call *c)
{
    c->busy = false;
    c->req = NULL;
    t->free_calls[t->n_free++] = (size_t)(c - t->calls);
}

static void on_reply(grpc_status_code status, const char *details, grpc_byte_buffer *response,
                     void *arg)
{
    struct call *c = arg;
    struct traffic *t = c->t;
    int64_t now = mono_ns();
    struct model *m = &t->models[c->model];
    struct phase *p = phase_of(t, c->phase);
    double lat_ms = (double)(now - c->sent_ns) / 1e6;
    int64_t at_ms = (int64_t)since_start_ms(t, now);
    if (!c->hung && lat_ms > (double)(t->deadline_ms + HUNG_SLACK_MS))
        count_hung(t, c, now); /* the callback came, but too late: the loop was held */
    char why[160];
    bool right = status == GRPC_STATUS_OK && right_answer(m, response, why, sizeof(why));
    if (p) {
        struct traffic_stats *s = &p->rep.cls[m->cls];
        if (!c->hung) {
            int code =
                (int)status >= 0 && (int)status < TRAFFIC_CODES ? (int)status : GRPC_STATUS_UNKNOWN;
            s->by_code[code]++;
            traffic_histogram_add(&p->hist[m->cls], lat_ms);
            if (status != GRPC_STATUS_OK)
                keep_failure(p, m, status, details, at_ms);
        }
        if (status == GRPC_STATUS_OK && !right) { /* a wrong answer is a breach, even late */
            s->wrong++;
            keep_failure(p, m, -1, why, at_ms);
        }
    }
    if (right) {
        struct served *e = &m->served[m->n_served++ % TRAFFIC_SERVED_KEEP];
        e->sent_ms = (int32_t)since_start_ms(t, c->sent_ns);
        e->at_ms = (int32_t)at_ms;
    }
    if (response)
        grpc_byte_buffer_destroy(response);
    release(t, c);
}

static void send_call(struct traffic *t, size_t k, int64_t now)
{
    struct model *m = &t->models[k];
    struct phase *p = phase_of(t, t->phase_seq);
    struct traffic_stats *s = &p->rep.cls[m->cls];
    if (t->n_free == 0) {
        s->skipped++;
        return;
    }
    struct call *c = &t->calls[t->free_calls[--t->n_free]];
    *c = (struct call){.t = t, .model = k, .phase = t->phase_seq, .sent_ns = now, .busy = true};
    s->sent++;
    int rc =
        rpc_unary(t->ch, INFER, m->request, NULL, 0, t->deadline_ms, NULL, on_reply, c, &c->req);
    if (rc < 0) { /* not started: no callback; counted as failed here */
        char why[160];
        snprintf(why, sizeof(why), "rpc_unary to %s: %s", t->target, mm_strerror(rc));
        s->by_code[GRPC_STATUS_INTERNAL]++;
        keep_failure(p, m, GRPC_STATUS_INTERNAL, why, (int64_t)since_start_ms(t, now));
        release(t, c);
    }
}

/* The time since the last tick, if it is the phase's longest. */
static void note_held(struct traffic *t, int64_t now)
{
    struct phase *p = phase_of(t, t->phase_seq);
    int64_t gap_ms = (now - t->last_tick_ns) / 1000000;
    if (gap_ms > p->rep.held_ms)
        p->rep.held_ms = gap_ms;
    t->last_tick_ns = now;
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct traffic *t = w->data;
    int64_t now = mono_ns();
    double now_ms = since_start_ms(t, now);
    note_held(t, now);
    for (size_t k = 0; k < t->n_models; k++) {
        struct model *m = &t->models[k];
        if (m->rate <= 0)
            continue;
        double period = 1000.0 / m->rate;
        if (m->next_ms < now_ms - HELD_MS)
            m->next_ms = now_ms; /* the loop was held: no burst to catch up */
        while (m->next_ms <= now_ms) {
            send_call(t, k, now);
            m->next_ms += period;
        }
    }
}

static void on_watch(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct traffic *t = w->data;
    int64_t now = mono_ns();
    int64_t bound_ns = (int64_t)(t->deadline_ms + HUNG_SLACK_MS) * 1000000;
    for (size_t i = 0; i < t->max_in_flight; i++) {
        struct call *c = &t->calls[i];
        if (c->busy && !c->hung && now - c->sent_ns > bound_ns)
            count_hung(t, c, now);
    }
}

/* ---------------------------------------------------------------- the API */

static uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

static int invalid(const char *what)
{
    mm_log(MM_LOG_ERROR, "traffic", "traffic_new: %s", what);
    return -EINVAL;
}

int traffic_new(struct rpc_context *rpc, const struct traffic_config *cfg, struct traffic **out)
{
    char what[256];
    *out = NULL;
    if (!rpc || !cfg)
        return invalid("no rpc context or no config");
    if (!cfg->target || !cfg->target[0] ||
        strlen(cfg->target) >= sizeof(((struct traffic *)0)->target))
        return invalid("target missing or longer than 127 bytes");
    if (!cfg->models || cfg->n_models < 1 || cfg->n_models > TRAFFIC_MAX_MODELS) {
        snprintf(what, sizeof(what), "n_models %zu not in 1..%d", cfg->n_models,
                 TRAFFIC_MAX_MODELS);
        return invalid(what);
    }
    if (!cfg->row || cfg->n_features < 1 || cfg->n_features > MAX_FEATURES) {
        snprintf(what, sizeof(what), "row missing or n_features %zu not in 1..%d", cfg->n_features,
                 MAX_FEATURES);
        return invalid(what);
    }
    if (cfg->deadline_ms < 0 || cfg->max_in_flight > MAX_IN_FLIGHT) {
        snprintf(what, sizeof(what), "deadline_ms %ld < 0 or max_in_flight %zu > %d",
                 cfg->deadline_ms, cfg->max_in_flight, MAX_IN_FLIGHT);
        return invalid(what);
    }
    for (size_t k = 0; k < cfg->n_models; k++) {
        const struct traffic_model *tm = &cfg->models[k];
        if (!tm->name || !tm->name[0] || strlen(tm->name) > NAME_MAX_LEN ||
            (unsigned)tm->cls >= TRAFFIC_CLASSES || !(tm->rate > 0) || !isfinite(tm->expected)) {
            snprintf(what, sizeof(what),
                     "model %zu ('%.64s'): a name of 1..%d bytes, a class, a rate > 0 and a "
                     "finite expected value are required",
                     k, tm->name ? tm->name : "(null)", NAME_MAX_LEN);
            return invalid(what);
        }
    }

    int rc = -ENOMEM;
    struct traffic *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->rpc = rpc;
    t->loop = rpc_context_loop(rpc);
    snprintf(t->target, sizeof(t->target), "%s", cfg->target);
    t->deadline_ms = cfg->deadline_ms ? cfg->deadline_ms : 5000;
    t->max_in_flight = cfg->max_in_flight ? cfg->max_in_flight : 256;
    t->n_models = cfg->n_models;
    t->models = calloc(t->n_models, sizeof(*t->models));
    t->calls = calloc(t->max_in_flight, sizeof(*t->calls));
    t->free_calls = calloc(t->max_in_flight, sizeof(*t->free_calls));
    t->phases = calloc(TRAFFIC_MAX_PHASES, sizeof(*t->phases));
    if (!t->models || !t->calls || !t->free_calls || !t->phases)
        goto fail;
    for (size_t i = 0; i < t->max_in_flight; i++)
        t->free_calls[t->n_free++] = t->max_in_flight - 1 - i;
    for (size_t k = 0; k < t->n_models; k++) {
        const struct traffic_model *tm = &cfg->models[k];
        struct model *m = &t->models[k];
        m->name_len = strlen(tm->name);
        memcpy(m->name, tm->name, m->name_len + 1);
        m->expected = tm->expected;
        m->cls = tm->cls;
        m->rate = tm->rate;
        /* a low-discrepancy sequence from the seed's start: even, not clustered */
        double u = mix(cfg->seed) / 4294967296.0 + (double)k * 0.6180339887498949;
        m->offset = u - floor(u);
        m->served = calloc(TRAFFIC_SERVED_KEEP, sizeof(*m->served));
        m->request = encode_request(m->name, cfg->row, cfg->n_features);
        if (!m->served || !m->request)
            goto fail;
    }
    struct mm_error err = {0};
    rc = rpc_channel_new(rpc, t->target, 0, &t->ch, &err);
    if (rc < 0) {
        mm_log(MM_LOG_ERROR, "traffic", "traffic_new: channel to %s: %s", t->target, err.msg);
        goto fail;
    }
    begin_phase(t, "before", 0);
    ev_timer_init(&t->tick, on_tick, TICK_S, TICK_S);
    t->tick.data = t;
    ev_timer_init(&t->watch, on_watch, WATCH_S, WATCH_S);
    t->watch.data = t;
    *out = t;
    return 0;
fail:
    traffic_free(t);
    return rc;
}

int traffic_start(struct traffic *t)
{
    if (t->started)
        return -EALREADY;
    t->started = true;
    t->t0_ns = mono_ns();
    t->last_tick_ns = t->t0_ns;
    for (size_t k = 0; k < t->n_models; k++) {
        struct model *m = &t->models[k];
        m->next_ms = m->offset * 1000.0 / m->rate;
    }
    begin_phase(t, "before", 0);
    ev_timer_start(t->loop, &t->tick);
    ev_timer_start(t->loop, &t->watch);
    return 0;
}

void traffic_phase(struct traffic *t, const char *label)
{
    if (t->started && !t->stopped)
        note_held(t, mono_ns()); /* a stall before the call is the ending phase's */
    int64_t now = traffic_now_ms(t);
    struct phase *p = phase_of(t, t->phase_seq);
    p->rep.end_ms = now;
    t->phase_seq++;
    begin_phase(t, label, now);
}

void traffic_stop(struct traffic *t)
{
    if (!t->started || t->stopped)
        return;
    ev_timer_stop(t->loop, &t->tick);
    note_held(t, mono_ns());
    int64_t until = mono_ns() + (int64_t)(t->deadline_ms + HUNG_SLACK_MS) * 1000000;
    /* the watchdog wakes the loop at least every WATCH_S */
    while (t->n_free < t->max_in_flight && mono_ns() < until)
        ev_run(t->loop, EVRUN_ONCE);
    int64_t now = mono_ns();
    for (size_t i = 0; i < t->max_in_flight; i++) {
        struct call *c = &t->calls[i];
        if (!c->busy)
            continue;
        if (!c->hung)
            count_hung(t, c, now);
        rpc_request_cancel(c->req);
        release(t, c);
    }
    ev_timer_stop(t->loop, &t->watch);
    phase_of(t, t->phase_seq)->rep.end_ms = (int64_t)since_start_ms(t, now);
    t->stopped = true;
}

size_t traffic_phases(const struct traffic *t, struct traffic_phase_report *out, size_t max)
{
    uint64_t first = t->phase_seq >= TRAFFIC_MAX_PHASES ? t->phase_seq - TRAFFIC_MAX_PHASES + 1 : 0;
    size_t n = 0;
    int64_t now = traffic_now_ms(t);
    for (uint64_t seq = first; seq <= t->phase_seq && n < max; seq++) {
        const struct phase *p = &t->phases[seq % TRAFFIC_MAX_PHASES];
        out[n] = p->rep;
        if (out[n].end_ms < 0)
            out[n].end_ms = now;
        for (int c = 0; c < TRAFFIC_CLASSES; c++) {
            out[n].cls[c].p50_ms = traffic_histogram_percentile(&p->hist[c], 0.50);
            out[n].cls[c].p99_ms = traffic_histogram_percentile(&p->hist[c], 0.99);
            out[n].cls[c].max_ms = p->hist[c].count ? p->hist[c].max_ms : 0;
        }
        n++;
    }
    return n;
}

int64_t traffic_all_served_since(const struct traffic *t, int64_t since_ms)
{
    int64_t latest = -1;
    bool any = false;
    for (size_t k = 0; k < t->n_models; k++) {
        const struct model *m = &t->models[k];
        if (m->rate <= 0)
            continue;
        any = true;
        size_t kept = m->n_served < TRAFFIC_SERVED_KEEP ? m->n_served : TRAFFIC_SERVED_KEEP;
        int64_t first = -1;
        for (size_t i = 0; i < kept; i++) {
            const struct served *e = &m->served[i];
            if (e->sent_ms >= since_ms && (first < 0 || e->at_ms < first))
                first = e->at_ms;
        }
        if (first < 0)
            return -1;
        if (first > latest)
            latest = first;
    }
    return any ? latest : since_ms;
}

void traffic_set_rate(struct traffic *t, size_t k, double rate)
{
    if (k >= t->n_models)
        return;
    struct model *m = &t->models[k];
    double now_ms = (double)traffic_now_ms(t);
    if (!(rate > 0)) {
        m->rate = 0;
        return;
    }
    double period = 1000.0 / rate;
    if (m->rate <= 0)
        m->next_ms = now_ms + m->offset * period; /* resumed: spread again */
    else if (m->next_ms > now_ms + period)
        m->next_ms = now_ms + period;
    m->rate = rate;
}

void traffic_free(struct traffic *t)
{
    if (!t)
        return;
    if (t->loop) {
        ev_timer_stop(t->loop, &t->tick);
        ev_timer_stop(t->loop, &t->watch);
    }
    if (t->calls)
        for (size_t i = 0; i < t->max_in_flight; i++)
            if (t->calls[i].busy)
                rpc_request_cancel(t->calls[i].req);
    if (t->ch)
        rpc_channel_free(t->ch);
    if (t->models)
        for (size_t k = 0; k < t->n_models; k++) {
            if (t->models[k].request)
                grpc_byte_buffer_destroy(t->models[k].request);
            free(t->models[k].served);
        }
    free(t->models);
    free(t->calls);
    free(t->free_calls);
    free(t->phases);
    free(t);
}
