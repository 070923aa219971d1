/* test_controller.c - mm-controller on a cluster of real processes: etcd, 2 pods of mm-runtime +
 * mm-node (xgboost, runtime mm-runtime) and one of the sklearn runtime whose node starts later
 * (runtime mm-sklearn), the ServingRuntimes of deploy/runtimes applied, and two controllers. InferenceServices are written to etcd as mmctl apply writes them; the status is
 * read back from isvc-status/ and followed through a mirror of the test's own:
 *   - one controller leads, the other follows;
 *   - create: Pending/Loading -> Loaded, UpToDate, Ready (the active state never moves back),
 *     the vmodel owned by isvc:<ns> targets the revision id, the model record has the type and
 *     the runtime chosen, grpcUrl/restUrl;
 *   - a runtime with no running pod (sklearn): Loading + RuntimeUnhealthy "Waiting for runtime
 *     Pod to become available"; once its pod's node starts, the model loads there and the
 *     InferenceService is Ready (the walkthrough's order: apply first, pods later);
 *   - an unknown format: InvalidSpec + NoSupportingRuntime; an unknown runtime:
 *     RuntimeNotRecognized; no storage: "Predictor Storage field missing"; the same name in a
 *     second namespace: InvalidSpec naming the owning namespace; none of them gets a vmodel;
 *   - a new path: the new revision becomes active, the old model goes (auto-delete), the
 *     observed generation follows;
 *   - a path that does not exist: BlockedByFailedLoad with location and message, still Ready
 *     on the old revision; the good path again: UpToDate;
 *   - delete: the vmodel, the models, their copies and the status go;
 *   - the leader killed (SIGKILL): the other takes over (the time is measured and printed) and
 *     status keeps updating (a new InferenceService gets Ready);
 *   - the latency from each copy event to the status write it caused, as the test's mirror
 *     sees both: printed as a distribution, its median checked against 100 ms.
 * argv: MM_NODE MM_RUNTIME MAKE_BREAST_CANCER MM_CONTROLLER RUNTIMES_DIR PYTHON SKLEARN_SERVER
 *       MAKE_MNIST_SVM */
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "cluster.h"
#include "harness.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/isvc.h"
#include "mm/mirror.h"

#define NS "modelmesh-serving"
#define READY_MS 30000 /* a load, placement and the status write */
#define STATUS_MS 10000
#define MAX_SAMPLES 4096

static const char *mm_node, *mm_runtime, *maker, *mm_controller, *runtimes_dir, *python,
    *sklearn_server, *maker_mnist;
static char work[256];
static char model_file[512];
static struct cluster cl;
static bool cluster_up;

/* ---------------------------------------------------------------- the test's mirror */

/* Per InferenceService name: when a copy event of one of its models was last seen and not yet
 * followed by a status write; the active states its status went through. */
struct seen {
    char name[64];
    long long copy_event_ms; /* 0 = none pending */
    char states[32][16];
    size_t n_states;
};
static struct {
    struct mirror *m;
    struct mirror_sub *copies, *status;
    struct seen seen[32];
    size_t n_seen;
    long long samples[MAX_SAMPLES];
    size_t n_samples;
} w;

static struct seen *seen_of(const char *name, size_t len)
{
    for (size_t i = 0; i < w.n_seen; i++)
        if (strlen(w.seen[i].name) == len && memcmp(w.seen[i].name, name, len) == 0)
            return &w.seen[i];
    if (w.n_seen == sizeof(w.seen) / sizeof(w.seen[0]) || len >= sizeof(w.seen[0].name))
        return NULL;
    struct seen *s = &w.seen[w.n_seen++];
    memset(s, 0, sizeof(*s));
    memcpy(s->name, name, len);
    return s;
}

