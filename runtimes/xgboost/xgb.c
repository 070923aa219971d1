/* xgb.c - XGBoost models through the C API (see xgb.h). */
#include "mm/xgb.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xgboost/c_api.h>

#include "mm/log.h"

#define MAX_DEPTH 64        /* nesting of a JSON or UBJSON model */
#define MAX_XGB_MESSAGE 160 /* bytes of XGBoost's own message we pass on */

struct xgb_model {
    BoosterHandle booster;
    size_t features;
    size_t outputs; /* values per row predicted: learnt at load */
    uint64_t size;
};

/* ---------------------------------------------------------------- XGBoost's messages */

/* XGBoost's last error as we pass it on: the first line, without its "[hh:mm:ss] " stamp and
 * without the JSON reader's quote of the input; the whole text goes to the log (debug). */
static const char *xgb_error(const char *what, char *out, size_t size)
{
    const char *full = XGBGetLastError();
    if (!full)
        full = "";
    mm_log(MM_LOG_DEBUG, "mm-runtime", "%s: XGBoost says: %s", what, full);
    const char *start = full;
    if (start[0] == '[') {
        const char *close = strstr(start, "] ");
        if (close && close - start < 16)
            start = close + 2;
    }
    size_t n = strcspn(start, "\r\n");
    const char *quote = strstr(start, ", around character position");
    if (quote && (size_t)(quote - start) < n)
        n = (size_t)(quote - start);
    if (n > size - 1)
        n = size - 1;
    if (n > MAX_XGB_MESSAGE)
        n = MAX_XGB_MESSAGE;
    memcpy(out, start, n);
    out[n] = '\0';
    return out;
}

/* ---------------------------------------------------------------- checks before XGBoost */

struct scan {
    const uint8_t *p, *start, *end;
    const struct xgb_limits *lim;
    struct mm_error *err;
};

static int bad(struct scan *s, const char *what)
{
    return mm_error_set(s->err, -EINVAL, "%s at byte %zu", what, (size_t)(s->p - s->start));
}

static size_t left(const struct scan *s)
{
    return (size_t)(s->end - s->p);
}

/* The numbers XGBoost allocates from before it checks them against the model's contents. */
static int check_param(struct scan *s, const char *key, size_t key_len, uint64_t value)
{
    size_t len = (size_t)(s->end - s->start);
    char msg[160];
    if (key_len == 9 && memcmp(key, "num_trees", 9) == 0 && value > len / 2) {
        snprintf(msg, sizeof(msg),
                 "declares %llu trees, more than a file of %zu bytes can "
                 "hold",
                 (unsigned long long)value, len);
    } else if (key_len == 11 && memcmp(key, "num_feature", 11) == 0 && s->lim->max_features &&
               value > s->lim->max_features) {
        snprintf(msg, sizeof(msg),
                 "declares %llu features, more than the %zu values a "
                 "request may carry",
                 (unsigned long long)value, s->lim->max_features);
    } else if (((key_len == 9 && memcmp(key, "num_class", 9) == 0) ||
                (key_len == 10 && memcmp(key, "num_target", 10) == 0)) &&
               value > XGB_MAX_OUTPUTS) {
        snprintf(msg, sizeof(msg), "declares %llu %s, more than %d", (unsigned long long)value,
                 key[4] == 'c' ? "classes" : "targets", XGB_MAX_OUTPUTS);
    } else {
        return 0;
    }
    return bad(s, msg);
}

/* A booster mm-runtime cannot serve: XGBoost's linear booster has no in-place prediction (and
 * its loader trusts its JSON's keys). Refused before XGBoost reads it. */
static int check_booster(struct scan *s, const char *key, size_t key_len, const uint8_t *value,
                         size_t len)
{
    if (key_len == 4 && memcmp(key, "name", 4) == 0 && len == 8 &&
        memcmp(value, "gblinear", 8) == 0)
        return bad(s, "a gblinear model (mm-runtime serves tree models: XGBoost cannot predict "
                      "a linear one in place)");
    return 0;
}

/* A parameter's value written as text ("30"): its number, or false if it is none. */
static bool text_number(const uint8_t *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 19)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return true;
}

/* --- legacy binary: the layout XGBoost 1.x writes, every size checked before it is used */

