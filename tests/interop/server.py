"""A grpcio server (Debian python3-grpcio) for our C client in test_interop.c.
usage: server.py PROTO_DIR; prints "PORT n" once serving, stops when stdin closes."""
import sys
from concurrent import futures

import grpc

import protos

m = protos.load(sys.argv[1])
pb, pbg = m["grpc_predict_v2_pb2"], m["grpc_predict_v2_pb2_grpc"]
rt, rtg = m["model_runtime_pb2"], m["model_runtime_pb2_grpc"]


class Inference(pbg.GRPCInferenceServiceServicer):
    def ModelInfer(self, request, context):
        headers = dict(context.invocation_metadata())
        if not request.model_name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "model_name is required")
        out = pb.ModelInferResponse(model_name=request.model_name,
                                    id=headers.get("mm-vmodel-id", ""))
        t = out.outputs.add(name="predict", datatype="FP32", shape=[1])
        t.contents.fp32_contents.append(float(len(request.raw_input_contents)))
        return out


class Runtime(rtg.ModelRuntimeServicer):
    def runtimeStatus(self, request, context):
        return rt.RuntimeStatusResponse(status=rt.RuntimeStatusResponse.READY,
                                        capacityInBytes=123456789, maxLoadingConcurrency=3)


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
pbg.add_GRPCInferenceServiceServicer_to_server(Inference(), server)
rtg.add_ModelRuntimeServicer_to_server(Runtime(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print("PORT", port, flush=True)
sys.stdin.read()  # until the test closes our stdin (or kills us by pid)
server.stop(0)
