/* mirror.h - a local, revision-consistent copy of one etcd prefix.
 *
 * The mirror lists the prefix at one revision R (etcd_range_paged: pages bounded by keys and
 * bytes, every page read at R), then watches from R+1 and applies events in revision order.
 * When the stream breaks it resumes from the last applied revision + 1, with bounded
 * exponential backoff, for as long as it lives. When that revision has been compacted it lists
 * again and emits the difference between what it held and the new snapshot as events, so
 * subscribers that only follow events stay correct. A list that fails keeps what was held: one
 * whose revision is compacted mid-list starts again at once, any other failure after the
 * backoff.
 *
 * Whole revisions: the mirror applies every change of a revision (all keys of one txn), advances
 * mirror_revision() to it, and only then delivers that revision's events, in the order etcd gave
 * them. So from inside a callback for ev, mirror_revision() == ev->revision and mirror_get() of
 * any key (ev's siblings in the txn too) answers as of that revision. A list (the first one, or
 * a re-list after compaction) is delivered the same way: the whole snapshot is in place first,
 * then its differences from what was held are delivered in key order, each stamped with the
 * snapshot revision (ev->entry->mod_revision says when the key itself last changed).
 *
 * Keys are byte strings: a key may hold any byte (NUL and 0xff included) and be of any length;
 * every lookup, prefix and subscription takes a length and compares bytes (memcmp, then length).
 *
 * Owns: the entries (one allocation each: entry, key and value together), the subscriptions, the
 * watch, and its requests (the list; a probe of a silent watch). Each request is cancelled
 * (etcd_request_cancel) when the mirror is freed, starts another list, or ends the watch the
 * probe checks, so no reply or timeout ever reaches a freed mirror. Runs on the etcd client's
 * loop; lookups never allocate. Entry pointers stay valid until the next time the loop runs
 * mirror code (an event or a re-list may replace them); an event's old_value and entry stay
 * valid until its callback returns.
 *
 * Lifetime: the mirror may be freed from inside its own callbacks (state_cb and subscriber
 * callbacks): no further callback runs, not even for the rest of the event or revision being
 * delivered, and the memory goes when the callback returns. Subscribers may unsubscribe
 * (themselves or others) and subscribe from inside callbacks. A callback must not run the
 * mirror's loop (etcd_sync_* does) nor call mirror_apply_events(): that would apply the next
 * revision while this one is being delivered (it asserts). Threading: one thread, the loop's. */
#ifndef MM_MIRROR_H
#define MM_MIRROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"

struct etcd_client;
struct etcd_event;
struct mirror;
struct mirror_sub;
struct metrics;
struct metric;

struct mirror_entry {
    const char *key;             /* key_len bytes, then a NUL (the key may hold NULs too) */
    const char *value;           /* value_len bytes, then a NUL */
    uint32_t key_len;
    uint32_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease;
};

enum mirror_event_kind { MIRROR_PUT, MIRROR_DELETE };

struct mirror_event {
    enum mirror_event_kind kind;
    const char *key;             /* key_len bytes, then a NUL */
    size_t key_len;
    const char *old_value;       /* NULL when the key is new */
    size_t old_len;
    const char *new_value;       /* NULL on DELETE */
    size_t new_len;
    int64_t revision;                 /* the change's revision (a list's snapshot revision); equal
                                       * to mirror_revision() while the callback runs */
    const struct mirror_entry *entry; /* the entry now held; NULL on DELETE */
};

typedef void (*mirror_event_cb)(const struct mirror_event *ev, void *arg);

enum mirror_state {
    MIRROR_LISTING,      /* first list in progress: contents incomplete */
    MIRROR_SYNCED,       /* watching; contents consistent at mirror_revision() */
    MIRROR_DISCONNECTED, /* stream broken; contents consistent at mirror_revision(), resuming */
    MIRROR_RELISTING,    /* compacted past our revision: listing again, diff to follow */
};

/* why: what broke (NULL when all is well). The callback may free the mirror. */
typedef void (*mirror_state_cb)(struct mirror *m, enum mirror_state state,
                                const struct mm_error *why, void *arg);

