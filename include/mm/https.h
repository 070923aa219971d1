/* https.h - TLS for a libmicrohttpd server (the REST port) from a tls_watch: the certificate
 * handed to each handshake is the watch's current one (MHD's certificate callback looks at the
 * files, tls_watch_refresh, and takes new ones: new connections get them), and with a client CA
 * every request is checked for a client certificate that the CA bundle in force verifies.
 *
 * MHD's certificate callback (GnuTLS's retrieve function) carries no argument of ours: MHD's
 * connection-start notification (one of the options) puts the https in each connection's socket
 * context, where the callback finds it (GnuTLS's session points at MHD's connection). So the
 * daemon's user must not set socket contexts (MHD_OPTION_NOTIFY_CONNECTION) itself.
 *
 * Lifetime: https_new before the daemon starts, https_free after MHD_stop_daemon. A certificate
 * replaced stays allocated until https_free (a handshake may still hold it; rotations are rare).
 * Threading: the callback and https_client_verified run on MHD's threads; the rest on one
 * thread. */
#ifndef MM_HTTPS_H
#define MM_HTTPS_H

#include <stdbool.h>

#include <microhttpd.h>

#include "mm/error.h"

struct tls_watch;
struct https;

#define HTTPS_MHD_OPTIONS 4 /* items https_mhd_options writes, MHD_OPTION_END included */

/* Serve with w's chain and key; require_client_cert: requests need a client certificate that
 * w's CA bundle verifies (else https_client_verified is false). w outlives the https. 0, or
 * -EINVAL (w without chain and key, or without CA while required), -EBADMSG (GnuTLS refused
 * the PEM), -ENOMEM, err saying which. */
int https_new(struct tls_watch *w, bool require_client_cert, struct https **out,
              struct mm_error *err);
void https_free(struct https *h);
/* MHD_USE_TLS goes into the daemon's flags, and these items (an MHD_OPTION_ARRAY, ending with
 * MHD_OPTION_END) into its options. They point into h. */
void https_mhd_options(struct https *h, struct MHD_OptionItem items[HTTPS_MHD_OPTIONS]);
/* For a request on c: true when no client certificate is required, or the one c presented is
 * verified by the CA bundle in force now. */
bool https_client_verified(struct https *h, struct MHD_Connection *c);

#endif
