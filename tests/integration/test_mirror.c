/* test_mirror.c - the mirror against a real etcd.
 *
 * The writer has its own loop and client; the mirror's loop runs only when the test runs it. So
 * "while the mirror is disconnected" is exact: the writer changes (and compacts) the store while
 * the mirror cannot see anything, then the mirror runs and must converge.
 *
 * Every scenario ends with the same proof: the mirror equals a fresh range of the prefix (key,
 * value, mod_revision), and a subscriber that built its own map from events only equals it too. */
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "mm/base64.h"
#include "mm/etcd.h"
#include "mm/etcd_sync.h"
#include "mm/mirror.h"

static struct ev_loop *mloop, *wloop;
static struct etcd_client *writer;

/* A key without NUL bytes, looked up by its string length. */
static const struct mirror_entry *get(const struct mirror *m, const char *key)
{
    return mirror_get(m, key, strlen(key));
}

/* ---------------------------------------------------------------- a subscriber's own map */

struct shadow_item {
    struct shadow_item *next;
    char *key; /* key_len bytes (any, NUL included), then a NUL */
    size_t key_len;
    char *value;
};

struct shadow {
    struct shadow_item *buckets[4096];
    size_t count;
    /* the last event seen for a watched key, to check old/new values */
    char watched[128];
    char last_old[128];
    char last_new[128];
    int last_kind;
    int events;
};

static size_t hash(const char *s, size_t len)
{
    size_t h = 5381;
    for (size_t i = 0; i < len; i++)
        h = h * 33 + (unsigned char)s[i];
    return h % 4096;
}

static struct shadow_item **shadow_slot(struct shadow *sh, const char *key, size_t len)
{
    struct shadow_item **p = &sh->buckets[hash(key, len)];
    while (*p && ((*p)->key_len != len || memcmp((*p)->key, key, len) != 0))
        p = &(*p)->next;
    return p;
}

static char *dup_bytes(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

static void on_event(const struct mirror_event *ev, void *arg)
{
    struct shadow *sh = arg;
    sh->events++;
    struct shadow_item **p = shadow_slot(sh, ev->key, ev->key_len);
    if (ev->kind == MIRROR_DELETE) {
        if (*p) {
            struct shadow_item *it = *p;
            *p = it->next;
            free(it->key);
            free(it->value);
            free(it);
            sh->count--;
        }
    } else if (*p) {
        free((*p)->value);
        (*p)->value = strdup(ev->new_value);
    } else {
        struct shadow_item *it = calloc(1, sizeof(*it));
        it->key = dup_bytes(ev->key, ev->key_len);
        it->key_len = ev->key_len;
        it->value = strdup(ev->new_value);
        *p = it;
        sh->count++;
    }
    if (sh->watched[0] && ev->key_len == strlen(sh->watched) &&
        memcmp(ev->key, sh->watched, ev->key_len) == 0) {
        sh->last_kind = ev->kind;
        snprintf(sh->last_old, sizeof(sh->last_old), "%s",
                 ev->old_value ? ev->old_value : "(none)");
        snprintf(sh->last_new, sizeof(sh->last_new), "%s",
                 ev->new_value ? ev->new_value : "(none)");
    }
}

static void shadow_free(struct shadow *sh)
{
    for (size_t i = 0; i < 4096; i++) {
        struct shadow_item *it = sh->buckets[i], *next;
        for (; it; it = next) {
            next = it->next;
            free(it->key);
            free(it->value);
            free(it);
        }
        sh->buckets[i] = NULL;
    }
    sh->count = 0;
}

/* ---------------------------------------------------------------- writer helpers */

static int64_t put(const char *key, const char *value)
{
    struct mm_error err = {0};
    int64_t rev = 0;
    int rc = etcd_sync_put(writer, key, value, 0, &rev, &err);
    if (rc < 0)
        fprintf(stderr, "put %s: %s\n", key, err.msg);
    return rc < 0 ? rc : rev;
}

/* put, tried again while the cluster elects a leader (at most 20 tries of one deadline each). */
static int64_t put_when_led(const char *key, const char *value)
{
    int64_t rev = -1;
    for (int i = 0; i < 20 && (rev = put(key, value)) < 0; i++)
        ;
    return rev;
}

static int64_t del(const char *key)
{
    struct mm_error err = {0};
    int rc = etcd_sync_delete(writer, key, false, NULL, &err);
    if (rc < 0) {
        fprintf(stderr, "delete %s: %s\n", key, err.msg);
        return rc;
    }
    return 0;
}

/* Apply ops in txns of up to 100 (etcd allows 128 per txn). value NULL = delete. */
static int64_t batch(char keys[][64], char values[][64], size_t n)
{
    int64_t rev = 0;
    for (size_t i = 0; i < n; i += 100) {
        struct etcd_op ops[100];
        size_t k = 0;
        for (size_t j = i; j < n && k < 100; j++, k++) {
            ops[k] = (struct etcd_op){.kind = values[j][0] ? ETCD_OP_PUT : ETCD_OP_DELETE,
                                      .key = keys[j],
                                      .value = values[j]};
        }
        struct etcd_txn txn = {.success = ops, .n_success = k};
        struct etcd_response *r = NULL;
        struct mm_error err = {0};
        if (etcd_sync_txn(writer, &txn, &r, &err) < 0) {
            fprintf(stderr, "batch txn: %s\n", err.msg);
            return -1;
        }
        rev = r->revision;
        etcd_response_free(r);
    }
    return rev;
}

static int64_t store_revision(void)
{
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    struct etcd_range_req req = {.key = "/", .count_only = true};
    if (etcd_sync_range(writer, &req, &r, &err) < 0)
        return -1;
    int64_t rev = r->revision;
    etcd_response_free(r);
    return rev;
}

/* ---------------------------------------------------------------- running the mirror */

struct wait_rev {
    struct mirror *m;
    int64_t rev;
};

static bool caught_up(void *arg)
{
    struct wait_rev *w = arg;
    return mirror_state(w->m) == MIRROR_SYNCED && mirror_revision(w->m) >= w->rev;
}

static bool is_disconnected(void *arg)
{
    return mirror_state(arg) == MIRROR_DISCONNECTED;
}

static bool run_mirror_until(bool (*cond)(void *), void *arg, long long ms)
{
    return harness_run_until(mloop, cond, arg, ms);
}

static bool wait_caught_up(struct mirror *m, int64_t rev, long long ms)
{
    struct wait_rev w = {m, rev};
    bool ok = run_mirror_until(caught_up, &w, ms);
    if (!ok)
        fprintf(stderr, "mirror not caught up: state %d revision %" PRId64 " want %" PRId64 "\n",
                mirror_state(m), mirror_revision(m), rev);
    return ok;
}

/* The proof: mirror == fresh range == subscriber's map. */
static void check_converged(struct mirror *m, struct shadow *sh, const char *prefix)
{
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    struct etcd_range_req req = {.key = prefix, .prefix = true};
    REQUIRE(etcd_sync_range(writer, &req, &r, &err) == 0);
    CHECK_INT(mirror_count(m), r->op.n_kvs);
    CHECK_INT(sh->count, r->op.n_kvs);
    size_t value_mismatch = 0, rev_mismatch = 0, missing = 0, shadow_bad = 0;
    for (size_t i = 0; i < r->op.n_kvs; i++) {
        const struct etcd_kv *kv = &r->op.kvs[i];
        const struct mirror_entry *e = mirror_get(m, kv->key, kv->key_len);
        if (!e) {
            missing++;
            continue;
        }
        value_mismatch += strcmp(e->value, kv->value) != 0;
        rev_mismatch += e->mod_revision != kv->mod_revision;
        struct shadow_item **p = shadow_slot(sh, kv->key, kv->key_len);
        shadow_bad += !*p || strcmp((*p)->value, kv->value) != 0;
    }
    CHECK_INT(missing, 0);
    CHECK_INT(value_mismatch, 0);
    CHECK_INT(rev_mismatch, 0);
    CHECK_INT(shadow_bad, 0);
    etcd_response_free(r);
}

/* A mirror of prefix through a client of its own; probe_ms 0 = the default probe interval. */
static struct mirror *new_mirror_probing(const char *endpoint, struct etcd_client **mc,
                                         const char *prefix, struct shadow *sh, unsigned probe_ms)
{
    struct etcd_config cfg = {.endpoints = endpoint,
                              .request_timeout_ms = probe_ms ? 1000 : 2000,
                              .connect_timeout_ms = 500};
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(mloop, &cfg, mc, &err) == 0);
    struct mirror_config mcfg = {.page_size = 1000, .probe_interval_ms = probe_ms};
    struct mirror *m = NULL;
    REQUIRE(mirror_new(*mc, prefix, &mcfg, &m, &err) == 0);
    REQUIRE(mirror_subscribe(m, "", 0, on_event, sh, NULL) == 0);
    REQUIRE(mirror_start(m) == 0);
    return m;
}

