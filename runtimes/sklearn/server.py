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
import asyncio
import concurrent.futures
import errno
import gc
import importlib
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import stat
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


MAX_STATUS_MESSAGE = 512   # bytes of a status message: a 10 KB id must not overflow metadata
MAX_ID = 1024              # bytes of a model id
MAX_STUCK_LOADS = 16       # load threads past their timeout that may still be running
MAX_CONCURRENT_STREAMS = 1000  # per HTTP/2 connection


def escape(text):
    """text with control characters (newlines, ESC, NUL...) written as \\xNN escapes, so that
    ids and paths cannot forge log lines or drive a terminal."""
    return "".join(c if c.isprintable() else
                   ("\\x%02x" % ord(c) if ord(c) < 0x100 else "\\u%04x" % ord(c))
                   for c in text)


def clip(text, limit=MAX_STATUS_MESSAGE):
    """text escaped and cut to at most limit bytes of UTF-8 (an ellipsis says it was cut)."""
    text = escape(text)
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit - 3].decode(errors="ignore") + "..."


class Failure(Exception):
    """An RPC error: a gRPC status code name and a message for the caller."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def check_id(value, call, field="modelId"):
    """A model id from a request: present, no NUL, at most MAX_ID bytes."""
    if not value:
        raise Failure("INVALID_ARGUMENT", "%s: %s is required" % (call, field))
    if "\0" in value:
        raise Failure("INVALID_ARGUMENT", "%s: %s holds a NUL character" % (call, field))
    if len(value.encode()) > MAX_ID:
        raise Failure("INVALID_ARGUMENT", "%s: %s is %d bytes long, at most %d are allowed" %
                      (call, field, len(value.encode()), MAX_ID))
    return value


class EscapingFormatter(logging.Formatter):
    """Log lines whose message cannot hold raw control characters."""

    def formatMessage(self, record):
        record.message = escape(record.message)
        return super().formatMessage(record)


# ------------------------------------------------------------------------------ bounds

# Decoding allocates per occurrence of a field (a repeated message, a map entry, an unknown
# field): a 16 MiB ModelInferRequest of 8M empty inputs costs gigabytes once parsed. So every
# request is walked on the wire first, without decoding, and refused past these bounds (the same
# as mm-runtime's, include/mm/xgb_server.h and runtimes/xgboost/server.c).
MAX_FIELDS = 65536           # field occurrences at every level (a packed array counts once)
INFER_LIMITS = {             # per ModelInferRequest, all tensors and maps together
    "inputs": 64, "outputs": 64, "raw_input_contents": 64, "parameters": 64,
    "shape dims": 1024, "tensor contents values": 4 << 20,
}
VARINT, FIXED32, FIXED64, LENGTH, MESSAGE = range(5)
_PARAMETER_ENTRY = {1: (LENGTH, None, None), 2: (MESSAGE, None, None)}
_CONTENTS = {1: (VARINT, "tensor contents values", None),
             2: (VARINT, "tensor contents values", None),
             3: (VARINT, "tensor contents values", None),
             4: (VARINT, "tensor contents values", None),
             5: (VARINT, "tensor contents values", None),
             6: (FIXED32, "tensor contents values", None),
             7: (FIXED64, "tensor contents values", None),
             8: (LENGTH, "tensor contents values", None)}
_INPUT = {3: (VARINT, "shape dims", None), 4: (MESSAGE, "parameters", _PARAMETER_ENTRY),
          5: (MESSAGE, None, _CONTENTS)}
_OUTPUT = {2: (MESSAGE, "parameters", _PARAMETER_ENTRY)}
INFER_SCHEMA = {4: (MESSAGE, "parameters", _PARAMETER_ENTRY), 5: (MESSAGE, "inputs", _INPUT),
                6: (MESSAGE, "outputs", _OUTPUT), 7: (LENGTH, "raw_input_contents", None)}
_HIGH_BYTES = bytes(range(0x80, 0x100))


class Malformed(Exception):
    pass


def _varint(data, i, end):
    shift = value = 0
    while True:
        if i >= end or shift > 63:
            raise Malformed()
        b = data[i]
        i += 1
        value |= (b & 0x7f) << shift
        if b < 0x80:
            return value, i
        shift += 7


def check_bounds(data, type_name, schema=None, limits=None):
    """Walk a serialized message (bytes) and raise INVALID_ARGUMENT naming the field and the
    bound past the first one exceeded, or naming the type if it does not parse: field
    occurrences at every level looked into (MAX_FIELDS), and the occurrences (or packed values)
    of the fields schema lists ({number: (kind, counter, nested schema)}) against limits."""
    counts = dict.fromkeys(limits or (), 0)
    fields = 0
    stack = [(len(data), schema or {})]
    i = 0
    try:
        while stack:
            end, rules = stack[-1]
            if i >= end:
                if i > end:
                    raise Malformed()
                stack.pop()
                continue
            tag, i = _varint(data, i, end)
            number, wire = tag >> 3, tag & 7
            if number == 0:
                raise Malformed()
            fields += 1
            if fields > MAX_FIELDS:
                raise Failure("INVALID_ARGUMENT", "%s: more than %d fields in one request" %
                              (type_name, MAX_FIELDS))
            kind, counter, nested = rules.get(number, (None, None, None))
            n = 0
            if wire == 0:
                _, i = _varint(data, i, end)
                n = kind == VARINT
            elif wire == 1 or wire == 5:
                i += 8 if wire == 1 else 4
                if i > end:
                    raise Malformed()
                n = kind == (FIXED64 if wire == 1 else FIXED32)
            elif wire == 2:
                size, i = _varint(data, i, end)
                if i + size > end:
                    raise Malformed()
                if kind in (LENGTH, MESSAGE):
                    n = 1
                elif kind == VARINT:  # packed
                    # one value ends at each byte without the continuation bit
                    n = len(data[i:i + size].translate(None, _HIGH_BYTES))
                elif kind in (FIXED32, FIXED64):
                    width = 4 if kind == FIXED32 else 8
                    if size % width:
                        raise Malformed()
                    n = size // width
                if kind == MESSAGE and nested is not None:
                    stack.append((i + size, nested))
                else:
                    i += size
            else:
                raise Malformed()
            if counter and n:
                counts[counter] += n
                if counts[counter] > limits[counter]:
                    raise Failure("INVALID_ARGUMENT", "%s: more than %d %s in one request" %
                                  (type_name, limits[counter], counter))
    except Malformed:
        raise Failure("INVALID_ARGUMENT", "malformed %s: %d bytes do not decode" %
                      (type_name, len(data)))


# ------------------------------------------------------------------------------ protos


def compile_protos(proto_dir):
    """Compile our .proto files into a temp dir and import them; the dir is removed before
    returning (the modules are in memory by then), so no exit path leaves it behind."""
    from grpc_tools import protoc

    files = ["grpc_predict_v2.proto", "model-runtime.proto"]
    for f in files:
        if not os.path.isfile(os.path.join(proto_dir, f)):
            raise SystemExit("mm-sklearn-runtime: %s not found in --proto-dir %s" % (f, proto_dir))
    out = tempfile.mkdtemp(prefix="mm-sklearn-proto-")
    try:
        rc = protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + out] +
                         [os.path.join(proto_dir, f) for f in files])
        if rc != 0:
            raise SystemExit("mm-sklearn-runtime: protoc failed on %s (exit %d)" %
                             (proto_dir, rc))
        sys.path.insert(0, out)
        try:
            v2 = importlib.import_module("grpc_predict_v2_pb2")
            spi = importlib.import_module("model_runtime_pb2")
        finally:
            sys.path.remove(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return v2, spi


# ------------------------------------------------------------------------------ models


def path_failure(what, path, e):
    """An OSError about path as a Failure that names the path and the system's reason."""
    code = {errno.ENOENT: "NOT_FOUND", errno.ENOTDIR: "NOT_FOUND",
            errno.EACCES: "PERMISSION_DENIED", errno.EPERM: "PERMISSION_DENIED"}
    return Failure(code.get(e.errno, "INVALID_ARGUMENT"), "%s %s: %s" %
                   (what, path, os.strerror(e.errno) if e.errno else "cannot be read"))


