#!/usr/bin/python3
"""mm-sklearn-runtime: serves scikit-learn models (joblib or pickle files) on the ModelMesh
runtime SPI (mmesh.ModelRuntime) and KServe V2 inference (inference.GRPCInferenceService), both
on one gRPC port. Prints "LISTENING <port>" on stdout once serving; SIGTERM/SIGINT stop it
gracefully.

Debian packages only: /usr/bin/python3 with python3-sklearn, python3-joblib, python3-numpy,
python3-grpcio, python3-grpc-tools (our .proto files are compiled at start).

Model files are pickles: loading one runs code from it. Serve only models from storage you
trust, as with every sklearn server.
"""
import argparse
import concurrent.futures
import gc
import importlib
import logging
import os
import pickle
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
import types

VERSION = "0.1.0"
NUMERIC_VERSION = 100  # 0.1.0
MODEL_SUFFIXES = (".joblib", ".pkl", ".pickle", ".sav")
MAX_MESSAGE = 16 * 1024 * 1024
log = logging.getLogger("mm-sklearn-runtime")


class Failure(Exception):
    """An RPC error: a gRPC status code name and a message for the caller."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


# ------------------------------------------------------------------------------ protos


def compile_protos(proto_dir):
    """Compile our .proto files into a temp dir; returns (modules, dir to remove at exit)."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="mm-sklearn-proto-")
    files = ["grpc_predict_v2.proto", "model-runtime.proto"]
    for f in files:
        if not os.path.isfile(os.path.join(proto_dir, f)):
            shutil.rmtree(out, ignore_errors=True)
            raise SystemExit("mm-sklearn-runtime: %s not found in --proto-dir %s" % (f, proto_dir))
    rc = protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + out] +
                     [os.path.join(proto_dir, f) for f in files])
    if rc != 0:
        shutil.rmtree(out, ignore_errors=True)
        raise SystemExit("mm-sklearn-runtime: protoc failed on %s (exit %d)" % (proto_dir, rc))
    sys.path.insert(0, out)
    v2 = importlib.import_module("grpc_predict_v2_pb2")
    spi = importlib.import_module("model_runtime_pb2")
    return v2, spi, out


# ------------------------------------------------------------------------------ models


def model_file(path):
    """The model file at path: the file itself, or the one model file in a directory."""
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            raise Failure("NOT_FOUND", "model directory %s: %s" % (path, e.strerror))
        found = [n for n in names if n.lower().endswith(MODEL_SUFFIXES) and
                 os.path.isfile(os.path.join(path, n))]
        if not found:
            raise Failure("INVALID_ARGUMENT", "model directory %s holds no %s file" %
                          (path, ", ".join(MODEL_SUFFIXES)))
        if len(found) > 1:
            raise Failure("INVALID_ARGUMENT", "model directory %s holds %d model files (%s), "
                          "expected one" % (path, len(found), ", ".join(found)))
        return os.path.join(path, found[0])
    if not os.path.exists(path):
        raise Failure("NOT_FOUND", "model path %s: No such file or directory" % path)
    return path


def measured_size(obj):
    """Bytes of memory held by the object graph of a loaded model: every object reachable from
    it counted once (numpy arrays with their data), classes, functions and modules left out
    (they are shared code, not the model). Extension objects that keep their data in C buffers
    (sklearn's decision trees) are counted by the state they pickle to, which holds that data."""
    import numpy as np

    shared = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
              types.MethodType)
    seen = set()
    keep = []  # pickled states made here: alive until the end, so that their ids stay unique
    stack = [obj]
    total = 0
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, shared):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, np.ndarray):
            if o.base is not None:        # a view: its memory is its base's
                stack.append(o.base)
                if not isinstance(o.base, (np.ndarray, bytes, bytearray, memoryview)):
                    total += o.nbytes     # a C buffer of an extension object getsizeof misses
            if o.dtype.hasobject:
                stack.extend(o.ravel().tolist())
            continue
        refs = gc.get_referents(o)
        stack.extend(refs)
        t = type(o)
        if not hasattr(o, "__dict__") and t.__module__ not in ("builtins", "numpy") and \
                not isinstance(o, np.generic):
            try:
                state = o.__reduce_ex__(4)
            except Exception:
                continue
            if isinstance(state, tuple) and len(state) > 2 and state[2] is not None:
                keep.append(state[2])
                stack.append(state[2])
    return total


