/* azurite.c - see azurite.h. */
#include "azurite.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static bool log_says_listening(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[512];
    bool yes = false;
    while (!yes && fgets(line, sizeof(line), f))
        yes = strstr(line, "successfully listen") != NULL;
    fclose(f);
    return yes;
}

int harness_azurite_start(struct harness_azurite *az, const char *bin)
{
    memset(az, 0, sizeof(*az));
    if (access(bin, X_OK) != 0) {
        fprintf(stderr,
                "azurite: %s is missing: run scripts/setup.sh (it installs the test object "
                "stores into tests/servers/node_modules)\n",
                bin);
        return -ENOENT;
    }
    snprintf(az->dir, sizeof(az->dir), "/tmp/mm-azurite-XXXXXX");
    if (!mkdtemp(az->dir)) {
        int rc = -errno;
        az->dir[0] = '\0';
        return rc;
    }
    snprintf(az->log_path, sizeof(az->log_path), "%s/azurite.log", az->dir);
    char data[300], port_text[16];
    snprintf(data, sizeof(data), "%s/data", az->dir);
    int rc = -ETIMEDOUT;
    for (int attempt = 0; attempt < 3; attempt++) { /* a free port can be taken meanwhile */
        az->port = harness_free_port();
        snprintf(port_text, sizeof(port_text), "%d", az->port);
        char *argv[] = {
            (char *)bin,          "--blobHost", "127.0.0.1", "--blobPort", port_text,
            "--location",         data,         "--silent",  "--loose",    "--skipApiVersionCheck",
            "--disableTelemetry", NULL};
        unlink(az->log_path);
        if ((rc = harness_spawn(argv, az->log_path, &az->pid)))
            break;
        long long deadline = harness_now_ms() + 30000;
        rc = -ETIMEDOUT;
        while (harness_now_ms() < deadline) {
            if (log_says_listening(az->log_path)) {
                rc = 0;
                break;
            }
            if (harness_wait_pid(az->pid, 0) != -1) {
                rc = -ECHILD;
                az->pid = 0;
                break;
            }
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (rc == 0)
            break;
        harness_print_tail(az->log_path, 4096);
        if (az->pid)
            harness_stop_pid(az->pid, 2000);
        az->pid = 0;
        if (rc == -ETIMEDOUT)
            break;
    }
    if (rc) {
        harness_remove_dir(az->dir);
        return rc;
    }
    snprintf(az->endpoint, sizeof(az->endpoint), "http://127.0.0.1:%d/" AZURITE_ACCOUNT, az->port);
    return 0;
}

void harness_azurite_stop(struct harness_azurite *az)
{
    if (az->pid)
        harness_stop_pid(az->pid, 5000);
    az->pid = 0;
    harness_remove_dir(az->dir);
}
