/* test_records.c - record codecs: round trips, tolerance of unknown fields, rejects that name
 * the record and the field, and which record each key of the layout holds. */
#include <errno.h>
#include <stdlib.h>

#include "check.h"
#include "mm/records.h"

static int decode(enum record_kind kind, const char *json, void *rec, struct mm_error *err)
{
    return record_decode(kind, json, strlen(json), rec, err);
}

/* The decode fails with -EINVAL and the message contains every fragment given. */
static void rejects(enum record_kind kind, const char *json, const char *want)
{
    struct mm_error err = {0};
    int rc = record_validate(kind, json, strlen(json), &err);
    CHECK(rc < 0);
    CHECK(strstr(err.msg, want) != NULL);
    if (rc >= 0 || !strstr(err.msg, want))
        fprintf(stderr, "  input %.80s\n  got %d '%s', wanted '%s'\n", json, rc, err.msg, want);
}

static void test_round_trips(void)
{
    struct mm_error err = {0};
    static const struct instance_record in = { /* static: padding is zeroed for memcmp */
        .address = "10.0.0.7:8080", .runtime = "mlserver", .zone = "z1",
        .capacity_bytes = 4294967296ULL * 3, .used_bytes = 123456789, .loaded_count = 42,
        .lru_oldest_ms = 1764000000123, .start_ms = 1764000000000,
    };
    struct instance_record out;
    char *json = record_encode(RECORD_INSTANCE, &in);
    REQUIRE(json != NULL);
    CHECK(strstr(json, "\"v\":1") != NULL);
    CHECK_INT(decode(RECORD_INSTANCE, json, &out, &err), 0);
    CHECK(memcmp(&in, &out, sizeof(in)) == 0);
    free(json);

    static const struct model_record m = {
        .type = "sklearn", .runtime = "mlserver-1.x", .storage_key = "localMinIO",
        .storage_path = "sklearn/mnist-svm.joblib", .size_bytes = 9007199254740992ULL,
        .last_used_ms = -5, .last_failure = {"load failed: bad magic", 1764000000999, "node-2"},
        .load_now = true, .registered_ms = 1764000000123, .auto_delete = true,
    };
    struct model_record m2;
    json = record_encode(RECORD_MODEL, &m);
    REQUIRE(json != NULL);
    CHECK_INT(decode(RECORD_MODEL, json, &m2, &err), 0);
    CHECK(memcmp(&m, &m2, sizeof(m)) == 0);
    free(json);

    for (int s = COPY_PENDING; s <= COPY_FAILED; s++) {
        struct copy_record c, c2;
        memset(&c, 0, sizeof(c));
        c.state = (enum copy_state)s;
        c.since_ms = 17;
        c.size_bytes = 8192;
        strcpy(c.error, "x");
        json = record_encode(RECORD_COPY, &c);
        REQUIRE(json != NULL);
        CHECK(strstr(json, copy_state_name(c.state)) != NULL);
        CHECK_INT(decode(RECORD_COPY, json, &c2, &err), 0);
        CHECK(memcmp(&c, &c2, sizeof(c)) == 0);
        free(json);
    }

    static const struct vmodel_record v = {.active_model_id = "a__isvc-0000000001",
                                           .target_model_id = "a__isvc-0000000002",
                                           .owner = "ctl"};
    struct vmodel_record v2;
    json = record_encode(RECORD_VMODEL, &v);
    REQUIRE(json != NULL);
    CHECK_INT(decode(RECORD_VMODEL, json, &v2, &err), 0);
    CHECK(memcmp(&v, &v2, sizeof(v)) == 0);
    free(json);

    /* Empty optional strings are left out and come back empty. */
    struct copy_record c = {.state = COPY_LOADED}, c3;
    json = record_encode(RECORD_COPY, &c);
    CHECK(json && strstr(json, "error") == NULL);
    CHECK_INT(decode(RECORD_COPY, json, &c3, &err), 0);
    CHECK_STR(c3.error, "");
    free(json);
}