def model_file(path):
    """The model file at path: the file itself, or the one model file in a directory. Devices
    and sockets are refused (/dev/zero would be read forever). A FIFO is read, as storage that
    streams: a load it holds is bounded by the load timeout, which frees its slot."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise path_failure("model path", path, e)
    if stat.S_ISDIR(st.st_mode):
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            raise path_failure("model directory", path, e)
        found = [n for n in names if n.lower().endswith(MODEL_SUFFIXES) and
                 os.path.isfile(os.path.join(path, n))]
        if not found:
            raise Failure("INVALID_ARGUMENT", "model directory %s holds no %s file" %
                          (path, ", ".join(MODEL_SUFFIXES)))
        if len(found) > 1:
            raise Failure("INVALID_ARGUMENT", "model directory %s holds %d model files, "
                          "expected one" % (path, len(found)))
        return os.path.join(path, found[0])
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        raise Failure("INVALID_ARGUMENT", "model path %s is not a regular file or a directory"
                      % path)
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
        self.task = None       # the load (an asyncio task), while loading
        self.cancelled = False  # unloaded or purged while loading
        self.estimator = None
        self.size = 0
        self.features = -1     # n_features_in_, -1 if the model does not say
        self.output_type = "FP64"
        self.proba_classes = 0  # columns of predict_proba, 0 if the model has none
        self.targets = 1        # columns of predict: n_outputs_ of multi-output models


def load_into(m):
    """Runs on a loading thread: read m's file, check it is a model, measure it, and fill m in.
    Nothing reads those fields until m.task is cleared, after this has returned."""
    import joblib

    f = model_file(m.path)
    # Errors name the kind of failure and the path, never what the file holds: an exception's
    # text can quote the file's bytes (a line of someone's secrets), and callers see it.
    try:
        if f.lower().endswith((".pkl", ".pickle")):
            with open(f, "rb") as fh:
                est = pickle.load(fh)
        else:
            est = joblib.load(f)
    except OSError as e:
        raise path_failure("model path", f, e)
    except MemoryError:
        raise Failure("RESOURCE_EXHAUSTED", "loading %s: out of memory" % f)
    except (pickle.UnpicklingError, EOFError, KeyError, IndexError, ValueError) as e:
        log.debug("loading %s: %s", f, clip(repr(e), 200))
        raise Failure("INVALID_ARGUMENT", "cannot load sklearn model %s: not a joblib or pickle "
                      "file, or a truncated one (%s)" % (f, type(e).__name__))
    except Exception as e:  # unpickling runs code from the file: a class it names is missing...
        log.debug("loading %s: %s", f, clip(repr(e), 200))
        raise Failure("INVALID_ARGUMENT", "cannot load sklearn model %s: unpickling failed (%s)"
                      % (f, type(e).__name__))
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
    """The models and the calls on them. Runs on one asyncio loop, which alone touches the
    model table: loads run on threads of their own, predictions (decode, predict, encode) on
    the worker pool, so no handler blocks the loop and an idle stream holds no thread."""

    def __init__(self, args, v2, spi, loop):
        self.args = args
        self.v2 = v2
        self.spi = spi
        self.loop = loop
        self.models = {}  # id -> Model (loaded, or loading with .task set)
        self.load_slots = asyncio.Semaphore(args.max_loading_concurrency)
        self.stuck = 0    # load threads given up on (timed out or unloaded), still running
        self.workers = concurrent.futures.ThreadPoolExecutor(max_workers=args.workers,
                                                             thread_name_prefix="predict")

    # -- loads

    def start_thread(self, fn, name):
        """Run fn on a thread of its own; its outcome arrives as an asyncio future. A future
        cancelled by its waiter leaves the thread running: it is counted in self.stuck until
        it returns (a load blocked on storage cannot be interrupted)."""
        fut = self.loop.create_future()

        def finish(ok, value):
            if fut.cancelled():
                self.stuck -= 1
            elif ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        def work():
            try:
                outcome = (True, fn())
            except BaseException as e:  # handed to the loop, which decides
                outcome = (False, e)
            try:
                self.loop.call_soon_threadsafe(finish, *outcome)
            except RuntimeError:  # the loop is closed: the process is exiting
                pass

        threading.Thread(target=work, name=name, daemon=True).start()
        return fut

    async def run_load(self, m):
        """The load of m: a slot, then the file read on a thread, bounded by the load timeout.
        Frees its slot whatever happens; a thread that outlives it is counted as stuck."""
        await self.load_slots.acquire()
        thread = None
        try:
            if m.cancelled:
                raise Failure("ABORTED", "model %s was unloaded while loading" % m.id)
            thread = self.start_thread(lambda: load_into(m), "load")
            limit = self.args.load_timeout_ms / 1000.0
            try:
                await asyncio.wait_for(asyncio.shield(thread), timeout=limit)
            except asyncio.TimeoutError:
                raise Failure("DEADLINE_EXCEEDED", "model %s: load timed out after %d ms" %
                              (m.id, self.args.load_timeout_ms))
            thread = None
            if m.cancelled:
                raise Failure("ABORTED", "model %s was unloaded while loading" % m.id)
        finally:
            if thread is not None and not thread.done():
                thread.cancel()
                self.stuck += 1
                log.warning("load of %s given up with its thread still reading %s",
                            m.id, m.path)
            self.load_slots.release()

    def load_finished(self, m, task):
        """Publish m, or take it out of the table, once its load is over."""
        if task.cancelled() or task.exception() is not None:
            if self.models.get(m.id) is m:
                del self.models[m.id]
            if not task.cancelled():
                e = task.exception()
                log.warning("loadModel %s: %s", m.id,
                            e.message if isinstance(e, Failure) else repr(e))
            return
        m.task = None
        log.info("loaded %s from %s: %d bytes", m.id, m.path, m.size)

    def forget(self, m):
        """m leaves the table (unload, purge); a load in progress answers ABORTED."""
        m.cancelled = True
        if m.task is not None:
            m.task.cancel()

    # -- runtime SPI

    async def runtime_status(self, req, deadline):
        # The mesh asks at (re)start: what we hold is unknown to it.
        purged = list(self.models.values())
        self.models.clear()
        for m in purged:
            self.forget(m)
        if purged:
            log.info("runtimeStatus: purged %d models", len(purged))
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

    def allowed_path(self, model_id, path):
        """path, if it is inside one of the --models-dir once symlinks are resolved."""
        roots = self.args.models_dir
        if not roots:
            return path
        real = os.path.realpath(path)
        if not any(os.path.commonpath([real, root]) == root for root in roots):
            raise Failure("PERMISSION_DENIED", "loadModel %s: model path %s is outside the "
                          "models director%s %s" % (model_id, path,
                                                    "ies" if len(roots) > 1 else "y",
                                                    ", ".join(roots)))
        return path

    async def load_model(self, req, deadline):
        model_id = check_id(req.modelId, "loadModel")
        if not req.modelPath:
            raise Failure("INVALID_ARGUMENT", "loadModel %s: modelPath is required" % model_id)
        if "\0" in req.modelPath:
            raise Failure("INVALID_ARGUMENT", "loadModel %s: modelPath holds a NUL character" %
                          model_id)
        if req.modelType and req.modelType.lower() != "sklearn":
            raise Failure("INVALID_ARGUMENT", "loadModel %s: mm-sklearn-runtime serves sklearn "
                          "models, not '%s'" % (model_id, req.modelType))
        m = self.models.get(model_id)
        if m is None:
            path = self.allowed_path(model_id, req.modelPath)
            if self.stuck >= MAX_STUCK_LOADS:
                raise Failure("UNAVAILABLE", "loadModel %s: %d earlier loads are still stuck "
                              "reading their files; try again later" % (model_id, self.stuck))
            m = Model(model_id, path)
            m.task = self.loop.create_task(self.run_load(m))
            m.task.add_done_callback(lambda t, m=m: self.load_finished(m, t))
            self.models[model_id] = m
        if m.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(m.task), timeout=remaining(deadline))
            except asyncio.TimeoutError:
                raise Failure("DEADLINE_EXCEEDED", "loadModel %s: still loading when the "
                              "caller's deadline passed" % model_id)
            except asyncio.CancelledError:
                if not m.cancelled:  # our own caller went away
                    raise
                raise Failure("ABORTED", "model %s was unloaded while loading" % model_id)
            except Failure as e:
                raise Failure(e.code, "loadModel %s: %s" % (model_id, e.message))
            except Exception as e:
                raise Failure("INTERNAL", "loadModel %s: %s" % (model_id, type(e).__name__))
        if m.cancelled:
            raise Failure("ABORTED", "model %s was unloaded while loading" % model_id)
        return self.spi.LoadModelResponse(sizeInBytes=m.size)

    async def unload_model(self, req, deadline):
        model_id = check_id(req.modelId, "unloadModel")
        m = self.models.pop(model_id, None)
        if m is not None:
            self.forget(m)
            log.info("unloaded %s", model_id)
        # Unloading what is not loaded succeeds: the goal state holds.
        return self.spi.UnloadModelResponse()

    async def model_size(self, req, deadline):
        m = self.loaded(check_id(req.modelId, "modelSize"))
        return self.spi.ModelSizeResponse(sizeInBytes=m.size)

    async def predict_model_size(self, req, deadline):
        if "\0" in req.modelPath:
            raise Failure("INVALID_ARGUMENT", "predictModelSize: modelPath holds a NUL character")

        def disk_size():  # what cannot be measured, or may not be read, is sized 0
            try:
                self.allowed_path(req.modelId, req.modelPath)
                f = model_file(req.modelPath)
                return os.path.getsize(f)
            except (Failure, OSError):
                return 0

        size = await self.loop.run_in_executor(self.workers, disk_size) if req.modelPath else 0
        if size <= 0:  # nothing to measure: the configured default is the honest estimate
            return self.spi.PredictModelSizeResponse(sizeInBytes=self.args.default_model_size)
        return self.spi.PredictModelSizeResponse(sizeInBytes=size + size // 4)

    # -- KServe V2

    def loaded(self, name, field="model_name"):
        if not name:
            raise Failure("INVALID_ARGUMENT", "%s is required" % field)
        m = self.models.get(name)
        if m is None:
            raise Failure("NOT_FOUND", "model %s is not loaded" % name)
        if m.task is not None:
            raise Failure("UNAVAILABLE", "model %s is still loading" % name)
        return m

    def infer(self, data, model_id=None):
        """On a worker thread: decode, predict, encode. model_id (the mm-model-id header) wins
        over the request's model_name, which a mesh node forwards untouched."""
        from google.protobuf.message import DecodeError

        req = self.v2.ModelInferRequest()
        check_bounds(data, "inference.ModelInferRequest", INFER_SCHEMA, INFER_LIMITS)
        try:
            req.ParseFromString(data)
        except DecodeError:
            raise Failure("INVALID_ARGUMENT", "malformed inference.ModelInferRequest: %d bytes "
                          "do not decode" % len(data))
        name = model_id or req.model_name
        m = self.models.get(name)  # a dict read: safe beside the loop's writes
        if m is None or m.task is not None:
            return None, name  # the loop answers, with the table's own words
        raw = req.raw_input_contents[0] if len(req.raw_input_contents) else None
        x = read_input(req, raw, m)
        wanted = [o.name for o in req.outputs] or ["predict"]
        resp = self.v2.ModelInferResponse(model_name=m.id, id=req.id)
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
                log.debug("model %s: %s", m.id, clip(repr(e), 200))
                raise Failure("INTERNAL", "model %s: prediction failed (%s)" %
                              (m.id, type(e).__name__))
            out = resp.outputs.add()
            out.name = name
            put_output(resp, out, y, raw is not None)
        return resp.SerializeToString(), name

    async def model_infer(self, data, deadline, model_id=None):
        answer, name = await self.loop.run_in_executor(self.workers, self.infer, data,
                                                       model_id)
        if answer is None:
            self.loaded(name)  # raises what is wrong
            raise Failure("UNAVAILABLE", "model %s was unloaded during the call" % name)
        return answer

    async def model_metadata(self, req, deadline, model_id=None):
        m = self.loaded(model_id or req.name, "name")
        r = self.v2.ModelMetadataResponse(name=m.id, platform="sklearn")
        t = r.inputs.add(name="input-0", datatype="FP32")
        t.shape.extend([-1, m.features])
        o = r.outputs.add(name="predict", datatype=m.output_type)
        o.shape.extend([-1, m.targets] if m.targets > 1 else [-1])
        if m.proba_classes:
            p = r.outputs.add(name="predict_proba", datatype="FP64")
            p.shape.extend([-1, m.proba_classes])
        return r

    async def model_ready(self, req, deadline, model_id=None):
        m = self.models.get(model_id or req.name)
        return self.v2.ModelReadyResponse(ready=m is not None and m.task is None)

    async def server_live(self, req, deadline):
        return self.v2.ServerLiveResponse(live=True)

    async def server_ready(self, req, deadline):
        return self.v2.ServerReadyResponse(ready=True)

    async def server_metadata(self, req, deadline):
        return self.v2.ServerMetadataResponse(name="mm-sklearn-runtime", version=VERSION)