static int need(struct scan *s, uint64_t n, const char *what)
{
    if (n > left(s)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "%s needs %llu bytes, %zu remain", what, (unsigned long long)n,
                 left(s));
        return bad(s, msg);
    }
    return 0;
}

static int32_t le32(const uint8_t *p)
{
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t out;
    memcpy(&out, &v, sizeof(out));
    return out;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)(uint32_t)le32(p) | (uint64_t)(uint32_t)le32(p + 4) << 32;
}

/* A uint64 count, then count items of at least `each` bytes. */
static int binary_count(struct scan *s, uint64_t each, const char *what, uint64_t *count)
{
    int rc = need(s, 8, what);
    if (rc < 0)
        return rc;
    *count = le64(s->p);
    s->p += 8;
    if (*count > left(s) / each) {
        char msg[160];
        snprintf(msg, sizeof(msg), "%s declares %llu items, more than the %zu bytes left hold",
                 what, (unsigned long long)*count, left(s));
        return bad(s, msg);
    }
    return 0;
}

static int binary_string(struct scan *s, const char *what, const uint8_t **text, size_t *len)
{
    uint64_t n;
    int rc = binary_count(s, 1, what, &n);
    if (rc < 0)
        return rc;
    if (text) {
        *text = s->p;
        *len = (size_t)n;
    }
    s->p += n;
    return 0;
}

static int check_binary(struct scan *s)
{
    enum { LEARNER = 136, GBTREE = 160, TREE = 148, NODE = 20, NODE_STAT = 16 };
    int rc = need(s, LEARNER, "the learner's parameters");
    if (rc < 0)
        return rc;
    uint32_t features = (uint32_t)le32(s->p + 4);
    int32_t classes = le32(s->p + 8), extra_attrs = le32(s->p + 12), metrics = le32(s->p + 16);
    uint32_t targets = (uint32_t)le32(s->p + 28);
    if ((rc = check_param(s, "num_feature", 11, features)) < 0 ||
        (rc = check_param(s, "num_class", 9, classes < 0 ? 0 : (uint64_t)classes)) < 0 ||
        (rc = check_param(s, "num_target", 10, targets)) < 0)
        return rc;
    s->p += LEARNER;
    const uint8_t *booster;
    size_t booster_len;
    if ((rc = binary_string(s, "the objective's name", NULL, NULL)) < 0 ||
        (rc = binary_string(s, "the booster's name", &booster, &booster_len)) < 0)
        return rc;
    bool dart = booster_len == 4 && memcmp(booster, "dart", 4) == 0;
    if (dart || (booster_len == 6 && memcmp(booster, "gbtree", 6) == 0)) {
        if ((rc = need(s, GBTREE, "the tree booster's parameters")) < 0)
            return rc;
        int32_t trees = le32(s->p);
        if (trees < 0)
            return bad(s, "a negative number of trees");
        if ((rc = check_param(s, "num_trees", 9, (uint64_t)trees)) < 0)
            return rc;
        s->p += GBTREE;
        for (int32_t t = 0; t < trees; t++) {
            if ((rc = need(s, TREE, "a tree's parameters")) < 0)
                return rc;
            int32_t nodes = le32(s->p + 4);
            if (nodes < 1)
                return bad(s, "a tree without nodes");
            s->p += TREE;
            if ((rc = need(s, (uint64_t)nodes * (NODE + NODE_STAT), "a tree's nodes")) < 0)
                return rc;
            s->p += (size_t)nodes * (NODE + NODE_STAT);
        }
        if ((rc = need(s, (uint64_t)trees * 4, "the trees' groups")) < 0)
            return rc;
        s->p += (size_t)trees * 4;
        uint64_t n;
        if (dart && trees > 0) {
            if ((rc = binary_count(s, 4, "the dart weights", &n)) < 0)
                return rc;
            s->p += n * 4;
        }
    } else if ((rc = check_booster(s, "name", 4, booster, booster_len)) < 0) {
        return rc;
    } else {
        return 0; /* XGBoost refuses a booster it does not know before reading on */
    }
    uint64_t n;
    if (extra_attrs != 0) {
        if ((rc = binary_count(s, 16, "the attributes", &n)) < 0)
            return rc;
        for (uint64_t i = 0; i < 2 * n; i++)
            if ((rc = binary_string(s, "an attribute", NULL, NULL)) < 0)
                return rc;
    }
    if (metrics != 0) {
        if ((rc = binary_count(s, 8, "the metrics", &n)) < 0)
            return rc;
        for (uint64_t i = 0; i < n; i++)
            if ((rc = binary_string(s, "a metric's name", NULL, NULL)) < 0)
                return rc;
    }
    return 0;
}

