/* isvc_status.c - an InferenceService's status (isvc.h, "Status"): computed from the registry's
 * records by the rules of PROTOCOLS.md "How status moves", and its record's JSON both ways. */
#include "mm/isvc.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const state_names[] = {
    [ISVC_STATE_NONE] = "",
    [ISVC_STATE_PENDING] = "Pending",
    [ISVC_STATE_STANDBY] = "Standby",
    [ISVC_STATE_LOADING] = "Loading",
    [ISVC_STATE_LOADED] = "Loaded",
    [ISVC_STATE_FAILED_TO_LOAD] = "FailedToLoad",
};

static const char *const transition_names[] = {
    [ISVC_UP_TO_DATE] = "UpToDate",
    [ISVC_IN_PROGRESS] = "InProgress",
    [ISVC_BLOCKED_BY_FAILED_LOAD] = "BlockedByFailedLoad",
    [ISVC_INVALID_SPEC] = "InvalidSpec",
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *isvc_model_state_name(enum isvc_model_state s)
{
    return (unsigned)s < COUNT(state_names) ? state_names[s] : "";
}

int isvc_model_state_parse(const char *name, enum isvc_model_state *out)
{
    for (unsigned i = 0; i < COUNT(state_names); i++) {
        if (strcmp(name, state_names[i]) == 0) {
            *out = (enum isvc_model_state)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *isvc_transition_name(enum isvc_transition t)
{
    return (unsigned)t < COUNT(transition_names) ? transition_names[t] : "";
}

int isvc_transition_parse(const char *name, enum isvc_transition *out)
{
    for (unsigned i = 0; i < COUNT(transition_names); i++) {
        if (strcmp(name, transition_names[i]) == 0) {
            *out = (enum isvc_transition)i;
            return 0;
        }
    }
    return -EINVAL;
}

/* ---------------------------------------------------------------- time */

void isvc_time_format(int64_t epoch_s, char *out, size_t size)
{
    struct tm tm;
    time_t t = (time_t)epoch_s;
    if (epoch_s < 0 || epoch_s > INT64_C(253402300799) || !gmtime_r(&t, &tm)) {
        snprintf(out, size, "%s", "1970-01-01T00:00:00Z");
        return;
    }
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return -EINVAL;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return 0;
}

int isvc_time_parse(const char *text, int64_t *epoch_s)
{
    const char *p = text;
    int y, mo, d, h, mi, s;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d) || (*p != 'T' && *p != 't') || !*p++ || digits(&p, 2, &h) ||
        *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &s))
        return -EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60)
        return -EINVAL;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -EINVAL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            return -EINVAL;
        off = sign * (oh * 3600 + om * 60);
    } else {
        return -EINVAL;
    }
    if (*p)
        return -EINVAL;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                    .tm_min = mi, .tm_sec = s};
    *epoch_s = (int64_t)timegm(&tm) - off;
    return 0;
}

/* ---------------------------------------------------------------- compute */

/* What a model's copies say: Loaded, Loading (a copy pending or loading), FailedToLoad (every
 * copy failed, or none and the model record holds a failure), or NONE (no copies). */
static enum isvc_model_state copies_state(const struct isvc_model_view *m)
{
    bool loaded = false, loading = false, failed = false;
    for (size_t i = 0; i < m->n_copies; i++) {
        if (!m->copies[i].rec)
            continue;
        switch (m->copies[i].rec->state) {
        case COPY_LOADED: loaded = true; break;
        case COPY_PENDING:
        case COPY_LOADING: loading = true; break;
        case COPY_FAILED: failed = true; break;
        }
    }
    if (loaded)
        return ISVC_STATE_LOADED;
    if (loading)
        return ISVC_STATE_LOADING;
    if (failed || (m->rec && m->rec->last_failure.message[0]))
        return ISVC_STATE_FAILED_TO_LOAD;
    return ISVC_STATE_NONE;
}