static struct mirror *new_mirror(const char *endpoint, struct etcd_client **mc, const char *prefix,
                                 struct shadow *sh)
{
    return new_mirror_probing(endpoint, mc, prefix, sh, 0);
}

/* Free what new_mirror made (the mirror before its client) and the subscriber's map. */
static void drop_mirror(struct mirror *m, struct etcd_client *mc, struct shadow *sh)
{
    mirror_free(m);
    etcd_client_free(mc);
    shadow_free(sh);
    free(sh);
}

/* ---------------------------------------------------------------- checks from inside callbacks */

/* A subscriber that looks at the mirror from inside every callback: mirror_revision() must be
 * ev->revision and ev->entry what the mirror holds; at revision `at` (set once the store is
 * there) the whole prefix must be as expected, siblings of ev->key included. */
struct inside {
    struct mirror *m;
    int events;
    int rev_mismatch;
    int entry_mismatch;
    int64_t at;
    int n_expect;
    char expect_keys[64][64];
    char expect_values[64][64];
    int at_events;
    int state_mismatch;
    int relisting_events;  /* delivered while the mirror was RELISTING */
    char old_keys[64][64]; /* at `at`: each event's key and old value */
    char old_values[64][64];
};

/* The expected state: the prefix as the store holds it now. */
static void expect_from_store(struct inside *in, const char *prefix)
{
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    struct etcd_range_req req = {.key = prefix, .prefix = true};
    REQUIRE(etcd_sync_range(writer, &req, &r, &err) == 0);
    REQUIRE(r->op.n_kvs <= 64);
    in->n_expect = (int)r->op.n_kvs;
    for (size_t i = 0; i < r->op.n_kvs; i++) {
        snprintf(in->expect_keys[i], 64, "%s", r->op.kvs[i].key);
        snprintf(in->expect_values[i], 64, "%s", r->op.kvs[i].value);
    }
    in->at = r->revision;
    etcd_response_free(r);
}

static bool state_differs(const struct inside *in)
{
    if (mirror_count(in->m) != (size_t)in->n_expect)
        return true;
    for (int i = 0; i < in->n_expect; i++) {
        const struct mirror_entry *e = get(in->m, in->expect_keys[i]);
        if (!e || strcmp(e->value, in->expect_values[i]) != 0)
            return true;
    }
    return false;
}

static void on_inside(const struct mirror_event *ev, void *arg)
{
    struct inside *in = arg;
    in->events++;
    in->rev_mismatch += mirror_revision(in->m) != ev->revision;
    const struct mirror_entry *e = mirror_get(in->m, ev->key, ev->key_len);
    in->entry_mismatch += ev->kind == MIRROR_PUT ? e != ev->entry : e != NULL;
    in->relisting_events += mirror_state(in->m) == MIRROR_RELISTING;
    if (in->at && ev->revision == in->at) {
        if (in->at_events < 64) {
            snprintf(in->old_keys[in->at_events], 64, "%s", ev->key);
            snprintf(in->old_values[in->at_events], 64, "%s",
                     ev->old_value ? ev->old_value : "(none)");
        }
        in->at_events++;
        in->state_mismatch += state_differs(in);
    }
}

static const char *old_value_of(const struct inside *in, const char *key)
{
    for (int i = 0; i < in->at_events && i < 64; i++)
        if (strcmp(in->old_keys[i], key) == 0)
            return in->old_values[i];
    return "(no event)";
}

/* Subscribers that free their mirror: the first callback that meets `when` frees it, and no
 * callback of any of them may run after that. */
struct freer {
    struct mirror *m;           /* NULL once freed */
    int64_t at;                 /* free at the first event at or after this revision (0: not yet) */
    bool on_relist;             /* or at the first event delivered while RELISTING */
    enum mirror_state on_state; /* state_cb: free on entering this state */
    int after;                  /* callbacks run after the free: must stay 0 */
};

