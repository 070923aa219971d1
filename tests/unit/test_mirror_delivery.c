/* test_mirror_delivery.c - the mirror's delivery alone, through mirror_apply_events (no server:
 * the mirror is never started, its client never sends anything): dispatch by prefix against a
 * brute-force oracle over byte keys, whole revisions, and what callbacks may do (unsubscribe
 * themselves or others, subscribe, free the mirror). Run under ASan for the lifetime rules. */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mm/etcd.h"
#include "mm/mirror.h"

static struct ev_loop *loop;
static struct etcd_client *client;

static struct mirror *new_mirror(void)
{
    struct mirror *m = NULL;
    struct mm_error err = {0};
    REQUIRE(mirror_new(client, "/", NULL, &m, &err) == 0);
    return m;
}

static struct etcd_event put_ev(const char *key, size_t key_len, const char *value, int64_t rev)
{
    return (struct etcd_event){.type = ETCD_EVENT_PUT,
                               .kv = {.key = key,
                                      .key_len = key_len,
                                      .value = value,
                                      .value_len = strlen(value),
                                      .create_revision = rev,
                                      .mod_revision = rev,
                                      .version = 1}};
}

static struct etcd_event del_ev(const char *key, int64_t rev)
{
    return (struct etcd_event){
        .type = ETCD_EVENT_DELETE,
        .kv = {.key = key, .key_len = strlen(key), .value = "", .mod_revision = rev}};
}

/* ---------------------------------------------------------------- dispatch by prefix */

enum { N_SUBS = 400, N_KEYS = 2000, MAX_LEN = 7, ROUNDS = 6 };

struct counted {
    char prefix[MAX_LEN + 1];
    size_t len;
    struct mirror_sub *sub; /* NULL while not subscribed */
    long calls;
    long wrong; /* delivered an event whose key it is not a prefix of */
};

static void on_counted(const struct mirror_event *ev, void *arg)
{
    struct counted *c = arg;
    c->calls++;
    c->wrong += ev->key_len < c->len || memcmp(ev->key, c->prefix, c->len) != 0;
}

/* Random prefixes and keys over a small alphabet (so that prefixes share bytes and nest), with
 * bytes above 0x7f and NUL: every subscriber must get exactly the keys it prefixes.
 * Between rounds a random part of the subscriptions ends and others begin, in random order, so
 * that prefixes come and go above, below and beside each other. */
static void test_dispatch_matches_brute_force(void)
{
    static const char alphabet[] = {'a', 'b', '/', '\x01', '\xff', '\0'};
    static struct counted subs[N_SUBS];
    static char keys[N_KEYS][MAX_LEN];
    static long expected[N_SUBS];
    static struct etcd_event evs[N_KEYS];
    srand(7);
    struct mirror *m = new_mirror();
    for (int i = 0; i < N_SUBS; i++) {
        subs[i].len = (size_t)(i < 3 ? i : rand() % 5); /* "", 1 and 2 bytes among them */
        for (size_t j = 0; j < subs[i].len; j++)
            subs[i].prefix[j] = alphabet[rand() % 6]; /* NUL too: prefixes are bytes */
        subs[i].prefix[subs[i].len] = '\0';
    }
    long mismatched = 0, wrong = 0, delivered = 0;
    int64_t rev = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < N_SUBS; i++) {
            bool want = round == 0 ? rand() % 4 != 0 : rand() % 3 != 0;
            if (want && !subs[i].sub)
                REQUIRE(mirror_subscribe(m, subs[i].prefix, subs[i].len, on_counted, &subs[i],
                                         &subs[i].sub) == 0);
            else if (!want && subs[i].sub) {
                mirror_unsubscribe(subs[i].sub);
                subs[i].sub = NULL;
            }
            subs[i].calls = subs[i].wrong = expected[i] = 0;
        }
        for (int k = 0; k < N_KEYS; k++) {
            size_t len = 1 + (size_t)(rand() % MAX_LEN);
            for (size_t j = 0; j < len; j++)
                keys[k][j] = alphabet[rand() % 6];
            evs[k] = put_ev(keys[k], len, "v", ++rev);
            for (int i = 0; i < N_SUBS; i++)
                expected[i] += subs[i].sub && len >= subs[i].len &&
                               memcmp(keys[k], subs[i].prefix, subs[i].len) == 0;
        }
        mirror_apply_events(m, evs, N_KEYS);
        for (int i = 0; i < N_SUBS; i++) {
            mismatched += subs[i].calls != expected[i];
            wrong += subs[i].wrong;
            delivered += subs[i].calls;
        }
    }
    CHECK_INT(mismatched, 0);
    CHECK_INT(wrong, 0);
    CHECK(delivered > (long)N_KEYS * ROUNDS);
    CHECK_INT(mirror_revision(m), rev);
    mirror_free(m);
}