static void test_tolerance(void)
{
    struct mm_error err = {0};
    struct copy_record c;
    /* Unknown fields (a newer writer) and a newer schema version are accepted. */
    CHECK_INT(decode(RECORD_COPY, "{\"v\":2,\"state\":\"Loading\",\"future\":{\"x\":[1,2]},"
                                  "\"since_ms\":5}", &c, &err), 0);
    CHECK_INT(c.state, COPY_LOADING);
    CHECK_INT(c.since_ms, 5);
    /* Optional fields may be absent or null. */
    struct instance_record i;
    CHECK_INT(decode(RECORD_INSTANCE, "{\"v\":1,\"address\":\"h:1\",\"zone\":null}", &i, &err), 0);
    CHECK_STR(i.zone, "");
    CHECK_INT(i.capacity_bytes, 0);
    /* Whitespace and trailing whitespace are fine. */
    CHECK_INT(decode(RECORD_COPY, " {\"v\":1, \"state\":\"Failed\"}\n", &c, &err), 0);
}

static void test_rejects(void)
{
    rejects(RECORD_COPY, "", "copy record: value is empty");
    rejects(RECORD_COPY, "{\"v\":1,\"state\":\"Loaded\"", "copy record: malformed JSON");
    rejects(RECORD_COPY, "not json", "malformed JSON at byte 0");
    rejects(RECORD_COPY, "[1,2]", "must be a JSON object");
    rejects(RECORD_COPY, "\"Loaded\"", "must be a JSON object");
    rejects(RECORD_COPY, "{\"state\":\"Loaded\"}", "schema version 'v' is missing");
    rejects(RECORD_COPY, "{\"v\":\"1\",\"state\":\"Loaded\"}", "'v' must be an integer >= 1");
    rejects(RECORD_COPY, "{\"v\":0,\"state\":\"Loaded\"}", "'v' must be an integer >= 1");
    rejects(RECORD_COPY, "{\"v\":1}", "copy record: field 'state' is required");
    rejects(RECORD_COPY, "{\"v\":1,\"state\":\"Ready\"}", "field 'state' must be one of");
    rejects(RECORD_COPY, "{\"v\":1,\"state\":3}", "field 'state' must be one of");
    rejects(RECORD_COPY, "{\"v\":1,\"state\":\"Loaded\",\"since_ms\":1.5}",
            "field 'since_ms' must be an integer");
    rejects(RECORD_COPY, "{\"v\":1,\"state\":\"Loaded\",\"size_bytes\":-1}",
            "field 'size_bytes' must be a non-negative integer");
    rejects(RECORD_COPY, "{\"v\":1,\"state\":\"Loaded\",\"size_bytes\":1e300}",
            "field 'size_bytes' must be a non-negative integer");
    rejects(RECORD_COPY, "{\"v\":1,\"state\":\"Loaded\",\"error\":7}",
            "field 'error' must be a string");
    rejects(RECORD_INSTANCE, "{\"v\":1}", "instance record: field 'address' is required");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"\"}", "field 'address' must not be empty");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"a\",\"capacity_bytes\":\"10\"}",
            "instance record: field 'capacity_bytes' must be a non-negative integer");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"a\",\"loaded_count\":4294967296}",
            "field 'loaded_count' must be an integer in 0..4294967295");
    rejects(RECORD_MODEL, "{\"v\":1,\"type\":\"sklearn\",\"last_failure\":\"boom\"}",
            "model record: field 'last_failure' must be an object");
    rejects(RECORD_MODEL, "{\"v\":1,\"type\":\"sklearn\",\"last_failure\":{\"time_ms\":true}}",
            "in 'last_failure': model record: field 'time_ms' must be an integer");
    rejects(RECORD_VMODEL, "{\"v\":1,\"owner\":[]}", "vmodel record: field 'owner'");

    /* Over-long strings name the field and the limit. */
    char big[2048];
    int n = snprintf(big, sizeof(big), "{\"v\":1,\"address\":\"");
    memset(big + n, 'a', 300);
    snprintf(big + n + 300, sizeof(big) - (size_t)n - 300, "\"}");
    rejects(RECORD_INSTANCE, big, "field 'address' is 300 bytes, the limit is 255");

    /* Deep nesting is refused by the parser, not by a crash. */
    static char deep[20010];
    for (int i = 0; i < 10000; i++) {
        deep[i] = '[';
        deep[10000 + i] = ']';
    }
    rejects(RECORD_COPY, deep, "malformed JSON");

    /* Whole values over the size limit are refused before parsing. */
    size_t huge = RECORD_MAX_BYTES + 10;
    char *h = malloc(huge + 1);
    memset(h, ' ', huge);
    h[huge] = '\0';
    struct copy_record c;
    struct mm_error err = {0};
    CHECK_INT(decode(RECORD_COPY, h, &c, &err), -E2BIG);
    CHECK(strstr(err.msg, "the limit is 65536") != NULL);
    free(h);

    /* A failed decode leaves nothing half-filled. */
    struct instance_record i;
    memset(&i, 0x55, sizeof(i));
    CHECK(decode(RECORD_INSTANCE, "{\"v\":1,\"address\":\"x\",\"used_bytes\":-3}", &i, &err) < 0);
    CHECK_STR(i.address, "");
}