static void free_in_event(const struct mirror_event *ev, void *arg)
{
    struct freer *f = arg;
    if (!f->m) {
        f->after++;
        return;
    }
    if ((f->at && ev->revision >= f->at) ||
        (f->on_relist && mirror_state(f->m) == MIRROR_RELISTING)) {
        mirror_free(f->m);
        f->m = NULL;
    }
}

static void free_in_state(struct mirror *m, enum mirror_state state, const struct mm_error *why,
                          void *arg)
{
    struct freer *f = arg;
    if (!f->m) {
        f->after++;
        return;
    }
    if (state == f->on_state) {
        mirror_free(m);
        f->m = NULL;
    }
}

static bool is_freed(void *arg)
{
    return ((struct freer *)arg)->m == NULL;
}

/* A mirror of prefix that f frees: from two subscribers of "" when f->at or f->on_relist says
 * so, and from its state callback on entering f->on_state (MIRROR_LISTING = never). */
static void new_freed_mirror(struct etcd_client *mc, const char *prefix, struct freer *f)
{
    struct mirror_config cfg = {.state_cb = free_in_state, .state_arg = f};
    struct mm_error err = {0};
    REQUIRE(mirror_new(mc, prefix, &cfg, &f->m, &err) == 0);
    REQUIRE(mirror_subscribe(f->m, "", 0, free_in_event, f, NULL) == 0);
    REQUIRE(mirror_subscribe(f->m, "", 0, free_in_event, f, NULL) == 0);
    REQUIRE(mirror_start(f->m) == 0);
}

/* ---------------------------------------------------------------- scenarios */

struct collect {
    char keys[8][64];
    int n;
};

static int collect_keys(const struct mirror_entry *e, void *arg)
{
    struct collect *c = arg;
    if (c->n < 8)
        snprintf(c->keys[c->n++], 64, "%s", e->key);
    return 0;
}

static void test_sync_and_events(const char *endpoint)
{
    const char *P = "/t/basic/";
    put("/t/basic/b", "b1");
    put("/t/basic/a", "a1");
    put("/t/basic/c/x", "cx1");
    put("/t/basic/c/y", "cy1");
    put("/t/basicx", "outside"); /* shares the string prefix minus the slash: not ours */
    int64_t rev = put("/t/other", "o1");

    struct shadow *sh = calloc(1, sizeof(*sh));
    struct etcd_client *mc = NULL;
    struct mirror *m = new_mirror(endpoint, &mc, P, sh);
    REQUIRE(wait_caught_up(m, rev - 1, 5000));
    CHECK_INT(mirror_count(m), 4);
    CHECK(get(m, "/t/basicx") == NULL);
    CHECK(get(m, "/t/other") == NULL);
    CHECK_STR(get(m, "/t/basic/a")->value, "a1");
    CHECK_INT(sh->count, 4); /* the first list reached the subscriber as PUT events */

    struct collect col = {0};
    mirror_foreach_prefix(m, "/t/basic/c/", 11, collect_keys, &col);
    CHECK_INT(col.n, 2);
    CHECK_STR(col.keys[0], "/t/basic/c/x");
    CHECK_STR(col.keys[1], "/t/basic/c/y");

    /* Live changes reach subscribers with the right old and new values. */
    snprintf(sh->watched, sizeof(sh->watched), "/t/basic/a");
    rev = put("/t/basic/a", "a2");
    REQUIRE(wait_caught_up(m, rev, 5000));
    CHECK_INT(sh->last_kind, MIRROR_PUT);
    CHECK_STR(sh->last_old, "a1");
    CHECK_STR(sh->last_new, "a2");
    CHECK_INT(get(m, "/t/basic/a")->mod_revision, rev);
    del("/t/basic/a");
    rev = put("/t/basic/d", "d1");
    REQUIRE(wait_caught_up(m, rev, 5000));
    CHECK_INT(sh->last_kind, MIRROR_DELETE);
    CHECK_STR(sh->last_old, "a2");
    CHECK_STR(sh->last_new, "(none)");
    CHECK(get(m, "/t/basic/a") == NULL);
    check_converged(m, sh, P);

    /* Writes outside the prefix move the store's revision; a progress notification (etcd runs
     * with a 200 ms interval here) tells the mirror it is current at that revision too. */
    rev = put("/t/other", "o2");
    REQUIRE(wait_caught_up(m, rev, 5000));
    struct mirror_stats st;
    mirror_get_stats(m, &st);
    CHECK(st.progress_notifies > 0);
    drop_mirror(m, mc, sh);
}

/* One etcd txn puts three keys (one new) and deletes a fourth: every callback of that revision
 * sees all four changes made and mirror_revision() at the txn; old values are intact. A second
 * mirror is freed by its subscriber at the first event of the txn: nothing runs after. */
static void test_txn_whole_revision(const char *endpoint)
{
    const char *P = "/t/txn/";
    put("/t/txn/a", "a0");
    put("/t/txn/b", "b0");
    put("/t/txn/gone", "g0");
    int64_t rev = put("/t/txn/z", "z0");
    struct shadow *sh = calloc(1, sizeof(*sh));
    struct etcd_client *mc = NULL;
    struct mirror *m = new_mirror(endpoint, &mc, P, sh);
    struct inside in = {.m = m};
    REQUIRE(mirror_subscribe(m, "", 0, on_inside, &in, NULL) == 0);
    struct freer f = {0};
    new_freed_mirror(mc, P, &f);
    REQUIRE(wait_caught_up(m, rev, 5000));
    CHECK_INT(in.events, 4); /* the first list, stamped with its revision */
    CHECK_INT(in.rev_mismatch, 0);
    CHECK(f.m != NULL);

    struct etcd_op ops[] = {
        {.kind = ETCD_OP_PUT, .key = "/t/txn/a", .value = "a1"},
        {.kind = ETCD_OP_PUT, .key = "/t/txn/b", .value = "b1"},
        {.kind = ETCD_OP_PUT, .key = "/t/txn/c", .value = "c1"},
        {.kind = ETCD_OP_DELETE, .key = "/t/txn/gone"},
    };
    struct etcd_txn txn = {.success = ops, .n_success = 4};
    struct etcd_response *r = NULL;
    struct mm_error err = {0};
    REQUIRE(etcd_sync_txn(writer, &txn, &r, &err) == 0);
    int64_t txn_rev = r->revision;
    etcd_response_free(r);
    expect_from_store(&in, P);
    CHECK_INT(in.at, txn_rev);
    f.at = txn_rev;
    REQUIRE(wait_caught_up(m, txn_rev, 5000));
    CHECK_INT(in.at_events, 4);
    CHECK_INT(in.state_mismatch, 0);
    CHECK_INT(in.rev_mismatch, 0);
    CHECK_INT(in.entry_mismatch, 0);
    CHECK_STR(old_value_of(&in, "/t/txn/a"), "a0");
    CHECK_STR(old_value_of(&in, "/t/txn/b"), "b0");
    CHECK_STR(old_value_of(&in, "/t/txn/c"), "(none)");
    CHECK_STR(old_value_of(&in, "/t/txn/gone"), "g0");
    check_converged(m, sh, P);

    CHECK(run_mirror_until(is_freed, &f, 10000));
    CHECK_INT(f.after, 0);
    mirror_free(f.m); /* only if a check above failed: before its client */
    drop_mirror(m, mc, sh);
}

