/* test_tls.c - TLS on the mesh's gRPC ports, with certificates made by openssl here and
 * Python's grpcio as the outside client (tls_client.py): one etcd, two pods (mm-runtime +
 * mm-node with --tls-cert/--tls-key, --internal-tls and --tls-ca) and an mm-gateway with
 * mutual TLS (--tls-client-ca) that forwards to the nodes over TLS.
 *   - grpcio with the right CA is answered on a node's external and internal ports; with a
 *     wrong CA, or with no TLS at all, it is refused; a TLS client to a plaintext gRPC port
 *     (the runtime's) is refused; both servers keep serving after;
 *   - the gateway answers a client with a certificate its client CA signed, and refuses one
 *     without a certificate or with a certificate from another CA;
 *   - inference entering one pod is forwarded to the pod holding the model over internal TLS
 *     (the other pod's runtime does not hold it), and through the gateway too;
 *   - rotation: the certificate and key files replaced by ones from another CA (the key first,
 *     so that for a moment they do not match and are refused): new connections verified
 *     with only the new CA are answered, ones with only the old CA refused, forwarding goes
 *     on (peers trust both CAs);
 *   - bad files at start are refused, naming the file (a key that does not match, no file);
 *   - a connection that never starts its handshake is closed after 10 s;
 *   - the REST ports over HTTPS (curl): the same, and inference through them.
 * Everything bounded; every process stopped by pid (cluster.h). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "check.h"
#include "cluster.h"
#include "grpc_predict_v2.pb-c.h"
#include "harness.h"
#include "rtclient.h"
#include "mm/rpc.h"
#include "mm/tls.h"
#include "mmclient.h"

#define FEATURES 30
#define CALL_MS 30000
#define INFER "/inference.GRPCInferenceService/ModelInfer"

static struct cluster cl;
static float row[FEATURES];
static float expected;
static char work[256];  /* the example model */
static char certs[256]; /* the certificates */
static const char *client_py;

/* ---------------------------------------------------------------- the example model */

static void make_model(const char *maker)
{
    REQUIRE(harness_example_model_tmp(maker, "tls-model", work, sizeof(work), row, FEATURES,
                                      &expected) == 0);
}


/* ModelInfer on ch answered with the model's prediction. */
static bool infer_ok(struct rpc_channel *ch, const char *model)
{
    return rt_infer_expect(ch, model, row, FEATURES, expected, CALL_MS);
}

/* ---------------------------------------------------------------- certificates and clients */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* grpcio's verdict on one new connection: extra is tls_client.py's options. */
static bool grpcio(int port, const char *expect, const char *extra)
{
    int rc = sh("cd '%s' && timeout 20 /usr/bin/python3 '%s' 127.0.0.1:%d %s %s >&2", certs,
                client_py, port, expect, extra);
    if (rc != 0)
        fprintf(stderr, "  grpcio to port %d with '%s': not %s\n", port, extra, expect);
    return rc == 0;
}

/* A TLS channel of the test's own: CA bundle ca, client certificate NAME.pem/.key if given. */
static struct rpc_channel *tls_channel(int port, const char *ca, const char *client,
                                       struct tls_watch **w)
{
    char ca_path[512], cert[512], key[512];
    snprintf(ca_path, sizeof(ca_path), "%s/%s", certs, ca);
    snprintf(cert, sizeof(cert), "%s/%s.pem", certs, client ? client : "");
    snprintf(key, sizeof(key), "%s/%s.key", certs, client ? client : "");
    struct tls_files f = {client ? cert : NULL, client ? key : NULL, ca_path};
    struct mm_error err = {0};
    if (tls_watch_new(&f, w, &err) < 0) {
        fprintf(stderr, "  %s\n", err.msg);
        return NULL;
    }
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    struct rpc_channel *ch = NULL;
    if (rpc_channel_new_tls(cl.rpc, target, 0, *w, NULL, &ch, &err) < 0)
        fprintf(stderr, "  %s\n", err.msg);
    return ch;
}

/* Bytes that are not TLS, to a TLS port: the server closes the connection (bounded). */
static bool garbage_closed(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    bool closed = false;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        if (write(fd, req, sizeof(req) - 1) > 0) {
            char buf[512];
            ssize_t n;
            long long until = harness_now_ms() + 5000;
            while ((n = read(fd, buf, sizeof(buf))) > 0 && harness_now_ms() < until)
                ;
            closed = n == 0 || (n < 0 && errno == ECONNRESET);
        }
    }
    close(fd);
    return closed;
}

/* curl's HTTP status for one request (a new connection) to the REST port, or -(curl's exit
 * code) when there was no answer (TLS refused, connection cut). */
