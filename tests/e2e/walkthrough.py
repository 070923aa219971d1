"""The KServe ModelMesh walkthrough's request from a real client: Python grpcio (Debian
python3-grpcio) with our .proto files, through the mesh's external port.

usage: walkthrough.py --proto-dir DIR --request JSON --model-id ID --vmodel NAME
                      --runtime ADDR --mesh ADDR [--mesh ADDR ...]

The model ID (the walkthrough's MNIST SVM, type sklearn) is registered and Loaded somewhere in
the mesh, and ADDR of --runtime is the sklearn runtime that holds it (the reference for the
runtime's own answers). This client
  1. asks the runtime directly (model_name ID): predict [8], and the runtime's message for a
     wrong shape;
  2. sends the request by model id through every --mesh address: predict [8], model_name ID;
  3. makes the InferenceService name NAME a vmodel of ID (setVModel, sync) on the first address;
  4. sends the request by NAME through every address, as field 1 and as the mm-vmodel-id header
     (model_name empty): predict [8], model_name ID (the concrete id, as in the walkthrough);
  5. checks ModelReady, ModelMetadata, ServerLive, ServerReady, an unknown model (NOT_FOUND
     naming it) and a wrong shape (INVALID_ARGUMENT with the runtime's message) there.
Prints what each call answered; exits 0 when every expectation holds, 1 otherwise."""
import argparse
import json
import os
import sys
import time

import grpc
from google.protobuf import json_format

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
import protos  # noqa: E402  (our .proto compiled at test time)

CALL_S = 20  # each call's deadline

ap = argparse.ArgumentParser()
ap.add_argument("--proto-dir", required=True)
ap.add_argument("--request", required=True)
ap.add_argument("--model-id", required=True)
ap.add_argument("--vmodel", required=True)
ap.add_argument("--runtime", required=True)
ap.add_argument("--mesh", action="append", required=True)
args = ap.parse_args()

m = protos.load(args.proto_dir)
pb, pbg = m["grpc_predict_v2_pb2"], m["grpc_predict_v2_pb2_grpc"]
import model_mesh_pb2 as mm  # noqa: E402  (compiled by protos.load beside the others)
import model_mesh_pb2_grpc as mmg  # noqa: E402

failures = []


def expect(what, cond):
    print("  %s: %s" % ("ok" if cond else "FAILED", what), flush=True)
    if not cond:
        failures.append(what)


def load_request():
    with open(args.request) as f:
        req = json_format.Parse(f.read(), pb.ModelInferRequest())
    return req


def wrong_shape(req):
    bad = pb.ModelInferRequest()
    bad.CopyFrom(req)
    del bad.inputs[0].contents.fp32_contents[10:]
    bad.inputs[0].shape[:] = [1, 10]
    return bad


def call(what, fn, *a, **kw):
    """fn's answer, or the RpcError it raised (printed either way)."""
    try:
        r = fn(*a, timeout=CALL_S, **kw)
        print("%s: OK" % what, flush=True)
        return r
    except grpc.RpcError as e:
        print("%s: %s %r" % (what, e.code().name, e.details()), flush=True)
        return e


def is_eight(what, r, model_id):
    if isinstance(r, grpc.RpcError):
        expect(what + " answered OK", False)
        return
    expect(what + " model_name %r == %r" % (r.model_name, model_id), r.model_name == model_id)
    out = r.outputs[0] if r.outputs else None
    values = list(out.contents.int64_contents) if out else []
    if out and not values and r.raw_output_contents:
        values = list(memoryview(r.raw_output_contents[0]).cast("q"))
    expect(what + " predict %s %s == INT64 [8]" % (out.datatype if out else None, values),
           out is not None and out.datatype == "INT64" and values == [8])


def failed_with(what, r, code, message=None, fragment=None):
    if not isinstance(r, grpc.RpcError):
        expect(what + " fails with " + code.name, False)
        return
    expect(what + " code %s == %s" % (r.code().name, code.name), r.code() == code)
    if message is not None:
        expect(what + " message %r == the runtime's %r" % (r.details(), message),
               r.details() == message)
    if fragment is not None:
        expect(what + " message %r names %r" % (r.details(), fragment),
               fragment in (r.details() or ""))


req = load_request()
bad = wrong_shape(req)

# 1. The runtime itself: the reference.
rt = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(args.runtime))
req.model_name = args.model_id
is_eight("runtime ModelInfer", call("runtime %s ModelInfer %s" % (args.runtime, args.model_id),
                                    rt.ModelInfer, req), args.model_id)