static void test_restart(struct harness_etcd *etcd)
{
    const char *P = "/t/restart/";
    char key[64], val[64];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "/t/restart/k%03d", i);
        put(key, "v0");
    }
    struct shadow *sh = calloc(1, sizeof(*sh));
    struct etcd_client *mc = NULL;
    struct mirror *m = new_mirror(etcd->endpoint, &mc, P, sh);
    /* Another mirror frees itself from its state callback when the stream breaks. */
    struct freer f = {.on_state = MIRROR_DISCONNECTED};
    new_freed_mirror(mc, P, &f);
    REQUIRE(wait_caught_up(m, store_revision(), 5000));
    REQUIRE(wait_caught_up(f.m, store_revision(), 5000)); /* its list is not cut by the kill */

    /* Writes before the crash, some of them not yet seen by the mirror. */
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "/t/restart/k%03d", i);
        put(key, "v1");
    }
    REQUIRE(harness_etcd_kill(etcd) == 0);
    CHECK(run_mirror_until(is_disconnected, m, 5000));
    CHECK(run_mirror_until(is_freed, &f, 10000));
    REQUIRE(harness_etcd_restart(etcd) == 0);
    /* Writes after the restart, before the mirror reconnects. */
    for (int i = 10; i < 20; i++) {
        snprintf(key, sizeof(key), "/t/restart/k%03d", i);
        snprintf(val, sizeof(val), "v2-%d", i);
        put(key, val);
    }
    for (int i = 40; i < 50; i++) {
        snprintf(key, sizeof(key), "/t/restart/k%03d", i);
        del(key);
    }
    int64_t rev = put("/t/restart/new", "n");
    CHECK(wait_caught_up(m, rev, 10000));
    struct mirror_stats st;
    mirror_get_stats(m, &st);
    CHECK(st.resumes >= 1);
    CHECK_INT(st.relists, 0);
    CHECK_INT(mirror_count(m), 41);
    check_converged(m, sh, P);
    CHECK_INT(f.after, 0);
    mirror_free(f.m); /* only if a check above failed: before its client */
    drop_mirror(m, mc, sh);
}

static void test_compaction_while_disconnected(struct harness_etcd *etcd)
{
    const char *P = "/t/compact/";
    char key[64];
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "/t/compact/k%03d", i);
        put(key, "v0");
    }
    struct shadow *sh = calloc(1, sizeof(*sh));
    struct etcd_client *mc = NULL;
    struct mirror *m = new_mirror(etcd->endpoint, &mc, P, sh);
    struct inside in = {.m = m};
    REQUIRE(mirror_subscribe(m, "", 0, on_inside, &in, NULL) == 0);
    /* Another mirror is freed by its subscriber at the first difference of its re-list. */
    struct freer f = {.on_relist = true};
    new_freed_mirror(mc, P, &f);
    REQUIRE(wait_caught_up(m, store_revision(), 5000));
    REQUIRE(wait_caught_up(f.m, store_revision(), 5000)); /* its list is not cut by the kill */
    int64_t seen = mirror_revision(m);

    REQUIRE(harness_etcd_kill(etcd) == 0);
    CHECK(run_mirror_until(is_disconnected, m, 5000));
    REQUIRE(harness_etcd_restart(etcd) == 0);
    /* Change, delete and add, then compact everything the mirror has not seen. */
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "/t/compact/k%03d", i);
        put(key, "changed");
    }
    for (int i = 20; i < 30; i++) {
        snprintf(key, sizeof(key), "/t/compact/k%03d", i);
        del(key);
    }
    put("/t/compact/added", "a");
    int64_t rev = put("/t/compact/k005", "changed-twice");
    struct mm_error err = {0};
    REQUIRE(etcd_sync_compact(writer, rev, &err) == 0);
    CHECK(rev > seen + 1);
    expect_from_store(&in, P);
    CHECK_INT(in.at, rev);

    CHECK(wait_caught_up(m, rev, 10000));
    struct mirror_stats st;
    mirror_get_stats(m, &st);
    CHECK(st.relists >= 1);
    /* The differences came after the whole snapshot was in place, stamped with its revision:
     * 10 changed + 10 deleted + 1 added (k005's second change is the snapshot's revision). */
    CHECK_INT(in.relisting_events, 21);
    CHECK_INT(in.at_events, 21);
    CHECK_INT(in.state_mismatch, 0);
    CHECK_INT(in.rev_mismatch, 0);
    CHECK_INT(in.entry_mismatch, 0);
    CHECK_STR(old_value_of(&in, "/t/compact/k025"), "v0");
    CHECK(run_mirror_until(is_freed, &f, 10000));
    CHECK_INT(f.after, 0);
    mirror_free(f.m); /* only if a check above failed: before its client */
    CHECK_INT(mirror_count(m), 21);
    CHECK_STR(get(m, "/t/compact/k005")->value, "changed-twice");
    CHECK(get(m, "/t/compact/k025") == NULL);
    check_converged(m, sh, P);

    /* And it keeps following live changes after the re-list. */
    rev = put("/t/compact/after", "x");
    CHECK(wait_caught_up(m, rev, 5000));
    check_converged(m, sh, P);
    drop_mirror(m, mc, sh);
}

/* ---------------------------------------------------------------- keys as bytes */