static int curl_status(const char *scheme, int port, const char *path, const char *opts,
                       const char *body_file)
{
    char cmd[2048], out[64] = "";
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && curl -s -o rest.out -w '%%{http_code}' --max-time 10 %s%s%s "
             "'%s://127.0.0.1:%d%s'; echo \" $?\"", certs, opts,
             body_file ? " -H 'Content-Type: application/json' --data-binary @" : "",
             body_file ? body_file : "", scheme, port, path);
    if (harness_capture(cmd, out, sizeof(out)) < 0)
        return -1000;
    int code = 0, rc = 0;
    if (sscanf(out, "%d %d", &code, &rc) != 2 && sscanf(out, " %d", &rc) != 1)
        return -1001;
    return rc ? -rc : code;
}

static bool rest_answer_has(const char *needle)
{
    return sh("grep -q '%s' '%s/rest.out'", needle, certs) == 0;
}

/* A connection that never starts its handshake is dropped by the server: ms until it was
 * closed, or -1 if it stayed open past limit_ms. */
static long long silent_closed_after(int port, long long limit_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    long long t0 = harness_now_ms(), took = -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        char c;
        while (harness_now_ms() - t0 < limit_ms) {
            ssize_t n = read(fd, &c, 1);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
                took = harness_now_ms() - t0;
                break;
            }
        }
    }
    close(fd);
    return took;
}

/* ---------------------------------------------------------------- scenarios */

static struct tls_watch *w_api[2], *w_gw;

static void clients_and_refusals(void)
{
    for (int i = 0; i < 2; i++) {
        CHECK(grpcio(cl.pods[i].node_port, "ok", "--ca a-ca.pem"));
        CHECK(grpcio(cl.pods[i].internal_port, "ok", "--ca a-ca.pem --name localhost"));
    }
    int p = cl.pods[0].node_port;
    CHECK(grpcio(p, "refused", "--ca wrong-ca.pem"));
    CHECK(grpcio(p, "refused", "--plaintext"));
    CHECK(garbage_closed(p));
    CHECK(grpcio(cl.pods[0].runtime_port, "refused", "--ca a-ca.pem")); /* plaintext port */
    long long silent = silent_closed_after(p, 15000); /* the handshake bound: 10 s */
    CHECK(silent >= 9000 && silent < 15000);
    fprintf(stderr, "a connection silent on the TLS port was closed after %lld ms\n", silent);
    CHECK(grpcio(p, "ok", "--ca a-ca.pem")); /* still serving after all that */
    /* mutual TLS on the gateway */
    int g = cl.gateway_port;
    CHECK(grpcio(g, "ok", "--ca a-ca.pem --cert client.pem --key client.key"));
    CHECK(grpcio(g, "refused", "--ca a-ca.pem"));
    CHECK(grpcio(g, "refused", "--ca a-ca.pem --cert wrong.pem --key wrong.key"));
    CHECK(grpcio(g, "ok", "--ca a-ca.pem --cert client.pem --key client.key"));
}

static int holder(const char *model)
{
    const char *models[1] = {model};
    int who = -1;
    for (size_t i = 0; i < cl.cfg.n_pods; i++) {
        uint64_t size = 0;
        if (cluster_runtime_sizes(&cl, i, models, 1, &size) == 1)
            who = who < 0 ? (int)i : 99;
    }
    return who;
}

static void forwarding(void)
{
    struct mmc_reply r;
    mmc_register(cl.pods[0].api, "m1", "xgboost", "bc.json", "", true, true, 0, CALL_MS, &r);
    CHECK_INT(r.code, GRPC_STATUS_OK);
    if (r.code != GRPC_STATUS_OK)
        fprintf(stderr, "  registerModel: %s\n", r.details);
    int h = holder("m1");
    REQUIRE(h == 0 || h == 1);
    int other = 1 - h;
    CHECK(infer_ok(cl.pods[other].api, "m1")); /* forwarded to the holder over TLS */
    CHECK(infer_ok(cl.pods[h].api, "m1"));
    CHECK(infer_ok(cl.gateway, "m1")); /* mTLS in, TLS to the holder */
    CHECK_INT(holder("m1"), h);        /* still one copy: the others were forwarded */
    fprintf(stderr, "m1 on n%d: answered through n%d and the gateway over internal TLS\n", h,
            other);
}

/* HTTPS on the REST ports (curl): the right CA answered, a wrong one and plain HTTP refused;
 * inference over HTTPS (forwarded to the holder over internal TLS when it is the other pod);
 * the gateway's mutual TLS: 403 without a client certificate or with one of another CA. */
