/* test_driver.c - mm-chaos's own rules and output, without a world: which failed calls are
 * breaches in which scenario and phase, the report of a passed, a failed and a skipped scenario,
 * and mm-chaos refusing a bad command line (exit 2, naming the flag) before it starts anything. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "harness.h"
#include "report.h"
#include "scenario.h"

enum {
    OK = 0,
    DEADLINE = 4,
    NOT_FOUND = 5,
    INTERNAL = 13,
    UNAVAILABLE = 14,
    WRONG = -1,
    HUNG = -2
};

static void rules(void)
{
    for (int id = 1; id <= SCENARIO_COUNT; id++) {
        /* never a breach: OK; always: a wrong answer, a hung call, a code other than the two */
        CHECK(!scenario_failure_breaches(id, "fault", true, OK));
        CHECK(!scenario_failure_breaches(id, "fault", false, OK));
        CHECK(scenario_failure_breaches(id, "before", false, WRONG));
        CHECK(scenario_failure_breaches(id, "settle", true, HUNG));
        CHECK(scenario_failure_breaches(id, "after", false, NOT_FOUND));
        CHECK(scenario_failure_breaches(id, "fault", false, INTERNAL));
        /* a single-copy model may fail over with UNAVAILABLE or DEADLINE_EXCEEDED */
        CHECK(!scenario_failure_breaches(id, "fault", false, UNAVAILABLE));
        CHECK(!scenario_failure_breaches(id, "after", false, DEADLINE));
        /* a model with 2+ copies: no failure at all in 1, 2, 7 (once its copies were seen) */
        bool strict = id == 1 || id == 2 || id == 7;
        CHECK_INT(scenario_failure_breaches(id, "fault", true, UNAVAILABLE), strict);
        CHECK_INT(scenario_failure_breaches(id, "before", true, DEADLINE), strict);
        CHECK_INT(scenario_failure_breaches(id, "after", true, UNAVAILABLE), strict);
        CHECK(!scenario_failure_breaches(id, "settle", true, UNAVAILABLE));
    }
    /* 4: while etcd alone is down, every model was Loaded: no failure at all */
    CHECK(scenario_failure_breaches(4, "fault: etcd down", false, UNAVAILABLE));
    CHECK(scenario_failure_breaches(4, "fault: etcd down", true, DEADLINE));
    CHECK(!scenario_failure_breaches(4, "fault: etcd down, pod killed", false, UNAVAILABLE));
    CHECK(!scenario_failure_breaches(3, "fault: etcd down", false, UNAVAILABLE));
}

static char *render(const struct scenario_result *res, size_t n)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    REQUIRE(f);
    struct report_run run = {.command = "mm-chaos --short",
                             .build_type = "debugoptimized",
                             .seed = 42,
                             .short_run = true,
                             .n_pods = 4,
                             .n_multi = 10,
                             .n_single = 10,
                             .etcd_members = 3,
                             .world_start_ms = 12345};
    report_write(f, &run, res, n);
    fclose(f);
    return text;
}