/* One change of a raw txn: value NULL = delete. */
struct raw_op {
    const char *key;
    size_t len;
    const char *value;
};

/* Apply ops in one txn through the gateway itself (etcd_put and etcd_txn take C-string keys),
 * so that keys may hold any byte. Returns the txn's revision, or -1. */
static int64_t raw_txn(const char *endpoint, const struct raw_op *ops, size_t n)
{
    char path[] = "/tmp/mm-test-mirror-txn-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    FILE *f = fdopen(fd, "w");
    REQUIRE(f != NULL);
    fputs("{\"success\":[", f);
    for (size_t i = 0; i < n; i++) {
        char *k64 = malloc(base64_encoded_size(ops[i].len));
        base64_encode(ops[i].key, ops[i].len, k64);
        if (ops[i].value) {
            char v64[128];
            base64_encode(ops[i].value, strlen(ops[i].value), v64);
            fprintf(f, "%s{\"requestPut\":{\"key\":\"%s\",\"value\":\"%s\"}}", i ? "," : "", k64,
                    v64);
        } else {
            fprintf(f, "%s{\"requestDeleteRange\":{\"key\":\"%s\"}}", i ? "," : "", k64);
        }
        free(k64);
    }
    fputs("]}", f);
    fclose(f);
    char cmd[512], out[8192];
    snprintf(cmd, sizeof(cmd), "curl -sS -X POST %s/v3/kv/txn --data-binary @%s", endpoint, path);
    int rc = harness_capture(cmd, out, sizeof(out));
    unlink(path);
    const char *r = strstr(out, "\"revision\":\"");
    if (rc != 0 || !r || !strstr(out, "\"succeeded\":true")) {
        fprintf(stderr, "raw txn: %d %s\n", rc, out);
        return -1;
    }
    return strtoll(r + 12, NULL, 10);
}

struct counter {
    int events;
};

static void count_event(const struct mirror_event *ev, void *arg)
{
    ((struct counter *)arg)->events++;
}

struct walk {
    int n;
    size_t lens[8];
};

static int walk_keys(const struct mirror_entry *e, void *arg)
{
    struct walk *w = arg;
    if (w->n < 8)
        w->lens[w->n] = e->key_len;
    w->n++;
    return 0;
}

enum { BK_MAX = 16, BK_LONG = 1100 };
static char bk[BK_MAX][BK_LONG + 32];
static size_t bk_len[BK_MAX];

static size_t set_key(int i, const char *head, size_t head_len, char fill, size_t n_fill,
                      const char *tail, size_t tail_len)
{
    size_t len = 0;
    memcpy(bk[i], head, head_len);
    len += head_len;
    memset(bk[i] + len, fill, n_fill);
    len += n_fill;
    memcpy(bk[i] + len, tail, tail_len);
    len += tail_len;
    bk_len[i] = len;
    return len;
}

/* Every key is found by its bytes, with its value, and nothing else is held. */
static void check_byte_keys(struct mirror *m, const int *present, int n, const char *values[])
{
    size_t held = 0, missing = 0, wrong = 0;
    for (int i = 0; i < n; i++) {
        const struct mirror_entry *e = mirror_get(m, bk[i], bk_len[i]);
        if (!present[i]) {
            wrong += e != NULL;
            continue;
        }
        held++;
        if (!e) {
            missing++;
            continue;
        }
        wrong += e->key_len != bk_len[i] || memcmp(e->key, bk[i], bk_len[i]) != 0 ||
                 strcmp(e->value, values[i]) != 0;
    }
    CHECK_INT(missing, 0);
    CHECK_INT(wrong, 0);
    CHECK_INT(mirror_count(m), held);
}

/* Keys longer than 1024 bytes and keys holding NUL and 0xff bytes, listed three to a page so
 * that such keys end and start pages (a C-string cursor would restart a page at "/t/bytes/a"
 * and never get past it, or skip keys). The mirror must be SYNCED with every key, find each
 * by its bytes, walk and dispatch by byte prefixes, follow live changes of such keys, and list
 * them again after a compaction. */