static void on_copy(const struct mirror_event *ev, void *arg)
{
    (void)arg;
    /* .../copies/<name>__isvc-<hex>/<iid> */
    const char *model = ev->key + strlen("/modelmesh/") + strlen(cl.name) + strlen("/copies/");
    const char *mark = strstr(model, "__isvc-");
    if (!mark)
        return;
    struct seen *s = seen_of(model, (size_t)(mark - model));
    if (s && !s->copy_event_ms)
        s->copy_event_ms = harness_now_ms();
}

static void on_status(const struct mirror_event *ev, void *arg)
{
    (void)arg;
    const char *name = strrchr(ev->key, '/') + 1;
    struct seen *s = seen_of(name, strlen(name));
    if (!s)
        return;
    if (s->copy_event_ms && w.n_samples < MAX_SAMPLES)
        w.samples[w.n_samples++] = harness_now_ms() - s->copy_event_ms;
    s->copy_event_ms = 0;
    struct isvc_status st;
    struct mm_error err = {0};
    if (ev->new_value && isvc_status_decode(ev->new_value, ev->new_len, &st, &err) == 0 &&
        s->n_states < 32) {
        const char *state = isvc_model_state_name(st.active_state);
        if (s->n_states == 0 || strcmp(s->states[s->n_states - 1], state) != 0)
            snprintf(s->states[s->n_states++], sizeof(s->states[0]), "%s", state);
    }
}

static bool mirror_synced(void *arg)
{
    (void)arg;
    return mirror_state(w.m) == MIRROR_SYNCED;
}

static void watch_start(void)
{
    char prefix[KEYS_MAX], p[KEYS_MAX + 32];
    snprintf(prefix, sizeof(prefix), "/modelmesh/%s/", cl.name);
    struct mm_error err = {0};
    REQUIRE(mirror_new(cl.etcd_client, prefix, NULL, &w.m, &err) == 0);
    snprintf(p, sizeof(p), "%scopies/", prefix);
    REQUIRE(mirror_subscribe(w.m, p, strlen(p), on_copy, NULL, &w.copies) == 0);
    snprintf(p, sizeof(p), "%sisvc-status/", prefix);
    REQUIRE(mirror_subscribe(w.m, p, strlen(p), on_status, NULL, &w.status) == 0);
    REQUIRE(mirror_start(w.m) == 0);
    REQUIRE(harness_run_until(cl.loop, mirror_synced, NULL, 10000));
}

/* ---------------------------------------------------------------- setup */

static void make_model(void)
{
    float expected;
    REQUIRE(harness_example_model_tmp(maker, "controller-model", work, sizeof(work), NULL, 0,
                                      &expected) == 0);
    snprintf(model_file, sizeof(model_file), "%s/xgboost/breast-cancer.json", work);
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s'", python, maker_mnist, work);
    int rc = harness_capture(cmd, out, sizeof(out));
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", cmd, out);
    REQUIRE(rc == 0);
}

static void cleanup(void)
{
    if (w.m)
        mirror_free(w.m);
    w.m = NULL;
    if (cluster_up)
        cluster_free(&cl);
    cluster_up = false;
    harness_remove_dir(work);
}