/* lastFailureInfo ModelLoadFailed of m: its latest failed copy, else its record's failure. */
static void load_failure(const struct isvc_model_view *m, struct isvc_failure *f)
{
    const struct isvc_copy_view *latest = NULL;
    for (size_t i = 0; i < m->n_copies; i++) {
        const struct isvc_copy_view *c = &m->copies[i];
        if (c->rec && c->rec->state == COPY_FAILED &&
            (!latest || c->rec->since_ms > latest->rec->since_ms ||
             (c->rec->since_ms == latest->rec->since_ms && strcmp(c->iid, latest->iid) < 0)))
            latest = c;
    }
    memset(f, 0, sizeof(*f));
    f->reason = ISVC_REASON_MODEL_LOAD_FAILED;
    snprintf(f->model_revision, sizeof(f->model_revision), "%s", m->id);
    if (latest) {
        snprintf(f->message, sizeof(f->message), "%s",
                 latest->rec->error[0] ? latest->rec->error : "Model load failed");
        snprintf(f->location, sizeof(f->location), "%s", latest->iid);
        f->time_s = latest->rec->since_ms / 1000;
    } else if (m->rec && m->rec->last_failure.message[0]) {
        snprintf(f->message, sizeof(f->message), "%s", m->rec->last_failure.message);
        snprintf(f->location, sizeof(f->location), "%s", m->rec->last_failure.instance);
        f->time_s = m->rec->last_failure.time_ms / 1000;
    } else {
        snprintf(f->message, sizeof(f->message), "Model load failed");
    }
}

static bool has_label(const struct record_labels *l, const char *prefix, const char *name)
{
    size_t pl = strlen(prefix);
    for (uint32_t i = 0; i < l->n && i < RECORD_LABELS_MAX; i++)
        if (strncmp(l->label[i], prefix, pl) == 0 && strcmp(l->label[i] + pl, name) == 0)
            return true;
    return false;
}

/* Whether a live instance (not shutting down) serves runtime rt. */
static bool runtime_up(const struct isvc_world *w, const char *rt)
{
    if (!rt || !rt[0])
        return true; /* nothing to wait for that we could name */
    for (size_t i = 0; i < w->n_instances; i++) {
        const struct instance_record *r = w->instances[i].rec;
        if (r && !r->shutting_down &&
            (strcmp(r->runtime, rt) == 0 || has_label(&r->labels, "rt:", rt)))
            return true;
    }
    return false;
}

static void count_copies(const struct isvc_model_view *m, struct isvc_status *out)
{
    for (size_t i = 0; m && i < m->n_copies; i++) {
        if (!m->copies[i].rec)
            continue;
        out->total_copies++;
        if (m->copies[i].rec->state == COPY_FAILED)
            out->failed_copies++;
    }
}

static void condition(const struct isvc_condition *prev, bool status, int64_t now_s,
                      struct isvc_condition *out)
{
    memset(out, 0, sizeof(*out));
    out->status = status;
    out->last_transition_s = prev && prev->status == status && prev->last_transition_s > 0
                                 ? prev->last_transition_s
                                 : now_s;
}