def prediction_columns(est, features):
    """Columns of predict (n for a model with n targets, 1 for one), so that metadata and empty
    batches are right before the first request: from one row of zeros where the model takes
    that, else from n_outputs_ where it says."""
    import numpy as np

    if features > 0:
        try:
            y = np.asarray(est.predict(np.zeros((1, features))))
            return int(y.shape[1]) if y.ndim == 2 else 1
        except Exception:  # a model that takes no such row: n_outputs_, or one column
            pass
    try:
        return max(1, int(getattr(est, "n_outputs_", 1)))
    except (TypeError, ValueError):
        return 1


class Model:
    def __init__(self, model_id, path):
        self.id = model_id
        self.path = path
        self.future = None     # the load, while loading
        self.cancelled = False  # unloaded or purged while loading
        self.estimator = None
        self.size = 0
        self.features = -1     # n_features_in_, -1 if the model does not say
        self.output_type = "FP64"
        self.proba_classes = 0  # columns of predict_proba, 0 if the model has none
        self.targets = 1        # columns of predict: n_outputs_ of multi-output models


def load_into(m):
    """Runs on a loading thread: read m's file, check it is a model, measure it, and fill m in.
    Nothing reads those fields until m.future is cleared, after this has returned."""
    import joblib

    f = model_file(m.path)
    try:
        if f.lower().endswith((".pkl", ".pickle")):
            with open(f, "rb") as fh:
                est = pickle.load(fh)
        else:
            est = joblib.load(f)
    except FileNotFoundError:
        raise Failure("NOT_FOUND", "model path %s: No such file or directory" % f)
    except PermissionError:
        raise Failure("PERMISSION_DENIED", "model path %s: Permission denied" % f)
    except MemoryError:
        raise Failure("RESOURCE_EXHAUSTED", "loading %s: out of memory" % f)
    except (pickle.UnpicklingError, EOFError, KeyError, IndexError, ValueError) as e:
        raise Failure("INVALID_ARGUMENT", "cannot load sklearn model %s: not a joblib or pickle "
                      "file, or a truncated one (%s: %s)" % (f, type(e).__name__, e))
    except Exception as e:  # unpickling runs code from the file: a class it names is missing...
        raise Failure("INVALID_ARGUMENT", "cannot load sklearn model %s: %s: %s" %
                      (f, type(e).__name__, e))
    if not callable(getattr(est, "predict", None)):
        raise Failure("INVALID_ARGUMENT", "%s holds a %s, not an sklearn model with predict()" %
                      (f, type(est).__name__))
    m.estimator = est
    m.size = measured_size(est)
    n = getattr(est, "n_features_in_", None)
    m.features = int(n) if n is not None else -1
    m.targets = prediction_columns(est, m.features)
    classes = getattr(est, "classes_", None)
    if classes is not None and hasattr(classes, "dtype"):
        m.output_type = output_datatype(classes.dtype)
        if callable(getattr(est, "predict_proba", None)):
            m.proba_classes = len(classes)


# ------------------------------------------------------------------------------ tensors

# Input datatypes we take: name -> (contents field, numpy little-endian dtype).
INPUT_TYPES = {
    "FP32": ("fp32_contents", "<f4"),
    "FP64": ("fp64_contents", "<f8"),
    "INT32": ("int_contents", "<i4"),
    "INT64": ("int64_contents", "<i8"),
}


def output_datatype(dtype):
    kind = dtype.kind
    if kind in "iu":
        return "INT64"
    if kind == "b":
        return "BOOL"
    if kind == "f":
        return "FP64"
    return "BYTES"