/* Which record each key holds, and a value checked as that record (or as JSON). */
static void test_by_key(void)
{
    static const struct {
        const char *key;
        int rc;
        enum record_kind kind;
    } cases[] = {
        {"/modelmesh/c1/instances/node-0", 0, RECORD_INSTANCE},
        {"/modelmesh/c1/models/m1", 0, RECORD_MODEL},
        {"/modelmesh/c1/copies/m1/node-0", 0, RECORD_COPY},
        {"/modelmesh/c1/vmodels/mnist", 0, RECORD_VMODEL},
        {"/modelmesh/c1/isvcs/default/mnist", -ENOENT, 0},
        {"/modelmesh/c1/isvc-status/default/mnist", -ENOENT, 0},
        {"/modelmesh/c1/runtimes/mlserver", -ENOENT, 0},
        {"/modelmesh/c1/storage-config/localMinIO", -ENOENT, 0},
        {"/modelmesh/c1/election/controller", 0, RECORD_ELECTION},
        {"/modelmesh/c2/models/m1", -EINVAL, 0},   /* another cluster */
        {"/modelmesh/c1/models/", -EINVAL, 0},     /* a prefix, not a key */
        {"/modelmesh/c1/copies/m1", -EINVAL, 0},   /* a copy names its instance */
        {"/modelmesh/c1/widgets/w", -EINVAL, 0},
        {"models/m1", -EINVAL, 0},                 /* relative: the caller makes it full */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum record_kind kind = (enum record_kind)-1;
        int rc = record_kind_of_key(cases[i].key, strlen(cases[i].key), "c1", &kind);
        CHECK_INT(rc, cases[i].rc);
        if (rc == 0)
            CHECK_STR(record_kind_name(kind), record_kind_name(cases[i].kind));
        if (rc != cases[i].rc || (rc == 0 && kind != cases[i].kind))
            fprintf(stderr, "  key %s: got %d kind %d\n", cases[i].key, rc, (int)kind);
    }

    struct mm_error err = {0};
    const char *copy = "/modelmesh/c1/copies/m1/node-0";
#define VALIDATE(key, json) record_validate_at(key, strlen(key), "c1", json, strlen(json), &err)
    CHECK_INT(VALIDATE(copy, "{\"v\":1,\"state\":\"Loaded\"}"), 0);
    CHECK_INT(VALIDATE(copy, "{\"v\":1,\"state\":\"Ready\"}"), -EINVAL);
    CHECK(strstr(err.msg, "copy record: field 'state'") != NULL);
    /* The same value is a fine vmodel, and any JSON where no codec applies. */
    CHECK_INT(VALIDATE("/modelmesh/c1/vmodels/v", "{\"v\":1,\"state\":\"Ready\"}"), 0);
    CHECK_INT(VALIDATE("/modelmesh/c1/models/m1", "{\"v\":1}"), -EINVAL);
    CHECK(strstr(err.msg, "model record: field 'type' is required") != NULL);
    CHECK_INT(VALIDATE("/modelmesh/c2/models/m1", "{\"v\":1}"), 0);
    CHECK_INT(VALIDATE("/modelmesh/c1/runtimes/r", "{\"x\":[1,2]}\n"), 0);
    CHECK_INT(VALIDATE("/modelmesh/c1/runtimes/r", "\"text\""), 0);
    CHECK_INT(VALIDATE("/modelmesh/c1/isvcs/ns/x", "nope"), -EINVAL);
    CHECK(strstr(err.msg, "not valid JSON (at byte 0 of 4)") != NULL);
    CHECK_INT(VALIDATE("/modelmesh/c1/isvcs/ns/x", "{\"a\":1} {\"b\":2}"), -EINVAL);
    CHECK(strstr(err.msg, "not valid JSON (at byte 8 of 15)") != NULL);
    CHECK_INT(VALIDATE("/modelmesh/c1/isvcs/ns/x", ""), -EINVAL);
    CHECK_INT(record_validate_at("/x", 2, "c1", "{}\0", 3, &err), -EINVAL); /* a NUL is not JSON */
    /* A key holding a NUL is outside the layout, not the record before the NUL: any JSON. */
    static const char nul_key[] = "/modelmesh/c1/models/m1\0x";
    enum record_kind kind;
    CHECK_INT(record_kind_of_key(nul_key, sizeof(nul_key) - 1, "c1", &kind), -EINVAL);
    CHECK_INT(record_validate_at(nul_key, sizeof(nul_key) - 1, "c1", "{\"v\":1}", 7, &err), 0);
    /* Values without a codec get the text refusals too. */
    CHECK_INT(VALIDATE("/modelmesh/c1/isvcs/ns/x", "{\"a\":1,\"a\":2}"), -EINVAL);
    CHECK(strstr(err.msg, "the value: field 'a' is given twice") != NULL);
    CHECK_INT(VALIDATE("/modelmesh/c1/runtimes/r", "{\"image\":\"x\\u0000y\"}"), -EINVAL);
    CHECK(strstr(err.msg, "the value: field 'image' holds \\u0000") != NULL);
#undef VALIDATE
}

