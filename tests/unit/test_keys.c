/* test_keys.c - key formatting and parsing round trips, and rejects. */
#include <errno.h>

#include "check.h"
#include "mm/keys.h"

static void parses_as(const char *key, enum key_kind kind, const char *first, const char *second)
{
    struct key_parts kp;
    int rc = keys_parse(key, strlen(key), "c1", &kp);
    CHECK_INT(rc, 0);
    if (rc < 0) {
        fprintf(stderr, "  key: %s\n", key);
        return;
    }
    CHECK_STR(keys_kind_name(kp.kind), keys_kind_name(kind));
    CHECK_INT(kp.first_len, strlen(first));
    CHECK(strncmp(kp.first, first, kp.first_len) == 0);
    if (second) {
        CHECK_INT(kp.second_len, strlen(second));
        CHECK(kp.second && strncmp(kp.second, second, kp.second_len) == 0);
    } else {
        CHECK(kp.second == NULL);
    }
}

int main(void)
{
    char k[KEYS_MAX];
    struct mm_error err = {0};
    const char *mid = "example-mnist-isvc__isvc-6b2eb0b8bf";

    CHECK_INT(keys_prefix(k, sizeof(k), "c1", &err), 0);
    CHECK_STR(k, "/modelmesh/c1/");
    CHECK_INT(keys_instance(k, sizeof(k), "c1", "node-0", &err), 0);
    CHECK_STR(k, "/modelmesh/c1/instances/node-0");
    parses_as(k, KEY_INSTANCE, "node-0", NULL);
    CHECK_INT(keys_model(k, sizeof(k), "c1", mid, &err), 0);
    CHECK_STR(k, "/modelmesh/c1/models/example-mnist-isvc__isvc-6b2eb0b8bf");
    parses_as(k, KEY_MODEL, mid, NULL);
    CHECK_INT(keys_copy(k, sizeof(k), "c1", mid, "node-1", &err), 0);
    CHECK_STR(k, "/modelmesh/c1/copies/example-mnist-isvc__isvc-6b2eb0b8bf/node-1");
    parses_as(k, KEY_COPY, mid, "node-1");
    CHECK_INT(keys_copies_of(k, sizeof(k), "c1", mid, &err), 0);
    CHECK_STR(k, "/modelmesh/c1/copies/example-mnist-isvc__isvc-6b2eb0b8bf/");
    CHECK_INT(keys_vmodel(k, sizeof(k), "c1", "example-mnist-isvc", &err), 0);
    parses_as(k, KEY_VMODEL, "example-mnist-isvc", NULL);
    CHECK_INT(keys_isvc(k, sizeof(k), "c1", "default", "mnist", &err), 0);
    CHECK_STR(k, "/modelmesh/c1/isvcs/default/mnist");
    parses_as(k, KEY_ISVC, "default", "mnist");
    CHECK_INT(keys_isvc_status(k, sizeof(k), "c1", "default", "mnist", &err), 0);
    parses_as(k, KEY_ISVC_STATUS, "default", "mnist");
    CHECK_INT(keys_runtime(k, sizeof(k), "c1", "mlserver-1.x", &err), 0);
    parses_as(k, KEY_RUNTIME, "mlserver-1.x", NULL);
    CHECK_INT(keys_storage_config(k, sizeof(k), "c1", "localMinIO", &err), 0);
    CHECK_STR(k, "/modelmesh/c1/storage-config/localMinIO");
    parses_as(k, KEY_STORAGE_CONFIG, "localMinIO", NULL);
    CHECK_INT(keys_election(k, sizeof(k), "c1", &err), 0);
    CHECK_STR(k, "/modelmesh/c1/election/controller");
    parses_as(k, KEY_ELECTION, "controller", NULL);

    /* Bad names are refused with the reason and the role of the name. */
    CHECK_INT(keys_model(k, sizeof(k), "c1", "a/b", &err), -EINVAL);
    CHECK(strstr(err.msg, "model id 'a/b' contains '/'") != NULL);
    CHECK_INT(keys_model(k, sizeof(k), "c1", "", &err), -EINVAL);
    CHECK(strstr(err.msg, "is empty") != NULL);
    CHECK_INT(keys_instance(k, sizeof(k), "c1", "has space", &err), -EINVAL);
    CHECK(strstr(err.msg, "instance id") != NULL);
    CHECK_INT(keys_model(k, sizeof(k), "c1", "..", &err), -EINVAL);
    CHECK_INT(keys_model(k, sizeof(k), "c/1", "m", &err), -EINVAL);
    CHECK(strstr(err.msg, "cluster name") != NULL);
    CHECK_INT(keys_model(k, sizeof(k), "c1", "caf\xc3\xa9", &err), -EINVAL);
    CHECK_INT(keys_model(k, sizeof(k), "c1", NULL, &err), -EINVAL);
    char longname[300];
    memset(longname, 'x', 254);
    longname[254] = '\0';
    CHECK_INT(keys_model(k, sizeof(k), "c1", longname, &err), -EINVAL);
    CHECK(strstr(err.msg, "longer than 253") != NULL);
    longname[253] = '\0'; /* exactly the limit: accepted */
    CHECK_INT(keys_model(k, sizeof(k), "c1", longname, &err), 0);
    char tiny[20];
    CHECK_INT(keys_model(tiny, sizeof(tiny), "c1", "model", &err), -ENAMETOOLONG);

    /* Parsing refuses keys outside the cluster or the layout. */
    struct key_parts kp;
#define PARSE(key) keys_parse(key, strlen(key), "c1", &kp)
    CHECK_INT(PARSE("/modelmesh/c2/models/m"), -EINVAL);
    CHECK_INT(PARSE("/modelmesh/c10/models/m"), -EINVAL);
    CHECK_INT(PARSE("/other/c1/models/m"), -EINVAL);
    CHECK_INT(PARSE("/modelmesh/c1/models/"), -EINVAL);
    CHECK_INT(PARSE("/modelmesh/c1/models/a/b"), -EINVAL);
    CHECK_INT(PARSE("/modelmesh/c1/copies/m"), -EINVAL);
    CHECK_INT(PARSE("/modelmesh/c1/copies/m/"), -EINVAL);
    CHECK_INT(PARSE("/modelmesh/c1/widgets/w"), -EINVAL);
    CHECK_INT(PARSE("/modelmesh/c1/election/other"), -EINVAL);
    CHECK_INT(PARSE("/modelmesh/c1/modelsx/m"), -EINVAL);
    CHECK_INT(PARSE("/modelmesh/c1"), -EINVAL);
#undef PARSE
    /* Keys are bytes: one holding a NUL is not the key before the NUL, and the length given is
     * all that is read. */
    static const char nul_model[] = "/modelmesh/c1/models/m1\0junk";
    CHECK_INT(keys_parse(nul_model, sizeof(nul_model) - 1, "c1", &kp), -EINVAL);
    static const char nul_copy[] = "/modelmesh/c1/copies/m1\0/n1";
    CHECK_INT(keys_parse(nul_copy, sizeof(nul_copy) - 1, "c1", &kp), -EINVAL);
    CHECK_INT(keys_parse("/modelmesh/c1/models/m1XYZ", 23, "c1", &kp), 0);
    CHECK_INT(kp.first_len, 2);
    CHECK_INT(keys_parse("/modelmesh/c1/copies/m1/n1", 24, "c1", &kp), -EINVAL); /* copies/m1/ */
    CHECK_INT(keys_parse_relative("copies/m/n", strlen("copies/m/n"), &kp), 0);
    CHECK_INT(kp.kind, KEY_COPY);
    return CHECK_DONE();
}
