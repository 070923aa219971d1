/* world.c - the cluster a chaos scenario runs against, brought up whole (see world.h). */
#include "world.h"

#include <errno.h>
#include <ev.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grpc_predict_v2.pb-c.h"
#include "mm/cache.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/isvc.h"
#include "mm/keys.h"
#include "mm/rpc.h"
#include "mm/spi.h"
#include "mm/spi_sync.h"
#include "rtclient.h"
#include "verify.h"

#define STORAGE_KEY "chaos-s3"
#define S3_KEY_ID "AKIACHAOSWORLD"
#define INFER "/inference.GRPCInferenceService/ModelInfer"
#define REF_CALL_MS 15000
#define PROXY_LIFETIME_S (24 * 3600) /* the storage proxy lives as long as the world */
#define MODEL_MAX_BYTES (64u << 20)
#define COPIES_MAX 4096
#define NETNS_TRIES 8

/* ---------------------------------------------------------------- small helpers */

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    if (size >= 0 && size <= (long)MODEL_MAX_BYTES && fseek(f, 0, SEEK_SET) == 0)
        buf = malloc((size_t)size + 1);
    if (buf && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[size] = '\0';
        *len = (size_t)size;
    }
    return buf;
}

static int write_all_file(const char *path, const char *data, size_t len)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        int rc = cluster_make_dirs(dir);
        if (rc < 0)
            return rc;
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        return -errno;
    int rc = fwrite(data, 1, len, f) == len ? 0 : -EIO;
    if (fclose(f) != 0 && rc == 0)
        rc = -EIO;
    return rc;
}

static void say(const char *fmt, const char *a, int rc)
{
    fprintf(stderr, "world: ");
    fprintf(stderr, fmt, a);
    if (rc)
        fprintf(stderr, ": %s", strerror(-rc));
    fprintf(stderr, "\n");
}

/* Put key = value in etcd (the cluster's client); recorded with verify_ack once acknowledged. */
static int put_acked(struct world *w, const char *key, const char *value)
{
    struct mm_error err = {0};
    int rc = etcd_sync_put(w->cl.etcd_client, key, value, 0, NULL, &err);
    if (rc < 0) {
        fprintf(stderr, "world: put %s: %s\n", key, err.msg);
        return rc;
    }
    if (w->cfg.verify && (rc = verify_ack(w->cfg.verify, key, value, strlen(value))) < 0)
        fprintf(stderr, "world: verify_ack %s: %s\n", key, strerror(-rc));
    return rc;
}

/* ---------------------------------------------------------------- the models */

/* The example model (make-breast-cancer into dir/base): its JSON, the sample row and the
 * maker's expected value (a check of the reference runtime). */
static int base_model(struct world *w, char **json, size_t *len, float *maker_expected)
{
    char cmd[1400], out[8192];
    snprintf(cmd, sizeof(cmd), "'%s' '%s/base'", w->cfg.make_breast_cancer, w->dir);
    int rc = harness_capture(cmd, out, sizeof(out));
    if (rc != 0) {
        fprintf(stderr, "world: %s: exit %d: %s\n", cmd, rc, out);
        return -EIO;
    }
    bool got_expected = false, got_row = false;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (sscanf(line, "expected predict[0] = %f", maker_expected) == 1)
            got_expected = true;
        if (strncmp(line, "row[0] =", 8) == 0) {
            char *s = line + 8, *end;
            size_t j = 0;
            for (; j < WORLD_FEATURES; j++, s = end) {
                w->row[j] = strtof(s, &end);
                if (end == s)
                    break;
            }
            got_row = j == WORLD_FEATURES;
        }
    }
    if (!got_expected || !got_row) {
        fprintf(stderr, "world: %s printed no expected value or row[0]\n", cmd);
        return -EIO;
    }
    char path[400];
    snprintf(path, sizeof(path), "%s/base/xgboost/breast-cancer.json", w->dir);
    *json = read_all(path, len);
    if (!*json) {
        say("cannot read %s", path, -EIO);
        return -EIO;
    }
    return 0;
}

