"""Compile the project's .proto files with grpc_tools (Debian python3-grpc-tools) into a temp dir
and import them: the Python side uses our protocol definitions, not its own copy."""
import atexit
import importlib
import shutil
import sys
import tempfile

from grpc_tools import protoc


def load(proto_dir):
    out = tempfile.mkdtemp(prefix="mm-pyproto-")
    atexit.register(shutil.rmtree, out, True)  # the modules are imported by then
    files = ["grpc_predict_v2.proto", "model-runtime.proto", "model-mesh.proto"]
    rc = protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + out,
                      "--grpc_python_out=" + out] + [proto_dir + "/" + f for f in files])
    if rc != 0:
        sys.exit("protoc failed with %d" % rc)
    sys.path.insert(0, out)
    names = ["grpc_predict_v2_pb2", "grpc_predict_v2_pb2_grpc", "model_runtime_pb2",
             "model_runtime_pb2_grpc"]
    return {n: importlib.import_module(n) for n in names}