/* The election value: what election.c writes is what it reads back; a value someone else wrote
 * is checked like any record. */
static void test_election(void)
{
    struct mm_error err = {0};
    static const struct election_record in = {.leader = "controller-7f9c",
                                              .since_ms = 1764000000123};
    char *json = record_encode(RECORD_ELECTION, &in);
    REQUIRE(json != NULL);
    CHECK_STR(json, "{\"v\":1,\"leader\":\"controller-7f9c\",\"since_ms\":1764000000123}");
    struct election_record out;
    CHECK_INT(decode(RECORD_ELECTION, json, &out, &err), 0);
    CHECK(memcmp(&in, &out, sizeof(in)) == 0);
    free(json);
    CHECK_STR(record_kind_name(RECORD_ELECTION), "election");
    /* since_ms is optional; unknown fields are tolerated (newer writers). */
    CHECK_INT(decode(RECORD_ELECTION, "{\"v\":2,\"leader\":\"n1\",\"term\":3}", &out, &err), 0);
    CHECK_STR(out.leader, "n1");
    CHECK_INT(out.since_ms, 0);
    rejects(RECORD_ELECTION, "{\"v\":1,\"since_ms\":5}",
            "election record: field 'leader' is required");
    rejects(RECORD_ELECTION, "{\"v\":1,\"leader\":\"\"}", "field 'leader' must not be empty");
    rejects(RECORD_ELECTION, "{\"v\":1,\"leader\":7}", "field 'leader' must be a string");
    rejects(RECORD_ELECTION, "{\"v\":1,\"leader\":\"n\",\"since_ms\":1.5}",
            "field 'since_ms' must be an integer");
    rejects(RECORD_ELECTION, "{\"leader\":\"n\"}", "schema version 'v' is missing");
    rejects(RECORD_ELECTION, "[1]", "must be a JSON object");
    char long_leader[400];
    snprintf(long_leader, sizeof(long_leader), "{\"v\":1,\"leader\":\"%0300d\"}", 0);
    rejects(RECORD_ELECTION, long_leader, "field 'leader' is 300 bytes, the limit is 255");
}

/* What JSON readers disagree on is refused, naming the record and the field: a name given twice
 * (cJSON reads the first, Go and Python the last), \u0000 or a NUL byte (C readers cut the
 * string there), raw control characters, bytes that are not UTF-8, text after the value. */