/* base with its base_score set to (k+1)/(n+2), written as XGBoost writes it ("5E-1"). */
static char *model_variant(const char *base, size_t len, size_t k, size_t n, size_t *out_len)
{
    static const char field[] = "\"base_score\":\"";
    const char *at = strstr(base, field);
    const char *end = at ? strchr(at + sizeof(field) - 1, '"') : NULL;
    if (!end)
        return NULL;
    char num[32], mant[32];
    double v = (double)(k + 1) / (double)(n + 2);
    snprintf(num, sizeof(num), "%.7E", v); /* "3.3333333E-01" */
    char *e = strchr(num, 'E');
    if (!e)
        return NULL;
    *e = '\0';
    int exp10 = atoi(e + 1);
    snprintf(mant, sizeof(mant), "%s", num);
    size_t ml = strlen(mant); /* trailing zeros and a bare point go, as XGBoost prints */
    while (ml > 1 && mant[ml - 1] == '0')
        mant[--ml] = '\0';
    if (ml > 0 && mant[ml - 1] == '.')
        mant[--ml] = '\0';
    char value[48];
    snprintf(value, sizeof(value), "%sE%d", mant, exp10);
    size_t head = (size_t)(at - base) + sizeof(field) - 1, tail = len - (size_t)(end - base);
    char *out = malloc(head + strlen(value) + tail + 1);
    if (!out)
        return NULL;
    memcpy(out, base, head);
    memcpy(out + head, value, strlen(value));
    memcpy(out + head + strlen(value), end, tail);
    *out_len = head + strlen(value) + tail;
    out[*out_len] = '\0';
    return out;
}

/* An object in the bucket, and its copy under dir/objects (what the reference runtime loads). */
static int put_object(struct world *w, const char *path, const char *data, size_t len)
{
    char local[700];
    snprintf(local, sizeof(local), "%s/objects/%s", w->dir, path);
    int rc = write_all_file(local, data, len);
    if (rc < 0) {
        say("write %s", local, rc);
        return rc;
    }
    rc = harness_s3rver_put(&w->s3, w->bucket, path, data, len);
    if (rc < 0)
        say("s3 put %s", path, rc);
    return rc;
}

static void model_path(char *out, size_t size, size_t k, int generation)
{
    snprintf(out, size, "chaos/cm-%zu/g%d/model.json", k, generation);
}

/* ---------------------------------------------------------------- the reference runtime */

static int reference_start(struct world *w)
{
    char models[320], listen[] = "127.0.0.1:0";
    snprintf(models, sizeof(models), "%s/objects", w->dir);
    snprintf(w->ref_log, sizeof(w->ref_log), "%s/reference-runtime.log", w->dir);
    int rc = cluster_make_dirs(models);
    if (rc < 0)
        return rc;
    char *argv[] = {(char *)w->cfg.mm_runtime,
                    "--listen",
                    listen,
                    "--models-dir",
                    models,
                    "--log-level",
                    "info",
                    NULL};
    rc = harness_spawn_logged(argv, w->ref_log, CLUSTER_START_MS, &w->ref_pid, &w->ref_port);
    if (rc < 0) {
        w->ref_pid = 0;
        say("the reference runtime %s did not start", w->cfg.mm_runtime, rc);
        return rc;
    }
    struct mm_error err = {0};
    w->ref_loop = ev_loop_new(EVFLAG_AUTO);
    if (!w->ref_loop)
        return -ENOMEM;
    rc = rpc_context_new(w->ref_loop, &w->ref_rpc, &err);
    if (rc < 0)
        fprintf(stderr, "world: rpc context of the reference runtime: %s\n", err.msg);
    return rc;
}

/* The reference's own context and loop go; from now on it is asked on the cluster's (a context
 * whose loop sat idle for some 20 s once left the next call unanswered until its deadline). */
static void reference_context_drop(struct world *w)
{
    if (w->ref_rpc && w->ref_loop)
        rpc_context_free(w->ref_rpc);
    w->ref_rpc = NULL;
    if (w->ref_loop)
        ev_loop_destroy(w->ref_loop);
    w->ref_loop = NULL;
}

static void reference_stop(struct world *w)
{
    reference_context_drop(w);
    if (w->ref_pid > 0)
        harness_stop_pid(w->ref_pid, 3000);
    w->ref_pid = 0;
}

