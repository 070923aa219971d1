/* isvc.h - InferenceServices in ModelMesh mode, as KServe defines them (../PROTOCOLS.md
 * "InferenceService"): parsing and validating one, its canonical JSON and revision id, the
 * ServingRuntimes and which one serves it, and its status as a pure function of what the
 * registry holds (the rules of "How status moves"). Shared by mmctl (apply, get, describe) and
 * mm-controller (reconcile, status).
 *
 * Pure: no I/O, no clock (now is an argument), no global state. Parsed values are plain
 * structs with bounded fields (no allocation inside; the caller owns them, heap-sized: a few
 * KiB each). Threading: none. */
#ifndef MM_ISVC_H
#define MM_ISVC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm/error.h"
#include "mm/keys.h"
#include "mm/records.h"

struct cJSON;
struct mesh_model_info;

#define ISVC_MAX_BYTES (256 * 1024)  /* an InferenceService or ServingRuntime as JSON text */
#define ISVC_NAME_MAX 63             /* metadata.name: a DNS-1035 label [a-z]([-a-z0-9]*[a-z0-9])? */
#define ISVC_NS_MAX 63               /* metadata.namespace: a DNS-1123 label */
#define ISVC_REVISION_MAX (ISVC_NAME_MAX + 17) /* "<name>__isvc-<10 hex>" */
#define ISVC_DEFAULT_NAMESPACE "modelmesh-serving"
#define ISVC_DEFAULT_SERVICE "modelmesh-serving"
#define ISVC_GRPC_PORT 8033
#define ISVC_REST_PORT 8008
#define ISVC_ANNOTATION_MODE "serving.kserve.io/deploymentMode" /* value "ModelMesh" */

/* Why a spec that parsed cannot be served (status InvalidSpec, lastFailureInfo reason). */
enum isvc_reason {
    ISVC_REASON_NONE = 0,
    ISVC_REASON_MODEL_LOAD_FAILED,      /* ModelLoadFailed */
    ISVC_REASON_RUNTIME_UNHEALTHY,      /* RuntimeUnhealthy */
    ISVC_REASON_NO_SUPPORTING_RUNTIME,  /* NoSupportingRuntime */
    ISVC_REASON_RUNTIME_NOT_RECOGNIZED, /* RuntimeNotRecognized */
    ISVC_REASON_INVALID_PREDICTOR_SPEC, /* InvalidPredictorSpec */
};
const char *isvc_reason_name(enum isvc_reason r); /* "" for NONE */
/* 0, or -EINVAL for a name not listed above ("" gives NONE). */
int isvc_reason_parse(const char *name, enum isvc_reason *out);

/* An InferenceService, parsed. Strings are NUL-terminated; "" = not given. */
struct isvc {
    char ns[ISVC_NS_MAX + 1];       /* metadata.namespace ("" when the document has none: the
                                       caller decides, e.g. -n or ISVC_DEFAULT_NAMESPACE) */
    char name[ISVC_NAME_MAX + 1];   /* metadata.name (required) */
    int64_t generation;             /* metadata.generation, 0 if absent */
    bool modelmesh;                 /* the annotation deploymentMode is ModelMesh */
    char format[64];                /* modelFormat.name, or the old framework's name */
    char type[64];                  /* format in lower case: the model record's type (node
                                       labels mt:<type> are lower case; format names match
                                       case-insensitively, the revision id uses format) */
    char format_version[64];        /* modelFormat.version */
    char runtime[KEYS_NAME_MAX + 1];/* spec.predictor.model.runtime: explicit, "" = match */
    char protocol[32];              /* protocolVersion, e.g. grpc-v2, v2 */
    bool has_storage;               /* storage or storageUri given */
    bool has_key;                   /* storage.key given (or the secretKey annotation) */
    char storage_key[KEYS_NAME_MAX + 1];
    bool has_path;                  /* a path given (storage.path, or from storageUri) */
    char storage_path[1024];
    bool has_schema_path;
    char schema_path[1024];         /* storage.schemaPath (or the schemaPath annotation) */
    char storage_uri[2048];         /* storageUri as given */
    char storage_params[RECORD_PARAMS_BYTES]; /* storage.parameters with storageUri's laid
                                       over them, as compact JSON of the sorted map ("" =
                                       none; record_params_text's form) */
    char revision[ISVC_REVISION_MAX + 1]; /* "<name>__isvc-<10 hex>" (always set by a
                                       successful parse, also for an invalid spec) */
    /* A spec that parsed but cannot be served: the controller reports it in the status
     * (transitionStatus InvalidSpec) rather than refusing it, as KServe's controller does:
     *   no storage and no storageUri     InvalidPredictorSpec "Predictor Storage field missing"
     *   path and storageUri both set     InvalidPredictorSpec "spec.predictor.model.storage:
     *                                    path and storageUri both set"
     *   a storageUri stcfg_parse_uri refuses, storage without a path: InvalidPredictorSpec
     *                                    naming the field. */
    enum isvc_reason invalid;        /* NONE = servable */
    char invalid_msg[256];
};

