/* s3rver.h - s3rver (npm, tests/servers) for the s3 tests: started on a free loopback port with
 * a fresh data dir and a bucket, through tests/servers/s3rver_run.js, which registers a key pair
 * given here and verifies SigV4 signatures (s3rver 3.7.1 does not). Stopped by pid; the process
 * dies with the test in any case. Objects are uploaded with unsigned PUTs (the script allows
 * unsigned writes). */
#ifndef MM_TEST_S3RVER_H
#define MM_TEST_S3RVER_H

#include <stddef.h>
#include <sys/types.h>

struct harness_s3rver {
    pid_t pid; /* 0 when stopped */
    int port;
    char endpoint[64]; /* "http://127.0.0.1:<port>" */
    char dir[256];     /* the temp dir: data/ and s3rver.log */
    char log_path[300];
};

/* servers_dir: tests/servers (its node_modules installed by scripts/setup.sh: -ENOENT with a
 * message saying so when missing). bucket created at start; access_key_id and secret the pair
 * it accepts (besides s3rver's S3RVER/S3RVER); extra_args e.g. "--require-auth" or
 * "--region eu-west-1" (NULL = none). Waits up to 20 s. 0 or -errno. */
int harness_s3rver_start(struct harness_s3rver *s, const char *servers_dir, const char *bucket,
                         const char *access_key_id, const char *secret, const char *extra_args);
/* An unsigned PUT of len bytes at bucket/key (key as sent: the caller encodes). 0 or -EIO. */
int harness_s3rver_put(const struct harness_s3rver *s, const char *bucket, const char *key,
                       const void *data, size_t len);
/* Stop by pid (SIGTERM, then SIGKILL) and remove the temp dir. */
void harness_s3rver_stop(struct harness_s3rver *s);

#endif