/* predict[0] of an answer: from contents, or from raw_output_contents. 0 or -EBADMSG. */
static int answer_value(grpc_byte_buffer *bb, const char *model, float *out)
{
    ProtobufCMessage *m = NULL;
    struct mm_error err = {0};
    if (rpc_decode(bb, &inference__model_infer_response__descriptor, &m, &err) < 0) {
        fprintf(stderr, "world: answer of %s: %s\n", model, err.msg);
        return -EBADMSG;
    }
    Inference__ModelInferResponse *r = (Inference__ModelInferResponse *)m;
    int rc = -EBADMSG;
    if (r->n_outputs >= 1 && r->outputs[0]->contents &&
        r->outputs[0]->contents->n_fp32_contents >= 1) {
        *out = r->outputs[0]->contents->fp32_contents[0];
        rc = 0;
    } else if (r->n_raw_output_contents >= 1 && r->raw_output_contents[0].len >= sizeof(float)) {
        memcpy(out, r->raw_output_contents[0].data, sizeof(float));
        rc = 0;
    }
    if (rc < 0)
        fprintf(stderr, "world: answer of %s has no FP32 output\n", model);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int world_model_expected(struct world *w, const char *path, float *out)
{
    if (!w->ref_rpc)
        return -ENOTCONN;
    /* clients made for the call: the reference is asked rarely */
    char id[64], local[700], target[64];
    snprintf(id, sizeof(id), "ref-%u", ++w->ref_loads);
    snprintf(local, sizeof(local), "%s/objects/%s", w->dir, path);
    snprintf(target, sizeof(target), "127.0.0.1:%d", w->ref_port);
    struct spi_client *spi = NULL;
    struct rpc_channel *ch = NULL;
    struct mm_error err = {0};
    int rc = spi_client_new(w->ref_rpc, target, &spi, &err);
    if (rc == 0)
        rc = rpc_channel_new(w->ref_rpc, target, 0, &ch, &err);
    if (rc < 0) {
        fprintf(stderr, "world: clients of the reference runtime: %s\n", err.msg);
        goto out;
    }
    struct spi_model m = {.id = id, .type = "xgboost", .path = local};
    struct spi_result res;
    rc = spi_sync_load_model(spi, &m, REF_CALL_MS, &res);
    if (rc < 0) {
        fprintf(stderr, "world: the reference runtime: %s\n", res.err.msg);
        harness_print_tail(w->ref_log, 2000);
        goto out;
    }
    if (res.size_bytes > w->model_size)
        w->model_size = res.size_bytes;
    grpc_byte_buffer *req = rt_infer_request(id, w->row, WORLD_FEATURES);
    struct rpc_reply reply = {0};
    rc = req ? rpc_unary_wait(ch, INFER, req, NULL, 0, REF_CALL_MS, &reply) : -ENOMEM;
    if (req)
        grpc_byte_buffer_destroy(req);
    if (rc == 0 && reply.status != GRPC_STATUS_OK) {
        fprintf(stderr, "world: the reference runtime's answer for %s: %s %s\n", path,
                rpc_status_name(reply.status), reply.details);
        harness_print_tail(w->ref_log, 2000);
        rc = -EIO;
    }
    if (rc == 0)
        rc = answer_value(reply.response, path, out);
    rpc_reply_clear(&reply);
    spi_sync_unload_model(spi, id, REF_CALL_MS, &res);
out:
    if (spi)
        spi_client_free(spi);
    if (ch)
        rpc_channel_free(ch);
    return rc;
}

int world_infer(struct world *w, size_t k, long timeout_ms, char *why, size_t why_size)
{
    if (k >= w->n_models || !w->cl.gateway)
        return -EINVAL;
    const struct world_model *m = &w->models[k];
    grpc_byte_buffer *req = rt_infer_request(m->name, w->row, WORLD_FEATURES);
    if (!req)
        return -ENOMEM;
    struct rpc_reply reply = {0};
    int rc = rpc_unary_wait(w->cl.gateway, INFER, req, NULL, 0, timeout_ms, &reply);
    grpc_byte_buffer_destroy(req);
    float got = 0;
    if (rc == 0 && reply.status != GRPC_STATUS_OK) {
        snprintf(why, why_size, "%s: %s %s", m->name, rpc_status_name(reply.status), reply.details);
        rc = -ECOMM;
    } else if (rc < 0) {
        snprintf(why, why_size, "%s: no answer (%s)", m->name, reply.details);
    } else if ((rc = answer_value(reply.response, m->name, &got)) < 0) {
        snprintf(why, why_size, "%s: an answer without its output", m->name);
    } else if (fabsf(got - m->expected) > 1e-6f) {
        snprintf(why, why_size, "%s: answered %.9g, expected %.9g", m->name, got, m->expected);
        rc = -EBADMSG;
    }
    rpc_reply_clear(&reply);
    return rc;
}

/* ---------------------------------------------------------------- registrations */

static int put_storage_config(struct world *w, const char *secret)
{
    char key[KEYS_MAX], json[1024];
    struct mm_error err = {0};
    int rc = keys_storage_config(key, sizeof(key), w->cl.name, w->storage_key, &err);
    if (rc < 0) {
        fprintf(stderr, "world: %s\n", err.msg);
        return rc;
    }
    snprintf(json, sizeof(json),
             "{\"type\":\"s3\",\"access_key_id\":\"" S3_KEY_ID "\",\"secret_access_key\":\"%s\","
             "\"endpoint_url\":\"%s\",\"region\":\"us-east-1\",\"bucket\":\"%s\"}",
             secret, w->storage.url, w->bucket);
    return put_acked(w, key, json);
}

/* The ServingRuntimes cluster_start applied, acknowledged: recorded as they are. */
static int ack_runtimes(struct world *w)
{
    if (!w->cfg.verify)
        return 0;
    char prefix[KEYS_MAX];
    snprintf(prefix, sizeof(prefix), "/modelmesh/%s/runtimes/", w->cl.name);
    struct etcd_range_req req = {.key = prefix, .prefix = true};
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    int rc = etcd_sync_range(w->cl.etcd_client, &req, &r, &err);
    if (rc < 0) {
        fprintf(stderr, "world: range %s: %s\n", prefix, err.msg);
        return rc;
    }
    for (size_t i = 0; rc == 0 && i < r->op.n_kvs; i++)
        rc =
            verify_ack(w->cfg.verify, r->op.kvs[i].key, r->op.kvs[i].value, r->op.kvs[i].value_len);
    etcd_response_free(r);
    return rc;
}

static int put_isvc(struct world *w, size_t k)
{
    struct world_model *m = &w->models[k];
    char key[KEYS_MAX], value[2048];
    struct mm_error err = {0};
    int rc = keys_isvc(key, sizeof(key), w->cl.name, WORLD_NAMESPACE, m->name, &err);
    if (rc < 0) {
        fprintf(stderr, "world: %s\n", err.msg);
        return rc;
    }
    snprintf(value, sizeof(value),
             "{\"apiVersion\":\"serving.kserve.io/v1beta1\",\"kind\":\"InferenceService\","
             "\"metadata\":{\"name\":\"%s\",\"namespace\":\"" WORLD_NAMESPACE "\","
             "\"annotations\":{\"serving.kserve.io/deploymentMode\":\"ModelMesh\"},"
             "\"generation\":%d,\"creationTimestamp\":\"2026-01-01T00:00:00Z\","
             "\"uid\":\"uid-chaos-%s\"},\"spec\":{\"predictor\":{\"model\":{\"modelFormat\":"
             "{\"name\":\"xgboost\"},\"storage\":{\"key\":\"%s\",\"path\":\"%s\"}}}}}",
             m->name, m->generation, m->name, w->storage_key, m->path);
    return put_acked(w, key, value);
}

int world_update_model(struct world *w, size_t k)
{
    if (k >= w->n_models)
        return -EINVAL;
    struct world_model *m = &w->models[k];
    char local[700], path[128];
    snprintf(local, sizeof(local), "%s/objects/%s", w->dir, m->path);
    size_t len = 0;
    char *data = read_all(local, &len);
    if (!data) {
        say("cannot read %s", local, -EIO);
        return -EIO;
    }
    model_path(path, sizeof(path), k, m->generation + 1);
    int rc = put_object(w, path, data, len);
    free(data);
    if (rc < 0)
        return rc;
    struct world_model old = *m;
    snprintf(m->path, sizeof(m->path), "%s", path);
    m->generation++;
    rc = put_isvc(w, k);
    if (rc < 0)
        *m = old;
    return rc;
}

/* ---------------------------------------------------------------- readiness */

struct ready_scan {
    bool ready[WORLD_MAX_MODELS];
    char active[WORLD_MAX_MODELS][KEYS_NAME_MAX + 1];
};

/* Which models' isvc-status is Ready at their generation, UpToDate, with a Loaded copy. */
static int scan_ready(struct world *w, struct ready_scan *s, size_t *n_ready)
{
    memset(s, 0, sizeof(*s));
    *n_ready = 0;
    char prefix[KEYS_MAX];
    snprintf(prefix, sizeof(prefix), "/modelmesh/%s/isvc-status/" WORLD_NAMESPACE "/", w->cl.name);
    struct etcd_range_req req = {.key = prefix, .prefix = true};
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    int rc = etcd_sync_range(w->cl.etcd_client, &req, &r, &err);
    if (rc < 0)
        return rc;
    struct isvc_status *st = malloc(sizeof(*st));
    if (!st) {
        etcd_response_free(r);
        return -ENOMEM;
    }
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < r->op.n_kvs; i++) {
        const struct etcd_kv *kv = &r->op.kvs[i];
        const char *name = kv->key + plen;
        size_t nlen = kv->key_len - plen;
        for (size_t k = 0; k < w->n_models; k++) {
            struct world_model *m = &w->models[k];
            if (strlen(m->name) != nlen || memcmp(m->name, name, nlen) != 0)
                continue;
            if (isvc_status_decode(kv->value, kv->value_len, st, &err) < 0)
                break;
            if (st->generation == m->generation && st->ready.status &&
                st->active_state == ISVC_STATE_LOADED && st->transition == ISVC_UP_TO_DATE)
                snprintf(s->active[k], sizeof(s->active[k]), "%s", st->active_model_id);
        }
    }
    free(st);
    etcd_response_free(r);
    struct cluster_copy *copies = malloc(COPIES_MAX * sizeof(*copies));
    if (!copies)
        return -ENOMEM;
    int n = cluster_copies(&w->cl, NULL, copies, COPIES_MAX);
    for (int i = 0; i < n && i < COPIES_MAX; i++) {
        if (copies[i].rec.state != COPY_LOADED)
            continue;
        for (size_t k = 0; k < w->n_models; k++)
            if (s->active[k][0] && strcmp(s->active[k], copies[i].model) == 0)
                s->ready[k] = true;
    }
    free(copies);
    if (n < 0)
        return n;
    for (size_t k = 0; k < w->n_models; k++)
        *n_ready += s->ready[k];
    return 0;
}

