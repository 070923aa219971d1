/* spi_sync.h - the runtime SPI calls of spi.h, each waited for: for mmctl and tests, which
 * have a loop of their own and nothing else to do meanwhile. A node uses spi.h.
 *
 * Each call starts the request and runs the loop of the client's rpc_context (ev_run, one
 * iteration at a time) until the answer is in, so it must not be called from inside a callback
 * of that loop. Other watchers of the loop run meanwhile. The wait is bounded: with
 * timeout_ms > 0, by the call's deadline plus SPI_SYNC_GRACE_MS (then the request is cancelled
 * and the result is -ETIMEDOUT); timeout_ms 0 waits as long as the runtime takes.
 *
 * res is always filled (also when the call could not start: its code, and a message naming
 * the call, the model and the runtime); returns res->code: 0 or a negative errno (spi.h). */
#ifndef MM_SPI_SYNC_H
#define MM_SPI_SYNC_H

#include <stdint.h>

#include "mm/spi.h"

#define SPI_SYNC_GRACE_MS 5000

int spi_sync_runtime_status(struct spi_client *cl, int64_t timeout_ms, struct spi_result *res);
int spi_sync_load_model(struct spi_client *cl, const struct spi_model *m, int64_t timeout_ms,
                        struct spi_result *res);
int spi_sync_unload_model(struct spi_client *cl, const char *id, int64_t timeout_ms,
                          struct spi_result *res);
int spi_sync_predict_model_size(struct spi_client *cl, const struct spi_model *m,
                                int64_t timeout_ms, struct spi_result *res);
int spi_sync_model_size(struct spi_client *cl, const char *id, int64_t timeout_ms,
                        struct spi_result *res);

#endif
