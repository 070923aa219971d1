/* verify.c - the chaos invariants (verify.h): registrations, capacity, leases, convergence and
 * processes, each read afresh from etcd (etcd_sync_*, on the cluster's client and loop), from
 * the runtimes (cluster_runtime_sizes) and from the processes and their logs. */
#include "verify.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cluster.h"
#include "harness.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/isvc.h"
#include "mm/keys.h"
#include "mm/records.h"

#define LINE_BYTES 512
#define MAX_ACKS 65536   /* acknowledged keys kept (one per key) */
#define MAX_LOGS 128     /* logs whose scanned offset is remembered */
#define MAX_REPORTED 256 /* exited processes already reported (each reported once) */
#define MAX_MODELS 4096  /* model ids asked of each runtime */
#define MAX_LEASES 1024  /* distinct leases looked up in one leases check */
#define CONVERGE_POLL_MS 200

struct ack {
    char *key;
    char *value; /* NULL: an acknowledged delete */
    size_t len;
};

struct log_seen {
    char path[512];
    long offset; /* bytes already scanned */
};

struct verify {
    struct cluster *cl;
    struct ack *acks;
    size_t n_acks, cap_acks;
    size_t breaches;
    char lines[VERIFY_KEEP][LINE_BYTES];
    const char *line_ptrs[VERIFY_KEEP];
    size_t n_lines;
    struct verify_counts counts;
    struct log_seen logs[MAX_LOGS];
    size_t n_logs;
    pid_t reported[MAX_REPORTED];
    size_t n_reported;
};

int verify_new(struct cluster *cl, struct verify **out)
{
    struct verify *v = calloc(1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    v->cl = cl;
    for (size_t i = 0; i < VERIFY_KEEP; i++)
        v->line_ptrs[i] = v->lines[i];
    *out = v;
    return 0;
}

void verify_free(struct verify *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n_acks; i++) {
        free(v->acks[i].key);
        free(v->acks[i].value);
    }
    free(v->acks);
    free(v);
}

/* One breach: counted, kept while there is room, and printed (the kept lines are bounded,
 * the log is not). */