/* --- UBJSON, as XGBoost reads it (it trusts every length and reads past its buffer) */

static uint64_t be(const uint8_t *p, unsigned width)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < width; i++)
        v = v << 8 | p[i];
    return v;
}

/* 'L' and a big-endian int64: a length or a count. */
static int ubj_length(struct scan *s, uint64_t each, const char *what, uint64_t *out)
{
    if (left(s) < 9 || s->p[0] != 'L')
        return bad(s, what);
    uint64_t n = be(s->p + 1, 8);
    s->p += 9;
    if (n > (uint64_t)INT64_MAX || n > left(s) / each) {
        char msg[160];
        snprintf(msg, sizeof(msg), "%s of %lld items, more than the %zu bytes left hold", what,
                 (long long)n, left(s));
        return bad(s, msg);
    }
    *out = n;
    return 0;
}

static int ubj_value(struct scan *s, int depth, const uint8_t *key, size_t key_len)
{
    if (depth > MAX_DEPTH)
        return bad(s, "nesting deeper than 64");
    if (left(s) == 0)
        return bad(s, "the file ends inside a value");
    uint8_t c = *s->p++;
    unsigned width = 0;
    uint64_t n;
    int rc;
    switch (c) {
    case 'Z':
    case 'T':
    case 'F':
        return 0;
    case 'i':
    case 'U':
    case 'C':
        width = 1;
        break;
    case 'I':
        width = 2;
        break;
    case 'l':
    case 'd':
        width = 4;
        break;
    case 'L':
        width = 8;
        break;
    case 'S':
        if ((rc = ubj_length(s, 1, "a string's length", &n)) < 0)
            return rc;
        uint64_t v;
        if (key && text_number(s->p, (size_t)n, &v) &&
            (rc = check_param(s, (const char *)key, key_len, v)) < 0)
            return rc;
        if (key && (rc = check_booster(s, (const char *)key, key_len, s->p, (size_t)n)) < 0)
            return rc;
        s->p += n;
        return 0;
    case '{':
        for (;;) {
            if (left(s) == 0)
                return bad(s, "the file ends inside an object");
            if (*s->p == '}') {
                s->p++;
                return 0;
            }
            if ((rc = ubj_length(s, 1, "a key's length", &n)) < 0)
                return rc;
            const uint8_t *k = s->p;
            s->p += n;
            if ((rc = ubj_value(s, depth + 1, k, (size_t)n)) < 0)
                return rc;
        }
    case '[':
        if (left(s) >= 2 && s->p[0] == '$') {
            uint8_t type = s->p[1];
            unsigned each = type == 'd' || type == 'l' ? 4 : type == 'L' ? 8 : type == 'U' ? 1 : 0;
            if (each == 0)
                return bad(s, "a typed array of a type XGBoost does not read");
            s->p += 2;
            if (left(s) == 0 || *s->p != '#')
                return bad(s, "a typed array without its count");
            s->p++;
            if ((rc = ubj_length(s, each, "a typed array", &n)) < 0)
                return rc;
            s->p += n * each;
            return 0;
        }
        if (left(s) >= 1 && s->p[0] == '#') {
            s->p++;
            if ((rc = ubj_length(s, 1, "an array", &n)) < 0)
                return rc;
            for (uint64_t i = 0; i < n; i++)
                if ((rc = ubj_value(s, depth + 1, NULL, 0)) < 0)
                    return rc;
            return 0;
        }
        for (;;) {
            if (left(s) == 0)
                return bad(s, "the file ends inside an array");
            if (*s->p == ']') {
                s->p++;
                return 0;
            }
            if ((rc = ubj_value(s, depth + 1, NULL, 0)) < 0)
                return rc;
        }
    default:
        s->p--;
        return bad(s, "a UBJSON marker XGBoost does not read");
    }
    if (left(s) < width)
        return bad(s, "the file ends inside a number");
    if (key && c != 'd') {
        uint64_t v = be(s->p, width);
        bool negative = width < 8 && c != 'U' && (v >> (8 * width - 1)) & 1;
        if (c == 'L')
            negative = v >> 63;
        if (!negative && (rc = check_param(s, (const char *)key, key_len, v)) < 0)
            return rc;
    }
    s->p += width;
    return 0;
}

