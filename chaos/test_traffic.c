/* test_traffic.c - the chaos load against a real mm-runtime (two copies of the breast-cancer
 * XGBoost model loaded through the SPI), and against a server of the test's own whose answer
 * delays are known:
 *   - right answers: every call OK, none wrong, hung or skipped, counts near rate x time and
 *     split by phase, the phases' bounds, traffic_all_served_since;
 *   - a wrong expected value: every answer counted wrong (and kept as such), never served;
 *   - an unknown model: NOT_FOUND by code;
 *   - the runtime SIGSTOPped: DEADLINE_EXCEEDED for the calls of the phase (but those still
 *     within their deadline at SIGCONT), none hung, the max_in_flight bound reached and the
 *     calls due then counted skipped; served again after SIGCONT;
 *   - the loop held past deadline + 2 s: the calls out then are counted hung, not by code, no
 *     burst of calls follows, and the phase says how long the loop was held;
 *   - p50 / p99 / max against the exact percentiles of the delays the test server applied; an
 *     answer naming the InferenceService's concrete id is right, one naming another model is
 *     wrong; raw_output_contents read; the calls of many models spread over time, not bursts.
 * argv: MM_RUNTIME MAKE_BREAST_CANCER */
#include <errno.h>
#include <ev.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "mm/rpc.h"
#include "rtclient.h"
#include "traffic.h"

#define FEATURES 30

static struct rt_client rc;
static pid_t runtime_pid;
static float row[FEATURES];
static float expected;

static void make_model(const char *maker, const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s' '%s'", maker, dir);
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    char line[4096];
    bool got_expected = false, got_row = false;
    while (fgets(line, sizeof(line), p)) {
        if (sscanf(line, "expected predict[0] = %f", &expected) == 1)
            got_expected = true;
        if (strncmp(line, "row[0] =", 8) == 0) {
            char *s = line + 8;
            int j = 0;
            for (char *end; j < FEATURES; j++, s = end) {
                row[j] = strtof(s, &end);
                if (end == s)
                    break;
            }
            got_row = j == FEATURES;
        }
    }
    REQUIRE(pclose(p) == 0);
    REQUIRE(got_expected && got_row);
}

static void run_ms(long long ms)
{
    harness_run_until(rc.loop, NULL, NULL, ms);
}

static struct traffic *start(const char *target, const struct traffic_model *models, size_t n,
                             long deadline_ms, size_t max_in_flight)
{
    struct traffic_config cfg = {.target = target,
                                 .models = models,
                                 .n_models = n,
                                 .row = row,
                                 .n_features = FEATURES,
                                 .deadline_ms = deadline_ms,
                                 .max_in_flight = max_in_flight,
                                 .seed = 7};
    struct traffic *t = NULL;
    REQUIRE(traffic_new(rc.ctx, &cfg, &t) == 0);
    REQUIRE(traffic_start(t) == 0);
    return t;
}

static uint64_t answered(const struct traffic_stats *s)
{
    uint64_t n = 0;
    for (int c = 0; c < TRAFFIC_CODES; c++)
        n += s->by_code[c];
    return n;
}

static void print_phase(const char *what, const struct traffic_phase_report *p)
{
    for (int c = 0; c < TRAFFIC_CLASSES; c++) {
        const struct traffic_stats *s = &p->cls[c];
        if (!s->sent && !s->skipped)
            continue;
        fprintf(stderr,
                "%s [%s %lld..%lld ms] %s: sent %llu OK %llu wrong %llu hung %llu skipped %llu "
                "NOT_FOUND %llu DEADLINE_EXCEEDED %llu; p50 %.2f p99 %.2f max %.2f ms\n",
                what, p->label, (long long)p->start_ms, (long long)p->end_ms,
                c == TRAFFIC_MULTI ? "multi" : "single", (unsigned long long)s->sent,
                (unsigned long long)s->by_code[GRPC_STATUS_OK], (unsigned long long)s->wrong,
                (unsigned long long)s->hung, (unsigned long long)s->skipped,
                (unsigned long long)s->by_code[GRPC_STATUS_NOT_FOUND],
                (unsigned long long)s->by_code[GRPC_STATUS_DEADLINE_EXCEEDED], s->p50_ms, s->p99_ms,
                s->max_ms);
    }
    for (size_t i = 0; i < p->n_failures && i < 2; i++)
        fprintf(stderr, "  failure: %s code %d at %lld ms: %s\n", p->failures[i].model,
                (int)p->failures[i].code, (long long)p->failures[i].at_ms, p->failures[i].details);
}