void isvc_status_compute(const struct isvc_world *w, struct isvc_status *out)
{
    memset(out, 0, sizeof(*out));
    const struct isvc *s = w->isvc;
    const struct isvc_status *prev = w->prev;
    const char *ns = s->ns[0] ? s->ns : ISVC_DEFAULT_NAMESPACE;
    const char *service = w->service && w->service[0] ? w->service : ISVC_DEFAULT_SERVICE;
    out->generation = s->generation;
    snprintf(out->grpc_url, sizeof(out->grpc_url), "grpc://%s.%s:%d", service, ns,
             ISVC_GRPC_PORT);
    snprintf(out->rest_url, sizeof(out->rest_url), "http://%s.%s:%d", service, ns,
             ISVC_REST_PORT);
    memcpy(out->url, out->grpc_url, sizeof(out->url));

    /* Is the vmodel ours? One mesh per namespace: a vmodel of this name set by another
     * namespace's InferenceService is not. */
    char owner[ISVC_NS_MAX + 8];
    isvc_owner(ns, owner, sizeof(owner));
    const struct vmodel_record *vm = w->vmodel;
    enum isvc_reason invalid = s->invalid;
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", s->invalid_msg);
    if (vm && vm->owner[0] && strcmp(vm->owner, owner) != 0) {
        const char *other = strncmp(vm->owner, "isvc:", 5) == 0 ? vm->owner + 5 : vm->owner;
        if (invalid == ISVC_REASON_NONE) {
            invalid = ISVC_REASON_INVALID_PREDICTOR_SPEC;
            snprintf(msg, sizeof(msg), "vmodel %s already owned by namespace %s", s->name,
                     other);
        }
        vm = NULL; /* nothing of it is this InferenceService's */
    }
    const char *runtime = NULL;
    if (invalid == ISVC_REASON_NONE) {
        size_t chosen;
        struct mm_error merr = {0};
        enum isvc_reason why;
        if (isvc_match_runtime(s, w->runtimes, w->n_runtimes, &chosen, &why, &merr) < 0) {
            invalid = why;
            snprintf(msg, sizeof(msg), "%s", merr.msg);
        } else {
            runtime = w->runtimes[chosen].name;
        }
    }

    const struct isvc_model_view *active =
        vm && w->active && w->active->id && strcmp(w->active->id, vm->active_model_id) == 0
            ? w->active
            : NULL;
    const char *desired = s->revision;
    /* The model that is or will be active: the vmodel's, or before there is one the
     * revision. */
    snprintf(out->active_model_id, sizeof(out->active_model_id), "%s",
             vm ? vm->active_model_id : (invalid == ISVC_REASON_NONE ? desired : ""));
    bool same_active = prev && strcmp(prev->active_model_id, out->active_model_id) == 0;

    /* Active state. */
    enum isvc_model_state act = ISVC_STATE_PENDING;
    if (active) {
        act = copies_state(active);
        if (act == ISVC_STATE_NONE) /* registered, no copy: Standby once it had been loaded */
            act = same_active && (prev->active_state == ISVC_STATE_LOADED ||
                                  prev->active_state == ISVC_STATE_STANDBY)
                      ? ISVC_STATE_STANDBY
                      : ISVC_STATE_PENDING;
        count_copies(active, out);
    }
    /* Forward only along Pending -> Loading for one model: a copy placed anew after a first
     * attempt does not send it back to Pending. */
    if (act == ISVC_STATE_PENDING && same_active && prev->active_state == ISVC_STATE_LOADING)
        act = ISVC_STATE_LOADING;

    if (invalid != ISVC_REASON_NONE) {
        out->transition = ISVC_INVALID_SPEC;
        if (vm && act == ISVC_STATE_LOADED) { /* the model before still serves */
            out->active_state = ISVC_STATE_LOADED;
            out->target_state = ISVC_STATE_FAILED_TO_LOAD;
        } else {
            out->active_state = ISVC_STATE_FAILED_TO_LOAD;
        }
        out->failure.reason = invalid;
        snprintf(out->failure.message, sizeof(out->failure.message), "%s", msg);
        snprintf(out->failure.model_revision, sizeof(out->failure.model_revision), "%s",
                 desired);
        goto conditions;
    }

    /* A transition: the revision is not the active one. Its view is the vmodel's target (or
     * nothing yet: the controller has not set the target). */
    const struct isvc_model_view *target = NULL;
    enum isvc_model_state tgt = ISVC_STATE_NONE;
    if (vm && strcmp(vm->active_model_id, desired) != 0) {
        snprintf(out->target_model_id, sizeof(out->target_model_id), "%s", desired);
        if (w->target && w->target->id && strcmp(w->target->id, desired) == 0 &&
            strcmp(vm->target_model_id, desired) == 0)
            target = w->target;
        tgt = target ? copies_state(target) : ISVC_STATE_NONE;
        if (tgt == ISVC_STATE_NONE)
            tgt = ISVC_STATE_LOADING; /* being placed: "" -> Loading */
        count_copies(target, out);
    }

    out->active_state = act;
    out->target_state = tgt;
    if (tgt == ISVC_STATE_FAILED_TO_LOAD) {
        out->transition = ISVC_BLOCKED_BY_FAILED_LOAD;
        load_failure(target ? target : &(struct isvc_model_view){.id = desired}, &out->failure);
    } else {
        out->transition = tgt == ISVC_STATE_NONE ? ISVC_UP_TO_DATE : ISVC_IN_PROGRESS;
        if (act == ISVC_STATE_FAILED_TO_LOAD && active)
            load_failure(active, &out->failure);
    }

    /* The model still to load waits for a node of its runtime. */
    if (out->failure.reason == ISVC_REASON_NONE) {
        const char *waiting = NULL, *rt = NULL;
        if (tgt == ISVC_STATE_LOADING) {
            waiting = desired;
            rt = target && target->rec && target->rec->runtime[0] ? target->rec->runtime
                                                                  : runtime;
        } else if (act != ISVC_STATE_LOADED && act != ISVC_STATE_FAILED_TO_LOAD &&
                   act != ISVC_STATE_STANDBY) {
            waiting = out->active_model_id;
            rt = active && active->rec && active->rec->runtime[0] ? active->rec->runtime
                                                                  : runtime;
        }
        if (waiting && !runtime_up(w, rt)) {
            /* queued for a node that is not there yet: Loading, as ModelMesh shows it */
            if (tgt == ISVC_STATE_NONE && out->active_state == ISVC_STATE_PENDING)
                out->active_state = ISVC_STATE_LOADING;
            out->failure.reason = ISVC_REASON_RUNTIME_UNHEALTHY;
            snprintf(out->failure.message, sizeof(out->failure.message), "%s",
                     "Waiting for runtime Pod to become available");
            snprintf(out->failure.model_revision, sizeof(out->failure.model_revision), "%s",
                     waiting);
        }
    }

conditions:;
    bool ready = out->active_state == ISVC_STATE_LOADED;
    condition(prev ? &prev->predictor_ready : NULL, ready, w->now_s, &out->predictor_ready);
    condition(prev ? &prev->ready : NULL, ready, w->now_s, &out->ready);
}