def remaining(deadline):
    """Seconds left until the caller's deadline (monotonic), or None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def header_model_id(context, call):
    """The concrete model id a mesh node names in the mm-model-id header (None if absent): it
    wins over the request's own name, which the node forwards untouched (a vmodel's name)."""
    for key, value in context.invocation_metadata() or ():
        if key == "mm-model-id" and value:
            return check_id(value, call, "the mm-model-id header")
    return None


def make_handler(grpc, full_name, request_type, fn, decode_pool=None, takes_id=False):
    """A unary handler on raw bytes: we decode (request_type None: fn decodes off the loop),
    within MAX_FIELDS, so a malformed request gets INVALID_ARGUMENT naming the message type, and
    every Failure becomes its status with its message, escaped and capped. Requests larger than
    64 KiB are decoded on decode_pool, not on the loop. takes_id: fn also takes the
    mm-model-id header's model id (or None)."""
    from google.protobuf.message import DecodeError

    def decode(data):
        check_bounds(data, full_name)
        req = request_type()
        try:
            req.ParseFromString(data)
        except DecodeError:
            raise Failure("INVALID_ARGUMENT", "malformed %s: %d bytes do not decode" %
                          (full_name, len(data)))
        return req

    async def handle(data, context):
        left = context.time_remaining()
        deadline = None if left is None else time.monotonic() + left
        try:
            extra = (header_model_id(context, full_name),) if takes_id else ()
            if request_type is None:
                return await fn(data, deadline, *extra)
            if decode_pool is not None and len(data) > 65536:
                req = await asyncio.get_running_loop().run_in_executor(decode_pool, decode,
                                                                         data)
            else:
                req = decode(data)
            return (await fn(req, deadline, *extra)).SerializeToString()
        except Failure as e:
            code, message = e.code, e.message
        except asyncio.CancelledError:
            raise  # the caller went away, or the server is stopping: nothing to answer
        except Exception as e:
            log.error("%s: %s", full_name, clip(repr(e), 200))
            code, message = "INTERNAL", "%s failed (%s)" % (full_name, type(e).__name__)
        await context.abort(getattr(grpc.StatusCode, code), clip(message))

    return grpc.unary_unary_rpc_method_handler(handle)