static bool near(uint64_t got, double want)
{
    bool ok = (double)got >= want * 0.8 - 1 && (double)got <= want * 1.2 + 1;
    if (!ok)
        fprintf(stderr, "  %llu calls, expected about %.0f\n", (unsigned long long)got, want);
    return ok;
}

/* Right answers, two classes, two phases. */
static void right_answers(void)
{
    fprintf(stderr, "--- right answers\n");
    const struct traffic_model models[] = {{"bc-a", expected, TRAFFIC_MULTI, 40},
                                           {"bc-b", expected, TRAFFIC_SINGLE, 20}};
    struct traffic *t = start(rc.target, models, 2, 5000, 0);
    run_ms(1500);
    int64_t since = traffic_now_ms(t);
    traffic_phase(t, "after");
    run_ms(1500);
    int64_t served = traffic_all_served_since(t, since);
    traffic_stop(t);
    struct traffic_phase_report ph[4];
    size_t n = traffic_phases(t, ph, 4);
    REQUIRE(n == 2);
    CHECK_STR(ph[0].label, "before");
    CHECK_STR(ph[1].label, "after");
    CHECK_INT(ph[0].start_ms, 0);
    CHECK(ph[0].end_ms >= 1450 && ph[0].end_ms <= 1700);
    CHECK_INT(ph[1].start_ms, ph[0].end_ms);
    CHECK(ph[1].end_ms >= ph[1].start_ms + 1450);
    for (size_t i = 0; i < n; i++) {
        print_phase("right", &ph[i]);
        double secs = (double)(ph[i].end_ms - ph[i].start_ms) / 1000;
        CHECK(near(ph[i].cls[TRAFFIC_MULTI].sent, 40 * secs));
        CHECK(near(ph[i].cls[TRAFFIC_SINGLE].sent, 20 * secs));
        for (int c = 0; c < TRAFFIC_CLASSES; c++) {
            const struct traffic_stats *s = &ph[i].cls[c];
            CHECK_INT(s->by_code[GRPC_STATUS_OK], s->sent);
            CHECK_INT(answered(s), s->sent);
            CHECK_INT(s->wrong, 0);
            CHECK_INT(s->hung, 0);
            CHECK_INT(s->skipped, 0);
            CHECK(s->p50_ms > 0 && s->p50_ms <= s->p99_ms && s->p99_ms <= s->max_ms);
            CHECK(s->max_ms < 1000);
        }
        CHECK_INT(ph[i].n_failures, 0);
        CHECK(ph[i].held_ms < 1000);
    }
    /* every model served after `since`: within a period of the slowest model plus latency */
    fprintf(stderr, "all served since %lld ms: at %lld ms\n", (long long)since, (long long)served);
    CHECK(served >= since && served <= since + 1000 / 20 + 500);
    int64_t from0 = traffic_all_served_since(t, 0);
    CHECK(from0 >= 0 && from0 <= 1000 / 20 + 500);
    CHECK_INT(traffic_all_served_since(t, traffic_now_ms(t) + 1000), -1);
    /* a model paused is left out of it */
    traffic_set_rate(t, 1, 0);
    CHECK(traffic_all_served_since(t, 0) >= 0);
    traffic_free(t);
}

