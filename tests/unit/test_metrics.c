/* test_metrics.c - metrics.h: the exposition text (types, labels, cumulative buckets, sums,
 * escaping), registration (same shape shared, other shape refused, bad names), the bound on
 * model labels (per_model ids, then __other__; 0: no label), NULL families, recording from
 * many threads at once while another renders (every observation counted once, each id one
 * handle), and GET /metrics over a real loopback socket (200 with the text format's content
 * type, 404, 405, off). */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mm/httpd.h"
#include "mm/metrics.h"

static const char *const methods[] = {"ModelInfer", "ModelMetadata", "ModelReady"};

/* The whole exposition of m (the caller frees). */
static char *render(struct metrics *m)
{
    struct mm_buf b = {0};
    REQUIRE(metrics_render(m, &b) == 0);
    if (!b.data)
        return strdup("");
    return b.data;
}

/* Whether line (without its newline) is one of text's lines. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

static void test_exposition(void)
{
    struct metrics *m = NULL;
    struct mm_error err = {0};
    REQUIRE(metrics_new(&(struct metrics_config){.per_model = 10}, &m, &err) == 0);
    struct metric *c = NULL, *g = NULL, *h = NULL, *q = NULL;
    REQUIRE(metrics_register(m, &(struct metric_desc){.name = "mm_test_total",
                                                      .help = "A counter\\ with \"quotes\"\nand a line",
                                                      .type = METRIC_COUNTER},
                             &c, &err) == 0);
    static const char *const ports[] = {"external", "internal"};
    REQUIRE(metrics_register(m, &(struct metric_desc){.name = "mm_test_in_flight", .help = "g",
                                                      .type = METRIC_GAUGE, .label = "port",
                                                      .values = ports, .nvalues = 2},
                             &g, &err) == 0);
    REQUIRE(metrics_register(m, &(struct metric_desc){.name = "modelmesh_api_request_milliseconds",
                                                      .help = "External inference request time",
                                                      .type = METRIC_HISTOGRAM, .label = "method",
                                                      .values = methods, .nvalues = 3,
                                                      .by_code = true, .by_model = true},
                             &h, &err) == 0);
    static const double small[] = {1, 10};
    REQUIRE(metrics_register(m, &(struct metric_desc){.name = "mm_test_sizes", .help = "s",
                                                      .type = METRIC_HISTOGRAM, .buckets = small,
                                                      .nbuckets = 2},
                             &q, &err) == 0);
    metric_inc0(c);
    metric_add(c, 0, 0, 0, 41);
    metric_gauge_add(g, 0, 1, 0, 3);
    metric_gauge_add(g, 0, 1, 0, -1);
    metric_set(g, 0, 0, 0, -7);
    metric_model_t a = metrics_model(m, "model-a", 7);
    CHECK(a != METRIC_MODEL_OTHER);
    CHECK_INT(metrics_model(m, "model-a", 7), a);
    metric_observe(h, a, 0, 0, 0.25);  /* le 0.5 */
    metric_observe(h, a, 0, 0, 0.5);   /* le 0.5: bounds are inclusive */
    metric_observe(h, a, 0, 0, 74.5);  /* le 75 */
    metric_observe(h, a, 0, 0, 1e9);   /* past 300000: +Inf only */
    metric_observe(h, a, 0, 5, 3);     /* NOT_FOUND */
    metric_observe(h, METRIC_MODEL_OTHER, 2, 14, 1); /* ModelReady UNAVAILABLE __other__ */
    metric_observe(h, a, 0, 99, 1);    /* a code past 16: UNKNOWN */
    metric_observe0(q, 1);
    metric_observe0(q, 11);
    metric_observe0(q, -5); /* a negative time (a clock step): 0 */
    char *t = render(m);
    CHECK(has_line(t, "# HELP mm_test_total A counter\\\\ with \"quotes\"\\nand a line"));
    CHECK(has_line(t, "# TYPE mm_test_total counter"));
    CHECK(has_line(t, "mm_test_total 42"));
    CHECK(has_line(t, "# TYPE mm_test_in_flight gauge"));
    CHECK(has_line(t, "mm_test_in_flight{port=\"external\"} -7"));
    CHECK(has_line(t, "mm_test_in_flight{port=\"internal\"} 2"));
    CHECK(has_line(t, "# TYPE modelmesh_api_request_milliseconds histogram"));
    const char *ok = "modelmesh_api_request_milliseconds_bucket{method=\"ModelInfer\",code=\"OK\","
                     "modelId=\"model-a\",le=";
    char line[512];
    snprintf(line, sizeof(line), "%s\"0.5\"} 2", ok);
    CHECK(has_line(t, line));
    snprintf(line, sizeof(line), "%s\"1\"} 2", ok);
    CHECK(has_line(t, line));
    snprintf(line, sizeof(line), "%s\"50\"} 2", ok);
    CHECK(has_line(t, line));
    snprintf(line, sizeof(line), "%s\"75\"} 3", ok);
    CHECK(has_line(t, line));
    snprintf(line, sizeof(line), "%s\"300000\"} 3", ok);
    CHECK(has_line(t, line));
    snprintf(line, sizeof(line), "%s\"+Inf\"} 4", ok);
    CHECK(has_line(t, line));
    CHECK(has_line(t, "modelmesh_api_request_milliseconds_count{method=\"ModelInfer\",code=\"OK\","
                      "modelId=\"model-a\"} 4"));
    CHECK(has_line(t, "modelmesh_api_request_milliseconds_sum{method=\"ModelInfer\",code=\"OK\","
                      "modelId=\"model-a\"} 1000000075.250"));
    CHECK(has_line(t, "modelmesh_api_request_milliseconds_count{method=\"ModelInfer\","
                      "code=\"NOT_FOUND\",modelId=\"model-a\"} 1"));
    CHECK(has_line(t, "modelmesh_api_request_milliseconds_count{method=\"ModelInfer\","
                      "code=\"UNKNOWN\",modelId=\"model-a\"} 1"));
    CHECK(has_line(t, "modelmesh_api_request_milliseconds_count{method=\"ModelReady\","
                      "code=\"UNAVAILABLE\",modelId=\"__other__\"} 1"));
    /* series never recorded are not rendered */
    CHECK(!strstr(t, "method=\"ModelMetadata\""));
    CHECK(!strstr(t, "code=\"ABORTED\""));
    CHECK(has_line(t, "mm_test_sizes_bucket{le=\"1\"} 2"));
    CHECK(has_line(t, "mm_test_sizes_bucket{le=\"10\"} 2"));
    CHECK(has_line(t, "mm_test_sizes_bucket{le=\"+Inf\"} 3"));
    CHECK(has_line(t, "mm_test_sizes_sum 12.000"));
    CHECK(has_line(t, "mm_test_sizes_count 3"));
    /* every line is a comment or "name{labels} value" */
    for (char *p = t; *p;) {
        char *nl = strchr(p, '\n');
        REQUIRE(nl);
        CHECK(p[0] == '#' || (memchr(p, ' ', (size_t)(nl - p)) && nl[-1] != ' '));
        p = nl + 1;
    }
    free(t);

    /* registration: the same shape is shared, another refused, bad names refused */
    struct metric *again = NULL;
    CHECK_INT(metrics_register(m, &(struct metric_desc){.name = "mm_test_total", .help = "x",
                                                        .type = METRIC_COUNTER},
                               &again, &err), 0);
    CHECK(again == c);
    CHECK_INT(metrics_register(m, &(struct metric_desc){.name = "mm_test_total", .help = "x",
                                                        .type = METRIC_GAUGE},
                               &again, &err), -EEXIST);
    CHECK(strstr(err.msg, "mm_test_total"));
    CHECK_INT(metrics_register(m, &(struct metric_desc){.name = "9bad", .help = "x",
                                                        .type = METRIC_COUNTER},
                               &again, &err), -EINVAL);
    CHECK_INT(metrics_register(m, &(struct metric_desc){.name = "mm_x", .help = "x",
                                                        .type = METRIC_COUNTER, .label = "le-x",
                                                        .values = methods, .nvalues = 3},
                               &again, &err), -EINVAL);
    static const double desc[] = {5, 1};
    CHECK_INT(metrics_register(m, &(struct metric_desc){.name = "mm_y", .help = "x",
                                                        .type = METRIC_HISTOGRAM, .buckets = desc,
                                                        .nbuckets = 2},
                               &again, &err), -EINVAL);
    metrics_free(m);

    /* metrics off: NULL everywhere does nothing */
    struct metric *none = (struct metric *)1;
    CHECK_INT(metrics_register(NULL, &(struct metric_desc){.name = "mm_z", .help = "z"}, &none,
                               &err), 0);
    CHECK(none == NULL);
    metric_inc0(NULL);
    metric_observe(NULL, 0, 0, 0, 1);
    metric_set0(NULL, 1);
    CHECK_INT(metrics_model(NULL, "a", 1), METRIC_MODEL_OTHER);
}