def check_listen(addr):
    """Refuse an address we cannot own: a bad port, or a unix socket another process serves
    (binding would unlink it). A stale socket file is removed."""
    if addr.startswith("unix:"):
        path = addr[len("unix:"):]
        if not path:
            raise SystemExit("mm-sklearn-runtime: --listen unix: needs a path")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as e:
            raise SystemExit("mm-sklearn-runtime: cannot listen on %s: %s" %
                             (addr, os.strerror(e.errno)))
        if not stat.S_ISSOCK(st.st_mode):
            raise SystemExit("mm-sklearn-runtime: cannot listen on %s: the path exists and is "
                             "not a socket" % addr)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            raise SystemExit("mm-sklearn-runtime: cannot listen on %s: another process is "
                             "serving there" % addr)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # a socket nobody serves: left by a process that died
        finally:
            s.close()
        return
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise SystemExit("mm-sklearn-runtime: --listen %s: expected HOST:PORT with a port from "
                         "0 to 65535, or unix:PATH" % addr)


async def serve(args, v2, spi):
    import grpc

    loop = asyncio.get_running_loop()
    rt = Runtime(args, v2, spi, loop)
    spi_methods = {
        "runtimeStatus": (spi.RuntimeStatusRequest, rt.runtime_status),
        "loadModel": (spi.LoadModelRequest, rt.load_model),
        "unloadModel": (spi.UnloadModelRequest, rt.unload_model),
        "modelSize": (spi.ModelSizeRequest, rt.model_size),
        "predictModelSize": (spi.PredictModelSizeRequest, rt.predict_model_size),
    }
    v2_methods = {
        "ModelInfer": (None, rt.model_infer),
        "ModelMetadata": (v2.ModelMetadataRequest, rt.model_metadata),
        "ModelReady": (v2.ModelReadyRequest, rt.model_ready),
        "ServerLive": (v2.ServerLiveRequest, rt.server_live),
        "ServerReady": (v2.ServerReadyRequest, rt.server_ready),
        "ServerMetadata": (v2.ServerMetadataRequest, rt.server_metadata),
    }
    handlers = []
    for service, methods in (("mmesh.ModelRuntime", spi_methods),
                             ("inference.GRPCInferenceService", v2_methods)):
        table = {}
        for name, (t, fn) in methods.items():
            full = t.DESCRIPTOR.full_name if t else "%s.%sRequest" % (service.split(".")[0],
                                                                      name)
            table[name] = make_handler(grpc, full, t, fn, rt.workers,
                                       name in ("ModelInfer", "ModelMetadata", "ModelReady"))
        handlers.append(grpc.method_handlers_generic_handler(service, table))

    # so_reuseport off: a second server on a taken port must fail, not share it silently.
    # Compression: identity only, so that a gzip bomb is refused (UNIMPLEMENTED) before it is
    # inflated rather than inflated whole and then found too large.
    server = grpc.aio.server(handlers=handlers,
                             options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                      ("grpc.max_send_message_length", MAX_MESSAGE),
                                      ("grpc.so_reuseport", 0),
                                      ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
                                      ("grpc.compression_enabled_algorithms_bitset", 1)])
    try:
        port = server.add_insecure_port(args.listen)
    except RuntimeError:
        port = 0
    if port == 0 and not args.listen.startswith("unix:"):
        # Leave at once: tearing down a grpc.aio server that never bound can hang the
        # interpreter's exit (seen at about one start in ten).
        sys.stderr.write("mm-sklearn-runtime: cannot listen on %s: the address is in use or "
                         "not available\n" % args.listen)
        if native_stderr:
            native_stderr.close()  # gRPC's own line about the bind comes first
        logging.shutdown()
        sys.stderr.flush()
        os._exit(1)
    await server.start()
    log.info("serving on %s (port %d)", args.listen, port)
    print("LISTENING %s" % (args.listen if args.listen.startswith("unix:") else port),
          flush=True)

    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    log.info("shutting down")
    grace = args.grace_ms / 1000.0
    await server.stop(grace)
    rt.workers.shutdown(wait=False, cancel_futures=True)
    # Loads still running get as long again; one blocked on storage is left behind (its
    # thread is a daemon: the process exits without it).
    loading = [m.task for m in rt.models.values() if m.task is not None]
    if loading:
        done, pending = await asyncio.wait(loading, timeout=grace)
        if pending:
            log.warning("%d loads still running %d ms after the server stopped (blocked on "
                        "storage?): exiting without them", len(pending), args.grace_ms)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    if rt.stuck:
        log.warning("%d load threads still blocked: exiting without them", rt.stuck)