static void test_byte_keys(struct harness_etcd *etcd)
{
#define P "/t/bytes/"
#define L(s) s, sizeof(s) - 1
    int i = 0;
    set_key(i++, L(P "a"), 0, 0, "", 0);              /* 0 */
    set_key(i++, L(P "a\0"), 0, 0, "", 0);            /* 1: NUL at the end */
    set_key(i++, L(P "a\0\0b"), 0, 0, "", 0);         /* 2: ends page 1 */
    set_key(i++, L(P "a\0\xff"), 0, 0, "", 0);        /* 3: starts page 2 */
    set_key(i++, L(P "a\x01"), 0, 0, "", 0);          /* 4 */
    set_key(i++, L(P "a\xff"), 0, 0, "", 0);          /* 5: ends page 2 */
    set_key(i++, L(P "a\xff\0"), 0, 0, "", 0);        /* 6: starts page 3 */
    set_key(i++, L(P "a\xff\xff"), 0, 0, "", 0);      /* 7 */
    set_key(i++, L(P "b"), 'L', BK_LONG, L("\0z"));   /* 8: long, ends page 3 */
    set_key(i++, L(P "b"), 'L', BK_LONG, L("\0z\0")); /* 9: long, starts page 4 */
    set_key(i++, L(P "b"), 'L', BK_LONG, L("\xff"));  /* 10 */
    set_key(i++, L(P "c"), 'M', BK_LONG, "", 0);      /* 11: ends page 4 */
    set_key(i++, L(P "\xff"), 0, 0, "", 0);           /* 12: page 5 */
    int n = i;
    /* Written by the live and re-list steps. */
    set_key(i++, L(P "a\0\0"), 0, 0, "", 0);     /* 13 */
    set_key(i++, L(P "a\xff\0\0"), 0, 0, "", 0); /* 14 */
    int n_all = i;
    for (int k = 1; k < n; k++) /* the order the comments above assume */
        REQUIRE(memcmp(bk[k - 1], bk[k], bk_len[k - 1] < bk_len[k] ? bk_len[k - 1] : bk_len[k]) <
                    0 ||
                (bk_len[k - 1] < bk_len[k] && memcmp(bk[k - 1], bk[k], bk_len[k - 1]) == 0));

    const char *values[BK_MAX];
    char vbuf[BK_MAX][16];
    int present[BK_MAX] = {0};
    struct raw_op ops[BK_MAX];
    for (int k = 0; k < n_all; k++) {
        snprintf(vbuf[k], sizeof(vbuf[k]), "v%d", k);
        values[k] = vbuf[k];
    }
    for (int k = 0; k < n; k++) {
        ops[k] = (struct raw_op){bk[k], bk_len[k], values[k]};
        present[k] = 1;
    }
    int64_t rev = raw_txn(etcd->endpoint, ops, (size_t)n);
    REQUIRE(rev > 0);

    struct shadow *sh = calloc(1, sizeof(*sh));
    struct etcd_config cfg = {.endpoints = etcd->endpoint, .request_timeout_ms = 2000};
    struct etcd_client *mc = NULL;
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(mloop, &cfg, &mc, &err) == 0);
    struct mirror_config mcfg = {.page_size = 3};
    struct mirror *m = NULL;
    REQUIRE(mirror_new(mc, P, &mcfg, &m, &err) == 0);
    struct inside in = {.m = m};
    struct counter nul = {0}, ff = {0};
    REQUIRE(mirror_subscribe(m, "", 0, on_event, sh, NULL) == 0);
    REQUIRE(mirror_subscribe(m, "", 0, on_inside, &in, NULL) == 0);
    REQUIRE(mirror_subscribe(m, L(P "a\0"), count_event, &nul, NULL) == 0);
    REQUIRE(mirror_subscribe(m, L(P "a\xff"), count_event, &ff, NULL) == 0);
    REQUIRE(mirror_start(m) == 0);
    CHECK(wait_caught_up(m, rev, 10000));
    check_byte_keys(m, present, n_all, values);
    check_converged(m, sh, P);
    CHECK_INT(nul.events, 3);                   /* keys 1, 2, 3 */
    CHECK_INT(ff.events, 3);                    /* keys 5, 6, 7 */
    CHECK(mirror_get(m, L(P "a\0\0")) == NULL); /* starts key 2, is not a key */
    struct walk w = {0};
    CHECK_INT(mirror_foreach_prefix(m, L(P "a\0"), walk_keys, &w), 0);
    CHECK_INT(w.n, 3);
    CHECK_INT(w.lens[0], bk_len[1]);
    CHECK_INT(w.lens[1], bk_len[2]);
    CHECK_INT(w.lens[2], bk_len[3]);
    w = (struct walk){0};
    mirror_foreach_prefix(m, L(P "b"), walk_keys, &w);
    CHECK_INT(w.n, 3);
    w = (struct walk){0}; /* a prefix with NUL inside: the bytes after it count too */
    mirror_foreach_prefix(m, L(P "a\0\0"), walk_keys, &w);
    CHECK_INT(w.n, 1);
    CHECK_INT(w.lens[0], bk_len[2]);

    /* Live: a new key ending in NUL, a deleted key holding NUL and 0xff, a long key changed. */
    ops[0] = (struct raw_op){bk[13], bk_len[13], values[13]};
    ops[1] = (struct raw_op){bk[3], bk_len[3], NULL};
    ops[2] = (struct raw_op){bk[8], bk_len[8], "v8-changed"};
    rev = raw_txn(etcd->endpoint, ops, 3);
    REQUIRE(rev > 0);
    present[13] = 1;
    present[3] = 0;
    values[8] = "v8-changed";
    CHECK(wait_caught_up(m, rev, 5000));
    check_byte_keys(m, present, n_all, values);
    check_converged(m, sh, P);
    CHECK_INT(nul.events, 3 + 2);
    w = (struct walk){0};
    mirror_foreach_prefix(m, L(P "a\0\0"), walk_keys, &w);
    CHECK_INT(w.n, 2); /* keys 13 and 2 */
    CHECK_INT(w.lens[0], bk_len[13]);

    /* A re-list after compaction, across the same page boundaries. */
    int64_t seen = mirror_revision(m);
    REQUIRE(harness_etcd_kill(etcd) == 0);
    CHECK(run_mirror_until(is_disconnected, m, 5000));
    REQUIRE(harness_etcd_restart(etcd) == 0);
    /* Two txns, so that the revision after the one the mirror saw is compacted too. */
    ops[0] = (struct raw_op){bk[6], bk_len[6], NULL};
    REQUIRE(raw_txn(etcd->endpoint, ops, 1) > seen);
    ops[0] = (struct raw_op){bk[14], bk_len[14], values[14]};
    ops[1] = (struct raw_op){bk[11], bk_len[11], "v11-changed"};
    rev = raw_txn(etcd->endpoint, ops, 2);
    REQUIRE(rev > seen + 1);
    present[6] = 0;
    present[14] = 1;
    values[11] = "v11-changed";
    REQUIRE(etcd_sync_compact(writer, rev, &err) == 0);
    CHECK(wait_caught_up(m, rev, 10000));
    struct mirror_stats st;
    mirror_get_stats(m, &st);
    CHECK(st.relists >= 1);
    check_byte_keys(m, present, n_all, values);
    check_converged(m, sh, P);
    CHECK_INT(ff.events, 3 + 2); /* key 6 deleted, key 14 added */
    CHECK_INT(in.rev_mismatch, 0);
    CHECK_INT(in.entry_mismatch, 0);
    drop_mirror(m, mc, sh);
#undef L
#undef P
}

/* One revision whose watch reply is over the client's reply cap (a txn of large values): the
 * mirror cannot resume through it (the same reply would come back on every resume), so it lists
 * the prefix again in bounded pages and holds every key. */