/* ---------------------------------------------------------------- JSON */

static bool add_str(cJSON *o, const char *name, const char *v)
{
    return cJSON_AddStringToObject(o, name, v) != NULL;
}

static cJSON *condition_json(const char *type, const struct isvc_condition *c)
{
    cJSON *o = cJSON_CreateObject();
    char t[32];
    isvc_time_format(c->last_transition_s, t, sizeof(t));
    if (!o || !add_str(o, "type", type) || !add_str(o, "status", c->status ? "True" : "False") ||
        !add_str(o, "lastTransitionTime", t) || (c->reason[0] && !add_str(o, "reason", c->reason)) ||
        (c->message[0] && !add_str(o, "message", c->message))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *isvc_status_json(const struct isvc_status *st)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *conds = cJSON_AddArrayToObject(o, "conditions");
    cJSON *ms = cJSON_AddObjectToObject(o, "modelStatus");
    cJSON *states = cJSON_AddObjectToObject(ms, "states");
    bool ok = o && conds && ms && states;
    cJSON *c1 = condition_json("PredictorReady", &st->predictor_ready);
    cJSON *c2 = condition_json("Ready", &st->ready);
    ok = ok && c1 && cJSON_AddItemToArray(conds, c1);
    if (!ok)
        cJSON_Delete(c1);
    ok = ok && c2 && cJSON_AddItemToArray(conds, c2);
    if (!ok)
        cJSON_Delete(c2);
    ok = ok && add_str(states, "activeModelState", isvc_model_state_name(st->active_state)) &&
         add_str(states, "targetModelState", isvc_model_state_name(st->target_state)) &&
         add_str(ms, "transitionStatus", isvc_transition_name(st->transition));
    cJSON *copies = ok ? cJSON_AddObjectToObject(ms, "copies") : NULL;
    ok = copies && cJSON_AddNumberToObject(copies, "totalCopies", st->total_copies) &&
         cJSON_AddNumberToObject(copies, "failedCopies", st->failed_copies);
    if (ok && st->failure.reason != ISVC_REASON_NONE) {
        const struct isvc_failure *f = &st->failure;
        cJSON *fi = cJSON_AddObjectToObject(ms, "lastFailureInfo");
        char t[32];
        isvc_time_format(f->time_s, t, sizeof(t));
        ok = fi && add_str(fi, "reason", isvc_reason_name(f->reason)) &&
             add_str(fi, "message", f->message) &&
             add_str(fi, "modelRevisionName", f->model_revision) &&
             (!f->location[0] || add_str(fi, "location", f->location)) &&
             (!f->time_s || add_str(fi, "time", t));
    }
    cJSON *comp = ok ? cJSON_AddObjectToObject(o, "components") : NULL;
    cJSON *pred = comp ? cJSON_AddObjectToObject(comp, "predictor") : NULL;
    ok = pred && add_str(pred, "grpcUrl", st->grpc_url) && add_str(pred, "restUrl", st->rest_url) &&
         add_str(pred, "url", st->url) && add_str(o, "url", st->url);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

char *isvc_status_encode(const struct isvc_status *st)
{
    cJSON *rec = cJSON_CreateObject();
    cJSON *status = isvc_status_json(st);
    bool ok = rec && status && cJSON_AddNumberToObject(rec, "v", RECORD_VERSION) &&
              cJSON_AddNumberToObject(rec, "generation", (double)st->generation) &&
              add_str(rec, "activeModelId", st->active_model_id) &&
              add_str(rec, "targetModelId", st->target_model_id);
    if (ok && cJSON_AddItemToObject(rec, "status", status))
        status = NULL;
    else
        ok = false;
    char *text = ok ? cJSON_PrintUnformatted(rec) : NULL;
    cJSON_Delete(status);
    cJSON_Delete(rec);
    return text;
}

/* ---- decode */

static const cJSON *get(const cJSON *o, const char *name)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, name) : NULL;
}