/* A wrong expected value: every answer is wrong. */
static void wrong_answers(void)
{
    fprintf(stderr, "--- wrong expected value\n");
    const struct traffic_model models[] = {{"bc-a", expected + 0.001f, TRAFFIC_SINGLE, 30}};
    struct traffic *t = start(rc.target, models, 1, 5000, 0);
    run_ms(1000);
    traffic_stop(t);
    struct traffic_phase_report ph[2];
    REQUIRE(traffic_phases(t, ph, 2) == 1);
    print_phase("wrong", &ph[0]);
    const struct traffic_stats *s = &ph[0].cls[TRAFFIC_SINGLE];
    CHECK(near(s->sent, 30));
    CHECK_INT(s->by_code[GRPC_STATUS_OK], s->sent);
    CHECK_INT(s->wrong, s->sent);
    CHECK_INT(ph[0].cls[TRAFFIC_MULTI].sent, 0);
    CHECK_INT(ph[0].n_failures, s->sent < TRAFFIC_KEEP ? s->sent : TRAFFIC_KEEP);
    CHECK_INT(ph[0].failures[0].code, -1);
    CHECK_STR(ph[0].failures[0].model, "bc-a");
    CHECK(strstr(ph[0].failures[0].details, "expected") != NULL);
    CHECK_INT(traffic_all_served_since(t, 0), -1);
    traffic_free(t);
}

/* An unknown model: NOT_FOUND. */
static void unknown_model(void)
{
    fprintf(stderr, "--- unknown model\n");
    const struct traffic_model models[] = {{"no-such-model", expected, TRAFFIC_SINGLE, 20}};
    struct traffic *t = start(rc.target, models, 1, 5000, 0);
    run_ms(1000);
    traffic_stop(t);
    struct traffic_phase_report ph[2];
    REQUIRE(traffic_phases(t, ph, 2) == 1);
    print_phase("unknown", &ph[0]);
    const struct traffic_stats *s = &ph[0].cls[TRAFFIC_SINGLE];
    CHECK(near(s->sent, 20));
    CHECK_INT(s->by_code[GRPC_STATUS_NOT_FOUND], s->sent);
    CHECK_INT(s->wrong, 0);
    CHECK(ph[0].n_failures > 0);
    CHECK_INT(ph[0].failures[0].code, GRPC_STATUS_NOT_FOUND);
    CHECK_STR(ph[0].failures[0].model, "no-such-model");
    CHECK_INT(traffic_all_served_since(t, 0), -1);
    traffic_free(t);
}

/* The runtime frozen: every call of the phase ends DEADLINE_EXCEEDED, none hangs; the bound on
 * calls in flight is reached and what is due meanwhile is skipped; thawed, it serves again. */
