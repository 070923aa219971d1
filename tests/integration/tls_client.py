#!/usr/bin/env python3
"""tls_client.py - one gRPC call with Python's grpcio (a client the project did not write) to
check a TLS port: ServerLive over a new connection, with the CA, client certificate and
transport given, and the outcome compared with what the test expects.

usage: tls_client.py TARGET EXPECT [--ca FILE] [--cert FILE --key FILE] [--plaintext]
                     [--name NAME]
EXPECT: ok (ServerLive answered live) or refused (no answer: UNAVAILABLE, the handshake or
the connection failed). Prints what happened; exit 0 when it is what was expected, 1 if not."""
import argparse
import sys

import grpc

LIVE = "/inference.GRPCInferenceService/ServerLive"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("expect", choices=["ok", "refused"])
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--name")
    ap.add_argument("--plaintext", action="store_true")
    a = ap.parse_args()

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    options = [("grpc.ssl_target_name_override", a.name)] if a.name else []
    if a.plaintext:
        ch = grpc.insecure_channel(a.target, options=options)
    else:
        creds = grpc.ssl_channel_credentials(
            root_certificates=read(a.ca) if a.ca else None,
            private_key=read(a.key) if a.key else None,
            certificate_chain=read(a.cert) if a.cert else None)
        ch = grpc.secure_channel(a.target, creds, options=options)
    call = ch.unary_unary(LIVE, request_serializer=None, response_deserializer=None)
    try:
        resp = call(b"", timeout=5)
        got = "ok" if resp == b"\x08\x01" else "bad answer %r" % resp
        detail = "live"
    except grpc.RpcError as e:
        got = "refused" if e.code() == grpc.StatusCode.UNAVAILABLE else "status %s" % e.code()
        detail = "%s: %s" % (e.code().name, e.details())
    finally:
        ch.close()
    print("%s %s -> %s (%s)" % (a.target, "plaintext" if a.plaintext else "TLS", got, detail))
    return 0 if got == a.expect else 1


if __name__ == "__main__":
    sys.exit(main())