static void report(void)
{
    static struct scenario_result res[3];
    struct scenario_result *pass = &res[0], *fail = &res[1], *skip = &res[2];
    pass->id = 1;
    pass->title = scenario_title(1);
    pass->n_steps = 1;
    snprintf(pass->steps[0], SCENARIO_LINE, "1.0 s: kill -9 pod 2 (n2): done");
    pass->n_phases = 2;
    snprintf(pass->phases[0].label, 32, "before");
    pass->phases[0].end_ms = 5000;
    pass->phases[0].cls[TRAFFIC_MULTI] = (struct traffic_stats){
        .sent = 150, .by_code = {[0] = 150}, .p50_ms = 1.5, .p99_ms = 4.25, .max_ms = 9.0};
    snprintf(pass->phases[1].label, 32, "fault");
    pass->phases[1].start_ms = 5000;
    pass->phases[1].end_ms = 40000;
    pass->phases[1].cls[TRAFFIC_SINGLE] = (struct traffic_stats){
        .sent = 20, .by_code = {[0] = 17, [UNAVAILABLE] = 2, [DEADLINE] = 1}};
    pass->converged_ms = 1200;
    pass->served_ms = 2500;
    pass->recovery_ms = 2500;
    pass->served_floor_ms = 2000;

    *fail = *pass;
    fail->id = 2;
    fail->title = scenario_title(2);
    fail->traffic_breaches = 1;
    fail->registry_breaches = 1;
    fail->n_lines = 2;
    snprintf(fail->lines[0], SCENARIO_LINE,
             "phase fault, models of 2+ copies: 3 call(s) failed "
             "UNAVAILABLE");
    snprintf(fail->lines[1], SCENARIO_LINE, "copies/m-1/n1: lease 77 is not alive");
    fail->checks[SCENARIO_CHECK_LEASES] = 1;
    fail->recovery_ms = -1;

    skip->id = 5;
    skip->title = scenario_title(5);
    skip->skipped = true;
    snprintf(skip->why, sizeof(skip->why), "not root: a network namespace needs CAP_NET_ADMIN");

    char *text = render(res, 3);
    REQUIRE(text);
    CHECK(strstr(text, "# Chaos: failover under load") != NULL);
    CHECK(strstr(text, "- seed: 42 (short run)") != NULL);
    CHECK(strstr(text, "cores (nproc)") != NULL);
    CHECK(strstr(text, "- build: debugoptimized") != NULL);
    CHECK(strstr(text, "- result: 3 scenario(s), 1 failed, 1 skipped") != NULL);
    CHECK(strstr(text, "## Scenario 1: kill -9 a random pod every N seconds: PASS\n") != NULL);
    CHECK(strstr(text, "- 1.0 s: kill -9 pod 2 (n2): done") != NULL);
    CHECK(strstr(text, "| before | 2+ copies | 5.0 s | 150 | 150 | - | 0 | 0 | 0 | 1.5 | 4.2") !=
          NULL);
    CHECK(strstr(text, "| fault | 1 copy | 35.0 s | 20 | 17 | DEADLINE_EXCEEDED 1, "
                       "UNAVAILABLE 2 |") != NULL);
    CHECK(strstr(text, "time to recovery 2.5 s") != NULL);
    CHECK(strstr(text, "## Scenario 2: ") != NULL && strstr(text, ": FAIL (2 breaches)") != NULL);
    CHECK(strstr(text, "leases: 1 breach (") != NULL);
    CHECK(strstr(text, "copies/m-1/n1: lease 77 is not alive") != NULL);
    CHECK(strstr(text, "time to recovery never") != NULL);
    CHECK(strstr(text, "## Scenario 5: a pod partitioned from etcd (network namespace): "
                       "SKIPPED\n\nNot run: not root") != NULL);
    free(text);
}

/* mm-chaos with args: its exit code and output. */
static int chaos(const char *program, const char *args, char *out, size_t size)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s %s", program, args);
    return harness_capture(cmd, out, size);
}

static void command_line(const char *program)
{
    char out[4096];
    CHECK_INT(chaos(program, "--help", out, sizeof(out)), 0);
    CHECK(strstr(out, "--scenarios") != NULL);
    CHECK_INT(chaos(program, "--scenarios 9", out, sizeof(out)), 2);
    CHECK(strstr(out, "--scenarios 9") != NULL);
    CHECK_INT(chaos(program, "--scenarios 1,,3", out, sizeof(out)), 2);
    CHECK_INT(chaos(program, "--kill-every 0", out, sizeof(out)), 2);
    CHECK(strstr(out, "--kill-every 0") != NULL);
    CHECK_INT(chaos(program, "--duration x", out, sizeof(out)), 2);
    CHECK_INT(chaos(program, "--bogus 1", out, sizeof(out)), 2);
    CHECK(strstr(out, "--bogus") != NULL);
    CHECK_INT(chaos(program, "--seed", out, sizeof(out)), 2);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_driver MM_CHAOS\n");
        return 2;
    }
    rules();
    report();
    command_line(argv[1]);
    return CHECK_DONE();
}