static void frozen(void)
{
    fprintf(stderr, "--- runtime SIGSTOPped\n");
    const long deadline = 400;
    const struct traffic_model models[] = {{"bc-a", expected, TRAFFIC_MULTI, 50}};
    struct traffic *t = start(rc.target, models, 1, deadline, 8);
    run_ms(500);
    REQUIRE(harness_freeze(runtime_pid) == 0);
    traffic_phase(t, "fault");
    run_ms(1500);
    traffic_phase(t, "after");
    int64_t thawed = traffic_now_ms(t);
    kill(runtime_pid, SIGCONT);
    run_ms(1500);
    int64_t served = traffic_all_served_since(t, thawed);
    traffic_stop(t);
    struct traffic_phase_report ph[4];
    REQUIRE(traffic_phases(t, ph, 4) == 3);
    for (size_t i = 0; i < 3; i++) {
        print_phase("frozen", &ph[i]);
        const struct traffic_stats *s = &ph[i].cls[TRAFFIC_MULTI];
        CHECK_INT(s->hung, 0);
        CHECK_INT(s->wrong, 0);
        CHECK_INT(answered(s), s->sent);
    }
    CHECK(ph[0].cls[TRAFFIC_MULTI].by_code[GRPC_STATUS_OK] > 0);
    const struct traffic_stats *f = &ph[1].cls[TRAFFIC_MULTI];
    CHECK(f->sent > 0);
    /* the calls still within their deadline at SIGCONT (at most max_in_flight) are answered */
    CHECK(f->by_code[GRPC_STATUS_DEADLINE_EXCEEDED] > 0);
    CHECK(f->by_code[GRPC_STATUS_OK] <= 8);
    CHECK_INT(f->by_code[GRPC_STATUS_DEADLINE_EXCEEDED] + f->by_code[GRPC_STATUS_OK], f->sent);
    CHECK(f->skipped > 0);
    CHECK(f->sent + f->skipped >= 50 * 1.5 * 0.8);
    /* every call of the phase waited its deadline, and not much longer */
    CHECK(f->p50_ms >= deadline * 0.98 && f->p50_ms <= deadline + 300);
    CHECK(f->max_ms >= deadline && f->max_ms < deadline + 1000);
    CHECK(ph[1].n_failures > 0);
    CHECK_INT(ph[1].failures[0].code, GRPC_STATUS_DEADLINE_EXCEEDED);
    const struct traffic_stats *a = &ph[2].cls[TRAFFIC_MULTI];
    CHECK(a->by_code[GRPC_STATUS_OK] > 0 && a->by_code[GRPC_STATUS_OK] >= a->sent / 2);
    fprintf(stderr, "thawed at %lld ms, all served since at %lld ms\n", (long long)thawed,
            (long long)served);
    CHECK(served >= thawed && served < thawed + 1000);
    traffic_free(t);
}

/* The loop held (the caller blocking it) past deadline + 2 s while calls are out: they are
 * hung; no burst follows. */
static void held_loop(void)
{
    fprintf(stderr, "--- loop held past the deadline\n");
    const long deadline = 300;
    const struct traffic_model models[] = {{"bc-a", expected, TRAFFIC_MULTI, 20}};
    REQUIRE(harness_freeze(runtime_pid) == 0);
    struct traffic *t = start(rc.target, models, 1, deadline, 0);
    run_ms(200);
    usleep((useconds_t)(deadline + 2000 + 500) * 1000);
    run_ms(300);
    traffic_stop(t);
    kill(runtime_pid, SIGCONT);
    struct traffic_phase_report ph[2];
    REQUIRE(traffic_phases(t, ph, 2) == 1);
    print_phase("held", &ph[0]);
    const struct traffic_stats *s = &ph[0].cls[TRAFFIC_MULTI];
    CHECK(s->hung >= 2);
    CHECK(ph[0].held_ms >= deadline + 2500 && ph[0].held_ms < deadline + 2500 + 1000);
    CHECK_INT(answered(s) + s->hung, s->sent);
    CHECK(s->sent <= 4 + 6 + 3); /* 200 ms + 300 ms at 20/s, not the 2.8 s held */
    CHECK_INT(s->skipped, 0);
    bool kept = false;
    for (size_t i = 0; i < ph[0].n_failures; i++)
        kept |= ph[0].failures[i].code == -2 && strstr(ph[0].failures[i].details, "no answer");
    CHECK(kept);
    traffic_free(t);
}

/* ---------------------------------------------------------------- the test's own server */

#define LAT_MAX 4096
#define LAT_VALUE 0.25f

struct pending {
    ev_timer timer;
    struct rpc_call *call;
    char model[64];
};

static double applied[LAT_MAX]; /* delays applied to "lat", ms */
static size_t n_applied;
static size_t n_lat_calls;
static long long arrivals[LAT_MAX]; /* of the "spread-" models' calls, ms */
static size_t n_arrivals;

