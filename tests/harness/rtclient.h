/* rtclient.h - driving a model runtime process from tests: a loop, an rpc context, a channel
 * for KServe V2 calls and the runtime SPI client (mm/spi.h) on it, each call waited for
 * (bounded); and a load held on a FIFO, for tests of what happens while a model loads. */
#ifndef MM_TEST_RTCLIENT_H
#define MM_TEST_RTCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <protobuf-c/protobuf-c.h>

#include "mm/spi.h"
#include "testcall.h"

#define RT_CALL_MS 15000

struct rt_client {
    struct ev_loop *loop;
    struct rpc_context *ctx;
    struct rpc_channel *ch; /* KServe V2 and hand-made calls */
    struct spi_client *spi; /* the runtime SPI */
    char target[64];        /* "127.0.0.1:<port>" */
};

/* A ModelInfer request for model: one FP32 input "input-0" of shape [1, n] holding row[0, n),
 * request id "r1". NULL without memory. */
grpc_byte_buffer *rt_infer_request(const char *model, const float *row, size_t n);
/* A ModelInfer request for model: one FP32 input named input of shape [rows, cols] holding
 * values[0, rows * cols), as raw_input_contents if raw, else as the tensor's fp32 contents; no
 * request id. NULL without memory. */
grpc_byte_buffer *rt_infer_request_fp32(const char *model, const char *input, const float *values,
                                        int64_t rows, int64_t cols, bool raw);
/* The example XGBoost model's request (raw): one row of RT_XGB_FEATURES values 1.0, 1.5, 2.0,
 * ... (rt_infer_request_fp32 with input "input-0"). NULL without memory. */
#define RT_XGB_FEATURES 30
grpc_byte_buffer *rt_xgb_request(const char *model);
/* ModelInfer of model on ch (deadline timeout_ms), waited for: whether it answered OK with
 * predict[0] within 1e-6 of expected (what came instead is printed, naming ch's target). */
bool rt_infer_expect(struct rpc_channel *ch, const char *model, const float *row, size_t n,
                     float expected, int64_t timeout_ms);

/* A loop, an rpc context, a channel and an SPI client to 127.0.0.1:port. 0 or -errno. */
int rt_open(struct rt_client *c, int port);
/* Free the clients, stop the runtime process pid (SIGTERM, then SIGKILL after grace_ms; pid 0:
 * none), free the rest; returns the process's wait status (-1 if it could not be had). */
int rt_close(struct rt_client *c, pid_t pid, long grace_ms);

/* Call method with msg (15 s deadline). If the reply is OK and out is set, decode it as out_desc
 * into *out (the caller frees it); status DATA_LOSS if it does not decode. */
struct testcall rt_call(const struct rt_client *c, const char *method, const ProtobufCMessage *msg,
                        const ProtobufCMessageDescriptor *out_desc, ProtobufCMessage **out);
/* Send bytes as they are (for malformed-request tests). */
struct testcall rt_call_raw(const struct rt_client *c, const char *method, const void *data,
                            size_t len);
/* The mm-model-id header names the model of a KServe V2 call (a mesh node forwards a vmodel's
 * name untouched). With name not loaded and id loaded: infer (a ModelInfer request naming name)
 * fails NOT_FOUND naming name without the header and naming "not-here" with a header naming
 * that; ModelMetadata and ModelReady of name with the header id answer for id (named id,
 * ready). Whether all of that held (what did not is printed). The answer to infer with the
 * header is the caller's to check: it depends on the model. */
bool rt_header_names_model(const struct rt_client *c, grpc_byte_buffer *infer, const char *name,
                           const char *id);
/* ModelReady: true only if the runtime answers ready. */
bool rt_ready(const struct rt_client *c, const char *id);
/* Whether r failed with code and a message containing fragment (printing both if not): use as
 * CHECK(rt_failed_with(...)). */
bool rt_failed_with(struct testcall r, grpc_status_code code, const char *fragment);

/* The SPI, waited for (15 s deadline) with spi_sync.h. */
struct spi_result rt_load(const struct rt_client *c, const char *id, const char *type,
                          const char *path, uint64_t *size);
struct spi_result rt_unload(const struct rt_client *c, const char *id);
struct spi_result rt_status(const struct rt_client *c);
/* Whether r failed with status code and its message holds fragment (printing both if not). */
bool rt_spi_failed_with(struct spi_result r, grpc_status_code code, const char *fragment);

/* An SPI answer collected by rt_spi_cb (an spi_reply_cb whose arg is a struct rt_spi_wait). */
struct rt_spi_wait {
    bool done;
    int calls; /* how many times the callback ran */
    struct spi_result res;
};
void rt_spi_cb(const struct spi_result *res, void *arg);
/* Run the loop until all n are done (bounded by ms); true if they are. */
bool rt_spi_wait_all(struct ev_loop *loop, struct rt_spi_wait *w, size_t n, long long ms);

/* Make fifo, start loadModel id of type from it on cl (the request's handle in *req, may be
 * NULL) and wait until the runtime process pid blocks opening it. True if it does; otherwise
 * the reason is printed (release the FIFO and wait for the load all the same). */
bool rt_hold_load(const struct rt_client *c, struct spi_client *cl, pid_t pid, const char *id,
                  const char *type, const char *fifo, struct rt_spi_wait *load,
                  struct spi_request **req);
/* Let a held load go on: the FIFO gives end-of-file to its reader, and its path is removed. */
void rt_release_load(const char *fifo);

#endif