def empty_output(model, name):
    """What predict or predict_proba answers for zero rows: right datatype, no values."""
    import numpy as np

    if name == "predict_proba":
        return np.empty((0, model.proba_classes), dtype=np.float64)
    dtype = {"INT64": np.int64, "BOOL": np.bool_, "BYTES": object}.get(model.output_type,
                                                                       np.float64)
    return np.empty((0, model.targets) if model.targets > 1 else (0,), dtype=dtype)


def shape_text(shape):
    return "[" + ", ".join(str(d) for d in shape) + "]"


def read_input(req, raw, model):
    """The one input tensor of req as a 2-D numpy array, validated against the model."""
    import numpy as np

    if len(req.inputs) != 1:
        raise Failure("INVALID_ARGUMENT", "model %s expects 1 input tensor, got %d" %
                      (model.id, len(req.inputs)))
    t = req.inputs[0]
    if t.datatype not in INPUT_TYPES:
        raise Failure("INVALID_ARGUMENT", "input '%s': datatype '%s' is not supported, model "
                      "expects 'FP32' (or 'FP64', 'INT32', 'INT64')" % (t.name, t.datatype))
    field, dtype = INPUT_TYPES[t.datatype]
    shape = list(t.shape)
    got = shape_text(shape)
    f = model.features
    if len(shape) == 2 and shape[0] >= 0 and shape[1] >= 0 and (f < 0 or shape[1] == f):
        rows, cols = shape
    elif len(shape) == 1 and shape[0] >= 0 and (f < 0 or shape[0] == f):
        rows, cols = 1, shape[0]
    else:
        raise Failure("INVALID_ARGUMENT", "input '%s': expected shape [-1, %s], got %s" %
                      (t.name, f if f >= 0 else "features", got))
    count = rows * cols
    width = np.dtype(dtype).itemsize
    if raw is not None:
        if len(raw) != count * width:
            raise Failure("INVALID_ARGUMENT", "input '%s': raw contents hold %d bytes, shape %s "
                          "of %s needs %d" % (t.name, len(raw), got, t.datatype, count * width))
        x = np.frombuffer(raw, dtype=dtype)
    else:
        values = getattr(t.contents, field)
        if len(values) != count:
            raise Failure("INVALID_ARGUMENT", "input '%s': %d %s values for shape %s, which "
                          "needs %d" % (t.name, len(values), t.datatype, got, count))
        x = np.array(values, dtype=dtype)
    return x.reshape(rows, cols)


def put_output(resp, out_tensor, y, raw):
    """Write y into out_tensor (datatype, shape) and its contents, or append raw bytes."""
    import numpy as np

    y = np.asarray(y)
    dt = output_datatype(y.dtype)
    out_tensor.datatype = dt
    out_tensor.shape.extend(int(d) for d in y.shape)
    flat = y.ravel()
    if dt == "BYTES":
        items = [v if isinstance(v, bytes) else str(v).encode() for v in flat.tolist()]
        if raw:
            resp.raw_output_contents.append(b"".join(struct.pack("<I", len(b)) + b
                                                     for b in items))
        else:
            out_tensor.contents.bytes_contents.extend(items)
        return
    np_type, field = {"INT64": ("<i8", "int64_contents"), "BOOL": ("?", "bool_contents"),
                      "FP64": ("<f8", "fp64_contents")}[dt]
    flat = flat.astype(np_type, copy=False)
    if raw:
        resp.raw_output_contents.append(flat.tobytes())
    else:
        getattr(out_tensor.contents, field).extend(flat.tolist())


# ------------------------------------------------------------------------------ service


