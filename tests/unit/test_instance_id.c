/* test_instance_id.c - the instance id: the flag, else POD_NAME, else HOSTNAME, else the host
 * name; the first given is checked as a key name and refused (never skipped) when bad. */
#include <errno.h>

#include "check.h"
#include "mm/instance.h"

static void chooses(const char *given, const char *pod, const char *hostname, const char *host,
                    const char *want, const char *want_source)
{
    char out[256] = "";
    const char *source = NULL;
    struct mm_error err = {0};
    CHECK_INT(instance_id_choose(given, pod, hostname, host, out, sizeof(out), &source, &err), 0);
    CHECK_STR(out, want);
    CHECK_STR(source, want_source);
}

static void refuses(const char *given, const char *pod, const char *hostname, const char *host,
                    int code, const char *want)
{
    char out[16] = "x";
    struct mm_error err = {0};
    CHECK_INT(instance_id_choose(given, pod, hostname, host, out, sizeof(out), NULL, &err), code);
    CHECK(strstr(err.msg, want) != NULL);
    if (!strstr(err.msg, want))
        fprintf(stderr, "  got '%s', wanted '%s'\n", err.msg, want);
}

int main(void)
{
    chooses("n1", "pod-0", "host-a", "box", "n1", "--instance-id");
    chooses(NULL, "pod-0", "host-a", "box", "pod-0", "POD_NAME");
    chooses("", "", "host-a", "box", "host-a", "HOSTNAME"); /* empty counts as not given */
    chooses(NULL, NULL, NULL, "box", "box", "the host name");
    chooses(NULL, NULL, NULL, "Box.Example_1", "Box.Example_1", "the host name");

    /* What a key segment cannot hold is refused, naming where it came from. */
    refuses("a/b", NULL, NULL, "box", -EINVAL, "instance id (from --instance-id) 'a/b'");
    refuses(NULL, "pod 0", "h", "box", -EINVAL, "instance id (from POD_NAME) 'pod 0'");
    refuses(NULL, NULL, "h\n", "box", -EINVAL, "instance id (from HOSTNAME)");
    refuses(NULL, NULL, NULL, "caf\xc3\xa9", -EINVAL, "instance id (from the host name)");
    refuses(NULL, NULL, NULL, NULL, -EINVAL, "no instance id");
    refuses(NULL, NULL, NULL, "", -EINVAL, "no instance id");
    char longest[300];
    memset(longest, 'a', 254);
    longest[254] = '\0';
    refuses(longest, NULL, NULL, "box", -EINVAL, "instance id (from --instance-id)");
    longest[253] = '\0'; /* the longest key name fits a key, but not this buffer */
    refuses(longest, NULL, NULL, "box", -ENAMETOOLONG, "longer than 15 bytes");
    char out[254];
    CHECK_INT(instance_id_choose(longest, NULL, NULL, NULL, out, sizeof(out), NULL, NULL), 0);
    return CHECK_DONE();
}