int world_wait_ready(struct world *w, long timeout_ms)
{
    struct ready_scan *s = malloc(sizeof(*s));
    if (!s)
        return -ENOMEM;
    long long until = harness_now_ms() + timeout_ms;
    size_t n_ready = 0;
    int rc;
    do {
        rc = scan_ready(w, s, &n_ready);
        if (rc == 0 && n_ready == w->n_models)
            break;
        cluster_run(&w->cl, 200);
    } while (harness_now_ms() < until);
    if (rc == 0 && n_ready < w->n_models) {
        fprintf(stderr, "world: %zu of %zu models not ready within %ld ms:", w->n_models - n_ready,
                w->n_models, timeout_ms);
        size_t said = 0;
        for (size_t k = 0; k < w->n_models && said < 16; k++)
            if (!s->ready[k]) {
                fprintf(stderr, " %s%s", w->models[k].name, s->active[k][0] ? "(no copy)" : "");
                said++;
            }
        fprintf(stderr, "\n");
        rc = -ETIMEDOUT;
    } else if (rc < 0) {
        fprintf(stderr, "world: readiness not read: %s\n", strerror(-rc));
    }
    free(s);
    return rc;
}

/* ---------------------------------------------------------------- start and stop */

static int random_hex(char *out, size_t n)
{
    unsigned char raw[16];
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f)
        return -errno;
    size_t got = fread(raw, 1, sizeof(raw), f);
    fclose(f);
    if (got != sizeof(raw) || n < 2 * sizeof(raw) + 1)
        return -EIO;
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