static void test_bounds(void)
{
    struct metrics *m = NULL;
    struct mm_error err = {0};
    REQUIRE(metrics_new(&(struct metrics_config){.per_model = 3}, &m, &err) == 0);
    struct metric *h = NULL;
    REQUIRE(metrics_register(m, &(struct metric_desc){.name = "modelmesh_loadmodel_milliseconds",
                                                      .help = "l", .type = METRIC_HISTOGRAM,
                                                      .by_model = true},
                             &h, &err) == 0);
    const char *ids[] = {"m1", "m2", "we\"ird\\id\n", "m4", "m5"};
    metric_model_t got[5];
    for (int i = 0; i < 5; i++) {
        got[i] = metrics_model(m, ids[i], strlen(ids[i]));
        metric_observe(h, got[i], 0, 0, 1);
    }
    CHECK(got[0] && got[1] && got[2]);
    CHECK(got[0] != got[1] && got[1] != got[2] && got[0] != got[2]);
    CHECK_INT(got[3], METRIC_MODEL_OTHER);
    CHECK_INT(got[4], METRIC_MODEL_OTHER);
    CHECK_INT(metrics_model(m, "m2", 2), got[1]); /* known ids keep theirs */
    CHECK_INT(metrics_model(m, "", 0), METRIC_MODEL_OTHER);
    char longid[METRICS_MAX_MODEL_ID + 2];
    memset(longid, 'x', sizeof(longid));
    CHECK_INT(metrics_model(m, longid, sizeof(longid)), METRIC_MODEL_OTHER);
    char *t = render(m);
    CHECK(has_line(t, "modelmesh_loadmodel_milliseconds_count{modelId=\"m1\"} 1"));
    CHECK(has_line(t, "modelmesh_loadmodel_milliseconds_count{modelId=\"we\\\"ird\\\\id\\n\"} 1"));
    CHECK(has_line(t, "modelmesh_loadmodel_milliseconds_count{modelId=\"__other__\"} 2"));
    CHECK(!strstr(t, "\"m4\"") && !strstr(t, "\"m5\""));
    free(t);
    metrics_free(m);

    /* per_model 0: no modelId label at all */
    REQUIRE(metrics_new(&(struct metrics_config){.per_model = 0}, &m, &err) == 0);
    REQUIRE(metrics_register(m, &(struct metric_desc){.name = "modelmesh_loadmodel_milliseconds",
                                                      .help = "l", .type = METRIC_HISTOGRAM,
                                                      .by_model = true},
                             &h, &err) == 0);
    metric_observe(h, metrics_model(m, "m1", 2), 0, 0, 1);
    metric_observe(h, metrics_model(m, "m2", 2), 0, 0, 1);
    t = render(m);
    CHECK(!strstr(t, "modelId"));
    CHECK(has_line(t, "modelmesh_loadmodel_milliseconds_count 2"));
    free(t);
    metrics_free(m);

    unsigned pm = 0;
    CHECK_INT(metrics_parse_per_model("100", &pm, &err), 0);
    CHECK_INT(pm, 100);
    CHECK(metrics_parse_per_model("10001", &pm, &err) < 0);
    CHECK(strstr(err.msg, "--metrics-per-model"));
    CHECK(metrics_parse_per_model("x", &pm, &err) < 0);
    CHECK(metrics_new(&(struct metrics_config){.per_model = METRICS_MAX_PER_MODEL + 1}, &m,
                      &err) < 0);
}

