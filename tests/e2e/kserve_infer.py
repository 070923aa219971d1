"""The walkthrough's request to an InferenceService by its name, from a real client: Python grpcio
(Debian python3-grpcio) with our .proto files (compiled as tests/e2e/walkthrough.py does).

usage: kserve_infer.py --proto-dir DIR --request JSON --isvc NAME --revision ID
                       --mesh ADDR [--mesh ADDR ...]

Sends the MNIST request (JSON, the gRPC form) by the InferenceService's name, as field 1 and as
the mm-vmodel-id header, to every --mesh address; each answer must name the concrete revision ID
(which starts with NAME) and predict [8]. ModelReady of NAME must be true there. Prints every
call; exits 0 when every expectation holds, 1 otherwise."""
import argparse
import os
import sys

import grpc
from google.protobuf import json_format

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
import protos  # noqa: E402

CALL_S = 20

ap = argparse.ArgumentParser()
ap.add_argument("--proto-dir", required=True)
ap.add_argument("--request", required=True)
ap.add_argument("--isvc", required=True)
ap.add_argument("--revision", required=True)
ap.add_argument("--mesh", action="append", required=True)
args = ap.parse_args()

m = protos.load(args.proto_dir)
pb, pbg = m["grpc_predict_v2_pb2"], m["grpc_predict_v2_pb2_grpc"]
failures = []


def expect(what, cond):
    print("  %s: %s" % ("ok" if cond else "FAILED", what), flush=True)
    if not cond:
        failures.append(what)


def call(what, fn, *a, **kw):
    try:
        r = fn(*a, timeout=CALL_S, **kw)
        print("%s: OK" % what, flush=True)
        return r
    except grpc.RpcError as e:
        print("%s: %s %r" % (what, e.code().name, e.details()), flush=True)
        return e


def is_eight(what, r):
    if isinstance(r, grpc.RpcError):
        expect(what + " answered OK", False)
        return
    expect(what + " model_name %r == %r" % (r.model_name, args.revision),
           r.model_name == args.revision and r.model_name.startswith(args.isvc + "__isvc-"))
    out = r.outputs[0] if r.outputs else None
    values = list(out.contents.int64_contents) if out else []
    if out and not values and r.raw_output_contents:
        values = list(memoryview(r.raw_output_contents[0]).cast("q"))
    expect(what + " predict %s == [8]" % values, out is not None and values == [8])


with open(args.request) as f:
    req = json_format.Parse(f.read(), pb.ModelInferRequest())

for addr in args.mesh:
    stub = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(addr))
    req.model_name = args.isvc
    is_eight("%s by name" % addr, call("%s ModelInfer %s" % (addr, args.isvc), stub.ModelInfer,
                                       req))
    req.model_name = ""
    is_eight("%s by mm-vmodel-id" % addr,
             call("%s ModelInfer mm-vmodel-id: %s" % (addr, args.isvc), stub.ModelInfer, req,
                  metadata=[("mm-vmodel-id", args.isvc)]))
    r = call("%s ModelReady %s" % (addr, args.isvc), stub.ModelReady,
             pb.ModelReadyRequest(name=args.isvc))
    expect("%s ModelReady ready" % addr, not isinstance(r, grpc.RpcError) and r.ready)

for f in failures:
    print("kserve_infer: FAILED:", f)
print("kserve_infer: %d failures" % len(failures), flush=True)
sys.exit(1 if failures else 0)