/* --- JSON text: well-formed (XGBoost's reader quotes the file in its errors), bounded nesting */

static void json_space(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static bool json_literal(struct scan *s, const char *word)
{
    size_t n = strlen(word);
    if (left(s) < n || memcmp(s->p, word, n) != 0)
        return false;
    s->p += n;
    return true;
}

/* A string at s->p (the quote): its raw contents in *text, *len. */
static int json_string(struct scan *s, const uint8_t **text, size_t *len)
{
    const uint8_t *begin = ++s->p;
    while (s->p < s->end && *s->p != '"') {
        if (*s->p < 0x20)
            return bad(s, "a control character in a string");
        if (*s->p == '\\') {
            if (left(s) < 2 || !s->p[1] || !strchr("\"\\/bfnrtu", s->p[1]))
                return bad(s, "an invalid escape in a string");
            if (s->p[1] == 'u') {
                if (left(s) < 6)
                    return bad(s, "an invalid escape in a string");
                for (int i = 2; i < 6; i++)
                    if (!s->p[i] || !strchr("0123456789abcdefABCDEF", s->p[i]))
                        return bad(s, "an invalid escape in a string");
                s->p += 6;
            } else {
                s->p += 2;
            }
            continue;
        }
        s->p++;
    }
    if (s->p >= s->end)
        return bad(s, "the file ends inside a string");
    if (!mm_utf8_valid((const char *)begin, (size_t)(s->p - begin)))
        return bad(s, "a string that is not UTF-8");
    *text = begin;
    *len = (size_t)(s->p - begin);
    s->p++;
    return 0;
}

static void json_digits(struct scan *s)
{
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
}

static int json_value(struct scan *s, int depth, const uint8_t *key, size_t key_len)
{
    int rc;
    const uint8_t *text;
    size_t len;
    uint64_t v;
    if (depth > MAX_DEPTH)
        return bad(s, "nesting deeper than 64");
    json_space(s);
    if (s->p >= s->end)
        return bad(s, "the file ends where a value should be");
    switch (*s->p) {
    case '{':
        s->p++;
        json_space(s);
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            return 0;
        }
        for (;;) {
            json_space(s);
            if (s->p >= s->end || *s->p != '"')
                return bad(s, "an object key that is not a string");
            if ((rc = json_string(s, &text, &len)) < 0)
                return rc;
            json_space(s);
            if (s->p >= s->end || *s->p != ':')
                return bad(s, "a key without ':'");
            s->p++;
            if ((rc = json_value(s, depth + 1, text, len)) < 0)
                return rc;
            json_space(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
                continue;
            }
            if (s->p < s->end && *s->p == '}') {
                s->p++;
                return 0;
            }
            return bad(s, "an object not closed by '}'");
        }
    case '[':
        s->p++;
        json_space(s);
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return 0;
        }
        for (;;) {
            if ((rc = json_value(s, depth + 1, NULL, 0)) < 0)
                return rc;
            json_space(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
                continue;
            }
            if (s->p < s->end && *s->p == ']') {
                s->p++;
                return 0;
            }
            return bad(s, "an array not closed by ']'");
        }
    case '"':
        if ((rc = json_string(s, &text, &len)) < 0)
            return rc;
        if (key && text_number(text, len, &v))
            return check_param(s, (const char *)key, key_len, v);
        return key ? check_booster(s, (const char *)key, key_len, text, len) : 0;
    default:
        if (json_literal(s, "true") || json_literal(s, "false") || json_literal(s, "null") ||
            json_literal(s, "NaN") || json_literal(s, "Infinity") || json_literal(s, "-Infinity"))
            return 0;
        text = s->p;
        if (s->p < s->end && *s->p == '-')
            s->p++;
        if (s->p >= s->end || *s->p < '0' || *s->p > '9')
            return bad(s, "an unknown construct");
        json_digits(s);
        len = (size_t)(s->p - text);
        if (s->p < s->end && *s->p == '.') {
            s->p++;
            json_digits(s);
        }
        if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
            s->p++;
            if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
                s->p++;
            json_digits(s);
        }
        if (key && text_number(text, len, &v) && s->p == text + len)
            return check_param(s, (const char *)key, key_len, v);
        return 0;
    }
}