/* ---- many threads */

#define THREADS 8
#define ROUNDS 20000
#define IDS 50
#define PER_MODEL 20

struct shared {
    struct metrics *m;
    struct metric *h, *c;
    atomic_bool stop;
    metric_model_t handles[THREADS][IDS];
};

struct worker {
    struct shared *s;
    int k;
};

static void *recorder(void *arg)
{
    struct worker *w = arg;
    char id[16];
    for (int r = 0; r < ROUNDS; r++) {
        int i = (r * 7 + w->k) % IDS;
        int n = snprintf(id, sizeof(id), "model-%d", i);
        metric_model_t mo = metrics_model(w->s->m, id, (size_t)n);
        if (r < IDS * 7) /* the first sight of each id */
            w->s->handles[w->k][i] = mo;
        else if (w->s->handles[w->k][i] != mo)
            w->s->handles[w->k][i] = (metric_model_t)-1; /* changed: wrong */
        metric_observe(w->s->h, mo, (unsigned)(r % 3), (unsigned)(r % 17), (double)(r % 1000));
        metric_add(w->s->c, mo, 0, 0, 1);
    }
    return NULL;
}

static void *renderer(void *arg)
{
    struct shared *s = arg;
    while (!atomic_load(&s->stop)) {
        struct mm_buf b = {0};
        metrics_render(s->m, &b);
        mm_buf_free(&b);
    }
    return NULL;
}

