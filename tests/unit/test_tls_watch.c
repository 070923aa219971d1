/* test_tls_watch.c - tls_watch (rpc/tls.c) and the TLS flags: files checked at start (key and
 * certificate matching, missing, oversized, NUL, not PEM), a change taken once with a new
 * generation, a half-done rotation refused once and the old contents kept, then taken when
 * the pair matches again; tls_opts parsing and combinations. Keys and certificates are made
 * here with OpenSSL's API (EC P-256, self-signed). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "check.h"
#include "mm/tls.h"

static char dir[] = "/tmp/mm-tls-watch-XXXXXX";

static void path_of(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", dir, name);
}

/* A key and a self-signed certificate for it, written as NAME.key and NAME.pem. */
static void make_pair(const char *name)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    REQUIRE(key);
    X509 *x = X509_new();
    REQUIRE(x);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(x, n);
    REQUIRE(X509_sign(x, key, EVP_sha256()) > 0);
    char p[512];
    snprintf(p, sizeof(p), "%s/%s.pem", dir, name);
    FILE *f = fopen(p, "w");
    REQUIRE(f && PEM_write_X509(f, x));
    fclose(f);
    snprintf(p, sizeof(p), "%s/%s.key", dir, name);
    f = fopen(p, "w");
    REQUIRE(f && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL));
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
}

/* cp src dst, atomically (a rename). */
static void replace(const char *src, const char *dst)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "cd '%s' && cp %s .t && mv .t %s", dir, src, dst);
    REQUIRE(system(cmd) == 0);
}

static int first_line(const struct tls_pem *pem, void *arg)
{
    snprintf(arg, 128, "%s", pem->cert ? pem->cert : pem->ca);
    return 0;
}

static void start_checks(void)
{
    char cert[512], key[512], other_key[512], missing[512], big[512], nul[512], junk[512];
    path_of(cert, sizeof(cert), "a.pem");
    path_of(key, sizeof(key), "a.key");
    path_of(other_key, sizeof(other_key), "b.key");
    path_of(missing, sizeof(missing), "none.pem");
    path_of(big, sizeof(big), "big.pem");
    path_of(nul, sizeof(nul), "nul.pem");
    path_of(junk, sizeof(junk), "junk.pem");
    FILE *f = fopen(big, "w");
    REQUIRE(f);
    for (unsigned i = 0; i <= TLS_MAX_FILE_BYTES / 64; i++)
        fprintf(f, "%063u\n", i);
    fclose(f);
    f = fopen(nul, "w");
    REQUIRE(f);
    fwrite("-----BEGIN\0", 1, 11, f);
    fclose(f);
    f = fopen(junk, "w");
    REQUIRE(f);
    fputs("not a certificate\n", f);
    fclose(f);

    struct tls_watch *w = NULL;
    struct mm_error err = {0};
    struct tls_files ok = {cert, key, NULL};
    CHECK_INT(tls_watch_new(&ok, &w, &err), 0);
    tls_watch_free(w);
    struct tls_files bad_pair = {cert, other_key, NULL};
    CHECK_INT(tls_watch_new(&bad_pair, &w, &err), -EKEYREJECTED);
    CHECK(strstr(err.msg, "b.key does not match certificate") != NULL);
    struct tls_files none = {missing, key, NULL};
    CHECK_INT(tls_watch_new(&none, &w, &err), -ENOENT);
    CHECK(strstr(err.msg, "none.pem") != NULL);
    struct tls_files too_big = {cert, key, big};
    CHECK_INT(tls_watch_new(&too_big, &w, &err), -EFBIG);
    struct tls_files with_nul = {nul, key, NULL};
    CHECK_INT(tls_watch_new(&with_nul, &w, &err), -EBADMSG);
    struct tls_files not_pem = {cert, key, junk};
    CHECK_INT(tls_watch_new(&not_pem, &w, &err), -EBADMSG);
    CHECK(strstr(err.msg, "CA bundle") != NULL);
    struct tls_files half = {cert, NULL, NULL};
    CHECK_INT(tls_watch_new(&half, &w, &err), -EINVAL);
    struct tls_files ca_only = {NULL, NULL, cert};
    CHECK_INT(tls_watch_new(&ca_only, &w, &err), 0);
    tls_watch_free(w);
}

