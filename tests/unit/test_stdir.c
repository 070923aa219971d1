/* test_stdir.c - storage-config entries from a mounted Secret's directory (mm/stdir.h), laid
 * out as the kubelet lays a Secret volume out (key -> ..data/key, ..data -> ..<timestamp>/):
 * an entry read; the Secret updated in place (..data swapped) and the next read sees the new
 * content; a missing key and a dangling link are -ENOENT; refused: keys that are no Secret data
 * keys (a path, "..data", ".", empty, too long), a directory, a FIFO (without blocking), a NUL
 * byte, one byte over the bound (the bound itself read); messages name the key, never the
 * content; stdir_check on a directory, a file and nothing; and stcfg_resolve through it. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "mm/stcfg.h"
#include "mm/stdir.h"

static char dir[256];

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    REQUIRE(f != NULL);
    REQUIRE(fwrite(data, 1, len, f) == len);
    REQUIRE(fclose(f) == 0);
}

/* A Secret version as the kubelet writes it: ..<ts>/<key> for each key, then ..data pointing
 * at it (swapped by a rename, atomically), and <key> -> ..data/<key>. */
static void secret_version(const char *ts, const char *const kv[][2], size_t n)
{
    char path[512], target[512];
    snprintf(path, sizeof(path), "%s/..%s", dir, ts);
    REQUIRE(mkdir(path, 0755) == 0);
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/..%s/%s", dir, ts, kv[i][0]);
        write_file(path, kv[i][1], strlen(kv[i][1]));
        snprintf(path, sizeof(path), "%s/%s", dir, kv[i][0]);
        snprintf(target, sizeof(target), "..data/%s", kv[i][0]);
        if (symlink(target, path) < 0)
            REQUIRE(errno == EEXIST);
    }
    snprintf(path, sizeof(path), "%s/..data_tmp", dir);
    snprintf(target, sizeof(target), "..%s", ts);
    REQUIRE(symlink(target, path) == 0);
    char data[512];
    snprintf(data, sizeof(data), "%s/..data", dir);
    REQUIRE(rename(path, data) == 0);
}

static int read_key(const char *key, char **json, struct mm_error *err)
{
    memset(err, 0, sizeof(*err));
    return stdir_read(dir, key, json, err);
}

static int lookup(const char *key, char **json, void *arg, struct mm_error *err)
{
    (void)arg;
    return stdir_read(dir, key, json, err);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/mm-stdir-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    REQUIRE(mkdtemp(dir) != NULL);
    struct mm_error err = {0};
    char *json = NULL;
    char path[512];

    /* the first version of the Secret */
    const char *const v1[][2] = {
        {"localMinIO", "{\"type\":\"s3\",\"secret_access_key\":\"SECRET-ONE\",\"bucket\":\"b\"}\n"},
        {"gone", "{\"type\":\"pvc\",\"name\":\"x\"}"},
    };
    secret_version("2026_01_01_00_00_00.1", v1, 2);
    CHECK_INT(stdir_check(dir, &err), 0);
    CHECK_INT(read_key("localMinIO", &json, &err), 0);
    CHECK(json && strstr(json, "SECRET-ONE") != NULL);
    free(json);
    json = NULL;

    /* stcfg resolves through it (the trailing newline of a Secret's value is fine) */
    struct stcfg c;
    CHECK_INT(stcfg_resolve("localMinIO", NULL, lookup, NULL, &c, &err), 0);
    const cJSON *b = c.cfg ? cJSON_GetObjectItemCaseSensitive(c.cfg, "bucket") : NULL;
    CHECK(cJSON_IsString(b) && strcmp(b->valuestring, "b") == 0);
    stcfg_clear(&c);

    /* updated in place: the next read sees the new content; a key dropped from the Secret
     * leaves a dangling link, which is no entry */
    const char *const v2[][2] = {
        {"localMinIO", "{\"type\":\"s3\",\"secret_access_key\":\"SECRET-TWO\"}"},
    };
    secret_version("2026_01_01_00_01_00.2", v2, 1);
    CHECK_INT(read_key("localMinIO", &json, &err), 0);
    CHECK(json && strstr(json, "SECRET-TWO") != NULL);
    free(json);
    json = NULL;
    CHECK_INT(read_key("gone", &json, &err), -ENOENT);
    CHECK(json == NULL);
    CHECK_INT(read_key("never-there", &json, &err), -ENOENT);
    CHECK_INT(err.code, 0);

    /* keys that are no Secret data keys, each refused naming the key */
    static char long_key[300];
    memset(long_key, 'k', 254);
    const char *bad[] = {"",
                         ".",
                         "..",
                         "..data",
                         "..2026_01_01_00_01_00.2",
                         "../etc/passwd",
                         "a/b",
                         "/etc/passwd",
                         "sp ace",
                         "nl\nx",
                         "\xc3\xa9",
                         long_key};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_INT(read_key(bad[i], &json, &err), -EINVAL);
        CHECK(json == NULL);
        CHECK(strstr(err.msg, "no Secret data key") != NULL);
    }
    long_key[253] = '\0'; /* 253 bytes is a key: absent */
    CHECK_INT(read_key(long_key, &json, &err), -ENOENT);
    CHECK_INT(read_key("a.b-c_D9", &json, &err), -ENOENT);

    /* a directory and a FIFO are no entries (the FIFO without blocking) */
    snprintf(path, sizeof(path), "%s/adir", dir);
    REQUIRE(mkdir(path, 0755) == 0);
    CHECK_INT(read_key("adir", &json, &err), -EINVAL);
    CHECK(strstr(err.msg, "'adir'") && strstr(err.msg, "not a regular file"));
    snprintf(path, sizeof(path), "%s/fifo", dir);
    REQUIRE(mkfifo(path, 0600) == 0);
    CHECK_INT(read_key("fifo", &json, &err), -EINVAL);

    /* a NUL byte; the bound read, one byte over refused; no content in any message */
    snprintf(path, sizeof(path), "%s/nul", dir);
    write_file(path, "{\"a\":\"SECRET-NUL\0\"}", 18);
    CHECK_INT(read_key("nul", &json, &err), -EINVAL);
    CHECK(strstr(err.msg, "NUL") && !strstr(err.msg, "SECRET"));
    char *big = malloc(STDIR_MAX_BYTES + 1);
    REQUIRE(big != NULL);
    memset(big, ' ', STDIR_MAX_BYTES + 1);
    memcpy(big, "{\"x\":\"SECRET-BIG\"}", 18);
    snprintf(path, sizeof(path), "%s/big", dir);
    write_file(path, big, STDIR_MAX_BYTES);
    CHECK_INT(read_key("big", &json, &err), 0);
    CHECK(json && strlen(json) == STDIR_MAX_BYTES);
    free(json);
    json = NULL;
    write_file(path, big, STDIR_MAX_BYTES + 1);
    CHECK_INT(read_key("big", &json, &err), -EFBIG);
    CHECK(json == NULL && strstr(err.msg, "'big'") && !strstr(err.msg, "SECRET"));
    fprintf(stderr, "refused: %s\n", err.msg);
    free(big);

    /* stdir_check: a file and a missing path are no directory */
    CHECK_INT(stdir_check(path, &err), -ENOTDIR);
    snprintf(path, sizeof(path), "%s/missing", dir);
    CHECK_INT(stdir_check(path, &err), -ENOENT);
    CHECK(strstr(err.msg, path) != NULL);
    CHECK_INT(stdir_check("", &err), -EINVAL);

    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return CHECK_DONE();
}