static void reply_now(struct rpc_call *call, const char *model_name)
{
    Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    Inference__ModelInferResponse__InferOutputTensor out =
        INFERENCE__MODEL_INFER_RESPONSE__INFER_OUTPUT_TENSOR__INIT;
    Inference__ModelInferResponse__InferOutputTensor *outs[1] = {&out};
    float v = LAT_VALUE;
    ProtobufCBinaryData raw = {sizeof(v), (uint8_t *)&v};
    int64_t shape[1] = {1};
    out.name = "predict";
    out.datatype = "FP32";
    out.shape = shape;
    out.n_shape = 1;
    resp.raw_output_contents = &raw;
    resp.n_raw_output_contents = 1;
    resp.model_name = (char *)model_name;
    resp.id = "chaos";
    resp.outputs = outs;
    resp.n_outputs = 1;
    rpc_call_reply(call, rpc_encode(&resp.base), GRPC_STATUS_OK, NULL);
}

static void on_delay(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct pending *p = w->data;
    reply_now(p->call, "lat__isvc-0123456789");
    free(p);
}

static void on_infer(struct rpc_call *call, void *arg)
{
    (void)arg;
    ProtobufCMessage *m = NULL;
    if (rpc_call_decode(call, &inference__model_infer_request__descriptor, &m) < 0)
        return;
    const Inference__ModelInferRequest *req = (const Inference__ModelInferRequest *)m;
    if (strcmp(req->model_name, "lat") == 0) {
        /* delays 5..104 ms, spread evenly over the calls */
        double ms = 5 + (double)(n_lat_calls++ * 37 % 100);
        struct pending *p = calloc(1, sizeof(*p));
        REQUIRE(p != NULL);
        p->call = call;
        if (n_applied < LAT_MAX)
            applied[n_applied++] = ms;
        ev_timer_init(&p->timer, on_delay, ms / 1000, 0);
        p->timer.data = p;
        ev_timer_start(rc.loop, &p->timer);
    } else {
        if (strncmp(req->model_name, "spread-", 7) == 0 && n_arrivals < LAT_MAX)
            arrivals[n_arrivals++] = harness_now_ms();
        reply_now(call, "someone-else");
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double exact(double q)
{
    size_t rank = (size_t)ceil(q * (double)n_applied);
    return applied[(rank ? rank : 1) - 1];
}

static bool down;
static void on_down(void *arg)
{
    (void)arg;
    down = true;
}
static bool is_down(void *arg)
{
    (void)arg;
    return down;
}

static void latencies(void)
{
    fprintf(stderr, "--- latencies against known delays\n");
    struct rpc_server *s = NULL;
    struct mm_error err = {0};
    int port = 0;
    REQUIRE(rpc_server_new(rc.ctx, NULL, &s, &err) == 0);
    REQUIRE(rpc_server_listen(s, "127.0.0.1:0", &port, &err) == 0);
    REQUIRE(rpc_server_register(s, "/inference.GRPCInferenceService/ModelInfer", on_infer, NULL,
                                &err) == 0);
    REQUIRE(rpc_server_start(s, &err) == 0);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    const struct traffic_model models[] = {{"lat", LAT_VALUE, TRAFFIC_MULTI, 60},
                                           {"other", LAT_VALUE, TRAFFIC_SINGLE, 10}};
    struct traffic *t = start(target, models, 2, 5000, 0);
    run_ms(2500);
    traffic_stop(t);
    struct traffic_phase_report ph[2];
    REQUIRE(traffic_phases(t, ph, 2) == 1);
    print_phase("latency", &ph[0]);
    const struct traffic_stats *m = &ph[0].cls[TRAFFIC_MULTI];
    CHECK(near(m->sent, 60 * 2.5));
    CHECK_INT(m->by_code[GRPC_STATUS_OK], m->sent);
    CHECK_INT(m->wrong, 0); /* the concrete id "lat__isvc-..." names lat; raw contents read */
    CHECK_INT(m->sent, n_applied);
    qsort(applied, n_applied, sizeof(*applied), cmp_double);
    double p50 = exact(0.5), p99 = exact(0.99), max = applied[n_applied - 1];
    fprintf(stderr, "applied delays: p50 %.2f p99 %.2f max %.2f ms (%zu calls)\n", p50, p99, max,
            n_applied);
    CHECK(m->p50_ms >= p50 * 0.98 && m->p50_ms <= p50 + 15);
    CHECK(m->p99_ms >= p99 * 0.98 && m->p99_ms <= p99 + 15);
    CHECK(m->max_ms >= max && m->max_ms <= max + 30);
    traffic_free(t);

    /* 40 models at 1/s: the seed's offsets spread their calls over the second (all due at
     * once they would come 40 together) */
    struct traffic_model spread[40];
    char names[40][16];
    for (int k = 0; k < 40; k++) {
        snprintf(names[k], sizeof(names[k]), "spread-%d", k);
        spread[k] = (struct traffic_model){names[k], LAT_VALUE, TRAFFIC_SINGLE, 1};
    }
    t = start(target, spread, 40, 5000, 0);
    run_ms(2000);
    traffic_stop(t);
    size_t most = 0;
    for (size_t i = 0, j = 0; i < n_arrivals; i++) { /* arrivals come in order: one loop */
        while (arrivals[i] - arrivals[j] >= 100)
            j++;
        if (i - j + 1 > most)
            most = i - j + 1;
    }
    fprintf(stderr, "spread: %zu calls, at most %zu in 100 ms (40 models at 1/s)\n", n_arrivals,
            most);
    CHECK(near(n_arrivals, 80));
    CHECK(most <= 8); /* even: about 4 */
    const struct traffic_stats *o = &ph[0].cls[TRAFFIC_SINGLE];
    CHECK(o->sent > 0);
    CHECK_INT(o->wrong, o->sent); /* answered as another model */
    bool named = false;
    for (size_t i = 0; i < ph[0].n_failures; i++)
        named |= strstr(ph[0].failures[i].details, "someone-else") != NULL;
    CHECK(named);
    traffic_free(t);
    rpc_server_shutdown(s, 100, on_down, NULL);
    REQUIRE(harness_run_until(rc.loop, is_down, NULL, 5000));
    rpc_server_free(s);
}

/* traffic_new refuses what it cannot run. */
static void refused(void)
{
    const struct traffic_model ok[] = {{"m", 1, TRAFFIC_MULTI, 1}};
    const struct traffic_model no_rate[] = {{"m", 1, TRAFFIC_MULTI, 0}};
    struct traffic_config cfg = {
        .target = rc.target, .models = ok, .n_models = 1, .row = row, .n_features = FEATURES};
    struct traffic *t = NULL;
    cfg.n_models = 0;
    CHECK_INT(traffic_new(rc.ctx, &cfg, &t), -EINVAL);
    cfg.n_models = 1;
    cfg.models = no_rate;
    CHECK_INT(traffic_new(rc.ctx, &cfg, &t), -EINVAL);
    cfg.models = ok;
    cfg.row = NULL;
    CHECK_INT(traffic_new(rc.ctx, &cfg, &t), -EINVAL);
    CHECK(t == NULL);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 3);
    char dir[] = "/tmp/mm-traffic-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    make_model(argv[2], dir);
    char model[512];
    snprintf(model, sizeof(model), "%s/xgboost/breast-cancer.json", dir);
    char *const args[] = {argv[1], "--listen", "127.0.0.1:0", NULL};
    int port = 0;
    REQUIRE(harness_spawn_listening(args, 10000, &runtime_pid, &port) == 0);
    REQUIRE(rt_open(&rc, port) == 0);
    REQUIRE(rt_load(&rc, "bc-a", "xgboost", model, NULL).code == 0);
    REQUIRE(rt_load(&rc, "bc-b", "xgboost", model, NULL).code == 0);

    refused();
    right_answers();
    wrong_answers();
    unknown_model();
    frozen();
    held_loop();
    latencies();

    int status = rt_close(&rc, runtime_pid, 10000);
    CHECK(status == 0);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return CHECK_DONE();
}