static void test_ambiguous_text(void)
{
    rejects(RECORD_MODEL, "{\"v\":1,\"type\":\"sklearn\",\"type\":\"xgboost\"}",
            "model record: field 'type' is given twice");
    rejects(RECORD_MODEL, "{\"v\":1,\"type\":\"a\",\"\\u0074ype\":\"b\"}", /* escaped name */
            "model record: field 'type' is given twice");
    rejects(RECORD_MODEL, "{\"v\":1,\"v\":2,\"type\":\"a\"}", "field 'v' is given twice");
    rejects(RECORD_MODEL,
            "{\"v\":1,\"type\":\"a\",\"last_failure\":{\"message\":\"x\",\"message\":\"y\"}}",
            "model record: field 'last_failure.message' is given twice");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"h:1\",\"x\":{\"y\":[{\"z\":1,\"z\":1}]}}",
            "instance record: field 'x.y.z' is given twice"); /* unknown fields too */
    rejects(RECORD_MODEL, "{\"v\":1,\"type\":\"sklearn\\u0000evil\"}",
            "model record: field 'type' holds \\u0000 (a NUL)");
    rejects(RECORD_COPY, "{\"v\":1,\"state\":\"Loaded\",\"error\":\"\\u0000\"}",
            "copy record: field 'error' holds \\u0000");
    rejects(RECORD_MODEL, "{\"v\":1,\"type\":\"a\",\"last_failure\":{\"message\":\"m\\u0000\"}}",
            "model record: field 'last_failure.message' holds \\u0000");
    rejects(RECORD_VMODEL, "{\"v\":1,\"owner\":\"a\\u0000\"}", "field 'owner' holds \\u0000");
    rejects(RECORD_VMODEL, "{\"v\":1,\"own\\u0000er\":\"a\"}",
            "vmodel record: the name of field 'own...' holds \\u0000");
    struct mm_error err = {0};
    struct vmodel_record v;
    /* An escaped backslash before u0000 is text, not a NUL. */
    CHECK_INT(decode(RECORD_VMODEL, "{\"v\":1,\"owner\":\"a\\\\u0000\"}", &v, &err), 0);
    CHECK_STR(v.owner, "a\\u0000");
    /* Raw bytes: a NUL, a control character, not UTF-8. */
    static const char raw_nul[] = "{\"v\":1,\"owner\":\"a\0b\"}";
    CHECK_INT(record_validate(RECORD_VMODEL, raw_nul, sizeof(raw_nul) - 1, &err), -EINVAL);
    CHECK(strstr(err.msg, "vmodel record: field 'owner' holds a NUL byte") != NULL);
    rejects(RECORD_VMODEL, "{\"v\":1,\"owner\":\"a\x1b[31mb\"}",
            "field 'owner' holds a control character that is not escaped");
    rejects(RECORD_VMODEL, "{\"v\":1,\"owner\":\"a\xff\"}", "field 'owner' is not valid UTF-8");
    rejects(RECORD_VMODEL, "{\"v\":1,\"owner\":\"\xc0\xaf\"}", "is not valid UTF-8"); /* overlong */
    rejects(RECORD_VMODEL, "{\"v\":1,\"owner\":\"\xed\xa0\x80\"}", "is not valid UTF-8");
    /* Text after the value. */
    rejects(RECORD_VMODEL, "{\"v\":1} {\"v\":2}", "vmodel record: malformed JSON at byte 8");
    /* What stays accepted: escapes, UTF-8, an escaped ESC. */
    CHECK_INT(decode(RECORD_VMODEL,
                     "{\"v\":1,\"owner\":\"caf\xc3\xa9 \\u001b \\\"q\\\" \xf0\x9f\x99\x82\"}\n", &v,
                     &err),
              0);
    CHECK_STR(v.owner, "caf\xc3\xa9 \x1b \"q\" \xf0\x9f\x99\x82");
    /* Long paths are cut, not overflowed. */
    char deep[4096];
    int n = snprintf(deep, sizeof(deep), "{\"v\":1,\"address\":\"h:1\"");
    for (int i = 0; i < 40; i++)
        n += snprintf(deep + n, sizeof(deep) - (size_t)n, "%s\"level%02d\":{", i ? "" : ",", i);
    n += snprintf(deep + n, sizeof(deep) - (size_t)n, "\"x\":\"\\u0000\"");
    for (int i = 0; i < 40; i++)
        n += snprintf(deep + n, sizeof(deep) - (size_t)n, "}");
    snprintf(deep + n, sizeof(deep) - (size_t)n, "}");
    rejects(RECORD_INSTANCE, deep, "instance record: field 'level00.level01.");
    rejects(RECORD_INSTANCE, deep, "...' holds \\u0000");
}