/* ---------------------------------------------------------------- whole revisions */

struct whole {
    struct mirror *m;
    int events;
    int bad;
    char olds[8][16];
};

static void on_whole(const struct mirror_event *ev, void *arg)
{
    struct whole *w = arg;
    const struct mirror_entry *a = mirror_get(w->m, "/a", 2), *b = mirror_get(w->m, "/b", 2),
                              *c = mirror_get(w->m, "/c", 2);
    w->bad += mirror_revision(w->m) != ev->revision;
    if (ev->revision == 10) /* one txn put all three */
        w->bad += !a || !b || !c || strcmp(a->value, "a1") || strcmp(c->value, "c1");
    if (ev->revision == 11) /* the next changed /a and deleted /b */
        w->bad += !a || b || strcmp(a->value, "a2") || !c;
    if (w->events < 8)
        snprintf(w->olds[w->events], 16, "%s", ev->old_value ? ev->old_value : "-");
    w->events++;
}

static void test_whole_revisions(void)
{
    struct mirror *m = new_mirror();
    struct whole w = {.m = m};
    REQUIRE(mirror_subscribe(m, "/", 1, on_whole, &w, NULL) == 0);
    struct etcd_event evs[] = {
        put_ev("/a", 2, "a1", 10), put_ev("/b", 2, "b1", 10), put_ev("/c", 2, "c1", 10),
        put_ev("/a", 2, "a2", 11), del_ev("/b", 11),
    };
    mirror_apply_events(m, evs, 5);
    CHECK_INT(w.events, 5);
    CHECK_INT(w.bad, 0);
    CHECK_STR(w.olds[3], "a1"); /* the replaced values, still readable in the callback */
    CHECK_STR(w.olds[4], "b1");
    /* A resumed stream repeating revision 11 changes nothing and delivers nothing. */
    mirror_apply_events(m, evs + 3, 2);
    CHECK_INT(w.events, 5);
    mirror_free(m);
}

/* ---------------------------------------------------------------- what callbacks may do */

struct actor {
    struct mirror *m;
    struct mirror_sub *self;
    struct mirror_sub *victims[2];
    struct actor *victim_actors[2];
    bool unsubscribe_self;
    bool unsubscribe_victims;
    bool subscribe_other;
    struct actor *other;
    bool free_mirror;
    long calls;
    long calls_after_end; /* calls after its subscription was ended */
    bool ended;
};

static void on_actor(const struct mirror_event *ev, void *arg)
{
    struct actor *a = arg;
    a->calls++;
    if (a->ended)
        a->calls_after_end++;
    if (a->unsubscribe_self && a->calls == 1) {
        mirror_unsubscribe(a->self);
        a->ended = true;
    }
    if (a->unsubscribe_victims && a->calls == 1) {
        for (int i = 0; i < 2; i++) {
            mirror_unsubscribe(a->victims[i]);
            a->victim_actors[i]->ended = true;
        }
    }
    if (a->subscribe_other && a->calls == 1)
        REQUIRE(mirror_subscribe(a->m, "", 0, on_actor, a->other, &a->other->self) == 0);
    if (a->free_mirror && a->calls == 2) {
        mirror_free(a->m);
        a->m = NULL;
    }
}

static void subscribe_actor(struct mirror *m, const char *prefix, struct actor *a)
{
    a->m = m;
    REQUIRE(mirror_subscribe(m, prefix, strlen(prefix), on_actor, a, &a->self) == 0);
}