static void test_reply_over_cap(const char *endpoint)
{
    struct etcd_config cfg = {.endpoints = endpoint, .max_reply_bytes = 64 << 10};
    struct mm_error err = {0};
    struct etcd_client *mc = NULL;
    REQUIRE(etcd_client_new(mloop, &cfg, &mc, &err) == 0);
    struct shadow *sh = calloc(1, sizeof(*sh));
    REQUIRE(sh != NULL);
    struct mirror_config mcfg = {.page_size = 4};
    struct mirror *m = NULL;
    REQUIRE(mirror_new(mc, "/cap/", &mcfg, &m, &err) == 0);
    REQUIRE(mirror_subscribe(m, "", 0, on_event, sh, NULL) == 0);
    REQUIRE(mirror_start(m) == 0);
    CHECK(wait_caught_up(m, put("/cap/first", "1"), 10000));
    enum { N = 10, SIZE = 20 << 10 };
    static char big[SIZE + 1];
    memset(big, 'v', SIZE);
    struct etcd_op ops[N];
    char keys[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "/cap/big-%02d", i);
        ops[i] = (struct etcd_op){.kind = ETCD_OP_PUT, .key = keys[i], .value = big};
    }
    struct etcd_txn txn = {.success = ops, .n_success = N};
    struct etcd_response *r = NULL;
    REQUIRE(etcd_sync_txn(writer, &txn, &r, &err) == 0);
    int64_t rev = r->revision;
    etcd_response_free(r);
    CHECK(wait_caught_up(m, rev, 15000));
    CHECK_INT(mirror_count(m), N + 1);
    const struct mirror_entry *e = mirror_get(m, keys[N - 1], strlen(keys[N - 1]));
    CHECK(e && e->value_len == SIZE);
    struct mirror_stats st;
    mirror_get_stats(m, &st);
    CHECK(st.relists >= 1);
    check_converged(m, sh, "/cap/");
    drop_mirror(m, mc, sh);
}

static void test_ten_thousand(const char *endpoint)
{
    const char *P = "/t/big/";
    enum { N = 10000 };
    static char keys[N][64], values[N][64];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], 64, "/t/big/m%05d", i);
        snprintf(values[i], 64, "{\"v\":1,\"state\":\"Loaded\",\"n\":%d}", i);
    }
    REQUIRE(batch(keys, values, N) > 0);

    struct shadow *sh = calloc(1, sizeof(*sh));
    struct etcd_client *mc = NULL;
    struct mirror *m = new_mirror(endpoint, &mc, P, sh);
    long long t0 = harness_now_ms();
    REQUIRE(wait_caught_up(m, store_revision(), 30000));
    fprintf(stderr, "listed %zu keys in %lld ms\n", mirror_count(m), harness_now_ms() - t0);
    CHECK_INT(mirror_count(m), N);
    check_converged(m, sh, P);

    /* 10,000 more changes in txns of 100 while the mirror watches: updates, deletes, new keys. */
    for (int i = 0; i < N; i++) {
        if (i % 4 == 0)
            values[i][0] = '\0'; /* delete */
        else if (i % 4 == 1)
            snprintf(keys[i], 64, "/t/big/n%05d", i); /* new key */
        else
            snprintf(values[i], 64, "{\"v\":1,\"state\":\"Loading\",\"n\":%d}", i);
    }
    int64_t rev = 0;
    for (int i = 0; i < N; i += 1000) { /* interleave writing and mirroring */
        rev = batch(keys + i, values + i, 1000);
        REQUIRE(rev > 0);
        ev_run(mloop, EVRUN_NOWAIT);
    }
    CHECK(wait_caught_up(m, rev, 30000));
    CHECK_INT(mirror_count(m), N - N / 4 + N / 4);
    check_converged(m, sh, P);
    drop_mirror(m, mc, sh);
}

struct unanswered {
    struct mirror *m;
    uint64_t before;
};

/* A probe that no endpoint answered has come back since. */
static bool probe_unanswered(void *arg)
{
    struct unanswered *u = arg;
    struct mirror_stats st;
    mirror_get_stats(u->m, &st);
    return st.probes_unanswered > u->before;
}

struct probed {
    struct mirror *m;
    uint64_t probes;
};

/* More probes than p->probes have started: a probe starts only once the one before it has
 * been answered, so p->probes of them have been. */
static bool probed_at_least(void *arg)
{
    struct probed *p = arg;
    struct mirror_stats st;
    mirror_get_stats(p->m, &st);
    return st.probes > p->probes;
}

/* ---------------------------------------------------------------- freed with requests in flight */

/* A mirror freed while its list is in flight, and one freed while a probe of its watch is in
 * flight (the member is frozen, so the probe waits): their requests are cancelled, so no reply
 * or timeout reaches the freed mirror (ASan sees none; its subscriber hears nothing). */
static void test_free_in_flight(struct harness_etcd *etcd)
{
    struct etcd_config cfg = {.endpoints = etcd->endpoint, .request_timeout_ms = 1000};
    struct etcd_client *mc = NULL;
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(mloop, &cfg, &mc, &err) == 0);
    REQUIRE(put("/t/inflight/a", "1") > 0);

    struct counter after = {0};
    struct mirror *m = NULL;
    REQUIRE(mirror_new(mc, "/t/inflight/", NULL, &m, &err) == 0);
    REQUIRE(mirror_subscribe(m, "", 0, count_event, &after, NULL) == 0);
    REQUIRE(mirror_start(m) == 0);
    mirror_free(m);
    harness_run_until(mloop, NULL, NULL, 300);
    CHECK_INT(after.events, 0);

    struct mirror_config mcfg = {.probe_interval_ms = 100};
    REQUIRE(mirror_new(mc, "/t/inflight/", &mcfg, &m, &err) == 0);
    REQUIRE(mirror_start(m) == 0);
    REQUIRE(wait_caught_up(m, store_revision(), 5000));
    struct mirror_stats st;
    mirror_get_stats(m, &st);
    REQUIRE(harness_freeze(etcd->pid) == 0);
    struct probed p = {m, st.probes};
    CHECK(run_mirror_until(probed_at_least, &p, 3000));
    mirror_free(m); /* the probe is in flight: the member is frozen */
    REQUIRE(kill(etcd->pid, SIGCONT) == 0);
    harness_run_until(mloop, NULL, NULL, 1500); /* past the probe's deadline */
    etcd_client_free(mc);
}

/* The member the mirror watches through freezes (SIGSTOP: its connections stay open, TCP says
 * nothing) while the others go on taking writes: the silent watch is probed, the probe fails
 * over, the watch resumes on a member that answers, and the mirror converges. */