/* The instance record's later fields: labels, counts, the lease id as a string of all 64 bits,
 * the flags and versions; records written before them still decode, and their checks name the
 * field. */
static void test_instance_fields(void)
{
    struct mm_error err = {0};
    static struct instance_record in = {
        .address = "10.0.0.7:8080", .runtime = "mm-runtime", .capacity_bytes = 1 << 30,
        .labels = {.n = 3, .label = {"rt:mm-runtime", "mt:xgboost", "mt:sklearn"}},
        .loading_count = 2, .loading_threads = 4, .load_timeout_ms = 90000,
        .shutting_down = true, .lease = 7587868163562146052LL, .version = "0.1.0",
        .runtime_version = "mm-runtime 0.1.0", .default_model_size_bytes = 33000,
    };
    static struct instance_record out;
    char *json = record_encode(RECORD_INSTANCE, &in);
    REQUIRE(json != NULL);
    CHECK(strstr(json, "\"labels\":[\"rt:mm-runtime\",\"mt:xgboost\",\"mt:sklearn\"]") != NULL);
    CHECK(strstr(json, "\"lease\":\"7587868163562146052\"") != NULL);
    CHECK(strstr(json, "\"shutting_down\":true") != NULL);
    CHECK(strstr(json, "\"default_model_size_bytes\":33000") != NULL);
    CHECK_INT(decode(RECORD_INSTANCE, json, &out, &err), 0);
    CHECK(memcmp(&in, &out, sizeof(in)) == 0);
    free(json);

    /* The largest and a negative id; no labels and lease 0 are left out; false is written. */
    in.lease = INT64_MAX;
    json = record_encode(RECORD_INSTANCE, &in);
    CHECK_INT(decode(RECORD_INSTANCE, json, &out, &err), 0);
    CHECK(out.lease == INT64_MAX);
    free(json);
    in.lease = -2;
    json = record_encode(RECORD_INSTANCE, &in);
    CHECK_INT(decode(RECORD_INSTANCE, json, &out, &err), 0);
    CHECK(out.lease == -2);
    free(json);
    static struct instance_record bare = {.address = "h:1"};
    json = record_encode(RECORD_INSTANCE, &bare);
    REQUIRE(json != NULL);
    CHECK(!strstr(json, "labels") && !strstr(json, "lease") &&
          !strstr(json, "default_model_size_bytes") && strstr(json, "\"shutting_down\":false"));
    free(json);

    /* A record from before these fields: they come back zero. A lease written as a JSON
     * integer (by hand) is read. */
    CHECK_INT(decode(RECORD_INSTANCE, "{\"v\":1,\"address\":\"h:1\",\"capacity_bytes\":5,"
                                      "\"loaded_count\":1,\"start_ms\":9}", &out, &err), 0);
    CHECK(out.labels.n == 0 && !out.shutting_down && out.lease == 0 && out.loading_count == 0 &&
          out.version[0] == '\0' && out.default_model_size_bytes == 0 &&
          out.capacity_bytes == 5);
    CHECK_INT(decode(RECORD_INSTANCE, "{\"v\":1,\"address\":\"h:1\",\"lease\":12345,"
                                      "\"labels\":[]}", &out, &err), 0);
    CHECK(out.lease == 12345 && out.labels.n == 0);

    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"a\",\"labels\":\"mt:x\"}",
            "instance record: field 'labels' must be an array of strings");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"a\",\"labels\":[\"mt:x\",3]}",
            "field 'labels[1]' must be a string of 1..127 bytes");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"a\",\"labels\":[\"\"]}",
            "field 'labels[0]' must be a string of 1..127 bytes");
    char many[2048];
    int n = snprintf(many, sizeof(many), "{\"v\":1,\"address\":\"a\",\"labels\":[");
    for (int i = 0; i < RECORD_LABELS_MAX + 1; i++)
        n += snprintf(many + n, sizeof(many) - (size_t)n, "%s\"l%d\"", i ? "," : "", i);
    snprintf(many + n, sizeof(many) - (size_t)n, "]}");
    rejects(RECORD_INSTANCE, many, "field 'labels' has 33 entries, the limit is 32");
    char long_label[400];
    n = snprintf(long_label, sizeof(long_label), "{\"v\":1,\"address\":\"a\",\"labels\":[\"");
    memset(long_label + n, 'x', 128);
    snprintf(long_label + n + 128, sizeof(long_label) - (size_t)n - 128, "\"]}");
    rejects(RECORD_INSTANCE, long_label, "field 'labels[0]' must be a string of 1..127 bytes");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"a\",\"shutting_down\":1}",
            "field 'shutting_down' must be true or false");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"a\",\"lease\":\"12x\"}",
            "field 'lease' must be a 64-bit integer");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"a\",\"lease\":\"9223372036854775808\"}",
            "field 'lease' must be a 64-bit integer");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"a\",\"lease\":\"\"}",
            "field 'lease' must be a 64-bit integer");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"a\",\"lease\":1.5}",
            "field 'lease' must be a 64-bit integer");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"a\",\"default_model_size_bytes\":-1}",
            "field 'default_model_size_bytes' must be a non-negative integer");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"a\",\"loading_count\":-1}",
            "field 'loading_count' must be an integer in 0..4294967295");
    rejects(RECORD_INSTANCE, "{\"v\":1,\"address\":\"a\",\"labels\":[\"a\",\"b\"],"
                             "\"labels\":[]}", "field 'labels' is given twice");
}