/* The sum of the values of the lines of text that start with prefix. */
static unsigned long long sum_lines(const char *text, const char *prefix)
{
    unsigned long long sum = 0;
    size_t n = strlen(prefix);
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        if (!nl)
            break;
        if (strncmp(p, prefix, n) == 0) {
            const char *sp = memrchr(p, ' ', (size_t)(nl - p));
            if (sp)
                sum += strtoull(sp + 1, NULL, 10);
        }
        p = nl + 1;
    }
    return sum;
}

static void test_threads(void)
{
    static struct shared s;
    struct mm_error err = {0};
    REQUIRE(metrics_new(&(struct metrics_config){.per_model = PER_MODEL}, &s.m, &err) == 0);
    REQUIRE(metrics_register(s.m, &(struct metric_desc){.name = "mm_t_milliseconds", .help = "t",
                                                        .type = METRIC_HISTOGRAM,
                                                        .label = "method", .values = methods,
                                                        .nvalues = 3, .by_code = true,
                                                        .by_model = true},
                             &s.h, &err) == 0);
    REQUIRE(metrics_register(s.m, &(struct metric_desc){.name = "mm_t_total", .help = "t",
                                                        .type = METRIC_COUNTER, .by_model = true},
                             &s.c, &err) == 0);
    pthread_t th[THREADS], rt;
    struct worker w[THREADS];
    REQUIRE(pthread_create(&rt, NULL, renderer, &s) == 0);
    for (int k = 0; k < THREADS; k++) {
        w[k] = (struct worker){&s, k};
        REQUIRE(pthread_create(&th[k], NULL, recorder, &w[k]) == 0);
    }
    for (int k = 0; k < THREADS; k++)
        pthread_join(th[k], NULL);
    atomic_store(&s.stop, true);
    pthread_join(rt, NULL);
    char *t = render(s.m);
    unsigned long long total = (unsigned long long)THREADS * ROUNDS;
    CHECK_INT(sum_lines(t, "mm_t_milliseconds_count{"), total);
    CHECK_INT(sum_lines(t, "mm_t_total{"), total);
    CHECK_INT(sum_lines(t, "mm_t_milliseconds_bucket{") > 0, 1);
    /* exactly PER_MODEL ids got labels, each one handle in every thread */
    int labelled = 0;
    for (int i = 0; i < IDS; i++) {
        char needle[64];
        snprintf(needle, sizeof(needle), "mm_t_total{modelId=\"model-%d\"}", i);
        labelled += strstr(t, needle) != NULL;
        for (int k = 1; k < THREADS; k++)
            CHECK_INT(s.handles[k][i], s.handles[0][i]);
        CHECK(s.handles[0][i] != (metric_model_t)-1);
    }
    CHECK_INT(labelled, PER_MODEL);
    CHECK(strstr(t, "mm_t_total{modelId=\"__other__\"}"));
    free(t);
    metrics_free(s.m);
}