/* Parse an InferenceService (doc: the whole object, Kubernetes shape). 0 with *out filled
 * (out->invalid set for a spec that cannot be served, see above); or -EINVAL with err naming
 * the field path ("spec.predictor.model.modelFormat.name: not a string") and *where (may be
 * NULL) the node at fault, or its nearest parent present (so that a YAML reader can give its
 * line). -EINVAL for what Kubernetes' schema or KServe's webhook refuses at apply time: not an
 * object, apiVersion not serving.kserve.io/v1beta1, kind not InferenceService, name missing or
 * not a DNS-1035 label of at most ISVC_NAME_MAX, a namespace not a DNS-1123 label, a field of
 * the wrong type, no predictor, not exactly one of model / an old framework (sklearn, xgboost,
 * lightgbm, tensorflow, pytorch, onnx, triton, pmml, paddle, keras), model without
 * modelFormat.name, storage.parameters not a map of strings, strings over their bound.
 * Unknown fields are ignored (a newer KServe may add them). */
int isvc_parse(const struct cJSON *doc, struct isvc *out, const struct cJSON **where,
               struct mm_error *err);
/* The same from JSON text (len bytes, at most ISVC_MAX_BYTES, else -E2BIG), checked as
 * registry values are (records.h: names twice, NUL, control characters, UTF-8). */
int isvc_parse_text(const char *json, size_t len, struct isvc *out, struct mm_error *err);

/* Upstream's canonical JSON of the predictor spec (PROTOCOLS.md), malloc'd (caller frees), or
 * NULL without memory; and the revision id from it: "<name>__isvc-" + hex of the first 5
 * bytes of its SHA-1. isvc_parse fills s->revision with the same. */
char *isvc_canonical_json(const struct isvc *s);
int isvc_revision(const struct isvc *s, char *out, size_t size); /* 0 or -ENOSPC */

/* What the model record of its revision is registered with: type = format in lower case, path =
 * storage_path, key = ModelMesh Serving's JSON form {"storage_key":K,"storage_params":{..},
 * "schema_path":..} (fields present when given), written into keybuf (keysize bytes).
 * info's strings point into s and keybuf. 0, -EINVAL for an invalid spec (err says why),
 * -ENOSPC when keybuf is too small. */
int isvc_model_info(const struct isvc *s, struct mesh_model_info *info, char *keybuf,
                    size_t keysize, struct mm_error *err);
/* The owner of the vmodel an InferenceService of namespace ns sets: "isvc:<ns>". */
int isvc_owner(const char *ns, char *out, size_t size); /* 0 or -ENOSPC */

/* ServingRuntime / ClusterServingRuntime, parsed. */
#define ISVC_RT_FORMATS_MAX 32
#define ISVC_RT_PROTOCOLS_MAX 8
struct isvc_runtime_format {
    char name[64];
    char version[64];    /* "" = any */
    bool auto_select;
    int32_t priority;    /* 0 = none given */
};
struct isvc_runtime {
    char name[KEYS_NAME_MAX + 1];
    bool cluster;        /* kind ClusterServingRuntime */
    char ns[ISVC_NS_MAX + 1];
    bool multi_model;    /* spec.multiModel (ModelMesh serves only these) */
    bool disabled;       /* spec.disabled */
    uint32_t n_formats;
    struct isvc_runtime_format formats[ISVC_RT_FORMATS_MAX];
    uint32_t n_protocols;
    char protocols[ISVC_RT_PROTOCOLS_MAX][32]; /* none given = grpc-v2 (ModelMesh's default) */
    char grpc_endpoint[256];
    char grpc_data_endpoint[256];
    uint32_t max_loading_concurrency; /* annotation maxLoadingConcurrency, 0 = none */
};
/* 0, or -EINVAL with err naming the field and *where (may be NULL) as isvc_parse does. */
int isvc_runtime_parse(const struct cJSON *doc, struct isvc_runtime *out,
                       const struct cJSON **where, struct mm_error *err);