class Runtime:
    def __init__(self, args, v2, spi):
        self.args = args
        self.v2 = v2
        self.spi = spi
        self.lock = threading.Lock()
        self.models = {}  # id -> Model (loaded, or loading with .future set)
        self.loads = concurrent.futures.ThreadPoolExecutor(
            max_workers=args.max_loading_concurrency, thread_name_prefix="load")

    # -- runtime SPI

    def runtime_status(self, req):
        with self.lock:  # the mesh asks at (re)start: what we hold is unknown to it
            purged = len(self.models)
            for m in self.models.values():
                m.cancelled = True
            self.models.clear()
        if purged:
            log.info("runtimeStatus: purged %d models", purged)
        import sklearn
        r = self.spi.RuntimeStatusResponse()
        r.status = self.spi.RuntimeStatusResponse.READY
        r.capacityInBytes = self.args.capacity_bytes
        r.maxLoadingConcurrency = self.args.max_loading_concurrency
        r.modelLoadingTimeoutMs = self.args.load_timeout_ms
        r.defaultModelSizeInBytes = self.args.default_model_size
        r.runtimeVersion = "mm-sklearn-runtime %s (scikit-learn %s)" % (VERSION,
                                                                        sklearn.__version__)
        r.numericRuntimeVersion = NUMERIC_VERSION
        return r

    def load_model(self, req):
        if not req.modelId or not req.modelPath:
            raise Failure("INVALID_ARGUMENT", "loadModel: modelId and modelPath are required")
        if req.modelType and req.modelType.lower() != "sklearn":
            raise Failure("INVALID_ARGUMENT", "loadModel %s: mm-sklearn-runtime serves sklearn "
                          "models, not '%s'" % (req.modelId, req.modelType))
        with self.lock:
            m = self.models.get(req.modelId)
            if m is None:
                m = Model(req.modelId, req.modelPath)
                m.future = self.loads.submit(load_into, m)
                self.models[req.modelId] = m
        if m.future is not None:
            try:
                m.future.result()
            except Exception as e:
                with self.lock:
                    if self.models.get(req.modelId) is m:  # the first waiter to wake
                        del self.models[req.modelId]
                if m.cancelled:  # what was asked of the load no longer matters
                    raise Failure("ABORTED", "model %s was unloaded while loading" %
                                  req.modelId)
                if not isinstance(e, Failure):
                    e = Failure("INTERNAL", "%s: %s" % (type(e).__name__, e))
                log.warning("loadModel %s: %s", req.modelId, e.message)
                raise Failure(e.code, "loadModel %s: %s" % (req.modelId, e.message))
            with self.lock:
                if m.cancelled:
                    raise Failure("ABORTED", "model %s was unloaded while loading" %
                                  req.modelId)
                if m.future is not None:  # the first waiter to wake publishes the model
                    m.future = None
                    log.info("loaded %s from %s: %d bytes", m.id, m.path, m.size)
        return self.spi.LoadModelResponse(sizeInBytes=m.size)

    def unload_model(self, req):
        with self.lock:
            m = self.models.pop(req.modelId, None)
            if m is not None:
                m.cancelled = True
        if m is not None:
            log.info("unloaded %s", req.modelId)
        # Unloading what is not loaded succeeds: the goal state holds.
        return self.spi.UnloadModelResponse()

    def model_size(self, req):
        m = self.loaded(req.modelId)
        return self.spi.ModelSizeResponse(sizeInBytes=m.size)

    def predict_model_size(self, req):
        try:
            f = model_file(req.modelPath) if req.modelPath else None
            disk = os.path.getsize(f) if f else None
        except (Failure, OSError):
            disk = None
        if disk is None:  # nothing to measure: the configured default is the honest estimate
            return self.spi.PredictModelSizeResponse(sizeInBytes=self.args.default_model_size)
        return self.spi.PredictModelSizeResponse(sizeInBytes=disk + disk // 4)

    # -- KServe V2

    def loaded(self, name):
        if not name:
            raise Failure("INVALID_ARGUMENT", "model_name is required")
        with self.lock:
            m = self.models.get(name)
        if m is None:
            raise Failure("NOT_FOUND", "model %s is not loaded" % name)
        if m.future is not None:
            raise Failure("UNAVAILABLE", "model %s is still loading" % name)
        return m

    def model_infer(self, req):
        m = self.loaded(req.model_name)
        raw = req.raw_input_contents[0] if len(req.raw_input_contents) else None
        x = read_input(req, raw, m)
        wanted = [o.name for o in req.outputs] or ["predict"]
        resp = self.v2.ModelInferResponse(model_name=req.model_name, id=req.id)
        for name in wanted:
            if name == "predict":
                fn = m.estimator.predict
            elif name == "predict_proba" and m.proba_classes:
                fn = m.estimator.predict_proba
            else:
                have = "'predict'" + (", 'predict_proba'" if m.proba_classes else "")
                raise Failure("INVALID_ARGUMENT", "model %s has no output '%s' (it has %s)" %
                              (m.id, name, have))
            try:
                # an empty batch has an empty answer (sklearn would refuse it)
                y = fn(x) if x.shape[0] else empty_output(m, name)
            except (ValueError, TypeError) as e:  # sklearn's verdict on the input
                raise Failure("INVALID_ARGUMENT", "model %s: %s" % (m.id, e))
            except MemoryError:
                raise Failure("RESOURCE_EXHAUSTED", "model %s: out of memory predicting %d "
                              "rows" % (m.id, x.shape[0]))
            except Exception as e:
                raise Failure("INTERNAL", "model %s: %s: %s" % (m.id, type(e).__name__, e))
            out = resp.outputs.add()
            out.name = name
            put_output(resp, out, y, raw is not None)
        return resp

    def model_metadata(self, req):
        m = self.loaded(req.name)
        r = self.v2.ModelMetadataResponse(name=m.id, platform="sklearn")
        t = r.inputs.add(name="input-0", datatype="FP32")
        t.shape.extend([-1, m.features])
        o = r.outputs.add(name="predict", datatype=m.output_type)
        o.shape.extend([-1, m.targets] if m.targets > 1 else [-1])
        if m.proba_classes:
            p = r.outputs.add(name="predict_proba", datatype="FP64")
            p.shape.extend([-1, m.proba_classes])
        return r

    def model_ready(self, req):
        with self.lock:
            m = self.models.get(req.name)
        return self.v2.ModelReadyResponse(ready=m is not None and m.future is None)

    def server_live(self, req):
        return self.v2.ServerLiveResponse(live=True)

    def server_ready(self, req):
        return self.v2.ServerReadyResponse(ready=True)

    def server_metadata(self, req):
        return self.v2.ServerMetadataResponse(name="mm-sklearn-runtime", version=VERSION)


def make_handler(grpc, runtime, full_name, request_type, fn):
    """A unary handler on raw bytes: we decode, so a malformed request gets INVALID_ARGUMENT
    naming the message type, and every Failure becomes its status with its message."""
    from google.protobuf.message import DecodeError

    def handle(data, context):
        req = request_type()
        try:
            req.ParseFromString(data)
        except DecodeError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed %s: %d bytes do not "
                          "decode" % (full_name, len(data)))
        try:
            return fn(req).SerializeToString()
        except Failure as e:
            context.abort(getattr(grpc.StatusCode, e.code), e.message)

    return grpc.unary_unary_rpc_method_handler(handle)