static int str_field(const cJSON *o, const char *name, bool required, char *out, size_t size,
                     struct mm_error *err, const char *path)
{
    const cJSON *v = get(o, name);
    out[0] = '\0';
    if (!v || cJSON_IsNull(v))
        return required ? mm_error_set(err, -EINVAL, "isvc status: %s%s: missing", path, name)
                        : 0;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= size)
        return mm_error_set(err, -EINVAL, "isvc status: %s%s: not a string of at most %zu "
                            "bytes", path, name, size - 1);
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return 0;
}

static int num_field(const cJSON *o, const char *name, double hi, int64_t *out,
                     struct mm_error *err, const char *path)
{
    const cJSON *v = get(o, name);
    *out = 0;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > hi ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return mm_error_set(err, -EINVAL, "isvc status: %s%s: not an integer in [0, %.0f]",
                            path, name, hi);
    *out = (int64_t)v->valuedouble;
    return 0;
}

static int time_field(const cJSON *o, const char *name, int64_t *out, struct mm_error *err,
                      const char *path)
{
    char t[64];
    int rc = str_field(o, name, false, t, sizeof(t), err, path);
    *out = 0;
    if (rc < 0 || !t[0])
        return rc;
    if (isvc_time_parse(t, out) < 0)
        return mm_error_set(err, -EINVAL, "isvc status: %s%s: not an RFC 3339 time", path,
                            name);
    return 0;
}

static int decode_condition(const cJSON *c, struct isvc_condition *out, struct mm_error *err)
{
    char st[16];
    int rc;
    if ((rc = str_field(c, "status", true, st, sizeof(st), err, "conditions[].")) < 0 ||
        (rc = time_field(c, "lastTransitionTime", &out->last_transition_s, err,
                         "conditions[].")) < 0 ||
        (rc = str_field(c, "reason", false, out->reason, sizeof(out->reason), err,
                        "conditions[].")) < 0 ||
        (rc = str_field(c, "message", false, out->message, sizeof(out->message), err,
                        "conditions[].")) < 0)
        return rc;
    if (strcmp(st, "True") != 0 && strcmp(st, "False") != 0)
        return mm_error_set(err, -EINVAL, "isvc status: conditions[].status: not True or "
                            "False");
    out->status = strcmp(st, "True") == 0;
    return 0;
}