static void rotation(void)
{
    replace("a.pem", "s.pem");
    replace("a.key", "s.key");
    char cert[512], key[512];
    path_of(cert, sizeof(cert), "s.pem");
    path_of(key, sizeof(key), "s.key");
    struct tls_files files = {cert, key, NULL};
    struct tls_watch *w = NULL;
    struct mm_error err = {0};
    REQUIRE(tls_watch_new(&files, &w, &err) == 0);
    uint64_t gen = 0;
    char got[128] = "";
    CHECK_INT(tls_watch_use(w, &gen, first_line, got), 0);
    CHECK_INT((int)gen, 1);
    char first[128];
    memcpy(first, got, sizeof(got));
    CHECK_INT(tls_watch_use(w, &gen, first_line, got), 0); /* same generation: not called */
    CHECK_INT(tls_watch_refresh(w, &err), 0);              /* nothing changed */
    /* the key first: refused once, the old pair kept, not read again while unchanged */
    replace("b.key", "s.key");
    CHECK_INT(tls_watch_refresh(w, &err), -EKEYREJECTED);
    CHECK_INT(tls_watch_refresh(w, &err), 0);
    uint64_t g2 = gen;
    got[0] = '\0';
    CHECK_INT(tls_watch_use(w, &g2, first_line, got), 0);
    CHECK(got[0] == '\0'); /* still generation 1 */
    replace("b.pem", "s.pem");
    CHECK_INT(tls_watch_refresh(w, &err), 1);
    CHECK_INT(tls_watch_refresh(w, &err), 0);
    CHECK_INT(tls_watch_use(w, &gen, first_line, got), 0);
    CHECK_INT((int)gen, 2);
    CHECK(strcmp(got, first) != 0);
    /* a file gone: refused once, the pair in force stays; back: taken */
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "mv '%s' '%s.gone'", cert, cert);
    REQUIRE(system(cmd) == 0);
    CHECK_INT(tls_watch_refresh(w, &err), -ENOENT);
    CHECK_INT(tls_watch_refresh(w, &err), 0);
    snprintf(cmd, sizeof(cmd), "mv '%s.gone' '%s'", cert, cert);
    REQUIRE(system(cmd) == 0);
    CHECK_INT(tls_watch_refresh(w, &err), 1);
    tls_watch_free(w);
}

static void flags(void)
{
    unsetenv("MM_TLS_CERT");
    unsetenv("MM_INTERNAL_TLS");
    struct tls_opts o;
    struct mm_error err = {0};
    tls_opts_init(&o);
    CHECK(!tls_opts_enabled(&o));
    CHECK_INT(tls_opts_check(&o, &err), 0);
    CHECK_INT(tls_opts_flag(&o, "--tls-cert", 10, "c.pem", &err), 1);
    CHECK_INT(tls_opts_check(&o, &err), -EINVAL); /* no key */
    CHECK(strstr(err.msg, "--tls-key") != NULL);
    CHECK_INT(tls_opts_flag(&o, "--tls-key", 9, "k.pem", &err), 1);
    CHECK_INT(tls_opts_check(&o, &err), 0);
    CHECK(tls_opts_enabled(&o));
    CHECK_INT(tls_opts_flag(&o, "--internal-tls", 14, "--next", &err), 2);
    CHECK(o.internal);
    CHECK_INT(tls_opts_check(&o, &err), -EINVAL); /* no --tls-ca */
    CHECK_INT(tls_opts_flag(&o, "--tls-ca", 8, "ca.pem", &err), 1);
    CHECK_INT(tls_opts_check(&o, &err), 0);
    CHECK_INT(tls_opts_flag(&o, "--internal-tls=false", 14, "false", &err), 2);
    CHECK(!o.internal);
    CHECK_INT(tls_opts_check(&o, &err), -EINVAL); /* --tls-ca without --internal-tls */
    CHECK_INT(tls_opts_flag(&o, "--internal-tls=maybe", 14, "maybe", &err), -EINVAL);
    CHECK_INT(tls_opts_flag(&o, "--tls-client-ca", 15, NULL, &err), -EINVAL);
    CHECK_INT(tls_opts_flag(&o, "--tls", 5, "x", &err), 0);
    setenv("MM_TLS_CERT", "env.pem", 1);
    setenv("MM_INTERNAL_TLS", "true", 1);
    tls_opts_init(&o);
    CHECK_STR(o.cert, "env.pem");
    CHECK(o.internal);
    CHECK_INT(tls_opts_check(&o, &err), -EINVAL); /* no key */
}

int main(void)
{
    REQUIRE(mkdtemp(dir) != NULL);
    make_pair("a");
    make_pair("b");
    start_checks();
    rotation();
    flags();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK_INT(system(cmd), 0);
    return CHECK_DONE();
}
