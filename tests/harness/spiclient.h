/* spiclient.h - driving a model runtime process from tests: the runtime SPI and KServe V2 calls
 * every runtime test makes, over one channel, each waited for (bounded). */
#ifndef MM_TEST_SPICLIENT_H
#define MM_TEST_SPICLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <protobuf-c/protobuf-c.h>

#include "testcall.h"

struct spi_client {
    struct ev_loop *loop;
    struct rpc_context *ctx;
    struct rpc_channel *ch;
};

/* A loop, an rpc context and a channel to 127.0.0.1:port. 0 or -errno. */
int spi_client_open(struct spi_client *c, int port);
/* Close the channel, stop the runtime process pid (SIGTERM, then SIGKILL after grace_ms), free
 * the rest; returns the process's wait status (-1 if it could not be had). */
int spi_client_close(struct spi_client *c, pid_t pid, long grace_ms);

/* Call method with msg (15 s deadline). If the reply is OK and out is set, decode it as out_desc
 * into *out (the caller frees it); status DATA_LOSS if it does not decode. */
struct testcall spi_call(const struct spi_client *c, const char *method,
                         const ProtobufCMessage *msg, const ProtobufCMessageDescriptor *out_desc,
                         ProtobufCMessage **out);
/* loadModel; *size (if set) gets the reported size, 0 on failure. */
struct testcall spi_load(const struct spi_client *c, const char *id, const char *type,
                         const char *path, uint64_t *size);
/* unloadModel. */
struct testcall spi_unload(const struct spi_client *c, const char *id);
/* runtimeStatus; decoded into *out when out is set (the caller frees it). */
struct testcall spi_status(const struct spi_client *c, ProtobufCMessage **out);
/* ModelReady: true only if the runtime answers ready. */
bool spi_ready(const struct spi_client *c, const char *id);
/* Send bytes as they are (for malformed-request tests). */
struct testcall spi_call_raw(const struct spi_client *c, const char *method, const void *data,
                             size_t len);
/* Unload (purge: runtimeStatus) while a load is in progress: loadModel id of type from fifo, a
 * FIFO this makes; once the runtime blocks opening it, a second loadModel, ModelInfer and
 * ModelReady, the cancel, then the FIFO gives end-of-file so that the load ends. True when the
 * runtime answered as it must: the load ABORTED ("model ID was unloaded while loading"), the
 * second load not OK, ModelInfer UNAVAILABLE ("model ID is still loading"), not ready during or
 * after, the cancel OK, and id loads from good_path afterwards (it is unloaded again at the
 * end). What differed is printed. */
bool spi_cancel_during_load(const struct spi_client *c, pid_t pid, const char *id,
                            const char *type, const char *fifo, const char *good_path, bool purge);
/* Two loadModel calls for id share one load that fails (from fifo, which gives end-of-file):
 * true when both answer the load's own error (neither OK nor ABORTED) and id is not ready;
 * what differed is printed. */
bool spi_shared_failed_load(const struct spi_client *c, pid_t pid, const char *id,
                            const char *type, const char *fifo);
/* Shutdown with a load stuck on storage: start the runtime argv (its flags should set a short
 * --grace-ms), ask it to load model id "stuck" of type from path fifo, a FIFO this makes and
 * nobody writes, and SIGTERM the runtime once a thread of it waits in open() on the FIFO.
 * Returns the wait status of its exit, SIGKILLed after kill_ms if it did not exit by itself, or
 * -1 if it could not be set up; *load gets the load call's outcome. */
int spi_term_during_stuck_load(char *const argv[], const char *type, const char *fifo,
                               long kill_ms, struct testcall *load);
/* Whether r failed with code and a message containing fragment (printing both if not): use as
 * CHECK(spi_failed_with(...)). */
bool spi_failed_with(struct testcall r, grpc_status_code code, const char *fragment);

#endif