static int make_netns(struct world *w)
{
    unsigned base = 100 + (unsigned)getpid() % 100;
    int rc = -EEXIST;
    for (unsigned t = 0; t < NETNS_TRIES && rc == -EEXIST; t++)
        rc = harness_netns_create(&w->ns, (base + t) % 256);
    if (rc == -EPERM)
        fprintf(stderr, "world: a network namespace cannot be made here (not root)\n");
    else if (rc < 0)
        say("network namespace%s", "", rc);
    return rc;
}

static int start_storage(struct world *w, const char *base, size_t base_len, char *secret)
{
    int rc = random_hex(secret, 40);
    if (rc < 0)
        return rc;
    snprintf(w->bucket, sizeof(w->bucket), "chaos-models");
    rc = harness_s3rver_start(&w->s3, w->cfg.servers_dir, w->bucket, S3_KEY_ID, secret, NULL);
    if (rc < 0) {
        say("s3rver did not start (%s/node_modules: run scripts/setup.sh)", w->cfg.servers_dir, rc);
        return rc;
    }
    /* the proxy listens where the namespace's pod reaches the host, when there is one (the
     * host's processes reach that address too) */
    const char *listen = w->ns.made ? w->ns.host_addr : "127.0.0.1";
    rc = faultproxy_start_on(&w->storage, listen, "127.0.0.1", w->s3.port, NULL, PROXY_LIFETIME_S);
    if (rc < 0) {
        say("the storage proxy on %s", listen, rc);
        return rc;
    }
    for (size_t k = 0; rc == 0 && k < w->n_models; k++) {
        struct world_model *m = &w->models[k];
        snprintf(m->name, sizeof(m->name), "cm-%zu", k);
        m->multi = k < w->cfg.n_multi;
        m->generation = 1;
        model_path(m->path, sizeof(m->path), k, m->generation);
        size_t len = 0;
        char *json = model_variant(base, base_len, k, w->n_models, &len);
        if (!json) {
            fprintf(stderr, "world: the example model has no base_score to change\n");
            return -EINVAL;
        }
        rc = put_object(w, m->path, json, len);
        free(json);
    }
    return rc;
}