static void rest_https(void)
{
    if (cl.pods[0].node_rest_port <= 0) {
        fprintf(stderr, "  no REST port announced\n");
        CHECK(false);
        return;
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/infer.json", certs);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fprintf(f, "{\"inputs\":[{\"name\":\"input-0\",\"shape\":[1,%d],\"datatype\":\"FP32\","
            "\"data\":[", FEATURES);
    for (int j = 0; j < FEATURES; j++)
        fprintf(f, "%s%.9g", j ? "," : "", (double)row[j]);
    fprintf(f, "]}]}");
    fclose(f);
    for (int i = 0; i < 2; i++) {
        int p = cl.pods[i].node_rest_port;
        CHECK_INT(curl_status("https", p, "/v2/health/live", "--cacert a-ca.pem", NULL), 200);
        CHECK_INT(curl_status("https", p, "/v2/models/m1/infer", "--cacert a-ca.pem",
                              "infer.json"), 200);
        CHECK(rest_answer_has("\"model_name\":\"m1\""));
    }
    int p = cl.pods[0].node_rest_port;
    CHECK(curl_status("https", p, "/v2/health/live", "--cacert wrong-ca.pem", NULL) < 0);
    CHECK(curl_status("http", p, "/v2/health/live", "", NULL) < 0); /* plain HTTP to HTTPS */
    CHECK(garbage_closed(p));
    CHECK_INT(curl_status("https", p, "/v2/health/live", "--cacert a-ca.pem", NULL), 200);
    int g = cl.gateway_rest_port;
    CHECK_INT(curl_status("https", g, "/v2/models/m1/infer",
                          "--cacert a-ca.pem --cert client.pem --key client.key", "infer.json"),
              200);
    CHECK(rest_answer_has("\"model_name\":\"m1\""));
    CHECK_INT(curl_status("https", g, "/v2/health/live", "--cacert a-ca.pem", NULL), 403);
    CHECK(rest_answer_has("client certificate"));
    CHECK_INT(curl_status("https", g, "/v2/health/live",
                          "--cacert a-ca.pem --cert wrong.pem --key wrong.key", NULL), 403);
}

/* Replace dst by src atomically (a rename in the same directory). */
static void replace(const char *src, const char *dst)
{
    CHECK_INT(sh("cd '%s' && cp %s .tmp && mv .tmp %s", certs, src, dst), 0);
}

static void rotation(void)
{
    int p = cl.pods[1].node_port;
    CHECK(grpcio(p, "refused", "--ca b-ca.pem"));
    /* the key first: for a moment it does not match the certificate and is refused */
    replace("b.key", "server.key");
    CHECK(grpcio(p, "ok", "--ca a-ca.pem"));
    replace("b.pem", "server.pem");
    long long t0 = harness_now_ms();
    bool ok = false;
    while (!ok && harness_now_ms() - t0 < 10000) /* one handshake looks, the next one has it */
        ok = grpcio(p, "ok", "--ca b-ca.pem");
    CHECK(ok);
    CHECK(grpcio(p, "refused", "--ca a-ca.pem"));
    for (int i = 0; i < 2; i++)
        CHECK(grpcio(cl.pods[i].node_port, "ok", "--ca b-ca.pem"));
    /* new connections between the pods: the channels made before keep theirs; a gateway
     * channel of the test's own, made now, sees the new certificate */
    CHECK(infer_ok(cl.pods[0].api, "m1"));
    CHECK(infer_ok(cl.pods[1].api, "m1"));
    CHECK(infer_ok(cl.gateway, "m1"));
    struct tls_watch *w = NULL;
    struct rpc_channel *fresh = tls_channel(cl.pods[0].node_port, "b-ca.pem", NULL, &w);
    CHECK(fresh && infer_ok(fresh, "m1"));
    rpc_channel_free(fresh);
    tls_watch_free(w);
    /* the REST port: the same files, re-read at its next handshake */
    int rp = cl.pods[1].node_rest_port;
    CHECK_INT(curl_status("https", rp, "/v2/health/live", "--cacert b-ca.pem", NULL), 200);
    CHECK(curl_status("https", rp, "/v2/health/live", "--cacert a-ca.pem", NULL) < 0);
    CHECK(sh("grep -q 'does not match certificate' '%s'", cl.pods[1].node_log) == 0);
    CHECK(sh("grep -q 're-read: new connections get it' '%s'", cl.pods[1].node_log) == 0);
    fprintf(stderr, "rotation: new connections had the new certificate after %lld ms\n",
            harness_now_ms() - t0);
}

static void bad_files(const char *mm_node)
{
    /* refused at start, naming the file; no port opened */
    CHECK_INT(sh("'%s' --tls-cert '%s/a.pem' --tls-key '%s/b.key' --probe-listen off "
                 "--listen 127.0.0.1:0 --internal-listen 127.0.0.1:0 2>'%s/bad.log'",
                 mm_node, certs, certs, certs),
              2);
    CHECK(sh("grep -q 'b.key does not match certificate' '%s/bad.log'", certs) == 0);
    CHECK_INT(sh("'%s' --tls-cert '%s/none.pem' --tls-key '%s/a.key' --probe-listen off "
                 "2>'%s/bad.log'",
                 mm_node, certs, certs, certs),
              2);
    CHECK(sh("grep -q 'none.pem: No such file' '%s/bad.log'", certs) == 0);
    CHECK_INT(sh("'%s' --tls-cert '%s/a.pem' --probe-listen off 2>/dev/null", mm_node, certs), 2);
    CHECK_INT(sh("'%s' --tls-cert '%s/a.pem' --tls-key '%s/a.key' --internal-tls "
                 "--probe-listen off 2>/dev/null",
                 mm_node, certs, certs),
              2); /* no --tls-ca */
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 6);
    if (!cluster_node_has_listen(argv[1])) {
        fprintf(stderr, "mm-node has no --listen: skipped\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    client_py = argv[5];
    make_model(argv[4]);
    const char *tmp = getenv("TMPDIR");
    snprintf(certs, sizeof(certs), "%s/mmtls-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    REQUIRE(mkdtemp(certs) != NULL);
    char mk[512];
    snprintf(mk, sizeof(mk), "%s", argv[5]);
    char *slash = strrchr(mk, '/');
    REQUIRE(slash);
    strcpy(slash + 1, "tls_mkcerts.sh");
    const char *names[] = {"a", "b", "client", "wrong"};
    for (size_t k = 0; k < 4; k++)
        REQUIRE(sh("sh '%s' '%s' %s", mk, certs, names[k]) == 0);
    REQUIRE(sh("cd '%s' && cp a.pem server.pem && cp a.key server.key && "
               "cat a-ca.pem b-ca.pem > cas.pem",
               certs) == 0);
    bad_files(argv[1]);

    char node_args[2048], gateway_args[2048];
    snprintf(node_args, sizeof(node_args),
             "--tls-cert %s/server.pem --tls-key %s/server.key --internal-tls "
             "--tls-ca %s/cas.pem",
             certs, certs, certs);
    snprintf(gateway_args, sizeof(gateway_args),
             "--tls-cert %s/server.pem --tls-key %s/server.key --tls-client-ca "
             "%s/client-ca.pem --internal-tls --tls-ca %s/cas.pem",
             certs, certs, certs, certs);
    REQUIRE(strlen(gateway_args) < 250); /* the harness's room for them */
    struct cluster_config cfg = {
        .mm_node = argv[1],
        .mm_runtime = argv[2],
        .mm_gateway = argv[3],
        .node_args = node_args,
        .gateway_args = gateway_args,
        .n_pods = 2,
    };
    REQUIRE(cluster_start_with(&cl, &cfg, true, false) == 0);
    /* the harness's plaintext channels replaced by TLS ones */
    for (int i = 0; i < 2; i++) {
        rpc_channel_free(cl.pods[i].api);
        cl.pods[i].api = tls_channel(cl.pods[i].node_port, "cas.pem", NULL, &w_api[i]);
        REQUIRE(cl.pods[i].api);
    }
    rpc_channel_free(cl.gateway);
    cl.gateway = tls_channel(cl.gateway_port, "cas.pem", "client", &w_gw);
    REQUIRE(cl.gateway);
    char model[512];
    snprintf(model, sizeof(model), "%s/xgboost/breast-cancer.json", work);
    REQUIRE(cluster_copy_file(&cl, model, "bc.json") == 0);

    clients_and_refusals();
    forwarding();
    rest_https();
    rotation();

    /* a clean exit (status 0: under ASan no leak, no report) and no sanitizer report */
    int st = harness_stop_pid(cl.gateway_pid, 5000);
    cl.gateway_pid = 0;
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    for (size_t i = 0; i < 2; i++) {
        CHECK_INT(cluster_node_signal(&cl, i, SIGTERM), 0);
        st = cluster_node_wait(&cl, i, 20000);
        CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    CHECK(sh("cat '%s'/*.log | grep -q 'Sanitizer\\|runtime error'", cl.dir) != 0);
    int failures = check_failures;
    if (failures)
        cluster_dump_logs(&cl, true);
    cluster_free(&cl);
    for (int i = 0; i < 2; i++)
        tls_watch_free(w_api[i]);
    tls_watch_free(w_gw);
    CHECK_INT(sh("rm -rf '%s' '%s'", work, certs), 0);
    return CHECK_DONE();
}