int isvc_runtime_parse_text(const char *json, size_t len, struct isvc_runtime *out,
                            struct mm_error *err);

/* Which runtime serves s, among rts (n of them), as KServe matches in ModelMesh mode:
 *   explicit s->runtime: the runtime of that name (else -ENOENT: RuntimeNotRecognized
 *     "Specified runtime name not recognized"); it must support the format and protocol (else
 *     -ENOTSUP: NoSupportingRuntime "Specified runtime does not support specified model type
 *     and/or protocol");
 *   else: runtimes not disabled, multiModel, with a format of that name whose autoSelect is
 *     true and whose version equals s->format_version when one is given, supporting
 *     s->protocol when one is given (else -ENOTSUP: NoSupportingRuntime "No ServingRuntime
 *     supports specified model type and/or protocol"). Among several: the format's higher
 *     priority, then a ServingRuntime before a ClusterServingRuntime, then name order.
 * 0 and *chosen (an index into rts); else reason (may be NULL) and err say why. */
int isvc_match_runtime(const struct isvc *s, const struct isvc_runtime *rts, size_t n,
                       size_t *chosen, enum isvc_reason *reason, struct mm_error *err);

/* ---- Status ---- */

enum isvc_model_state {
    ISVC_STATE_NONE = 0,     /* "" */
    ISVC_STATE_PENDING,
    ISVC_STATE_STANDBY,
    ISVC_STATE_LOADING,
    ISVC_STATE_LOADED,
    ISVC_STATE_FAILED_TO_LOAD,
};
const char *isvc_model_state_name(enum isvc_model_state s); /* "", Pending, ..., FailedToLoad */
int isvc_model_state_parse(const char *name, enum isvc_model_state *out);

enum isvc_transition {
    ISVC_UP_TO_DATE = 0,
    ISVC_IN_PROGRESS,
    ISVC_BLOCKED_BY_FAILED_LOAD,
    ISVC_INVALID_SPEC,
};
const char *isvc_transition_name(enum isvc_transition t);
int isvc_transition_parse(const char *name, enum isvc_transition *out);

struct isvc_condition {
    bool status;                 /* "True" / "False" */
    int64_t last_transition_s;   /* epoch seconds (RFC 3339 in JSON, seconds precision) */
    char reason[64];             /* "" = absent */
    char message[256];           /* "" = absent */
};

struct isvc_failure {
    enum isvc_reason reason;     /* NONE = no lastFailureInfo */
    char message[512];
    char model_revision[KEYS_NAME_MAX + 1];
    char location[KEYS_NAME_MAX + 1]; /* the instance that failed, "" = absent */
    int64_t time_s;              /* epoch seconds, 0 = absent */
};

/* The status record isvc-status/<ns>/<name>: {"v":1,"generation":N,"activeModelId":..,
 * "targetModelId":..,"status":{conditions, modelStatus, components, url}} (the model ids are
 * ours, beside KServe's status: what the status was computed for). */
struct isvc_status {
    int64_t generation;                      /* the isvc's metadata.generation observed */
    char active_model_id[KEYS_NAME_MAX + 1]; /* the vmodel's active id then, "" = none */
    char target_model_id[KEYS_NAME_MAX + 1]; /* the target id, "" = no transition */
    struct isvc_condition predictor_ready;   /* conditions[0] PredictorReady */
    struct isvc_condition ready;             /* conditions[1] Ready */
    enum isvc_model_state active_state;
    enum isvc_model_state target_state;
    enum isvc_transition transition;
    uint32_t total_copies;
    uint32_t failed_copies;
    struct isvc_failure failure;
    char grpc_url[256];                      /* grpc://<service>.<ns>:8033 */
    char rest_url[256];                      /* http://<service>.<ns>:8008 */
    char url[256];                           /* status.url and predictor.url: the grpc url */
};