native_stderr = None  # set by main


class NativeStderr:
    """gRPC's C core (and libprotobuf) write their own lines to file descriptor 2, raw: ids and
    peers' bytes they quote would reach the terminal unescaped. Descriptor 2 becomes a pipe whose
    lines a thread logs through our escaping logger as `grpc: file.cc:LINE: ...`; Python's own
    writes (sys.stderr, our log) go to the original stderr."""

    LEVELS = {"E": logging.ERROR, "W": logging.WARNING, "I": logging.INFO, "D": logging.DEBUG}

    def __init__(self):
        self.saved = os.dup(2)
        self.stream = os.fdopen(os.dup(self.saved), "w", buffering=1, errors="backslashreplace")
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        self.thread = threading.Thread(target=self.pump, args=(r,), name="stderr", daemon=True)
        self.thread.start()

    def pump(self, r):
        lines = logging.getLogger("grpc")
        with os.fdopen(r, "rb") as f:
            for raw in f:
                text = raw.decode(errors="replace").rstrip("\n")
                level = logging.WARNING
                m = re.match(r"^([EWID])\d{4} [\d:.]+ +\d+ ([^\]]+)\] ?(.*)$", text)
                if m:
                    level = self.LEVELS[m.group(1)]
                    text = "%s: %s" % (m.group(2).strip(), m.group(3).lstrip())
                lines.log(level, "%s", clip(text, 768))

    def close(self):
        """Descriptor 2 back to the original stderr; what the pipe holds is logged first."""
        os.dup2(self.saved, 2)  # the pipe's last writer is gone: the pump reads to its end
        self.thread.join(1.0)