__attribute__((format(printf, 2, 3))) static void breach(struct verify *v, const char *fmt, ...)
{
    char line[LINE_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    v->breaches++;
    if (v->n_lines < VERIFY_KEEP)
        memcpy(v->lines[v->n_lines++], line, sizeof(line));
    fprintf(stderr, "verify: BREACH %s\n", line);
}

/* bytes[0, len) as printable text (others as \xNN), cut with "..." to fit out (size >= 8). */
static const char *shown(const char *bytes, size_t len, char *out, size_t size)
{
    size_t o = 0, i = 0;
    for (; i < len && o + 4 + 3 < size; i++) { /* room for an escape and "..." */
        unsigned char ch = (unsigned char)bytes[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\')
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", ch);
    }
    if (i < len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

/* snprintf for texts that may be cut (a reason, a name): cutting is wanted there. */
__attribute__((format(printf, 3, 4))) static void say(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, size, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- registrations */

int verify_ack(struct verify *v, const char *key, const char *value, size_t len)
{
    struct ack *a = NULL;
    for (size_t i = 0; i < v->n_acks && !a; i++)
        if (strcmp(v->acks[i].key, key) == 0)
            a = &v->acks[i];
    char *copy = NULL;
    if (value) {
        copy = malloc(len + 1);
        if (!copy)
            return -ENOMEM;
        memcpy(copy, value, len);
        copy[len] = '\0';
    }
    if (!a) {
        if (v->n_acks == MAX_ACKS) {
            free(copy);
            return -ENOMEM;
        }
        if (v->n_acks == v->cap_acks) {
            size_t cap = v->cap_acks ? v->cap_acks * 2 : 64;
            struct ack *grown = realloc(v->acks, cap * sizeof(*grown));
            if (!grown) {
                free(copy);
                return -ENOMEM;
            }
            v->acks = grown;
            v->cap_acks = cap;
        }
        char *k = strdup(key);
        if (!k) {
            free(copy);
            return -ENOMEM;
        }
        a = &v->acks[v->n_acks++];
        *a = (struct ack){.key = k};
    }
    free(a->value);
    a->value = copy;
    a->len = value ? len : 0;
    return 0;
}

int verify_registrations(struct verify *v)
{
    size_t before = v->breaches;
    v->counts.checked_keys = 0;
    for (size_t i = 0; i < v->n_acks; i++) {
        const struct ack *a = &v->acks[i];
        struct etcd_range_req req = {.key = a->key};
        struct etcd_response *r = NULL;
        struct mm_error err = {0};
        int rc = etcd_sync_range(v->cl->etcd_client, &req, &r, &err);
        if (rc < 0) {
            breach(v, "registrations: could not read %s: %s", a->key, err.msg);
            return rc;
        }
        v->counts.checked_keys++;
        char got[160], want[160];
        if (!a->value && r->op.n_kvs > 0)
            breach(v, "registration %s: deleted (acknowledged) but present: \"%s\"", a->key,
                   shown(r->op.kvs[0].value, r->op.kvs[0].value_len, got, sizeof(got)));
        else if (a->value && r->op.n_kvs == 0)
            breach(v, "registration %s: acknowledged but absent (lost); last acknowledged \"%s\"",
                   a->key, shown(a->value, a->len, want, sizeof(want)));
        else if (a->value && (r->op.kvs[0].value_len != a->len ||
                              memcmp(r->op.kvs[0].value, a->value, a->len) != 0)) {
            /* shown from a little before the first byte that differs */
            const struct etcd_kv *kv = &r->op.kvs[0];
            size_t d = 0;
            while (d < kv->value_len && d < a->len && kv->value[d] == a->value[d])
                d++;
            size_t from = d > 24 ? d - 24 : 0;
            breach(v,
                   "registration %s: value is not the last acknowledged one (%zu bytes, "
                   "acknowledged %zu; from byte %zu): \"%s\", acknowledged \"%s\"",
                   a->key, kv->value_len, a->len, from,
                   shown(kv->value + from, kv->value_len - from, got, sizeof(got)),
                   shown(a->value + from, a->len - from, want, sizeof(want)));
        }
        etcd_response_free(r);
    }
    return (int)(v->breaches - before);
}

/* ---------------------------------------------------------------- registry reads */

/* Every key under the cluster's prefix + rel (e.g. "instances/"); *out is the caller's. */
static int read_prefix(struct verify *v, const char *what, const char *rel, bool keys_only,
                       struct etcd_response **out)
{
    char prefix[KEYS_MAX];
    snprintf(prefix, sizeof(prefix), "/modelmesh/%s/%s", v->cl->name, rel);
    struct etcd_range_req req = {.key = prefix, .prefix = true, .keys_only = keys_only};
    struct mm_error err = {0};
    int rc = etcd_sync_range(v->cl->etcd_client, &req, out, &err);
    if (rc < 0)
        breach(v, "%s: could not read %s: %s", what, prefix, err.msg);
    return rc;
}

/* ---------------------------------------------------------------- capacity */

struct instance_seen {
    char iid[KEYS_NAME_MAX + 1];
    struct instance_record rec;
    int64_t kv_lease; /* the lease the key is attached to */
};

/* Decode every instance record (a record that does not decode is a breach). *out is malloc'd
 * (caller frees); the count, or -errno. */
static int read_instances(struct verify *v, const char *what, struct instance_seen **out)
{
    struct etcd_response *r = NULL;
    int rc = read_prefix(v, what, "instances/", false, &r);
    if (rc < 0)
        return rc;
    struct instance_seen *in = calloc(r->op.n_kvs ? r->op.n_kvs : 1, sizeof(*in));
    if (!in) {
        etcd_response_free(r);
        return -ENOMEM;
    }
    size_t n = 0;
    for (size_t k = 0; k < r->op.n_kvs; k++) {
        const struct etcd_kv *kv = &r->op.kvs[k];
        struct key_parts parts;
        struct mm_error err = {0};
        if (keys_parse(kv->key, kv->key_len, v->cl->name, &parts) < 0 ||
            parts.kind != KEY_INSTANCE) {
            breach(v, "%s: %s is not an instance key", what, kv->key);
            continue;
        }
        if (record_decode(RECORD_INSTANCE, kv->value, kv->value_len, &in[n].rec, &err) < 0) {
            breach(v, "%s: instance record %s does not decode: %s", what, kv->key, err.msg);
            continue;
        }
        memcpy(in[n].iid, parts.first, parts.first_len);
        in[n].iid[parts.first_len] = '\0';
        in[n].kv_lease = kv->lease;
        n++;
    }
    etcd_response_free(r);
    *out = in;
    return (int)n;
}

static const struct instance_seen *instance_of(const struct instance_seen *in, size_t n,
                                               const char *iid, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(in[i].iid) == len && memcmp(in[i].iid, iid, len) == 0)
            return &in[i];
    return NULL;
}

/* The model ids the registry knows: models/<id> and copies/<id>/..., each once. */
static int known_models(struct verify *v, char ***ids_out, size_t *n_out)
{
    static const char *const rels[] = {"models/", "copies/"};
    char **ids = calloc(MAX_MODELS, sizeof(*ids));
    if (!ids)
        return -ENOMEM;
    size_t n = 0;
    int rc = 0;
    for (size_t p = 0; rc == 0 && p < 2; p++) {
        struct etcd_response *r = NULL;
        rc = read_prefix(v, "capacity", rels[p], true, &r);
        for (size_t k = 0; rc == 0 && k < r->op.n_kvs; k++) {
            struct key_parts parts;
            if (keys_parse(r->op.kvs[k].key, r->op.kvs[k].key_len, v->cl->name, &parts) < 0)
                continue;
            bool dup = false;
            for (size_t j = 0; j < n && !dup; j++)
                dup = strlen(ids[j]) == parts.first_len &&
                      memcmp(ids[j], parts.first, parts.first_len) == 0;
            if (dup || n == MAX_MODELS)
                continue;
            if (!(ids[n] = strndup(parts.first, parts.first_len)))
                rc = -ENOMEM;
            else
                n++;
        }
        etcd_response_free(r);
    }
    if (rc < 0) {
        for (size_t j = 0; j < n; j++)
            free(ids[j]);
        free(ids);
        return rc;
    }
    *ids_out = ids;
    *n_out = n;
    return 0;
}

int verify_capacity(struct verify *v)
{
    size_t before = v->breaches;
    struct instance_seen *in = NULL;
    int n = read_instances(v, "capacity", &in);
    if (n < 0)
        return n;
    v->counts.instances = (size_t)n;
    for (int i = 0; i < n; i++)
        if (in[i].rec.used_bytes > in[i].rec.capacity_bytes)
            breach(v,
                   "capacity: instance %s: used_bytes %" PRIu64 " > capacity_bytes %" PRIu64
                   " (%u loaded)",
                   in[i].iid, in[i].rec.used_bytes, in[i].rec.capacity_bytes,
                   in[i].rec.loaded_count);

    /* What the runtimes really hold, against the capacity their instance announces (else the
     * capacity the cluster gave them). */
    char **ids = NULL;
    size_t n_ids = 0;
    int rc = known_models(v, &ids, &n_ids);
    uint64_t *sizes = rc == 0 ? calloc(n_ids ? n_ids : 1, sizeof(*sizes)) : NULL;
    if (rc == 0 && !sizes)
        rc = -ENOMEM;
    struct cluster *c = v->cl;
    for (size_t p = 0; rc == 0 && p < c->cfg.n_pods && n_ids > 0; p++) {
        const struct cluster_pod *pod = &c->pods[p];
        if (pod->runtime_pid <= 0 || !pod->spi)
            continue; /* down: a fault stopped it */
        const struct instance_seen *is = instance_of(in, (size_t)n, pod->iid, strlen(pod->iid));
        uint64_t cap = is ? is->rec.capacity_bytes : c->cfg.capacity_bytes;
        if (cap == 0)
            continue;
        int held = cluster_runtime_sizes(c, p, (const char *const *)ids, n_ids, sizes);
        if (held < 0) {
            breach(v, "capacity: %s's runtime (pid %d) did not answer modelSize: %s", pod->iid,
                   (int)pod->runtime_pid, strerror(-held));
            rc = held;
            break;
        }
        uint64_t sum = 0;
        for (size_t j = 0; j < n_ids; j++)
            sum += sizes[j];
        if (sum > cap)
            breach(v,
                   "capacity: %s's runtime holds %" PRIu64
                   " bytes in %d models > capacity %" PRIu64,
                   pod->iid, sum, held, cap);
    }
    for (size_t j = 0; j < n_ids; j++)
        free(ids[j]);
    free(ids);
    free(sizes);
    free(in);
    return rc < 0 ? rc : (int)(v->breaches - before);
}

/* ---------------------------------------------------------------- leases */

struct lease_seen {
    int64_t id;
    int status; /* 0 alive, -ENOENT gone, other -errno */
};

/* 0 alive, -ENOENT gone, else -errno (err filled). Looked up once per check. */
static int lease_alive(struct verify *v, struct lease_seen *seen, size_t *n_seen, int64_t id,
                       struct mm_error *err)
{
    for (size_t i = 0; i < *n_seen; i++)
        if (seen[i].id == id)
            return seen[i].status;
    int64_t ttl = 0;
    int rc = etcd_sync_lease_ttl(v->cl->etcd_client, id, &ttl, NULL, err);
    if (rc == 0 && ttl <= 0)
        rc = -ENOENT;
    if (*n_seen < MAX_LEASES && (rc == 0 || rc == -ENOENT))
        seen[(*n_seen)++] = (struct lease_seen){id, rc};
    return rc;
}

/* Whether key is still there attached to lease (a lease that expired between the range and
 * its lookup takes its keys with it: that is no breach). 1, 0, or -errno. */
static int still_attached(struct verify *v, const struct etcd_kv *kv)
{
    struct etcd_range_req req = {.key = kv->key, .key_len = kv->key_len};
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    int rc = etcd_sync_range(v->cl->etcd_client, &req, &r, &err);
    if (rc < 0)
        return rc;
    rc = r->op.n_kvs == 1 && r->op.kvs[0].lease == kv->lease;
    etcd_response_free(r);
    return rc;
}

int verify_leases(struct verify *v)
{
    size_t before = v->breaches;
    struct instance_seen *in = NULL;
    int n_in = read_instances(v, "leases", &in);
    if (n_in < 0)
        return n_in;
    struct lease_seen *seen = calloc(MAX_LEASES, sizeof(*seen));
    size_t n_seen = 0;
    struct etcd_response *r = NULL;
    int rc = seen ? read_prefix(v, "leases", "copies/", false, &r) : -ENOMEM;
    struct mm_error err = {0};
    /* Instances: attached to a live lease, the one their record names. */
    for (int i = 0; rc == 0 && i < n_in; i++) {
        const struct instance_seen *is = &in[i];
        if (is->kv_lease == 0) {
            breach(v, "leases: instance %s has no lease (it outlives its node)", is->iid);
            continue;
        }
        if (is->rec.lease != 0 && is->rec.lease != is->kv_lease)
            breach(v,
                   "leases: instance %s names lease %" PRId64 " but is attached to %" PRId64
                   " (copies would be put with the wrong one)",
                   is->iid, is->rec.lease, is->kv_lease);
    }
    size_t copies = 0;
    for (size_t k = 0; rc == 0 && k < r->op.n_kvs; k++) {
        const struct etcd_kv *kv = &r->op.kvs[k];
        struct key_parts parts;
        if (keys_parse(kv->key, kv->key_len, v->cl->name, &parts) < 0 || parts.kind != KEY_COPY) {
            breach(v, "leases: %s is not a copy key", kv->key);
            continue;
        }
        copies++;
        const struct instance_seen *is =
            instance_of(in, (size_t)n_in, parts.second, parts.second_len);
        int iid_len = (int)parts.second_len, model_len = (int)parts.first_len;
        if (kv->lease == 0) {
            breach(v, "leases: copy of %.*s on %.*s has no lease (it outlives its instance)",
                   model_len, parts.first, iid_len, parts.second);
            continue;
        }
        if (!is) {
            breach(v,
                   "leases: copy of %.*s on %.*s (lease %" PRId64 "): no instance %.*s in "
                   "the registry",
                   model_len, parts.first, iid_len, parts.second, kv->lease, iid_len, parts.second);
        } else if (is->kv_lease != kv->lease) {
            breach(v,
                   "leases: copy of %.*s on %.*s has lease %" PRId64
                   ", not its instance's (%" PRId64 "): it can outlive the instance",
                   model_len, parts.first, iid_len, parts.second, kv->lease, is->kv_lease);
        }
        int alive = lease_alive(v, seen, &n_seen, kv->lease, &err);
        if (alive == -ENOENT) {
            int still = still_attached(v, kv);
            if (still != 0)
                breach(v,
                       "leases: copy of %.*s on %.*s: its lease %" PRId64 " is gone but the "
                       "record %s",
                       model_len, parts.first, iid_len, parts.second, kv->lease,
                       still > 0 ? "stays" : "could not be read again");
        } else if (alive < 0) {
            breach(v, "leases: could not look up lease %" PRId64 ": %s", kv->lease, err.msg);
            rc = alive;
        }
    }
    v->counts.copies = copies;
    etcd_response_free(r);
    free(seen);
    free(in);
    return rc < 0 ? rc : (int)(v->breaches - before);
}

/* ---------------------------------------------------------------- convergence */

struct isvc_seen {
    char name[ISVC_NAME_MAX + 1];
    char why[LINE_BYTES - 128]; /* not converged: why; "" = converged */
};

/* Whether model id has a Loaded copy among the copy records of r. */
static bool has_loaded_copy(struct verify *v, const struct etcd_response *r, const char *id)
{
    size_t len = strlen(id);
    for (size_t k = 0; k < r->op.n_kvs; k++) {
        const struct etcd_kv *kv = &r->op.kvs[k];
        struct key_parts parts;
        struct copy_record cr;
        struct mm_error err = {0};
        if (keys_parse(kv->key, kv->key_len, v->cl->name, &parts) < 0 || parts.kind != KEY_COPY ||
            parts.first_len != len || memcmp(parts.first, id, len) != 0)
            continue;
        if (record_decode(RECORD_COPY, kv->value, kv->value_len, &cr, &err) == 0 &&
            cr.state == COPY_LOADED)
            return true;
    }
    return false;
}

/* The status record of ns/name among r's: 1 and *st, 0 absent, -EINVAL (why says). */
static int status_of(const struct etcd_response *r, const char *key, struct isvc_status *st,
                     char *why, size_t size)
{
    for (size_t k = 0; k < r->op.n_kvs; k++) {
        if (strcmp(r->op.kvs[k].key, key) != 0)
            continue;
        struct mm_error err = {0};
        if (isvc_status_decode(r->op.kvs[k].value, r->op.kvs[k].value_len, st, &err) < 0) {
            say(why, size, "its status does not decode: %s", err.msg);
            return -EINVAL;
        }
        return 1;
    }
    return 0;
}

static void judge(struct verify *v, const struct etcd_kv *kv, const char *ns,
                  const struct etcd_response *statuses, const struct etcd_response *copies,
                  struct isvc_seen *out)
{
    static struct isvc s; /* a few KiB; single-threaded */
    struct isvc_status st;
    struct mm_error err = {0};
    char key[KEYS_MAX];
    out->why[0] = '\0';
    if (isvc_parse_text(kv->value, kv->value_len, &s, &err) < 0) {
        say(out->why, sizeof(out->why), "does not parse: %s", err.msg);
        return;
    }
    snprintf(out->name, sizeof(out->name), "%s", s.name);
    if (s.invalid != ISVC_REASON_NONE) {
        say(out->why, sizeof(out->why), "invalid spec: %s", s.invalid_msg);
        return;
    }
    if (keys_isvc_status(key, sizeof(key), v->cl->name, ns, s.name, &err) < 0) {
        say(out->why, sizeof(out->why), "%s", err.msg);
        return;
    }
    int rc = status_of(statuses, key, &st, out->why, sizeof(out->why));
    if (rc < 0)
        return;
    if (rc == 0) {
        say(out->why, sizeof(out->why), "no status");
        return;
    }
    bool loaded = has_loaded_copy(v, copies, s.revision);
    if (st.generation == s.generation && st.ready.status && st.transition == ISVC_UP_TO_DATE &&
        st.active_state == ISVC_STATE_LOADED && strcmp(st.active_model_id, s.revision) == 0 &&
        (!st.target_model_id[0] || strcmp(st.target_model_id, s.revision) == 0) && loaded)
        return;
    say(out->why, sizeof(out->why),
        "generation %" PRId64 " observed %" PRId64 ", ready %s, %s, active %s (%s), "
        "target %s (%s), want %s with a Loaded copy (%s); failure %s \"%.120s\" at %s",
        s.generation, st.generation, st.ready.status ? "True" : "False",
        isvc_transition_name(st.transition), st.active_model_id[0] ? st.active_model_id : "-",
        isvc_model_state_name(st.active_state), st.target_model_id[0] ? st.target_model_id : "-",
        isvc_model_state_name(st.target_state), s.revision, loaded ? "has one" : "none",
        isvc_reason_name(st.failure.reason), st.failure.message,
        st.failure.location[0] ? st.failure.location : "-");
}

/* One look: the isvcs of ns judged into *out (malloc'd), their number; -errno (err says). */
static int look(struct verify *v, const char *ns, struct isvc_seen **out, char *err, size_t size)
{
    char rel[KEYS_MAX];
    struct etcd_response *isvcs = NULL, *statuses = NULL, *copies = NULL;
    static const char *const what[] = {"isvcs/", "isvc-status/", "copies/"};
    struct etcd_response **resp[] = {&isvcs, &statuses, &copies};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < 3; i++) {
        if (i < 2)
            snprintf(rel, sizeof(rel), "/modelmesh/%s/%s%s/", v->cl->name, what[i], ns);
        else
            snprintf(rel, sizeof(rel), "/modelmesh/%s/%s", v->cl->name, what[i]);
        struct etcd_range_req req = {.key = rel, .prefix = true};
        struct mm_error e = {0};
        rc = etcd_sync_range(v->cl->etcd_client, &req, resp[i], &e);
        if (rc < 0)
            say(err, size, "could not read %s: %s", rel, e.msg);
    }
    struct isvc_seen *seen = NULL;
    if (rc == 0 && !(seen = calloc(isvcs->op.n_kvs ? isvcs->op.n_kvs : 1, sizeof(*seen))))
        rc = -ENOMEM;
    for (size_t k = 0; rc == 0 && k < isvcs->op.n_kvs; k++) {
        const struct etcd_kv *kv = &isvcs->op.kvs[k];
        const char *slash = memrchr(kv->key, '/', kv->key_len);
        snprintf(seen[k].name, sizeof(seen[k].name), "%s", slash ? slash + 1 : kv->key);
        judge(v, kv, ns, statuses, copies, &seen[k]);
    }
    if (rc == 0)
        rc = (int)isvcs->op.n_kvs;
    etcd_response_free(isvcs);
    etcd_response_free(statuses);
    etcd_response_free(copies);
    if (rc < 0)
        free(seen);
    else
        *out = seen;
    return rc;
}

int verify_converged(struct verify *v, const char *ns, long timeout_ms, int64_t *took_ms)
{
    long long t0 = harness_now_ms(), end = t0 + timeout_ms;
    *took_ms = -1;
    char err[LINE_BYTES - 64] = "";
    for (;;) {
        struct isvc_seen *seen = NULL;
        int n = look(v, ns, &seen, err, sizeof(err));
        bool last = harness_now_ms() >= end;
        if (n >= 0) {
            v->counts.isvcs = (size_t)n;
            int not_yet = 0;
            for (int i = 0; i < n; i++)
                not_yet += seen[i].why[0] != '\0';
            if (not_yet == 0) {
                free(seen);
                *took_ms = harness_now_ms() - t0;
                return 0;
            }
            if (last) {
                for (int i = 0; i < n; i++)
                    if (seen[i].why[0])
                        breach(v,
                               "converged: InferenceService %s/%s not converged within %ld "
                               "ms: %s",
                               ns, seen[i].name, timeout_ms, seen[i].why);
                free(seen);
                return not_yet;
            }
            free(seen);
        } else if (last) {
            breach(v, "converged: %s (for %ld ms)", err, timeout_ms);
            return n;
        }
        cluster_run(v->cl, CONVERGE_POLL_MS);
    }
}

/* ---------------------------------------------------------------- processes */

/* Whether pid (a child that should be running) has exited: its status, not reaped (the
 * harness reaps it later). 1 exited, 0 running. */
static int exited(pid_t pid, siginfo_t *si)
{
    memset(si, 0, sizeof(*si));
    if (waitid(P_PID, (id_t)pid, si, WEXITED | WNOHANG | WNOWAIT) < 0)
        return errno == ECHILD; /* not our child any more: gone */
    return si->si_pid == pid;
}

static void check_pid(struct verify *v, const char *what, pid_t pid)
{
    if (pid <= 0)
        return; /* not running: a fault or the scenario stopped it */
    siginfo_t si;
    if (!exited(pid, &si))
        return;
    for (size_t i = 0; i < v->n_reported; i++)
        if (v->reported[i] == pid)
            return;
    if (v->n_reported < MAX_REPORTED)
        v->reported[v->n_reported++] = pid;
    if (si.si_code == CLD_EXITED)
        breach(v, "processes: %s (pid %d) exited with status %d", what, (int)pid, si.si_status);
    else if (si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED)
        breach(v, "processes: %s (pid %d) was killed by signal %d (%s)%s", what, (int)pid,
               si.si_status, strsignal(si.si_status),
               si.si_code == CLD_DUMPED ? ", core dumped" : "");
    else
        breach(v, "processes: %s (pid %d) is gone", what, (int)pid);
}

static const char *const sanitizer_marks[] = {
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "SUMMARY: UndefinedBehaviorSanitizer",
};

/* Scan the part of path not scanned before: one breach per line with a sanitizer report. */
static int scan_log(struct verify *v, const char *path)
{
    struct log_seen *ls = NULL;
    for (size_t i = 0; i < v->n_logs && !ls; i++)
        if (strcmp(v->logs[i].path, path) == 0)
            ls = &v->logs[i];
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? 0 : -errno; /* a process that never started has no log */
    if (!ls && v->n_logs < MAX_LOGS) {
        ls = &v->logs[v->n_logs++];
        snprintf(ls->path, sizeof(ls->path), "%s", path);
        ls->offset = 0;
    }
    struct stat st;
    long offset = ls ? ls->offset : 0;
    if (fstat(fileno(f), &st) == 0 && st.st_size < offset)
        offset = 0; /* made anew */
    fseek(f, offset, SEEK_SET);
    v->counts.logs++;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        if (line[len - 1] != '\n')
            break; /* still being written: read it whole next time */
        offset += len;
        for (size_t m = 0; m < sizeof(sanitizer_marks) / sizeof(sanitizer_marks[0]); m++) {
            if (memmem(line, (size_t)len, sanitizer_marks[m], strlen(sanitizer_marks[m]))) {
                line[len - 1] = '\0';
                char text[300];
                breach(v, "processes: %s: %s", path,
                       shown(line, (size_t)len - 1, text, sizeof(text)));
                break;
            }
        }
    }
    free(line);
    fclose(f);
    if (ls)
        ls->offset = offset;
    return 0;
}

int verify_processes(struct verify *v, const char *const *paths, size_t n)
{
    size_t before = v->breaches;
    struct cluster *c = v->cl;
    char what[64];
    size_t members = cluster_etcd_members(c);
    for (size_t k = 0; k < members; k++) {
        const struct harness_etcd *e = cluster_etcd_member(c, k);
        snprintf(what, sizeof(what), "etcd member %s", e->name[0] ? e->name : "0");
        check_pid(v, what, e->pid);
    }
    for (size_t i = 0; i < c->cfg.n_pods; i++) {
        snprintf(what, sizeof(what), "%s's runtime", c->pods[i].iid);
        check_pid(v, what, c->pods[i].runtime_pid);
        snprintf(what, sizeof(what), "%s's node", c->pods[i].iid);
        check_pid(v, what, c->pods[i].node_pid);
    }
    for (size_t k = 0; k < CLUSTER_MAX_CONTROLLERS; k++) {
        snprintf(what, sizeof(what), "controller %s", c->controllers[k].identity);
        check_pid(v, what, c->controllers[k].pid);
    }
    check_pid(v, "gateway", c->gateway_pid);

    /* The logs: the caller's, then the cluster's own, each once. */
    const char *own[CLUSTER_MAX_ETCD + 1 + 2 * CLUSTER_MAX_PODS + CLUSTER_MAX_CONTROLLERS];
    size_t n_own = 0;
    for (size_t k = 0; k < members; k++)
        own[n_own++] = cluster_etcd_member(c, k)->log_path;
    own[n_own++] = c->gateway_log;
    for (size_t i = 0; i < c->cfg.n_pods; i++) {
        own[n_own++] = c->pods[i].runtime_log;
        own[n_own++] = c->pods[i].node_log;
    }
    for (size_t k = 0; k < CLUSTER_MAX_CONTROLLERS; k++)
        own[n_own++] = c->controllers[k].log;
    v->counts.logs = 0;
    int rc = 0;
    for (size_t i = 0; i < n + n_own; i++) {
        const char *p = i < n ? paths[i] : own[i - n];
        if (!p || !p[0])
            continue;
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++) {
            const char *q = j < n ? paths[j] : own[j - n];
            dup = q && strcmp(p, q) == 0;
        }
        if (dup)
            continue;
        int r = scan_log(v, p);
        if (r < 0) {
            breach(v, "processes: could not read the log %s: %s", p, strerror(-r));
            rc = r;
        }
    }
    return rc < 0 ? rc : (int)(v->breaches - before);
}

/* ---------------------------------------------------------------- results */

size_t verify_breaches(const struct verify *v)
{
    return v->breaches;
}

size_t verify_lines(const struct verify *v, const char *const **lines)
{
    *lines = v->line_ptrs;
    return v->n_lines;
}

void verify_counts(const struct verify *v, struct verify_counts *out)
{
    *out = v->counts;
    out->acked_keys = v->n_acks;
}