struct mirror_config {
    int64_t page_size;            /* keys per list page; 0 = 1000 */
    size_t page_bytes;            /* key + value bytes per list page (one larger pair comes
                                   * alone); 0 = etcd_range_paged's default, 1 MiB. A list of
                                   * more than 100,000 pages fails (and is retried) */
    unsigned initial_backoff_ms;  /* first resume delay; 0 = 50 */
    unsigned max_backoff_ms;      /* cap of the doubling delay; 0 = 2000 */
    bool no_progress_notify;      /* progress notifications are requested unless set */
    unsigned probe_interval_ms;   /* a watch silent this long is checked with a read; when
                                   * another member answers it (etcd's member_id), the watch
                                   * resumes there; 0 = 5000 */
    mirror_state_cb state_cb;     /* optional */
    void *state_arg;
    struct metrics *metrics;      /* sets mm_mirror_revision (the revision applied) and
                                   * mm_mirror_revision_lag (the store's revision as the watch
                                   * last reported it, minus the one applied: an upper bound, as
                                   * the store's revision counts writes outside the prefix too);
                                   * NULL = none. One mirror per registry (the process's) */
};

struct mirror_stats {
    uint64_t events_applied;      /* PUT/DELETE applied from watch streams */
    uint64_t duplicates_skipped;  /* events at or below the applied revision (after a resume) */
    uint64_t resumes;             /* watch streams restarted after a break */
    uint64_t relists;             /* full lists after compaction */
    uint64_t progress_notifies;
    uint64_t probes;              /* checks of a silent watch's endpoint */
    uint64_t probes_unanswered;   /* checks no endpoint answered (the watch stays put) */
    uint64_t endpoint_moves;      /* watches restarted because their member stopped answering */
};

/* prefix must be non-empty (e.g. "/modelmesh/c1/"), NUL-terminated, and must not end in byte
 * 0xff. cfg may be NULL for defaults. */
int mirror_new(struct etcd_client *c, const char *prefix, const struct mirror_config *cfg,
               struct mirror **out, struct mm_error *err);
/* Begin listing and watching. Returns at once; progress is reported through state_cb. */
int mirror_start(struct mirror *m);
/* Stops the watch and frees every entry and subscription (their handles die with it); before
 * the etcd client it uses. Allowed from inside the mirror's callbacks (see the top). */
void mirror_free(struct mirror *m);

/* The entry of key[0, key_len) (bytes), or NULL. */
const struct mirror_entry *mirror_get(const struct mirror *m, const char *key, size_t key_len);
/* Visit entries whose key starts with prefix[0, prefix_len) (bytes; 0 = every entry), in key
 * order (bytes, then length); cb returns non-zero to stop (that value is returned). The mirror
 * must not be changed from cb. */
int mirror_foreach_prefix(const struct mirror *m, const char *prefix, size_t prefix_len,
                          int (*cb)(const struct mirror_entry *e, void *arg), void *arg);
size_t mirror_count(const struct mirror *m);
/* The revision the contents are known consistent at: the last applied event, or a progress
 * notification's revision. 0 before the first list completes. */
int64_t mirror_revision(const struct mirror *m);
enum mirror_state mirror_state(const struct mirror *m);
void mirror_get_stats(const struct mirror *m, struct mirror_stats *out);

/* Events whose key starts with prefix[0, prefix_len) (bytes; length 0 = all) are delivered to
 * cb, in revision order, after the mirror has applied their whole revision. Delivery costs per
 * subscription whose prefix matches the key, not per subscription: subscribe once per prefix as
 * finely as needed. The order among the subscribers of one event is unspecified. A subscription
 * made from inside a callback receives the events delivered after that callback returns; one
 * ended from inside a callback receives none after mirror_unsubscribe() returns. */
int mirror_subscribe(struct mirror *m, const char *prefix, size_t prefix_len, mirror_event_cb cb,
                     void *arg, struct mirror_sub **out);
void mirror_unsubscribe(struct mirror_sub *s);

/* Apply a batch of watch events as the mirror's own stream does (events at or below the applied
 * revision are skipped; each revision is applied whole, then delivered). Public for benchmarks
 * and tests that measure the apply path alone. Not from inside a mirror callback. */
void mirror_apply_events(struct mirror *m, const struct etcd_event *events, size_t n);

#endif