def raise_open_file_limit():
    """The soft open-file limit raised to the hard one: every connection is a descriptor, and
    gRPC's listener stops accepting for good when it runs out. Returns the limit in force."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, e)
    return soft


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(prog="mm-sklearn-runtime", description=__doc__.split("\n")[0])

    def bounded(low, high):
        def parse(s):
            try:
                v = int(s)
            except ValueError:
                raise argparse.ArgumentTypeError("needs an integer from %d to %d, got '%s'" %
                                                 (low, high, s))
            if not low <= v <= high:
                raise argparse.ArgumentTypeError("needs an integer from %d to %d, got '%s'" %
                                                 (low, high, s))
            return v
        return parse

    u32, u64 = (1 << 32) - 1, (1 << 64) - 1
    p.add_argument("--listen", default="127.0.0.1:8085",
                   help="gRPC address: host:port (port 0 picks one) or unix:PATH")
    p.add_argument("--capacity-bytes", type=bounded(0, u64), default=None,
                   help="model capacity reported to the mesh (env MM_RUNTIME_CAPACITY; 1 GiB)")
    p.add_argument("--max-loading-concurrency", type=bounded(1, 64), default=1)
    p.add_argument("--load-timeout-ms", type=bounded(1, u32), default=90000,
                   help="a load that takes longer fails with DEADLINE_EXCEEDED")
    p.add_argument("--default-model-size", type=bounded(1, u64), default=1000000)
    p.add_argument("--workers", type=bounded(1, 1024), default=2,
                   help="prediction threads")
    p.add_argument("--grace-ms", type=bounded(0, 3600000), default=5000,
                   help="at SIGTERM: time for calls in flight, then as long again for running "
                   "loads (at most an hour)")
    p.add_argument("--models-dir", action="append", default=None,
                   help="serve only model paths inside this directory, symlinks resolved; "
                   "repeatable: paths inside any of them (env MM_MODELS_DIR, ':'-separated; "
                   "default: any path the process can read)")
    p.add_argument("--proto-dir", default=os.path.join(here, "..", "..", "proto"),
                   help="where our .proto files are (default: the source tree's proto/)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    args = p.parse_args(argv)
    if args.capacity_bytes is None:
        env = os.environ.get("MM_RUNTIME_CAPACITY", "")
        try:
            args.capacity_bytes = bounded(0, u64)(env) if env else 1 << 30
        except argparse.ArgumentTypeError as e:
            p.error("MM_RUNTIME_CAPACITY %s" % e)
    if args.models_dir is None:
        env = os.environ.get("MM_MODELS_DIR", "")
        args.models_dir = [d for d in env.split(":") if d]
    if len(args.models_dir) > 16:
        p.error("--models-dir: at most 16 directories")
    for i, d in enumerate(args.models_dir):
        if not os.path.isdir(d):
            p.error("--models-dir %s is not a directory" % d)
        args.models_dir[i] = os.path.realpath(d)
    global native_stderr
    native_stderr = NativeStderr()
    sys.stderr = native_stderr.stream
    handler = logging.StreamHandler(native_stderr.stream)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(handlers=[handler], level={"warn": "WARNING"}.get(
        args.log_level, args.log_level.upper()))
    check_listen(args.listen)
    log.info("open-file limit %d", raise_open_file_limit())
    if not args.models_dir:
        log.warning("no --models-dir: loadModel reads any path this process can read")
    v2, spi = compile_protos(args.proto_dir)
    asyncio.run(serve(args, v2, spi))
    native_stderr.close()
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)  # daemon load threads blocked on storage must not hold the exit


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