def serve(args):
    import grpc

    v2, spi, proto_out = compile_protos(args.proto_dir)
    rt = Runtime(args, v2, spi)
    spi_methods = {
        "runtimeStatus": (spi.RuntimeStatusRequest, rt.runtime_status),
        "loadModel": (spi.LoadModelRequest, rt.load_model),
        "unloadModel": (spi.UnloadModelRequest, rt.unload_model),
        "modelSize": (spi.ModelSizeRequest, rt.model_size),
        "predictModelSize": (spi.PredictModelSizeRequest, rt.predict_model_size),
    }
    v2_methods = {
        "ModelInfer": (v2.ModelInferRequest, rt.model_infer),
        "ModelMetadata": (v2.ModelMetadataRequest, rt.model_metadata),
        "ModelReady": (v2.ModelReadyRequest, rt.model_ready),
        "ServerLive": (v2.ServerLiveRequest, rt.server_live),
        "ServerReady": (v2.ServerReadyRequest, rt.server_ready),
        "ServerMetadata": (v2.ServerMetadataRequest, rt.server_metadata),
    }
    handlers = []
    for service, methods in (("mmesh.ModelRuntime", spi_methods),
                             ("inference.GRPCInferenceService", v2_methods)):
        table = {name: make_handler(grpc, rt, t.DESCRIPTOR.full_name, t, fn)
                 for name, (t, fn) in methods.items()}
        handlers.append(grpc.method_handlers_generic_handler(service, table))

    # Handler threads: the workers predict; loadModel calls wait for the loading threads.
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=args.workers + args.max_loading_concurrency + 4, thread_name_prefix="rpc")
    server = grpc.server(pool, handlers=handlers,
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                  ("grpc.max_send_message_length", MAX_MESSAGE)])
    port = server.add_insecure_port(args.listen)
    if port == 0 and not args.listen.startswith("unix:"):
        shutil.rmtree(proto_out, ignore_errors=True)
        raise SystemExit("mm-sklearn-runtime: cannot listen on %s" % args.listen)
    server.start()
    log.info("serving on %s (port %d)", args.listen, port)
    print("LISTENING %d" % port, flush=True)

    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda signum, frame: stop.set())
    stop.wait()
    log.info("shutting down")
    grace = args.grace_ms / 1000.0
    server.stop(grace=grace).wait()
    rt.loads.shutdown(wait=False, cancel_futures=True)
    pool.shutdown(wait=False)
    shutil.rmtree(proto_out, ignore_errors=True)
    # Python joins every executor thread at exit, daemon or not: give running jobs as long
    # again, then leave without a stuck one (a load blocked reading its model from storage).
    deadline = time.monotonic() + grace
    busy = 0
    for t in list(rt.loads._threads) + list(pool._threads):
        t.join(max(0.0, deadline - time.monotonic()))
        busy += t.is_alive()
    if busy:
        log.warning("%d jobs still running %d ms after the server stopped (a model load blocked "
                    "on storage?): exiting without them", busy, args.grace_ms)
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(prog="mm-sklearn-runtime", description=__doc__.split("\n")[0])

    def nonneg(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError("needs a non-negative integer, got '%s'" % s)
        if v < 0:
            raise argparse.ArgumentTypeError("needs a non-negative integer, got '%s'" % s)
        return v

    def positive(s):
        v = nonneg(s)
        if v == 0:
            raise argparse.ArgumentTypeError("needs a positive integer, got '%s'" % s)
        return v

    p.add_argument("--listen", default="127.0.0.1:8085",
                   help="gRPC address: host:port (port 0 picks one) or unix:PATH")
    p.add_argument("--capacity-bytes", type=nonneg, default=None,
                   help="model capacity reported to the mesh (env MM_RUNTIME_CAPACITY; 1 GiB)")
    p.add_argument("--max-loading-concurrency", type=positive, default=1)
    p.add_argument("--load-timeout-ms", type=positive, default=90000)
    p.add_argument("--default-model-size", type=positive, default=1000000)
    p.add_argument("--workers", type=positive, default=2, help="prediction threads")
    def grace(s):
        v = nonneg(s)
        if v > 3600000:
            raise argparse.ArgumentTypeError("is at most 3600000 (an hour), got '%s'" % s)
        return v

    p.add_argument("--grace-ms", type=grace, default=5000,
                   help="at SIGTERM: time for calls in flight, then as long again for running "
                   "jobs")
    p.add_argument("--proto-dir", default=os.path.join(here, "..", "..", "proto"),
                   help="where our .proto files are (default: the source tree's proto/)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    args = p.parse_args(argv)
    if args.capacity_bytes is None:
        env = os.environ.get("MM_RUNTIME_CAPACITY", "")
        try:
            args.capacity_bytes = nonneg(env) if env else 1 << 30
        except argparse.ArgumentTypeError as e:
            p.error("MM_RUNTIME_CAPACITY %s" % e)
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", level={"warn": "WARNING"}.get(args.log_level,
                                                                     args.log_level.upper()))
    serve(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
