"""A grpcio client (Debian python3-grpcio) calling the C server of test_interop.c.
usage: client.py PROTO_DIR PORT; exits 0 when every expectation holds."""
import sys

import grpc

import protos

m = protos.load(sys.argv[1])
pb, pbg = m["grpc_predict_v2_pb2"], m["grpc_predict_v2_pb2_grpc"]
rt, rtg = m["model_runtime_pb2"], m["model_runtime_pb2_grpc"]
failures = []


def expect(what, cond):
    if not cond:
        failures.append(what)


channel = grpc.insecure_channel("127.0.0.1:" + sys.argv[2])
stub = pbg.GRPCInferenceServiceStub(channel)

req = pb.ModelInferRequest(model_name="mnist", id="r1")
tensor = req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
tensor.contents.fp32_contents.extend([0.5, 1.5, 2.5, 3.5])
resp = stub.ModelInfer(req, metadata=[("mm-vmodel-id", "example-isvc")], timeout=5)
expect("ModelInfer model_name", resp.model_name == "mnist")
expect("ModelInfer header seen by server", resp.id == "example-isvc")
expect("ModelInfer output echoed", list(resp.outputs[0].contents.fp32_contents)
       == [0.5, 1.5, 2.5, 3.5])

status = rtg.ModelRuntimeStub(channel).runtimeStatus(rt.RuntimeStatusRequest(), timeout=5)
expect("runtimeStatus READY", status.status == rt.RuntimeStatusResponse.READY)
expect("runtimeStatus capacity", status.capacityInBytes == 1 << 30)

try:
    stub.ModelMetadata(pb.ModelMetadataRequest(name="mnist"), timeout=5)
    expect("unknown method fails", False)
except grpc.RpcError as e:
    expect("unknown method UNIMPLEMENTED", e.code() == grpc.StatusCode.UNIMPLEMENTED)

raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                          request_serializer=None, response_deserializer=None)
try:
    raw(b"\x0a\xff\xff\x01x", timeout=5)
    expect("malformed request fails", False)
except grpc.RpcError as e:
    expect("malformed INVALID_ARGUMENT", e.code() == grpc.StatusCode.INVALID_ARGUMENT)
    expect("malformed message names the type",
           "malformed inference.ModelInferRequest" in (e.details() or ""))

try:
    channel.unary_unary("/test.Hold/Hold")(b"x", timeout=0.2)
    expect("deadline fails", False)
except grpc.RpcError as e:
    expect("DEADLINE_EXCEEDED", e.code() == grpc.StatusCode.DEADLINE_EXCEEDED)

for f in failures:
    print("interop client: FAILED:", f)
print("interop client: %d failures" % len(failures))
sys.exit(1 if failures else 0)