static int start_cluster(struct world *w)
{
    const struct world_config *c = &w->cfg;
    uint64_t size = w->model_size ? w->model_size : 1;
    uint64_t capacity = c->capacity_bytes;
    if (!capacity) {
        /* multi models may reach 3 copies on rate; all copies fit on n_pods - 1 pods, with a
         * quarter to spare */
        uint64_t copies = 3 * c->n_multi + c->n_single;
        capacity = (copies * size * 5 / 4 + c->n_pods - 2) / (c->n_pods - 1) + size;
        /* a model not loaded yet is placed at the mesh's default size (1 MB), far more than
         * these: a few such placements at once must fit too */
        if (capacity < 3 * CACHE_DEFAULT_SIZE_BYTES)
            capacity = 3 * CACHE_DEFAULT_SIZE_BYTES;
    }
    snprintf(w->node_args, sizeof(w->node_args),
             "--rate-check-interval 1s --scale-up-rpm %u --replace-delay 1s --failure-expiry 10s "
             "--max-load-failures 3",
             c->scale_up_rpm);
    struct cluster_config cc = {
        .mm_node = c->mm_node,
        .mm_runtime = c->mm_runtime,
        .mm_gateway = c->mm_gateway,
        .mm_controller = c->mm_controller,
        .name = "chaos",
        .n_pods = c->n_pods,
        .capacity_bytes = capacity,
        .default_model_size = size,
        .runtime_load_timeout_ms = 30000,
        .lease_ttl = c->lease_ttl,
        .controller_lease_ttl = c->lease_ttl,
        .node_args = w->node_args,
        .model_types = "xgboost",
        .runtimes_dir = c->runtimes_dir,
        .etcd_members = c->etcd_members,
    };
    if (w->ns.made) {
        cc.etcd_listen_host = w->ns.etcd_addr;
        cc.pod_runtimes[c->netns_pod].netns = &w->ns;
    }
    int rc = cluster_start(&w->cl, &cc);
    w->cluster_up = true;
    if (rc < 0) {
        fprintf(stderr, "world: the cluster did not start: %s\n", strerror(-rc));
        return rc;
    }
    w->capacity = capacity;
    if (c->mm_gateway && (rc = cluster_gateway_start(&w->cl)) < 0) {
        fprintf(stderr, "world: the gateway did not start: %s\n", strerror(-rc));
        return rc;
    }
    for (size_t k = 0; k < c->n_controllers; k++)
        if ((rc = cluster_controller_start(&w->cl, k)) < 0) {
            fprintf(stderr, "world: controller %zu did not start: %s\n", k, strerror(-rc));
            return rc;
        }
    return 0;
}