/* ---- the server */

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    struct mm_buf *b = arg;
    return mm_buf_append(b, data, size * n) == 0 ? size * n : 0;
}

/* method on 127.0.0.1:port/path: the status, the body into b, the content type into ctype. */
static long http(int port, const char *method, const char *path, struct mm_buf *b, char *ctype,
                 size_t ctype_size)
{
    CURL *e = curl_easy_init();
    REQUIRE(e);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    long status = -1;
    if (curl_easy_perform(e) == CURLE_OK) {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        char *ct = NULL;
        curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ct);
        if (ctype)
            snprintf(ctype, ctype_size, "%s", ct ? ct : "");
    }
    curl_easy_cleanup(e);
    return status;
}

static void test_server(void)
{
    struct metrics *m = NULL;
    struct mm_error err = {0};
    REQUIRE(metrics_new(&(struct metrics_config){.per_model = 5}, &m, &err) == 0);
    struct metric *c = NULL;
    REQUIRE(metrics_register(m, &(struct metric_desc){.name = "mm_served_total", .help = "s",
                                                      .type = METRIC_COUNTER},
                             &c, &err) == 0);
    metric_add(c, 0, 0, 0, 5);
    struct metrics_server *s = NULL;
    int port = 0;
    REQUIRE(metrics_server_new(m, "127.0.0.1:0", &s, &port, &err) == 0);
    CHECK(port > 0);
    struct mm_buf b = {0};
    char ct[128] = "";
    CHECK_INT(http(port, "GET", "/metrics", &b, ct, sizeof(ct)), 200);
    CHECK_STR(ct, "text/plain; version=0.0.4; charset=utf-8");
    CHECK(b.data && has_line(b.data, "mm_served_total 5"));
    mm_buf_reset(&b);
    metric_add(c, 0, 0, 0, 1); /* the next scrape sees it */
    CHECK_INT(http(port, "GET", "/metrics", &b, NULL, 0), 200);
    CHECK(b.data && has_line(b.data, "mm_served_total 6"));
    mm_buf_reset(&b);
    CHECK_INT(http(port, "GET", "/", &b, NULL, 0), 404);
    mm_buf_reset(&b);
    CHECK_INT(http(port, "POST", "/metrics", &b, NULL, 0), 405);
    mm_buf_free(&b);
    /* the port is taken: a second server says which address */
    char taken[64];
    snprintf(taken, sizeof(taken), "127.0.0.1:%d", port);
    struct metrics_server *s2 = NULL;
    int p2 = 0;
    CHECK(metrics_server_new(m, taken, &s2, &p2, &err) < 0);
    CHECK(strstr(err.msg, "--metrics-listen") && strstr(err.msg, taken));
    CHECK(metrics_server_new(m, "nonsense", &s2, &p2, &err) < 0);
    CHECK(metrics_server_new(m, "127.0.0.1:99999", &s2, &p2, &err) < 0);
    metrics_server_free(s);
    metrics_free(m);

    /* metrics_start: off starts nothing; a bad per-model is refused */
    struct metrics *reg = (struct metrics *)1;
    struct metrics_server *srv = (struct metrics_server *)1;
    CHECK_INT(metrics_start(&(struct metrics_opts){.listen = "off"}, &reg, &srv, &p2, &err), 0);
    CHECK(reg == NULL && srv == NULL);
    CHECK(metrics_start(&(struct metrics_opts){.listen = "127.0.0.1:0", .per_model = "-1"}, &reg,
                        &srv, &p2, &err) < 0);
    CHECK(reg == NULL && srv == NULL);
    CHECK_INT(metrics_start(&(struct metrics_opts){.listen = "127.0.0.1:0", .per_model = "0"},
                            &reg, &srv, &p2, &err), 0);
    CHECK(reg && srv && p2 > 0);
    metrics_server_free(srv);
    metrics_free(reg);
    CHECK(httpd_is_off("off") && !httpd_is_off("127.0.0.1:0"));
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_exposition();
    test_bounds();
    test_threads();
    test_server();
    curl_global_cleanup();
    return CHECK_DONE();
}