static void start(void)
{
    struct cluster_config cfg = {
        .mm_node = mm_node,
        .mm_runtime = mm_runtime,
        .n_pods = 3,
        .start_nodes_later = true,
        .runtime_load_timeout_ms = 20000,
        .lease_ttl = "2s",
        .node_args = "--replace-delay 500ms --failure-expiry 60s",
        .runtimes_dir = runtimes_dir,
        .mm_controller = mm_controller,
        .controller_lease_ttl = "2s",
    };
    cfg.pod_runtimes[2] = (struct cluster_pod_runtime){.program = sklearn_server,
                                                       .interpreter = python,
                                                       .runtime_name = "mm-sklearn",
                                                       .model_types = "sklearn"};
    int rc = cluster_start(&cl, &cfg);
    cluster_up = true;
    if (rc < 0)
        cluster_dump_logs(&cl, true);
    REQUIRE(rc == 0);
    REQUIRE(cluster_node_start(&cl, 0) == 0);
    REQUIRE(cluster_node_start(&cl, 1) == 0);
    char src[512];
    snprintf(src, sizeof(src), "%s/sklearn/mnist-svm.joblib", work);
    REQUIRE(cluster_copy_file(&cl, src, "sklearn/mnist-svm.joblib") == 0);
    static const char *const files[] = {"xgb/a.json", "xgb/b.json", "xgb/c.json", "xgb/d.json"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        REQUIRE(cluster_copy_file(&cl, model_file, files[i]) == 0);
    CHECK_INT(cluster_count(&cl, "runtimes/"), 2);
}

/* ---------------------------------------------------------------- records */

/* Write isvcs/<ns>/<name> as mmctl apply does: model is the JSON of spec.predictor.model. */
static void put_isvc(const char *ns, const char *name, int generation, const char *model)
{
    char key[KEYS_MAX], value[4096];
    struct mm_error err = {0};
    REQUIRE(keys_isvc(key, sizeof(key), cl.name, ns, name, &err) == 0);
    snprintf(value, sizeof(value),
             "{\"apiVersion\":\"serving.kserve.io/v1beta1\",\"kind\":\"InferenceService\","
             "\"metadata\":{\"name\":\"%s\",\"namespace\":\"%s\",\"annotations\":"
             "{\"serving.kserve.io/deploymentMode\":\"ModelMesh\"},\"generation\":%d,"
             "\"creationTimestamp\":\"2026-01-01T00:00:00Z\",\"uid\":\"uid-%s\"},"
             "\"spec\":{\"predictor\":{\"model\":%s}}}",
             name, ns, generation, name, model);
    int rc = etcd_sync_put(cl.etcd_client, key, value, 0, NULL, &err);
    if (rc < 0)
        fprintf(stderr, "put %s: %s\n", key, err.msg);
    REQUIRE(rc == 0);
}

static void delete_isvc(const char *ns, const char *name)
{
    char key[KEYS_MAX];
    struct mm_error err = {0};
    REQUIRE(keys_isvc(key, sizeof(key), cl.name, ns, name, &err) == 0);
    REQUIRE(etcd_sync_delete(cl.etcd_client, key, false, NULL, &err) == 0);
}

/* 1 and *st, 0 absent, -errno. */
static int get_status(const char *ns, const char *name, struct isvc_status *st)
{
    char key[KEYS_MAX];
    struct mm_error err = {0};
    REQUIRE(keys_isvc_status(key, sizeof(key), cl.name, ns, name, &err) == 0);
    struct etcd_range_req req = {.key = key};
    struct etcd_response *r = NULL;
    int rc = etcd_sync_range(cl.etcd_client, &req, &r, &err);
    if (rc < 0)
        return rc;
    rc = r->op.n_kvs == 1;
    if (rc == 1 && isvc_status_decode(r->op.kvs[0].value, r->op.kvs[0].value_len, st, &err) < 0) {
        fprintf(stderr, "%s: %s\n", key, err.msg);
        rc = -EINVAL;
    }
    etcd_response_free(r);
    return rc;
}

static int get_vmodel(const char *name, struct vmodel_record *vr)
{
    char key[KEYS_MAX];
    struct mm_error err = {0};
    REQUIRE(keys_vmodel(key, sizeof(key), cl.name, name, &err) == 0);
    struct etcd_range_req req = {.key = key};
    struct etcd_response *r = NULL;
    int rc = etcd_sync_range(cl.etcd_client, &req, &r, &err);
    if (rc < 0)
        return rc;
    rc = r->op.n_kvs == 1;
    if (rc == 1 && record_decode(RECORD_VMODEL, r->op.kvs[0].value, r->op.kvs[0].value_len, vr,
                                 &err) < 0)
        rc = -EINVAL;
    etcd_response_free(r);
    return rc;
}

static void print_status(const char *name, const struct isvc_status *st)
{
    fprintf(stderr,
            "  %s: gen %lld active %s (%s) target %s (%s) %s copies %u/%u ready %d failure %s "
            "\"%s\" at %s\n",
            name, (long long)st->generation, st->active_model_id,
            isvc_model_state_name(st->active_state), st->target_model_id,
            isvc_model_state_name(st->target_state), isvc_transition_name(st->transition),
            st->total_copies, st->failed_copies, st->ready.status,
            isvc_reason_name(st->failure.reason), st->failure.message, st->failure.location);
}

typedef bool (*status_pred)(const struct isvc_status *st, const void *arg);

/* Poll (running the test's loop, so its mirror follows) until pred holds; the last status read
 * in *st. */
static bool wait_status(const char *ns, const char *name, status_pred pred, const void *arg,
                        long long ms, struct isvc_status *st)
{
    long long until = harness_now_ms() + ms;
    int rc = 0;
    do {
        memset(st, 0, sizeof(*st));
        rc = get_status(ns, name, st);
        if (rc == 1 && pred(st, arg))
            return true;
        cluster_run(&cl, 20);
    } while (harness_now_ms() < until);
    fprintf(stderr, "status of %s/%s not as wanted within %lld ms (%s):\n", ns, name, ms,
            rc == 1 ? "last seen" : "none");
    if (rc == 1)
        print_status(name, st);
    return false;
}

static bool is_ready(const struct isvc_status *st, const void *rev)
{
    return st->ready.status && st->predictor_ready.status &&
           st->active_state == ISVC_STATE_LOADED && st->transition == ISVC_UP_TO_DATE &&
           (!rev || strcmp(st->active_model_id, rev) == 0);
}

static bool has_reason(const struct isvc_status *st, const void *reason)
{
    return st->failure.reason == *(const enum isvc_reason *)reason;
}

static bool is_blocked(const struct isvc_status *st, const void *arg)
{
    (void)arg;
    return st->transition == ISVC_BLOCKED_BY_FAILED_LOAD;
}

static bool is_generation(const struct isvc_status *st, const void *gen)
{
    return st->generation == *(const int *)gen && is_ready(st, NULL);
}

/* The revision id mmctl and the controller compute for a spec. */
static void revision_of(const char *ns, const char *name, int generation, const char *model,
                        char *out, size_t size)
{
    char doc[4096];
    snprintf(doc, sizeof(doc),
             "{\"apiVersion\":\"serving.kserve.io/v1beta1\",\"kind\":\"InferenceService\","
             "\"metadata\":{\"name\":\"%s\",\"namespace\":\"%s\",\"annotations\":"
             "{\"serving.kserve.io/deploymentMode\":\"ModelMesh\"},\"generation\":%d},"
             "\"spec\":{\"predictor\":{\"model\":%s}}}",
             name, ns, generation, model);
    static struct isvc s;
    struct mm_error err = {0};
    REQUIRE(isvc_parse_text(doc, strlen(doc), &s, &err) == 0);
    snprintf(out, size, "%s", s.revision);
}

/* ---------------------------------------------------------------- scenarios */

#define XGB_A "{\"modelFormat\":{\"name\":\"xgboost\"},\"storage\":{\"path\":\"xgb/a.json\"}}"
#define XGB_B "{\"modelFormat\":{\"name\":\"xgboost\"},\"storage\":{\"path\":\"xgb/b.json\"}}"
#define XGB_C "{\"modelFormat\":{\"name\":\"xgboost\"},\"storage\":{\"path\":\"xgb/c.json\"}}"
#define XGB_MISSING \
    "{\"modelFormat\":{\"name\":\"xgboost\"},\"storage\":{\"path\":\"xgb/missing.json\"}}"

static int leader;

static void election(void)
{
    REQUIRE(cluster_controller_start(&cl, 0) == 0);
    REQUIRE(cluster_controller_start(&cl, 1) == 0);
    long long until = harness_now_ms() + 5000;
    while ((leader = cluster_controller_leader(&cl)) < 0 && harness_now_ms() < until)
        cluster_run(&cl, 20);
    REQUIRE(leader == 0 || leader == 1);
    fprintf(stderr, "controller %s leads\n", cl.controllers[leader].identity);
}

static void create(void)
{
    char rev[128];
    revision_of(NS, "isvc-a", 1, XGB_A, rev, sizeof(rev));
    long long t0 = harness_now_ms();
    put_isvc(NS, "isvc-a", 1, XGB_A);
    struct isvc_status st;
    CHECK(wait_status(NS, "isvc-a", is_ready, rev, READY_MS, &st));
    fprintf(stderr, "create: Ready in %lld ms\n", harness_now_ms() - t0);
    CHECK_INT(st.generation, 1);
    CHECK_INT(st.total_copies, 1);
    CHECK_INT(st.failed_copies, 0);
    CHECK_INT(st.failure.reason, ISVC_REASON_NONE);
    CHECK_STR(st.target_model_id, "");
    CHECK_INT(st.target_state, ISVC_STATE_NONE);
    CHECK_STR(st.grpc_url, "grpc://modelmesh-serving." NS ":8033");
    CHECK_STR(st.rest_url, "http://modelmesh-serving." NS ":8008");
    struct vmodel_record vr;
    REQUIRE(get_vmodel("isvc-a", &vr) == 1);
    CHECK_STR(vr.active_model_id, rev);
    CHECK_STR(vr.target_model_id, rev);
    CHECK_STR(vr.owner, "isvc:" NS);
    struct model_record mr;
    REQUIRE(cluster_model(&cl, rev, &mr) == 1);
    CHECK_STR(mr.type, "xgboost");
    CHECK_STR(mr.runtime, "mm-runtime");
    CHECK_STR(mr.storage_path, "xgb/a.json");
    CHECK(mr.auto_delete);
    /* the active state only moves forward: Pending -> Loading -> Loaded (skips allowed) */
    cluster_run(&cl, 100);
    struct seen *s = seen_of("isvc-a", 6);
    REQUIRE(s && s->n_states > 0);
    int last = -1;
    static const char *const order[] = {"Pending", "Loading", "Loaded"};
    for (size_t i = 0; i < s->n_states; i++) {
        int at = -1;
        for (int k = 0; k < 3; k++)
            if (strcmp(s->states[i], order[k]) == 0)
                at = k;
        fprintf(stderr, "  isvc-a active state %zu: %s\n", i, s->states[i]);
        CHECK(at > last);
        last = at;
    }
    CHECK_STR(s->states[s->n_states - 1], "Loaded");
}

static void refusals(void)
{
    struct isvc_status st;
    struct vmodel_record vr;
    enum isvc_reason r;
    /* a runtime exists for sklearn (mm-sklearn) but no pod runs it */
    char rev[128];
    const char *sk = "{\"modelFormat\":{\"name\":\"sklearn\"},"
                     "\"storage\":{\"path\":\"sklearn/mnist-svm.joblib\"}}";
    revision_of(NS, "isvc-sk", 1, sk, rev, sizeof(rev));
    put_isvc(NS, "isvc-sk", 1, sk);
    r = ISVC_REASON_RUNTIME_UNHEALTHY;
    CHECK(wait_status(NS, "isvc-sk", has_reason, &r, STATUS_MS, &st));
    CHECK_STR(st.failure.message, "Waiting for runtime Pod to become available");
    CHECK_STR(st.failure.model_revision, rev);
    CHECK_INT(st.active_state, ISVC_STATE_LOADING);
    CHECK_INT(st.transition, ISVC_UP_TO_DATE);
    CHECK(!st.ready.status && !st.predictor_ready.status);
    /* the status may be written before the vmodel's txn: wait for the model record */
    struct model_record mr;
    long long until = harness_now_ms() + STATUS_MS;
    while (cluster_model(&cl, rev, &mr) != 1 && harness_now_ms() < until)
        cluster_run(&cl, 20);
    memset(&mr, 0, sizeof(mr));
    CHECK_INT(cluster_model(&cl, rev, &mr), 1);
    CHECK_STR(mr.runtime, "mm-sklearn");
    CHECK_INT(cluster_copies(&cl, rev, NULL, 0), 0);
    /* its runtime's pod comes: the model loads there */
    long long t0 = harness_now_ms();
    REQUIRE(cluster_node_start(&cl, 2) == 0);
    CHECK(wait_status(NS, "isvc-sk", is_ready, rev, READY_MS, &st));
    fprintf(stderr, "runtime pod: isvc-sk Ready %lld ms after its node started\n",
            harness_now_ms() - t0);
    CHECK_INT(st.failure.reason, ISVC_REASON_NONE);
    struct cluster_copy cc[4];
    int ncc = cluster_copies(&cl, rev, cc, 4);
    CHECK_INT(ncc, 1);
    if (ncc == 1)
        CHECK_STR(cc[0].iid, "n2");

    put_isvc(NS, "isvc-tf", 1,
             "{\"modelFormat\":{\"name\":\"tensorflow\"},\"storage\":{\"path\":\"tf/m\"}}");
    r = ISVC_REASON_NO_SUPPORTING_RUNTIME;
    CHECK(wait_status(NS, "isvc-tf", has_reason, &r, STATUS_MS, &st));
    CHECK_STR(st.failure.message,
              "No ServingRuntime supports specified model type and/or protocol");
    CHECK_INT(st.transition, ISVC_INVALID_SPEC);
    CHECK(!st.ready.status);

    put_isvc(NS, "isvc-rt", 1,
             "{\"modelFormat\":{\"name\":\"xgboost\"},\"runtime\":\"no-such-runtime\","
             "\"storage\":{\"path\":\"xgb/a.json\"}}");
    r = ISVC_REASON_RUNTIME_NOT_RECOGNIZED;
    CHECK(wait_status(NS, "isvc-rt", has_reason, &r, STATUS_MS, &st));
    CHECK_STR(st.failure.message, "Specified runtime name not recognized");
    CHECK_INT(st.transition, ISVC_INVALID_SPEC);

    put_isvc(NS, "isvc-ns", 1, "{\"modelFormat\":{\"name\":\"xgboost\"}}");
    r = ISVC_REASON_INVALID_PREDICTOR_SPEC;
    CHECK(wait_status(NS, "isvc-ns", has_reason, &r, STATUS_MS, &st));
    CHECK_STR(st.failure.message, "Predictor Storage field missing");
    CHECK_INT(st.transition, ISVC_INVALID_SPEC);

    /* the name isvc-a is served in NS: another namespace cannot have it */
    put_isvc("other", "isvc-a", 1, XGB_C);
    r = ISVC_REASON_INVALID_PREDICTOR_SPEC;
    CHECK(wait_status("other", "isvc-a", has_reason, &r, STATUS_MS, &st));
    CHECK_STR(st.failure.message, "vmodel isvc-a already owned by namespace " NS);
    CHECK_INT(st.transition, ISVC_INVALID_SPEC);

    CHECK_INT(get_vmodel("isvc-tf", &vr), 0);
    CHECK_INT(get_vmodel("isvc-rt", &vr), 0);
    CHECK_INT(get_vmodel("isvc-ns", &vr), 0);
    REQUIRE(get_vmodel("isvc-a", &vr) == 1);
    CHECK_STR(vr.owner, "isvc:" NS);
}

static void update(void)
{
    char rev_a[128], rev_b[128];
    revision_of(NS, "isvc-a", 1, XGB_A, rev_a, sizeof(rev_a));
    revision_of(NS, "isvc-a", 2, XGB_B, rev_b, sizeof(rev_b));
    CHECK(strcmp(rev_a, rev_b) != 0);
    long long t0 = harness_now_ms();
    put_isvc(NS, "isvc-a", 2, XGB_B);
    struct isvc_status st;
    int gen = 2;
    CHECK(wait_status(NS, "isvc-a", is_generation, &gen, READY_MS, &st));
    CHECK(wait_status(NS, "isvc-a", is_ready, rev_b, READY_MS, &st));
    fprintf(stderr, "update: the new revision active in %lld ms\n", harness_now_ms() - t0);
    /* the old revision is an auto-delete model: it goes */
    long long until = harness_now_ms() + 10000;
    struct model_record mr;
    while (cluster_model(&cl, rev_a, &mr) == 1 && harness_now_ms() < until)
        cluster_run(&cl, 50);
    CHECK_INT(cluster_model(&cl, rev_a, &mr), 0);
    CHECK(wait_status(NS, "isvc-a", is_ready, rev_b, STATUS_MS, &st));
    CHECK_INT(st.total_copies, 1);

    /* a path that does not exist: blocked, the old revision serves and it stays Ready */
    char rev_m[128];
    revision_of(NS, "isvc-a", 3, XGB_MISSING, rev_m, sizeof(rev_m));
    put_isvc(NS, "isvc-a", 3, XGB_MISSING);
    CHECK(wait_status(NS, "isvc-a", is_blocked, NULL, READY_MS, &st));
    print_status("isvc-a", &st);
    CHECK_INT(st.active_state, ISVC_STATE_LOADED);
    CHECK_INT(st.target_state, ISVC_STATE_FAILED_TO_LOAD);
    CHECK_STR(st.active_model_id, rev_b);
    CHECK_STR(st.target_model_id, rev_m);
    CHECK(st.ready.status);
    CHECK_INT(st.failure.reason, ISVC_REASON_MODEL_LOAD_FAILED);
    CHECK_STR(st.failure.model_revision, rev_m);
    CHECK(st.failure.location[0] != '\0');
    CHECK(st.failure.message[0] != '\0');
    CHECK(st.failure.time_s > 0);
    CHECK(st.failed_copies >= 1);

    /* the good spec again: back on rev_b, up to date */
    put_isvc(NS, "isvc-a", 4, XGB_B);
    gen = 4;
    CHECK(wait_status(NS, "isvc-a", is_generation, &gen, READY_MS, &st));
    CHECK_STR(st.active_model_id, rev_b);
    CHECK_STR(st.target_model_id, "");
    CHECK_INT(st.failure.reason, ISVC_REASON_NONE);
}

static void delete(void)
{
    char rev_b[128];
    revision_of(NS, "isvc-a", 2, XGB_B, rev_b, sizeof(rev_b));
    delete_isvc(NS, "isvc-a");
    struct vmodel_record vr;
    struct isvc_status st;
    struct model_record mr;
    /* the vmodel goes (other/isvc-a, waiting for the name, then takes it), and with it the
     * model, its copies and the status */
    long long until = harness_now_ms() + 10000;
    while ((cluster_model(&cl, rev_b, &mr) == 1 || get_status(NS, "isvc-a", &st) == 1 ||
            cluster_copies(&cl, rev_b, NULL, 0) > 0) &&
           harness_now_ms() < until)
        cluster_run(&cl, 50);
    CHECK_INT(cluster_model(&cl, rev_b, &mr), 0);
    CHECK_INT(cluster_copies(&cl, rev_b, NULL, 0), 0);
    CHECK_INT(get_status(NS, "isvc-a", &st), 0);
    CHECK(wait_status("other", "isvc-a", is_ready, NULL, READY_MS, &st));
    REQUIRE(get_vmodel("isvc-a", &vr) == 1);
    CHECK_STR(vr.owner, "isvc:other");
    char rev_c[128];
    revision_of("other", "isvc-a", 1, XGB_C, rev_c, sizeof(rev_c));
    CHECK_STR(vr.active_model_id, rev_c);
    /* and deleting that one leaves nothing */
    delete_isvc("other", "isvc-a");
    until = harness_now_ms() + 10000;
    while ((get_vmodel("isvc-a", &vr) == 1 || cluster_model(&cl, rev_c, &mr) == 1 ||
            get_status("other", "isvc-a", &st) == 1 || cluster_copies(&cl, rev_c, NULL, 0) > 0) &&
           harness_now_ms() < until)
        cluster_run(&cl, 50);
    CHECK_INT(get_vmodel("isvc-a", &vr), 0);
    CHECK_INT(cluster_model(&cl, rev_c, &mr), 0);
    CHECK_INT(cluster_copies(&cl, rev_c, NULL, 0), 0);
    CHECK_INT(get_status("other", "isvc-a", &st), 0);
}

static void takeover(void)
{
    int other = 1 - leader;
    long long t0 = harness_now_ms();
    cluster_controller_kill(&cl, (size_t)leader);
    put_isvc(NS, "isvc-c", 1,
             "{\"modelFormat\":{\"name\":\"xgboost\"},\"storage\":{\"path\":\"xgb/c.json\"}}");
    long long until = t0 + 15000;
    while (cluster_controller_leader(&cl) != other && harness_now_ms() < until)
        cluster_run(&cl, 10);
    long long took = harness_now_ms() - t0;
    CHECK_INT(cluster_controller_leader(&cl), other);
    fprintf(stderr, "takeover: %s leads %lld ms after the leader was killed (lease TTL 2 s)\n",
            cl.controllers[other].identity, took);
    CHECK(took < 6000);
    struct isvc_status st;
    CHECK(wait_status(NS, "isvc-c", is_ready, NULL, READY_MS, &st));
    fprintf(stderr, "takeover: an InferenceService applied at the kill Ready after %lld ms\n",
            harness_now_ms() - t0);
    /* a resigning leader hands over at once */
    REQUIRE(cluster_controller_start(&cl, (size_t)leader) == 0);
    t0 = harness_now_ms();
    CHECK(cluster_controller_stop(&cl, (size_t)other, 5000) == 0);
    until = t0 + 5000;
    while (cluster_controller_leader(&cl) != leader && harness_now_ms() < until)
        cluster_run(&cl, 10);
    CHECK_INT(cluster_controller_leader(&cl), leader);
    fprintf(stderr, "resign: %s leads %lld ms after the leader's SIGTERM\n",
            cl.controllers[leader].identity, harness_now_ms() - t0);
    put_isvc(NS, "isvc-c", 2,
             "{\"modelFormat\":{\"name\":\"xgboost\"},\"storage\":{\"path\":\"xgb/d.json\"}}");
    int gen = 2;
    CHECK(wait_status(NS, "isvc-c", is_generation, &gen, READY_MS, &st));
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static void latency(void)
{
    REQUIRE(w.n_samples > 0);
    qsort(w.samples, w.n_samples, sizeof(w.samples[0]), cmp_ll);
    size_t n = w.n_samples;
    fprintf(stderr,
            "status latency (copy event -> status write, as the test's mirror sees them): n=%zu "
            "min %lld p50 %lld p90 %lld p99 %lld max %lld ms\n",
            n, w.samples[0], w.samples[n / 2], w.samples[n * 9 / 10], w.samples[n * 99 / 100],
            w.samples[n - 1]);
    CHECK(w.samples[n / 2] <= 100);
}

int main(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr, "usage: test_controller MM_NODE MM_RUNTIME MAKE_BREAST_CANCER "
                        "MM_CONTROLLER RUNTIMES_DIR PYTHON SKLEARN_SERVER MAKE_MNIST_SVM\n");
        return 2;
    }
    mm_node = argv[1];
    mm_runtime = argv[2];
    maker = argv[3];
    mm_controller = argv[4];
    runtimes_dir = argv[5];
    python = argv[6];
    sklearn_server = argv[7];
    maker_mnist = argv[8];
    signal(SIGPIPE, SIG_IGN);
    make_model();
    atexit(cleanup);
    start();
    watch_start();
    long long t0 = harness_now_ms();
    election();
    create();
    refusals();
    update();
    delete();
    takeover();
    latency();
    fprintf(stderr, "scenarios took %lld ms\n", harness_now_ms() - t0);
    if (check_failures)
        cluster_dump_logs(&cl, false);
    cleanup();
    return CHECK_DONE();
}