/* The status record as JSON text (malloc'd, caller frees; NULL without memory). */
char *isvc_status_encode(const struct isvc_status *st);
/* KServe's status object alone (the record's "status"), a new cJSON the caller deletes. */
struct cJSON *isvc_status_json(const struct isvc_status *st);
/* Decode a status record (len bytes). 0, or -EINVAL / -E2BIG with err naming the field. */
int isvc_status_decode(const char *json, size_t len, struct isvc_status *out,
                       struct mm_error *err);
/* Whether two statuses would be written the same (the controller writes only changes). */
bool isvc_status_same(const struct isvc_status *a, const struct isvc_status *b);

/* One copy, one instance, one model as the registry holds them (pointers into the caller's
 * mirror or test tables, valid for the call). */
struct isvc_copy_view {
    const char *iid;
    const struct copy_record *rec;
};
struct isvc_instance_view {
    const char *iid;
    const struct instance_record *rec;
};
struct isvc_model_view {
    const char *id;
    const struct model_record *rec;          /* NULL: no model record (not registered yet) */
    const struct isvc_copy_view *copies;
    size_t n_copies;
};

/* Everything the status of one InferenceService is computed from. */
struct isvc_world {
    const struct isvc *isvc;                  /* parsed (required) */
    const char *service;                      /* NULL = ISVC_DEFAULT_SERVICE */
    const struct isvc_runtime *runtimes;
    size_t n_runtimes;
    const struct vmodel_record *vmodel;       /* vmodels/<name>, NULL = none */
    const struct isvc_model_view *active;     /* the vmodel's active model, NULL = none */
    const struct isvc_model_view *target;     /* its target when it differs, NULL = none */
    const struct isvc_instance_view *instances;
    size_t n_instances;
    int64_t now_s;                            /* epoch seconds */
    const struct isvc_status *prev;           /* the status written last, NULL = none */
};

/* The status now (PROTOCOLS.md "How status moves"); *out is zeroed first. Rules:
 *   invalid spec, no supporting runtime, runtime not recognized, or the vmodel owned by
 *     another namespace (InvalidPredictorSpec "vmodel NAME already owned by namespace X"):
 *     transition InvalidSpec, lastFailureInfo {reason, message, modelRevisionName}; a model
 *     still serving stays active (Loaded, target FailedToLoad), else active FailedToLoad.
 *   no vmodel yet: Pending, "", UpToDate.
 *   active state from the active model's copies: any Loaded -> Loaded; any Loading ->
 *     Loading; all Failed -> FailedToLoad (lastFailureInfo ModelLoadFailed with the copy's
 *     error, instance and time); none -> Pending, or Standby once it had been Loaded (prev
 *     for the same active id).
 *   in a transition (vmodel target != active, or the revision not yet the vmodel's target):
 *     target Loading (no copies, or one loading), Loaded, or FailedToLoad (all copies failed,
 *     or the model record's last failure without a copy loading): BlockedByFailedLoad with
 *     lastFailureInfo; else InProgress.
 *   no live instance (not shutting down) of the runtime the unloaded model needs: Loading
 *     with lastFailureInfo RuntimeUnhealthy "Waiting for runtime Pod to become available".
 *   copies: every copy record of the active and the target model; failed: those Failed.
 *   PredictorReady = Ready = active Loaded; lastTransitionTime kept from prev unless the
 *     condition's status flips (then now_s).
 *   generation = the isvc's; urls from service and namespace. */
void isvc_status_compute(const struct isvc_world *w, struct isvc_status *out);

/* RFC 3339 in UTC, seconds precision ("2022-07-15T04:59:45Z"), into out (at least 21 bytes);
 * and back (0 or -EINVAL; offsets and fractions accepted). */
void isvc_time_format(int64_t epoch_s, char *out, size_t size);
int isvc_time_parse(const char *text, int64_t *epoch_s);

#endif