static void test_unsubscribe_and_subscribe_inside(void)
{
    struct mirror *m = new_mirror();
    struct actor self = {.unsubscribe_self = true}, killer = {.unsubscribe_victims = true},
                 same_group = {0}, other_group = {0}, maker = {.subscribe_other = true}, made = {0},
                 bystander = {0};
    subscribe_actor(m, "/k/", &self);
    subscribe_actor(m, "/k/", &killer);
    subscribe_actor(m, "/k/", &same_group); /* after the killer in its own group */
    subscribe_actor(m, "/", &other_group);  /* a shorter prefix: visited after /k/ */
    subscribe_actor(m, "/k/x", &maker);
    subscribe_actor(m, "", &bystander);
    killer.victims[0] = same_group.self;
    killer.victims[1] = other_group.self;
    killer.victim_actors[0] = &same_group;
    killer.victim_actors[1] = &other_group;
    maker.other = &made;
    made.m = m;
    struct etcd_event evs[] = {put_ev("/k/x1", 5, "1", 2), put_ev("/k/x2", 5, "2", 3),
                               put_ev("/k/y", 4, "3", 4)};
    mirror_apply_events(m, evs, 3);
    CHECK_INT(self.calls, 1);
    CHECK_INT(self.calls_after_end, 0);
    CHECK_INT(killer.calls, 3);
    CHECK_INT(same_group.calls_after_end, 0);
    CHECK_INT(other_group.calls_after_end, 0);
    CHECK_INT(maker.calls, 2);
    CHECK_INT(made.calls, 2); /* not the event in flight when it was made, both after it */
    CHECK_INT(bystander.calls, 3);

    /* Ended subscriptions are gone once delivery returns: a group emptied that way can be
     * subscribed to again, and unsubscribing outside a callback is immediate. */
    mirror_unsubscribe(killer.self);
    struct actor again = {0};
    subscribe_actor(m, "/k/", &again);
    struct etcd_event more = put_ev("/k/z", 4, "4", 5);
    mirror_apply_events(m, &more, 1);
    CHECK_INT(again.calls, 1);
    CHECK_INT(killer.calls, 3);
    CHECK_INT(self.calls + same_group.calls_after_end + other_group.calls_after_end, 1);
    mirror_free(m);
}

/* Freed by a subscriber at the second event of a three-key revision, with a subscription ended
 * in the same callback: nothing runs after, and ASan sees no use of freed memory (the pending
 * changes and their replaced entries are freed when the callback returns). */
static void test_free_inside(void)
{
    struct mirror *m = new_mirror();
    struct actor freer = {.free_mirror = true}, ender = {.unsubscribe_self = true}, after = {0};
    subscribe_actor(m, "/", &ender);
    subscribe_actor(m, "/", &freer);
    subscribe_actor(m, "/", &after);
    struct etcd_event first[] = {put_ev("/a", 2, "a1", 2), put_ev("/b", 2, "b1", 2)};
    mirror_apply_events(m, first, 2);
    CHECK_INT(freer.calls, 2);
    REQUIRE(freer.m == NULL);  /* freed in the second callback */
    CHECK_INT(after.calls, 1); /* the event in which the mirror was freed went no further */
    CHECK_INT(ender.calls, 1);
}

/* The same from a revision that replaces and deletes entries. */
static void test_free_inside_replacing(void)
{
    struct mirror *m = new_mirror();
    struct etcd_event first[] = {put_ev("/a", 2, "a1", 2), put_ev("/b", 2, "b1", 2)};
    mirror_apply_events(m, first, 2);
    struct actor freer = {.free_mirror = true}, after = {0};
    subscribe_actor(m, "/", &freer);
    subscribe_actor(m, "/", &after);
    struct etcd_event second[] = {put_ev("/a", 2, "a2", 3), del_ev("/b", 3),
                                  put_ev("/c", 2, "c1", 3), put_ev("/d", 2, "d1", 4)};
    mirror_apply_events(m, second, 4);
    CHECK_INT(freer.calls, 2);
    CHECK_INT(after.calls, 1);
}

int main(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    /* Never contacted: the mirrors here are not started. */
    struct etcd_config cfg = {.endpoints = "http://127.0.0.1:9"};
    struct mm_error err = {0};
    REQUIRE(etcd_client_new(loop, &cfg, &client, &err) == 0);
    test_dispatch_matches_brute_force();
    test_whole_revisions();
    test_unsubscribe_and_subscribe_inside();
    test_free_inside();
    test_free_inside_replacing();
    etcd_client_free(client);
    ev_loop_destroy(loop);
    return CHECK_DONE();
}