/* storage_params (a JSON object of strings) and the copy's pull progress. */
static void test_storage_fields(void)
{
    struct mm_error err = {0};
    static struct model_record m = {.type = "sklearn", .storage_key = "k",
                                    .storage_path = "p/q"};
    strcpy(m.storage_params, "{\"type\":\"s3\",\"bucket\":\"b\"}");
    char *json = record_encode(RECORD_MODEL, &m);
    REQUIRE(json != NULL);
    CHECK(strstr(json, "\"storage_params\":{\"type\":\"s3\",\"bucket\":\"b\"}") != NULL);
    struct model_record m2;
    CHECK_INT(decode(RECORD_MODEL, json, &m2, &err), 0);
    CHECK(memcmp(&m, &m2, sizeof(m)) == 0);
    free(json);
    /* Compact text whatever the spacing; {} is none; absent is none. */
    CHECK_INT(decode(RECORD_MODEL, "{\"v\":1,\"type\":\"t\",\"storage_params\": { \"a\" : \"1\" }}",
                     &m2, &err), 0);
    CHECK_STR(m2.storage_params, "{\"a\":\"1\"}");
    CHECK_INT(decode(RECORD_MODEL, "{\"v\":1,\"type\":\"t\",\"storage_params\":{}}", &m2, &err),
              0);
    CHECK_STR(m2.storage_params, "");
    m2.storage_params[0] = '\0';
    json = record_encode(RECORD_MODEL, &m2);
    REQUIRE(json != NULL);
    CHECK(strstr(json, "storage_params") == NULL);
    free(json);
    rejects(RECORD_MODEL, "{\"v\":1,\"type\":\"t\",\"storage_params\":\"{}\"}",
            "field 'storage_params': storage parameters must be a JSON object of strings");
    rejects(RECORD_MODEL, "{\"v\":1,\"type\":\"t\",\"storage_params\":{\"port\":9000}}",
            "storage parameter 'port' must be a string");
    rejects(RECORD_MODEL, "{\"v\":1,\"type\":\"t\",\"storage_params\":{\"\":\"x\"}}",
            "empty name");
    rejects(RECORD_MODEL, "{\"v\":1,\"type\":\"t\",\"storage_params\":{\"a\":\"1\",\"a\":\"2\"}}",
            "given twice");
    /* Over the limit, as compact text. */
    char big[RECORD_PARAMS_BYTES + 64];
    int n = snprintf(big, sizeof(big), "{\"v\":1,\"type\":\"t\",\"storage_params\":{\"a\":\"");
    memset(big + n, 'x', RECORD_PARAMS_BYTES);
    strcpy(big + n + RECORD_PARAMS_BYTES, "\"}}");
    rejects(RECORD_MODEL, big, "the limit is 4095");

    /* Progress: absent when 0, round trips otherwise. */
    static struct copy_record c = {.state = COPY_LOADING, .since_ms = 5};
    json = record_encode(RECORD_COPY, &c);
    REQUIRE(json != NULL);
    CHECK(strstr(json, "bytes_") == NULL);
    free(json);
    c.bytes_pulled = 123456789012ULL;
    c.bytes_total = 9007199254740992ULL;
    json = record_encode(RECORD_COPY, &c);
    REQUIRE(json != NULL);
    CHECK(strstr(json, "\"bytes_pulled\":123456789012") != NULL);
    struct copy_record c2;
    CHECK_INT(decode(RECORD_COPY, json, &c2, &err), 0);
    CHECK(memcmp(&c, &c2, sizeof(c)) == 0);
    free(json);
    rejects(RECORD_COPY, "{\"v\":1,\"state\":\"Loading\",\"bytes_total\":-1}",
            "field 'bytes_total' must be a non-negative integer");
}

