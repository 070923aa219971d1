/* records.h - the JSON records stored under the keys of keys.h (README's etcd layout).
 *
 * Every record carries "v" (schema version). Decoding accepts v >= 1, ignores fields it does
 * not know (newer writers may add them), applies defaults to absent optional fields, and rejects
 * wrong types, out-of-range numbers, over-long strings and values over RECORD_MAX_BYTES with a
 * message naming the record and the field. It also rejects what JSON readers disagree on: a
 * name given twice in any object (cJSON finds the first, Go and Python keep the last),
 * "\u0000" or a NUL byte in a string (C readers cut it there), raw control characters, bytes
 * that are not UTF-8, and anything after the value but space. Records are plain structs: no
 * allocation. */
#ifndef MM_RECORDS_H
#define MM_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"

#define RECORD_VERSION 1
#define RECORD_MAX_BYTES 65536

enum copy_state { COPY_PENDING, COPY_LOADING, COPY_LOADED, COPY_FAILED };

/* Labels of an instance: what it serves ("mt:sklearn", "rt:mm-runtime"); each 1..127 bytes,
 * at most RECORD_LABELS_MAX (JSON: an array of strings). */
#define RECORD_LABELS_MAX 32
#define RECORD_LABEL_BYTES 128
struct record_labels {
    uint32_t n;
    char label[RECORD_LABELS_MAX][RECORD_LABEL_BYTES];
};

/* Fields after start_ms came later: all optional, absent = zero, so records written before
 * them still decode (and older readers ignore them). */
struct instance_record {
    char address[256];        /* host:port of the node's internal endpoint (required) */
    char runtime[128];        /* runtime name served beside the node */
    char zone[64];
    uint64_t capacity_bytes;
    uint64_t used_bytes;
    uint32_t loaded_count;
    int64_t lru_oldest_ms;    /* last-use time of the least recently used copy, epoch ms */
    int64_t start_ms;
    struct record_labels labels;
    uint32_t loading_count;   /* copies being loaded now */
    uint32_t loading_threads; /* loads the runtime runs at once (its max loading concurrency) */
    uint32_t load_timeout_ms; /* the runtime's load timeout, enforced by the node */
    bool shutting_down;       /* no new copies: it is moving its copies away */
    int64_t lease;            /* the lease its keys are attached to (placers attach copies to
                                 it); JSON: a decimal string, as etcd's gateway writes lease ids
                                 (they exceed 2^53); a JSON integer is read too */
    char version[64];         /* the node's version */
    char runtime_version[128];/* the runtime's runtimeVersion */
    uint64_t default_model_size_bytes; /* the runtime's defaultModelSizeInBytes: what a model
                                 of unknown size counts for on this instance (absent = 0 = not
                                 said: placers count the place_config default) */
};

struct model_failure {
    char message[512];
    int64_t time_ms;
    char instance[254];
};

#define RECORD_PARAMS_BYTES 4096
#define RECORD_PARAMS_MAX 64

struct model_record {
    char type[64];            /* model format, e.g. sklearn (required) */
    char runtime[128];
    char storage_key[254];
    char storage_path[1024];
    uint64_t size_bytes;      /* estimate until a copy reports its measured size */
    int64_t last_used_ms;
    struct model_failure last_failure; /* message "" = none */
    bool load_now;            /* registered with loadNow: copies without waiting for a request
                                 (optional, absent = false) */
    int64_t registered_ms;    /* when the model was registered (optional) */
    bool auto_delete;         /* created by setVModel with autoDeleteTargetModel: deleted once
                                 no vmodel refers to it (optional, absent = false) */
    char storage_params[RECORD_PARAMS_BYTES]; /* the storage parameters laid over the storage
                                 key's entry (stcfg.h): a JSON object of strings, held here as
                                 its compact JSON text ("" = none; JSON: an object, absent when
                                 there are none; at most RECORD_PARAMS_BYTES - 1 bytes as
                                 compact text, at most RECORD_PARAMS_MAX fields) */
};

struct copy_record {
    enum copy_state state;    /* required */
    int64_t since_ms;
    uint64_t size_bytes;
    char error[512];
    uint64_t bytes_pulled;    /* while Loading: bytes of the model pulled from storage so far
                                 (optional, absent = 0 = none yet) */
    uint64_t bytes_total;     /* while Loading: the model's size in storage (optional, absent =
                                 0 = not known) */
};

struct vmodel_record {
    char active_model_id[254];
    char target_model_id[254];
    char owner[128];
};

/* The value of an election key (election.h): who leads, since when. */
struct election_record {
    char leader[256];         /* the leader's identity (required) */
    int64_t since_ms;         /* when it took the lead, epoch ms */
};

enum record_kind { RECORD_INSTANCE, RECORD_MODEL, RECORD_COPY, RECORD_VMODEL, RECORD_ELECTION };

/* Encode as compact JSON; returns a malloc'd string (caller frees) or NULL without memory. */
char *record_encode(enum record_kind kind, const void *rec);
/* Decode into *rec (zeroed first). 0, -EINVAL (malformed or invalid) or -E2BIG. */
int record_decode(enum record_kind kind, const char *json, size_t len, void *rec,
                  struct mm_error *err);
/* Decode only to check: 0 or the error record_decode would give. */
int record_validate(enum record_kind kind, const char *json, size_t len, struct mm_error *err);
const char *record_kind_name(enum record_kind kind);

/* Which record a key holds, from the key layout (keys.h), so that every reader and writer of a
 * key decodes it the same way. key is a full key of cluster (/modelmesh/<cluster>/...), key_len
 * bytes. 0 and *kind; -ENOENT for a key of the layout whose value has no codec here (isvcs/,
 * isvc-status/, runtimes/, storage-config/); -EINVAL for a key outside the layout (one holding
 * a NUL included). */
int record_kind_of_key(const char *key, size_t key_len, const char *cluster,
                       enum record_kind *kind);
/* Check a value stored, or about to be stored, under key: decoded as the record the key holds,
 * else (a key without a codec, or outside the layout) parsed as JSON, which every registry
 * value is, with the same refusals as a record's (names given twice, NUL, raw control
 * characters, bytes that are not UTF-8). 0, record_decode's error, or -EINVAL for a value that
 * is not JSON (err says where the JSON breaks off). */
int record_validate_at(const char *key, size_t key_len, const char *cluster, const char *json,
                       size_t len, struct mm_error *err);

struct cJSON;
/* Storage parameters (obj: a JSON object whose values are all strings, names not empty, at
 * most RECORD_PARAMS_MAX) into their compact JSON text in out (size bytes; "" for an empty
 * object). 0, or -EINVAL naming what is wrong (a parameter's name, never its value: values
 * may be secrets), -ENOMEM. */
int record_params_text(const struct cJSON *obj, char *out, size_t size, struct mm_error *err);

/* A registerModel's modelInfo.key (len bytes) into rec's storage_key and storage_params. Either
 * a plain storage key, or (its first byte but space is '{') the JSON ModelMesh Serving's
 * controller passes: {"storage_key":K,"storage_params":{..},"model_type":..,"schema_path":..}
 * where every field is optional and only the first two are read here. The JSON is checked as
 * records are (names twice, NUL, control characters, UTF-8). 0, or -EINVAL / -E2BIG with err
 * naming the field (both fields left ""). */
int record_model_key(const char *key, size_t len, struct model_record *rec,
                     struct mm_error *err);

const char *copy_state_name(enum copy_state s);
/* 0 or -EINVAL for a name other than Pending, Loading, Loaded, Failed. */
int copy_state_parse(const char *name, enum copy_state *out);

#endif