static void test_frozen_member(struct harness_etcd *m, const char *endpoints)
{
    const char *P = "/t/frozen/";
    int64_t rev = put("/t/frozen/a", "1");
    struct shadow *sh = calloc(1, sizeof(*sh));
    struct etcd_client *mc = NULL;
    struct mirror *mi = new_mirror_probing(endpoints, &mc, P, sh, 300); /* m0 first */
    REQUIRE(wait_caught_up(mi, rev, 5000));
    REQUIRE(strcmp(etcd_client_endpoint(mc), m[0].endpoint) == 0);
    /* Quiet but healthy (this cluster sends no progress notifications): the probes are answered
     * by the member that serves the watch, which stays where it is. */
    struct probed wait_probes = {mi, 3};
    CHECK(run_mirror_until(probed_at_least, &wait_probes, 5000));
    struct mirror_stats quiet;
    mirror_get_stats(mi, &quiet);
    CHECK_INT(quiet.endpoint_moves, 0);
    CHECK_INT(quiet.probes_unanswered, 0);

    REQUIRE(harness_freeze(m[0].pid) == 0);
    struct etcd_client *saved = writer; /* writes through the members that still answer */
    char others[256];
    snprintf(others, sizeof(others), "%s,%s", m[1].endpoint, m[2].endpoint);
    struct etcd_config cfg = {.endpoints = others, .request_timeout_ms = 2000};
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(wloop, &cfg, &writer, &err) == 0);
    /* If m0 led the cluster, the others elect a leader first: writes wait for it. */
    CHECK(put_when_led("/t/frozen/b", "2") > 0);
    CHECK_INT(del("/t/frozen/a"), 0);
    rev = put("/t/frozen/c", "3");
    CHECK(rev > 0);
    long long t0 = harness_now_ms();
    CHECK(wait_caught_up(mi, rev, 15000));
    fprintf(stderr, "frozen member: the mirror caught up through another in %lld ms\n",
            harness_now_ms() - t0);
    struct mirror_stats st;
    mirror_get_stats(mi, &st);
    CHECK(st.probes >= 1 && st.endpoint_moves >= 1);
    CHECK_INT(mirror_count(mi), 2);
    check_converged(mi, sh, P);

    /* The member it moved to freezes too: with m0 still frozen there is no quorum, every probe
     * fails, and the watch stays put rather than moving to an endpoint as silent. When m0
     * thaws, a probe is answered elsewhere and the mirror catches up there. */
    int k = strcmp(etcd_client_endpoint(mc), m[1].endpoint) == 0 ? 1 : 2;
    REQUIRE(strcmp(etcd_client_endpoint(mc), m[k].endpoint) == 0);
    REQUIRE(harness_freeze(m[k].pid) == 0);
    struct unanswered wait = {mi, st.probes_unanswered};
    CHECK(run_mirror_until(probe_unanswered, &wait, 10000)); /* 1 s per endpoint tried */
    struct mirror_stats before;
    mirror_get_stats(mi, &before);
    CHECK(before.probes > st.probes);
    CHECK(before.endpoint_moves == st.endpoint_moves);
    REQUIRE(kill(m[0].pid, SIGCONT) == 0);
    rev = put_when_led("/t/frozen/d", "4");
    CHECK(rev > 0);
    CHECK(wait_caught_up(mi, rev, 20000));
    mirror_get_stats(mi, &st);
    CHECK(st.endpoint_moves > before.endpoint_moves);
    CHECK_INT(mirror_count(mi), 3);
    check_converged(mi, sh, P);
    kill(m[k].pid, SIGCONT);

    kill(m[0].pid, SIGCONT);
    drop_mirror(mi, mc, sh);
    etcd_client_free(writer);
    writer = saved;
}

/* A three-member cluster loses quorum under the member the mirror watches through: the member
 * ends the watch ("no leader", asked for with hasleader) instead of holding it open and silent,
 * so the mirror says it is disconnected; with quorum back it resumes and converges. */
static void test_quorum_loss(void)
{
    struct harness_etcd m[3];
    REQUIRE(harness_etcd_cluster_start(m, 3, "--heartbeat-interval 50 --election-timeout 250") ==
            0);
    char endpoints[256];
    snprintf(endpoints, sizeof(endpoints), "%s,%s,%s", m[0].endpoint, m[1].endpoint, m[2].endpoint);
    struct etcd_client *saved = writer;
    struct etcd_config cfg = {.endpoints = endpoints, .request_timeout_ms = 2000};
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(wloop, &cfg, &writer, &err) == 0);
    const char *P = "/t/quorum/";
    int64_t rev = put("/t/quorum/a", "1");
    struct shadow *sh = calloc(1, sizeof(*sh));
    struct etcd_client *mc = NULL;
    struct mirror *mi = new_mirror(m[0].endpoint, &mc, P, sh); /* watches through m0 only */
    REQUIRE(wait_caught_up(mi, rev, 5000));

    REQUIRE(harness_etcd_kill(&m[1]) == 0);
    REQUIRE(harness_etcd_kill(&m[2]) == 0);
    long long t0 = harness_now_ms();
    CHECK(run_mirror_until(is_disconnected, mi, 10000));
    fprintf(stderr, "quorum lost: the mirror knew in %lld ms\n", harness_now_ms() - t0);

    REQUIRE(harness_etcd_restart(&m[1]) == 0); /* two of three: a leader again */
    rev = put("/t/quorum/b", "2");
    CHECK(rev > 0);
    CHECK(wait_caught_up(mi, rev, 10000));
    CHECK_INT(mirror_count(mi), 2);
    check_converged(mi, sh, P);

    drop_mirror(mi, mc, sh);
    REQUIRE(harness_etcd_restart(&m[2]) == 0);
    test_frozen_member(m, endpoints);
    etcd_client_free(writer);
    writer = saved;
    for (int i = 0; i < 3; i++)
        harness_etcd_cleanup(&m[i]);
}

int main(void)
{
    struct harness_etcd etcd = {0};
    REQUIRE(harness_etcd_start(&etcd, "--experimental-watch-progress-notify-interval=200ms") == 0);
    mloop = ev_loop_new(EVFLAG_AUTO);
    wloop = ev_loop_new(EVFLAG_AUTO);
    struct etcd_config cfg = {.endpoints = etcd.endpoint};
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(wloop, &cfg, &writer, &err) == 0);

    test_sync_and_events(etcd.endpoint);
    test_txn_whole_revision(etcd.endpoint);
    test_restart(&etcd);
    test_compaction_while_disconnected(&etcd);
    test_byte_keys(&etcd);
    test_reply_over_cap(etcd.endpoint);
    test_free_in_flight(&etcd);
    test_ten_thousand(etcd.endpoint);
    test_quorum_loss();

    etcd_client_free(writer);
    ev_loop_destroy(mloop);
    ev_loop_destroy(wloop);
    harness_etcd_cleanup(&etcd);
    return CHECK_DONE();
}