static int check_config(struct world *w, const struct world_config *cfg)
{
    w->cfg = *cfg;
    struct world_config *c = &w->cfg;
    if (!c->n_pods)
        c->n_pods = 4;
    if (!c->n_multi && !c->n_single) {
        c->n_multi = 30;
        c->n_single = 30;
    }
    if (!c->etcd_members)
        c->etcd_members = 1;
    if (!c->lease_ttl)
        c->lease_ttl = "3s";
    if (!c->scale_up_rpm)
        c->scale_up_rpm = 60;
    if (!c->mm_controller)
        c->n_controllers = 0;
    const char *bad = NULL;
    if (!c->mm_node || !c->mm_runtime || !c->make_breast_cancer || !c->servers_dir ||
        !c->runtimes_dir)
        bad = "a program or directory path is missing";
    else if (c->n_pods < 2 || c->n_pods > CLUSTER_MAX_PODS)
        bad = "n_pods is not 2..CLUSTER_MAX_PODS";
    else if (c->n_multi + c->n_single > WORLD_MAX_MODELS)
        bad = "more models than WORLD_MAX_MODELS";
    else if (c->etcd_members != 1 && c->etcd_members != 3)
        bad = "etcd_members is not 1 or 3";
    else if (c->netns_pod >= (int)c->n_pods)
        bad = "netns_pod is not a pod";
    else if (c->n_controllers > CLUSTER_MAX_CONTROLLERS)
        bad = "n_controllers is over CLUSTER_MAX_CONTROLLERS";
    if (bad) {
        fprintf(stderr, "world: config: %s\n", bad);
        return -EINVAL;
    }
    w->n_models = c->n_multi + c->n_single;
    return 0;
}