static int decode_status(const cJSON *rec, struct isvc_status *out, struct mm_error *err)
{
    int rc;
    int64_t n;
    const cJSON *v = get(rec, "v");
    if (!cJSON_IsNumber(v) || v->valuedouble < 1)
        return mm_error_set(err, -EINVAL, "isvc status: v: missing or below 1");
    if ((rc = num_field(rec, "generation", 9007199254740991.0, &out->generation, err, "")) < 0 ||
        (rc = str_field(rec, "activeModelId", false, out->active_model_id,
                        sizeof(out->active_model_id), err, "")) < 0 ||
        (rc = str_field(rec, "targetModelId", false, out->target_model_id,
                        sizeof(out->target_model_id), err, "")) < 0)
        return rc;
    const cJSON *st = get(rec, "status");
    if (!cJSON_IsObject(st))
        return mm_error_set(err, -EINVAL, "isvc status: status: missing or not an object");
    const cJSON *conds = get(st, "conditions"), *c;
    if (conds && !cJSON_IsArray(conds))
        return mm_error_set(err, -EINVAL, "isvc status: status.conditions: not a list");
    int i = 0;
    cJSON_ArrayForEach(c, conds) {
        if (++i > 16)
            return mm_error_set(err, -EINVAL, "isvc status: status.conditions: more than 16");
        char type[64];
        if ((rc = str_field(c, "type", true, type, sizeof(type), err, "status.conditions[].")) <
            0)
            return rc;
        struct isvc_condition *into = strcmp(type, "PredictorReady") == 0 ? &out->predictor_ready
                                      : strcmp(type, "Ready") == 0        ? &out->ready
                                                                          : NULL;
        if (into && (rc = decode_condition(c, into, err)) < 0)
            return rc;
    }
    const cJSON *ms = get(st, "modelStatus");
    const cJSON *states = get(ms, "states");
    char name[64];
    if ((rc = str_field(states, "activeModelState", false, name, sizeof(name), err,
                        "status.modelStatus.states.")) < 0)
        return rc;
    if (isvc_model_state_parse(name, &out->active_state) < 0)
        return mm_error_set(err, -EINVAL, "isvc status: activeModelState: unknown");
    if ((rc = str_field(states, "targetModelState", false, name, sizeof(name), err,
                        "status.modelStatus.states.")) < 0)
        return rc;
    if (isvc_model_state_parse(name, &out->target_state) < 0)
        return mm_error_set(err, -EINVAL, "isvc status: targetModelState: unknown");
    if ((rc = str_field(ms, "transitionStatus", false, name, sizeof(name), err,
                        "status.modelStatus.")) < 0)
        return rc;
    if (name[0] && isvc_transition_parse(name, &out->transition) < 0)
        return mm_error_set(err, -EINVAL, "isvc status: transitionStatus: unknown");
    const cJSON *copies = get(ms, "copies");
    if ((rc = num_field(copies, "totalCopies", 4294967295.0, &n, err,
                        "status.modelStatus.copies.")) < 0)
        return rc;
    out->total_copies = (uint32_t)n;
    if ((rc = num_field(copies, "failedCopies", 4294967295.0, &n, err,
                        "status.modelStatus.copies.")) < 0)
        return rc;
    out->failed_copies = (uint32_t)n;
    const cJSON *fi = get(ms, "lastFailureInfo");
    if (fi) {
        struct isvc_failure *f = &out->failure;
        const char *p = "status.modelStatus.lastFailureInfo.";
        if ((rc = str_field(fi, "reason", true, name, sizeof(name), err, p)) < 0)
            return rc;
        if (isvc_reason_parse(name, &f->reason) < 0 || f->reason == ISVC_REASON_NONE)
            return mm_error_set(err, -EINVAL, "isvc status: lastFailureInfo.reason: unknown");
        if ((rc = str_field(fi, "message", false, f->message, sizeof(f->message), err, p)) < 0 ||
            (rc = str_field(fi, "modelRevisionName", false, f->model_revision,
                            sizeof(f->model_revision), err, p)) < 0 ||
            (rc = str_field(fi, "location", false, f->location, sizeof(f->location), err, p)) <
                0 ||
            (rc = time_field(fi, "time", &f->time_s, err, p)) < 0)
            return rc;
    }
    const cJSON *pred = get(get(st, "components"), "predictor");
    if ((rc = str_field(pred, "grpcUrl", false, out->grpc_url, sizeof(out->grpc_url), err,
                        "status.components.predictor.")) < 0 ||
        (rc = str_field(pred, "restUrl", false, out->rest_url, sizeof(out->rest_url), err,
                        "status.components.predictor.")) < 0 ||
        (rc = str_field(st, "url", false, out->url, sizeof(out->url), err, "status.")) < 0)
        return rc;
    return 0;
}

int isvc_status_decode(const char *json, size_t len, struct isvc_status *out,
                       struct mm_error *err)
{
    memset(out, 0, sizeof(*out));
    if (len > ISVC_MAX_BYTES)
        return mm_error_set(err, -E2BIG, "isvc status: %zu bytes, the limit is %d", len,
                            ISVC_MAX_BYTES);
    char key[KEYS_MAX];
    int rc = keys_isvc_status(key, sizeof(key), "c", "ns", "name", err);
    if (rc < 0)
        return rc;
    if ((rc = record_validate_at(key, strlen(key), "c", json, len, err)) < 0) {
        mm_error_prefix(err, "isvc status: ");
        return rc;
    }
    cJSON *rec = cJSON_ParseWithLength(json, len);
    if (!rec)
        return mm_error_set(err, -ENOMEM, "isvc status: out of memory");
    rc = decode_status(rec, out, err);
    cJSON_Delete(rec);
    if (rc < 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

bool isvc_status_same(const struct isvc_status *a, const struct isvc_status *b)
{
    char *x = isvc_status_encode(a), *y = isvc_status_encode(b);
    bool same = x && y && strcmp(x, y) == 0;
    free(x);
    free(y);
    return same;
}