bad.model_name = args.model_id
r = call("runtime ModelInfer wrong shape", rt.ModelInfer, bad)
runtime_message = r.details() if isinstance(r, grpc.RpcError) else None
expect("the runtime refuses a wrong shape with INVALID_ARGUMENT",
       isinstance(r, grpc.RpcError) and r.code() == grpc.StatusCode.INVALID_ARGUMENT)

stubs = [(a, pbg.GRPCInferenceServiceStub(grpc.insecure_channel(a))) for a in args.mesh]

# 2. By model id through every entry point.
for addr, stub in stubs:
    req.model_name = args.model_id
    is_eight("%s by id" % addr, call("%s ModelInfer %s" % (addr, args.model_id), stub.ModelInfer,
                                     req), args.model_id)

# 3. The InferenceService name becomes a vmodel of the model (what the controller does).
api = mmg.ModelMeshStub(grpc.insecure_channel(args.mesh[0]))
r = call("%s setVModel %s -> %s" % (args.mesh[0], args.vmodel, args.model_id), api.setVModel,
         mm.SetVModelRequest(vModelId=args.vmodel, targetModelId=args.model_id, sync=True))
ok = not isinstance(r, grpc.RpcError)
expect("setVModel answered OK", ok)
if ok:
    print("  " + json_format.MessageToJson(r, indent=None), flush=True)
    expect("vmodel DEFINED", r.status == mm.VModelStatusInfo.DEFINED)
    expect("vmodel active %r" % r.activeModelId, r.activeModelId == args.model_id)

# 4 and 5. By the vmodel's name, and the rest of the inference service. Each entry point learns
# of the vmodel from its mirror of the registry: a moment after the write, waited for (bounded).
for addr, stub in stubs:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if stub.ModelReady(pb.ModelReadyRequest(name=args.vmodel), timeout=CALL_S).ready:
                break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                break
        time.sleep(0.05)
    req.model_name = args.vmodel
    is_eight("%s by vmodel" % addr, call("%s ModelInfer %s" % (addr, args.vmodel),
                                         stub.ModelInfer, req), args.model_id)
    req.model_name = ""
    is_eight("%s by mm-vmodel-id" % addr,
             call("%s ModelInfer mm-vmodel-id: %s" % (addr, args.vmodel), stub.ModelInfer, req,
                  metadata=[("mm-vmodel-id", args.vmodel)]), args.model_id)
    is_eight("%s by mm-model-id" % addr,
             call("%s ModelInfer mm-model-id: %s" % (addr, args.model_id), stub.ModelInfer, req,
                  metadata=[("mm-model-id", args.model_id)]), args.model_id)

    r = call("%s ModelReady %s" % (addr, args.vmodel), stub.ModelReady,
             pb.ModelReadyRequest(name=args.vmodel))
    expect("%s ModelReady ready" % addr, not isinstance(r, grpc.RpcError) and r.ready)
    r = call("%s ModelMetadata %s" % (addr, args.vmodel), stub.ModelMetadata,
             pb.ModelMetadataRequest(name=args.vmodel))
    expect("%s ModelMetadata name is the concrete id" % addr,
           not isinstance(r, grpc.RpcError) and r.name == args.model_id)
    r = call("%s ServerLive" % addr, stub.ServerLive, pb.ServerLiveRequest())
    expect("%s ServerLive live" % addr, not isinstance(r, grpc.RpcError) and r.live)
    r = call("%s ServerReady" % addr, stub.ServerReady, pb.ServerReadyRequest())
    expect("%s ServerReady ready" % addr, not isinstance(r, grpc.RpcError) and r.ready)

    req.model_name = "no-such-model"
    failed_with("%s unknown model" % addr,
                call("%s ModelInfer no-such-model" % addr, stub.ModelInfer, req),
                grpc.StatusCode.NOT_FOUND, fragment="no-such-model")
    bad.model_name = args.vmodel
    failed_with("%s wrong shape" % addr,
                call("%s ModelInfer wrong shape" % addr, stub.ModelInfer, bad),
                grpc.StatusCode.INVALID_ARGUMENT, message=runtime_message)

for f in failures:
    print("walkthrough: FAILED:", f)
print("walkthrough: %d failures" % len(failures), flush=True)
sys.exit(1 if failures else 0)