int world_start(struct world *w, const struct world_config *cfg, long timeout_ms)
{
    memset(w, 0, sizeof(*w));
    int rc = check_config(w, cfg);
    if (rc < 0)
        return rc;
    long long t0 = harness_now_ms();
    const char *tmp = getenv("TMPDIR");
    snprintf(w->dir, sizeof(w->dir), "%s/mm-chaos-world-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(w->dir)) {
        rc = -errno;
        w->dir[0] = '\0';
        return rc;
    }
    snprintf(w->storage_key, sizeof(w->storage_key), STORAGE_KEY);
    char *base = NULL, secret[48];
    size_t base_len = 0;
    float maker_expected = 0;
    if (w->cfg.netns_pod >= 0 && (rc = make_netns(w)) < 0)
        goto fail;
    if ((rc = base_model(w, &base, &base_len, &maker_expected)) < 0)
        goto fail;
    if ((rc = start_storage(w, base, base_len, secret)) < 0)
        goto fail;
    /* the expected answers, before anything is applied (the base model too: a check of the
     * reference itself against the maker's own prediction) */
    if ((rc = reference_start(w)) < 0)
        goto fail;
    char base_rel[64] = "base-check/model.json";
    float base_answer = 0;
    if ((rc = put_object(w, base_rel, base, base_len)) < 0 ||
        (rc = world_model_expected(w, base_rel, &base_answer)) < 0)
        goto fail;
    if (fabsf(base_answer - maker_expected) > 1e-6f) {
        fprintf(stderr,
                "world: the reference runtime answers %.9g for the example model, its "
                "maker %.9g\n",
                base_answer, maker_expected);
        rc = -EIO;
        goto fail;
    }
    for (size_t k = 0; k < w->n_models; k++)
        if ((rc = world_model_expected(w, w->models[k].path, &w->models[k].expected)) < 0)
            goto fail;
    for (size_t k = 0; k + 1 < w->n_models; k++)
        for (size_t j = k + 1; j < w->n_models; j++)
            if (fabsf(w->models[k].expected - w->models[j].expected) <= 1e-6f) {
                fprintf(stderr, "world: %s and %s answer the same (%.9g)\n", w->models[k].name,
                        w->models[j].name, w->models[k].expected);
                rc = -EINVAL;
                goto fail;
            }
    fprintf(stderr,
            "world: %zu models in the bucket, answers %.6g .. %.6g, %llu bytes loaded; "
            "up in %lld ms so far\n",
            w->n_models, w->models[0].expected, w->models[w->n_models - 1].expected,
            (unsigned long long)w->model_size, harness_now_ms() - t0);
    reference_context_drop(w);
    if ((rc = start_cluster(w)) < 0)
        goto fail;
    w->ref_rpc = w->cl.rpc; /* borrowed: ref_loop NULL says so */
    if ((rc = ack_runtimes(w)) < 0 || (rc = put_storage_config(w, secret)) < 0)
        goto fail;
    for (size_t k = 0; k < w->n_models; k++)
        if ((rc = put_isvc(w, k)) < 0)
            goto fail;
    long left = timeout_ms - (long)(harness_now_ms() - t0);
    if ((rc = world_wait_ready(w, left > 0 ? left : 1)) < 0)
        goto fail;
    fprintf(stderr,
            "world: %zu pods, %zu etcd member(s), %zu models Ready in %lld ms (capacity "
            "%llu bytes per pod)\n",
            w->cfg.n_pods, w->cfg.etcd_members, w->n_models, harness_now_ms() - t0,
            (unsigned long long)w->capacity);
    free(base);
    return 0;
fail:
    free(base);
    if (w->cluster_up)
        cluster_dump_logs(&w->cl, true);
    world_free(w);
    return rc;
}

size_t world_logs(const struct world *w, const char **paths, size_t max)
{
    size_t n = 0;
#define ADD(p)                                                                                     \
    do {                                                                                           \
        if ((p)[0] && n < max)                                                                     \
            paths[n++] = (p);                                                                      \
    } while (0)
    const struct cluster *c = &w->cl;
    for (size_t i = 0; w->cluster_up && i < c->cfg.n_pods; i++) {
        ADD(c->pods[i].runtime_log);
        ADD(c->pods[i].node_log);
    }
    for (size_t k = 0; w->cluster_up && k < w->cfg.n_controllers; k++)
        ADD(c->controllers[k].log);
    if (w->cluster_up)
        ADD(c->gateway_log);
    for (size_t k = 0; w->cluster_up && k < cluster_etcd_members(c); k++)
        ADD(cluster_etcd_member((struct cluster *)c, k)->log_path);
    ADD(w->ref_log);
    ADD(w->s3.log_path);
#undef ADD
    return n;
}

void world_free(struct world *w)
{
    reference_stop(w);
    if (w->cluster_up)
        cluster_free(&w->cl);
    w->cluster_up = false;
    faultproxy_stop(&w->storage);
    harness_s3rver_stop(&w->s3);
    if (w->ns.made)
        harness_netns_destroy(&w->ns);
    if (w->dir[0]) {
        char cmd[400], out[256];
        if (getenv("MM_TEST_KEEP") && getenv("MM_TEST_KEEP")[0]) {
            fprintf(stderr, "world: models and the reference's log kept in %s\n", w->dir);
        } else {
            snprintf(cmd, sizeof(cmd), "rm -rf '%s'", w->dir);
            harness_capture(cmd, out, sizeof(out));
        }
        w->dir[0] = '\0';
    }
}