int xgb_check_model(const void *buf, size_t len, const struct xgb_limits *lim, struct mm_error *err)
{
    static const struct xgb_limits none = {0};
    struct scan s = {buf, buf, (const uint8_t *)buf + len, lim ? lim : &none, err};
    /* XGBoost's own dispatch (Learner::LoadModel on a stream): "binf" is skipped, a '{' is JSON
     * when the first thing after it is a quote and UBJSON when it is a letter. */
    if (len >= 4 && memcmp(buf, "binf", 4) == 0)
        s.p += 4;
    if (left(&s) == 0)
        return mm_error_set(err, -EINVAL, "an empty file");
    int rc;
    if (*s.p != '{') {
        if ((rc = check_binary(&s)) < 0)
            mm_error_prefix(err, "legacy binary model: ");
        return rc;
    }
    const uint8_t *q = s.p + 1;
    while (q < s.end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
        q++;
    if (q < s.end && *q == '"') {
        if ((rc = json_value(&s, 0, NULL, 0)) < 0)
            mm_error_prefix(err, "JSON model: ");
        return rc;
    }
    if (q < s.end && ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z'))) {
        if ((rc = ubj_value(&s, 0, NULL, 0)) < 0)
            mm_error_prefix(err, "UBJSON model: ");
        return rc;
    }
    return mm_error_set(err, -EINVAL, "neither a JSON, a UBJSON nor a binary model");
}

/* ---------------------------------------------------------------- files */

static bool model_file_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot &&
           (strcmp(dot, ".json") == 0 || strcmp(dot, ".ubj") == 0 || strcmp(dot, ".bin") == 0 ||
            strcmp(dot, ".model") == 0 || strcmp(dot, ".bst") == 0);
}

static int errno_code(int e)
{
    return e == ENOENT || e == ENOTDIR ? -ENOENT : e == EACCES || e == EPERM ? -EACCES : -EINVAL;
}

static bool beneath(const char *real, const char *root)
{
    size_t n = strlen(root);
    return strncmp(real, root, n) == 0 &&
           (real[n] == '/' || real[n] == '\0' || (n == 1 && root[0] == '/'));
}

/* path resolved (symlinks, "..") into out, which must lie inside one of roots (when given). */
static int inside(const char *path, const char *const *roots, char *out, struct mm_error *err)
{
    if (!realpath(path, out))
        return mm_error_set(err, errno_code(errno), "model path %s: %s", path, strerror(errno));
    if (!roots || !roots[0])
        return 0;
    for (const char *const *r = roots; *r; r++)
        if (beneath(out, *r))
            return 0;
    return mm_error_set(err, -EACCES, "model path %s is outside the models director%s %s%s", path,
                        roots[1] ? "ies" : "y", roots[0], roots[1] ? ", ..." : "");
}

/* The model file of path: path itself, or the single model file inside a directory; resolved
 * into out. */
static int resolve(const char *path, const char *const *root, char *out, struct mm_error *err)
{
    char real[PATH_MAX];
    int rc = inside(path, root, real, err);
    if (rc < 0)
        return rc;
    struct stat st;
    if (stat(real, &st) < 0)
        return mm_error_set(err, errno_code(errno), "model path %s: %s", path, strerror(errno));
    if (S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode)) {
        memcpy(out, real, strlen(real) + 1);
        return 0;
    }
    if (!S_ISDIR(st.st_mode))
        return mm_error_set(err, -EINVAL, "model path %s is not a regular file or a directory",
                            path);
    DIR *d = opendir(real);
    if (!d)
        return mm_error_set(err, errno_code(errno), "model directory %s: %s", path,
                            strerror(errno));
    int found = 0;
    char file[PATH_MAX + 256];
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !model_file_name(e->d_name))
            continue;
        snprintf(file, sizeof(file), "%s/%s", real, e->d_name);
        if (stat(file, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (found++ == 0 && (rc = inside(file, root, out, err)) < 0)
            break;
    }
    closedir(d);
    if (rc < 0)
        return rc;
    if (found == 0)
        return mm_error_set(err, -ENOENT,
                            "model directory %s holds no .json, .ubj, .bin, .bst or .model file",
                            path);
    if (found > 1)
        return mm_error_set(err, -EINVAL, "model directory %s holds %d model files, expected one",
                            path, found);
    return 0;
}

