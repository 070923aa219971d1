/* azure.h - the pure parts of the azure provider (storage/azure.c, remote.h's remote_azure):
 * which account, endpoint and credential a storage config names, and the Shared Key signature
 * of a request. Exposed for the unit test (tests/unit/test_azure.c); the node uses the
 * provider only through remote.h.
 *
 * Owns: an azure_account owns its strings and the decoded key (wiped when cleared). Messages
 * name fields, never their values. Threading: none (pure functions, no state). */
#ifndef MM_AZURE_H
#define MM_AZURE_H

#include <stddef.h>

#include "mm/error.h"

struct cJSON;

enum azure_auth {
    AZURE_ANONYMOUS,
    AZURE_SHARED_KEY, /* key/key_len: the account key, decoded */
    AZURE_SAS,        /* sas: the token's query, without a leading '?' */
};

struct azure_account {
    char *account; /* account name */
    char *container;
    char *endpoint; /* the blob service's base URL, no trailing '/': "https://A.blob.core.
                       windows.net", or path-style "http://127.0.0.1:10000/devstoreaccount1" */
    enum azure_auth auth;
    const char *cred_field; /* the config field the credential came from ("account_key",
                               "connection_string", "sas_token"; "" when anonymous), for
                               messages that tell the user what to check */
    unsigned char *key;
    size_t key_len;
    char *sas;
    char *ca_pem;            /* "certificate": PEM text of a CA to trust, NULL = the system's */
    unsigned list_page_size; /* "list_page_size" (1..5000, tests only); 0 = 5000 */
};

/* A storage config's azure fields into acct (zeroed first), storage_key naming the config in
 * messages:
 *   account_name, container (both required; account_name may come from the connection
 *   string instead), at most one of account_key (base64), connection_string, sas_token
 *   (none: anonymous), endpoint_url (default: the connection string's BlobEndpoint, else
 *   <DefaultEndpointsProtocol>://<account>.blob.<EndpointSuffix>, else
 *   https://<account>.blob.core.windows.net), certificate, list_page_size.
 *   A connection string is ';'-separated Key=Value parts (keys case-insensitive):
 *   AccountName, AccountKey, BlobEndpoint, DefaultEndpointsProtocol, EndpointSuffix,
 *   SharedAccessSignature, UseDevelopmentStorage=true (azurite's devstoreaccount1 at
 *   http://127.0.0.1:10000); others are ignored. Its AccountKey wins over its
 *   SharedAccessSignature; an AccountName that differs from account_name is refused.
 * 0, or -EINVAL / -ENOMEM with err naming the field (acct then holds nothing to clear). */
int azure_account_from_config(const struct cJSON *cfg, const char *storage_key,
                              struct azure_account *acct, struct mm_error *err);
/* Free what acct holds (the key wiped first) and zero it. NULL or zeroed is fine. */
void azure_account_clear(struct azure_account *acct);

/* Shared Key's string to sign (Blob service, version 2009-09-19 and later) for a request:
 * method, url (as sent: scheme://host[:port]/path?query, percent-encoded) and its headers
 * ("Name: value" each; the standard ones the scheme signs and every x-ms-* header). The
 * canonicalized resource is "/" account + the URL's path + its query parameters (names
 * lowercased and sorted, values decoded, a repeated name's values sorted and joined by ',').
 * 0 and *out (malloc'd, the caller frees), or -EINVAL (a URL without a path part, a
 * malformed percent-escape, a header without ':') / -ENOMEM. */
int azure_string_to_sign(const char *account, const char *method, const char *url,
                         const char *const *headers, size_t n_headers, char **out,
                         struct mm_error *err);

/* The Authorization header's value, "SharedKey <account>:<base64 HMAC-SHA256 of
 * string_to_sign under key>", into out (size bytes). 0, -ENOSPC (out too small) or -EIO. */
int azure_shared_key(const char *account, const unsigned char *key, size_t key_len,
                     const char *string_to_sign, char *out, size_t size);

/* x-ms-date's form of the time t (RFC 1123, GMT, English names whatever the locale) into out
 * (at least 30 bytes). */
void azure_http_date(long long t, char *out, size_t size);

#endif
