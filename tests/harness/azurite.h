/* azurite.h - azurite's blob service (tests/servers/node_modules/.bin/azurite-blob, pinned in
 * tests/servers/package.json, installed by scripts/setup.sh) for the azure tests: started on
 * a free loopback port with a temporary data dir, ready when it says it listens, stopped by
 * its pid. It knows the development account devstoreaccount1 with the emulators' published
 * key (AZURITE_ACCOUNT, AZURITE_KEY), and is path-style: the account is the URL's first
 * segment. Run with --silent (no access log), --loose, --skipApiVersionCheck and
 * --disableTelemetry (no connection leaves the machine). The process dies with the test
 * (harness_spawn). */
#ifndef MM_TEST_AZURITE_H
#define MM_TEST_AZURITE_H

#include <sys/types.h>

#define AZURITE_ACCOUNT "devstoreaccount1"
#define AZURITE_KEY                                                                                \
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

struct harness_azurite {
    pid_t pid; /* 0 when not running */
    int port;
    char dir[256]; /* mkdtemp'd: data (--location) and the log; removed by stop */
    char log_path[300];
    char endpoint[96]; /* "http://127.0.0.1:<port>/devstoreaccount1" */
};

/* Start bin (the azurite-blob script) and wait up to 30 s until it listens. 0; -ENOENT with a
 * message saying to run scripts/setup.sh when bin is missing; -ECHILD / -ETIMEDOUT with the
 * tail of its log printed. */
int harness_azurite_start(struct harness_azurite *az, const char *bin);
/* SIGTERM (then SIGKILL after 5 s) and remove its dir. Not running: only the dir. */
void harness_azurite_stop(struct harness_azurite *az);

#endif