/* The whole file, read once (a FIFO streams: its open and reads block until it delivers). */
static int read_file(const char *file, uint64_t max, uint8_t **out, size_t *out_len,
                     struct mm_error *err)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return mm_error_set(err, errno_code(errno), "model file %s: %s", file, strerror(errno));
    struct stat st;
    int rc = 0;
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode))) {
        rc = mm_error_set(err, -EINVAL, "model path %s is not a regular file or a directory", file);
        goto out;
    }
    if (max && S_ISREG(st.st_mode) && (uint64_t)st.st_size > max) {
        rc = mm_error_set(err, -EFBIG,
                          "model file %s is %lld bytes, more than the %llu the "
                          "runtime's capacity allows",
                          file, (long long)st.st_size, (unsigned long long)max);
        goto out;
    }
    cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536;
    for (;;) {
        if (len == cap) {
            size_t next = cap * 2;
            uint8_t *grown = realloc(buf, next);
            if (!grown) {
                rc = mm_error_set(err, -ENOMEM, "out of memory reading %s", file);
                goto out;
            }
            buf = grown;
            cap = next;
        } else if (!buf && !(buf = malloc(cap))) {
            rc = mm_error_set(err, -ENOMEM, "out of memory reading %s", file);
            goto out;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = mm_error_set(err, errno_code(errno), "reading model file %s: %s", file,
                              strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (max && len > max) {
            rc = mm_error_set(err, -EFBIG,
                              "model file %s holds more than the %llu bytes the "
                              "runtime's capacity allows",
                              file, (unsigned long long)max);
            goto out;
        }
    }
out:
    close(fd);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

/* ---------------------------------------------------------------- models */

int xgb_model_load(const char *path, const struct xgb_limits *lim, struct xgb_model **out,
                   struct mm_error *err)
{
    static const struct xgb_limits none = {0};
    char file[PATH_MAX], why[MAX_XGB_MESSAGE + 1];
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (!lim)
        lim = &none;
    int rc = resolve(path, lim->models_dirs, file, err);
    if (rc < 0)
        return rc;
    if ((rc = read_file(file, lim->max_file_bytes, &bytes, &len, err)) < 0)
        return rc;
    if ((rc = xgb_check_model(bytes, len, lim, err)) < 0) {
        free(bytes);
        mm_error_prefix(err, "cannot load XGBoost model %s: ", file);
        return rc;
    }
    struct xgb_model *m = calloc(1, sizeof(*m));
    if (!m) {
        free(bytes);
        return mm_error_set(err, -ENOMEM, "out of memory loading %s", path);
    }
    bst_ulong features = 0, size = 0;
    const char *buf = NULL;
    if (XGBoosterCreate(NULL, 0, &m->booster) != 0 ||
        XGBoosterLoadModelFromBuffer(m->booster, bytes, len) != 0 ||
        XGBoosterGetNumFeature(m->booster, &features) != 0) {
        rc = mm_error_set(err, -EINVAL, "cannot load XGBoost model %s: %s", file,
                          xgb_error(file, why, sizeof(why)));
        goto fail;
    }
    free(bytes);
    bytes = NULL;
    if (features == 0) {
        rc = mm_error_set(err, -EINVAL, "XGBoost model %s has no features", file);
        goto fail;
    }
    if (lim->max_features && features > lim->max_features) {
        rc = mm_error_set(err, -EINVAL,
                          "XGBoost model %s has %llu features, more than the %zu "
                          "values a request may carry",
                          file, (unsigned long long)features, lim->max_features);
        goto fail;
    }
    /* nthread 1 per prediction: concurrency comes from several requests, not one. */
    XGBoosterSetParam(m->booster, "nthread", "1");
    if (XGBoosterSerializeToBuffer(m->booster, &size, &buf) != 0) {
        rc = mm_error_set(err, -EINVAL, "cannot measure XGBoost model %s: %s", file,
                          xgb_error(file, why, sizeof(why)));
        goto fail;
    }
    m->features = (size_t)features;
    m->size = (uint64_t)size;
    /* One row of missing values tells how many values a row predicts (k for a k-class softprob
     * model), so that metadata and empty batches are right before the first request. */
    float *probe = malloc(m->features * sizeof(float)), *result = NULL;
    if (!probe) {
        rc = mm_error_set(err, -ENOMEM, "out of memory loading %s", path);
        goto fail;
    }
    for (size_t i = 0; i < m->features; i++)
        probe[i] = NAN;
    m->outputs = 1;
    rc = xgb_model_predict(m, probe, 1, &result, &m->outputs, err);
    free(probe);
    free(result);
    if (rc < 0)
        goto fail;
    *out = m;
    return 0;
fail:
    free(bytes);
    xgb_model_free(m);
    return rc;
}

void xgb_model_free(struct xgb_model *m)
{
    if (!m)
        return;
    if (m->booster)
        XGBoosterFree(m->booster);
    free(m);
}

size_t xgb_model_features(const struct xgb_model *m)
{
    return m->features;
}

size_t xgb_model_outputs(const struct xgb_model *m)
{
    return m->outputs;
}

uint64_t xgb_model_size(const struct xgb_model *m)
{
    return m->size;
}

int xgb_model_predict(struct xgb_model *m, const float *rows, size_t n_rows, float **out,
                      size_t *out_per_row, struct mm_error *err)
{
    if (n_rows == 0) { /* an empty batch: nothing to ask XGBoost (which may answer NULL) */
        *out = malloc(1);
        *out_per_row = m->outputs;
        return *out ? 0 : mm_error_set(err, -ENOMEM, "out of memory for 0 predictions");
    }
    char array[256], why[MAX_XGB_MESSAGE + 1];
    snprintf(array, sizeof(array),
             "{\"data\":[%llu,true],\"shape\":[%zu,%zu],\"typestr\":\"<f4\",\"version\":3}",
             (unsigned long long)(uintptr_t)rows, n_rows, m->features);
    static const char config[] = "{\"type\":0,\"training\":false,\"iteration_begin\":0,"
                                 "\"iteration_end\":0,\"strict_shape\":false,\"missing\":NaN,"
                                 "\"cache_id\":0}";
    const bst_ulong *shape = NULL;
    bst_ulong dim = 0;
    const float *result = NULL;
    if (XGBoosterPredictFromDense(m->booster, array, config, NULL, &shape, &dim, &result) != 0)
        return mm_error_set(err, -EINVAL, "XGBoost prediction failed: %s",
                            xgb_error("prediction", why, sizeof(why)));
    size_t total = 1;
    for (bst_ulong i = 0; i < dim; i++)
        total *= (size_t)shape[i];
    size_t per_row = total / n_rows;
    float *copy = malloc(total ? total * sizeof(float) : 1);
    if (!copy)
        return mm_error_set(err, -ENOMEM, "out of memory for %zu predictions", total);
    memcpy(copy, result, total * sizeof(float)); /* result lives in thread-local storage */
    *out = copy;
    *out_per_row = per_row ? per_row : 1;
    return 0;
}

int xgb_path_size(const char *path, const char *const *models_dirs, uint64_t *out)
{
    char real[PATH_MAX];
    struct stat st;
    if (inside(path, models_dirs, real, NULL) < 0 || stat(real, &st) < 0)
        return -ENOENT;
    if (S_ISREG(st.st_mode)) {
        *out = (uint64_t)st.st_size;
        return 0;
    }
    if (!S_ISDIR(st.st_mode))
        return -ENOENT;
    DIR *d = opendir(real);
    if (!d)
        return -ENOENT;
    uint64_t sum = 0;
    struct dirent *e;
    char file[PATH_MAX + 256];
    while ((e = readdir(d))) {
        snprintf(file, sizeof(file), "%s/%s", real, e->d_name);
        if (e->d_name[0] != '.' && stat(file, &st) == 0 && S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
    }
    closedir(d);
    *out = sum;
    return 0;
}