/* modelInfo.key: a plain key, or the JSON ModelMesh Serving's controller sends. */
static void test_model_key(void)
{
    struct mm_error err = {0};
    struct model_record r;
    const char *k = "localMinIO";
    CHECK_INT(record_model_key(k, strlen(k), &r, &err), 0);
    CHECK_STR(r.storage_key, "localMinIO");
    CHECK_STR(r.storage_params, "");
    k = "{\"storage_key\":\"myStorage\",\"storage_params\":{\"bucket\":\"b2\"},"
        "\"model_type\":{\"name\":\"sklearn\"},\"schema_path\":\"s.json\"}";
    CHECK_INT(record_model_key(k, strlen(k), &r, &err), 0);
    CHECK_STR(r.storage_key, "myStorage");
    CHECK_STR(r.storage_params, "{\"bucket\":\"b2\"}");
    k = " {\"model_type\":{\"name\":\"sklearn\"}}"; /* no key: the defaults */
    CHECK_INT(record_model_key(k, strlen(k), &r, &err), 0);
    CHECK_STR(r.storage_key, "");
    CHECK_STR(r.storage_params, "");
    k = "{\"storage_params\":{\"type\":\"s3\",\"bucket\":\"b\"}}";
    CHECK_INT(record_model_key(k, strlen(k), &r, &err), 0);
    CHECK_STR(r.storage_key, "");
    CHECK_STR(r.storage_params, "{\"type\":\"s3\",\"bucket\":\"b\"}");
    static const struct {
        const char *key, *want;
    } bad[] = {
        {"{\"storage_key\":", "malformed JSON"},
        {"{\"storage_key\":7}", "'storage_key' must be a string"},
        {"{\"storage_params\":{\"x\":1}}", "storage parameter 'x' must be a string"},
        {"{\"storage_params\":[]}", "must be a JSON object of strings"},
        {"{\"storage_key\":\"a\",\"storage_key\":\"b\"}", "given twice"},
        {"{\"storage_params\":{\"secret_access_key\":\"SEKRIT\",\"n\":2}}", "'n' must be"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&r, 'x', sizeof(r));
        err = (struct mm_error){0};
        CHECK_INT(record_model_key(bad[i].key, strlen(bad[i].key), &r, &err), -EINVAL);
        CHECK(strstr(err.msg, bad[i].want) != NULL);
        CHECK(strstr(err.msg, "SEKRIT") == NULL); /* values are never quoted */
        CHECK_STR(r.storage_key, "");
        CHECK_STR(r.storage_params, "");
        if (!strstr(err.msg, bad[i].want))
            fprintf(stderr, "  key %s: got '%s'\n", bad[i].key, err.msg);
    }
    char longkey[300];
    memset(longkey, 'k', sizeof(longkey));
    CHECK_INT(record_model_key(longkey, sizeof(longkey), &r, &err), -EINVAL);
    CHECK(strstr(err.msg, "the limit is 253") != NULL);
}

int main(void)
{
    test_storage_fields();
    test_model_key();
    test_round_trips();
    test_tolerance();
    test_rejects();
    test_by_key();
    test_election();
    test_ambiguous_text();
    test_instance_fields();
    enum copy_state s;
    CHECK_INT(copy_state_parse("loaded", &s), -EINVAL); /* names are case-sensitive */
    CHECK_STR(copy_state_name((enum copy_state)9), "Unknown");
    return CHECK_DONE();
}
