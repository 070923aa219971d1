"""What the hostile tests of both runtimes share: a runtime process started from its command line
on a free loopback port and stopped by pid, a grpcio client (Debian python3-grpcio), the record
of expectations, and the cases every runtime must pass, each given a Suite that says how to start
the runtime and which model it serves."""
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
import protos  # noqa: E402

failures = []
checks = 0
work = tempfile.mkdtemp(prefix="mm-hostile-")
pb = pbg = rt = rtg = None

MAX_MESSAGE = 16 * 1024 * 1024
# The bounds both runtimes promise (README's "Limits and hardening").
MAX_TENSORS = 64
MAX_ID = 1024


def load_protos(proto_dir):
    global pb, pbg, rt, rtg
    m = protos.load(proto_dir)
    pb, pbg = m["grpc_predict_v2_pb2"], m["grpc_predict_v2_pb2_grpc"]
    rt, rtg = m["model_runtime_pb2"], m["model_runtime_pb2_grpc"]


def expect(what, cond, detail=""):
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print("FAILED: %s %s" % (what, detail), flush=True)


class Runtime:
    """One runtime process: its command line with extra flags, its stderr kept in a file."""

    def __init__(self, command, *flags, listen="127.0.0.1:0", wait=True, env=None):
        self.err_path = os.path.join(work, "stderr-%d-%d" % (os.getpid(), time.monotonic_ns()))
        self.err = open(self.err_path, "w+b")
        self.proc = subprocess.Popen(list(command) + ["--listen", listen] + list(flags),
                                     stdout=subprocess.PIPE, stderr=self.err,
                                     stdin=subprocess.DEVNULL, env=env)
        self.port = 0
        if not wait:
            return
        deadline = time.monotonic() + 60
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line or line.startswith(b"LISTENING "):
                break
        if not line.startswith(b"LISTENING "):
            self.stop()
            raise SystemExit("runtime did not announce LISTENING: %s" % self.stderr())
        word = line.split()[1].decode()
        self.port = int(word) if word.isdigit() else 0
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port, options=[
            ("grpc.max_send_message_length", MAX_MESSAGE + 1024),
            ("grpc.max_receive_message_length", MAX_MESSAGE)])
        self.spi = rtg.ModelRuntimeStub(self.channel)
        self.v2 = pbg.GRPCInferenceServiceStub(self.channel)

    def raw(self, method):
        """A unary call of method on bytes, answered in bytes."""
        return self.channel.unary_unary(method, request_serializer=None,
                                        response_deserializer=None)

    def stderr(self):
        self.err.flush()
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def peak_rss(self):
        """VmHWM of the process, in bytes (0 if unknown)."""
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def sanitized(self):
        """Whether the process runs with AddressSanitizer (which keeps freed memory a while)."""
        try:
            with open("/proc/%d/maps" % self.proc.pid) as f:
                return "libasan" in f.read()
        except OSError:
            return False

    def exit_code(self, timeout=20):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if hasattr(self, "channel"):
            self.channel.close()  # an open connection holds a graceful stop for --grace-ms
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            if self.exit_code(timeout) is None:
                self.proc.kill()
                self.proc.wait()
        err = self.stderr()
        expect("no sanitizer report from %s" % os.path.basename(self.proc.args[0]),
               "Sanitizer" not in err and "runtime error:" not in err, err[-3000:])
        return self.proc.returncode


class Suite:
    """A runtime under test: its command line (without --listen), the modelType it serves, a
    model it loads (a file in the suite's format) and the suffix its model files take."""

    def __init__(self, command, model_type, model, suffix):
        self.command = command
        self.type = model_type
        self.model = model
        self.suffix = suffix

    def start(self, *flags, **kw):
        return Runtime(self.command, *flags, **kw)


def call_error(fn, req, timeout=10):
    """(code, details) of a call expected to fail; (OK, '') if it did not."""
    try:
        fn(req, timeout=timeout)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def live_within(r, seconds):
    try:
        return r.v2.ServerLive(pb.ServerLiveRequest(), timeout=seconds).live
    except grpc.RpcError:
        return False


def field(number, wire_type, payload=b"", value=None):
    """One protobuf field on the wire: a varint (value) or length-delimited payload."""
    def varint(n):
        out = bytearray()
        while True:
            b = n & 0x7f
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)
    tag = varint(number << 3 | wire_type)
    if wire_type == 0:
        return tag + varint(value)
    return tag + varint(len(payload)) + payload


# ------------------------------------------------------------------------------ shared cases


def fifo_waiters(pid):
    """Threads of process pid blocked opening a FIFO that has no writer (kernel wait channel
    wait_for_partner): loads held by storage that never answers."""
    n = 0
    try:
        for task in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/wchan" % (pid, task)) as f:
                    n += f.read() == "wait_for_partner"
            except OSError:
                pass
    except OSError:
        pass
    return n


def until(cond, seconds):
    """Poll cond every 20 ms until it holds or seconds pass; its last value."""
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


def stuck_load(s):
    """A load that never gets its bytes (a FIFO nobody writes) fails at the load timeout and
    frees its slot; callers whose deadlines pass first are answered at their deadline, not
    held; other loads complete meanwhile."""
    fifo = os.path.join(work, "never" + s.suffix)
    os.mkfifo(fifo)
    r = s.start("--load-timeout-ms", "3000", "--max-loading-concurrency", "1")
    waiters = [r.spi.loadModel.future(rt.LoadModelRequest(modelId="stuck", modelPath=fifo),
                                      timeout=1.0) for _ in range(8)]
    t0 = time.monotonic()
    codes = []
    for w in waiters:
        try:
            w.result()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
    took = time.monotonic() - t0
    expect("8 waiters on a stuck load end at their deadline",
           all(c == grpc.StatusCode.DEADLINE_EXCEEDED for c in codes) and took < 2.5,
           "%s in %.1f s" % (codes, took))
    expect("ServerLive answers while a load is stuck", live_within(r, 2))
    code, details = call_error(r.spi.loadModel,
                               rt.LoadModelRequest(modelId="stuck", modelPath=fifo), timeout=10)
    expect("the stuck load fails with DEADLINE_EXCEEDED naming the model and the time",
           code == grpc.StatusCode.DEADLINE_EXCEEDED and "stuck" in details and
           "3000 ms" in details, "%s %r" % (code, details))
    code, details = call_error(r.spi.loadModel,
                               rt.LoadModelRequest(modelId="good", modelPath=s.model), timeout=30)
    expect("the slot is free again: another load completes", code == grpc.StatusCode.OK,
           "%s %r" % (code, details))
    # A second stuck load, unloaded while it waits: its caller hears at once, its slot is freed.
    held = fifo_waiters(r.proc.pid)  # the first stuck load's thread may still be blocked
    again = r.spi.loadModel.future(rt.LoadModelRequest(modelId="stuck-2", modelPath=fifo),
                                   timeout=10)
    expect("the second stuck load is blocked opening its FIFO",
           until(lambda: fifo_waiters(r.proc.pid) > held, 5))
    r.spi.unloadModel(rt.UnloadModelRequest(modelId="stuck-2"), timeout=5)
    try:
        again.result()
        code = grpc.StatusCode.OK
    except grpc.RpcError as e:
        code = e.code()
    expect("a stuck load unloaded answers ABORTED at once", code == grpc.StatusCode.ABORTED,
           str(code))
    code, details = call_error(r.spi.loadModel,
                               rt.LoadModelRequest(modelId="good-2", modelPath=s.model),
                               timeout=30)
    expect("the slot is free again after the unload", code == grpc.StatusCode.OK,
           "%s %r" % (code, details))
    expect("ServerLive answers after", live_within(r, 2))
    r.stop()
    os.unlink(fifo)


def no_leaks(s):
    """Errors say what kind of failure happened and where, never the file's bytes; the models
    directory confines loads; control characters never reach the log raw; messages are capped."""
    root = os.path.join(work, "root")
    os.makedirs(root, exist_ok=True)
    secret = os.path.join(root, "secret" + s.suffix)
    with open(secret, "w") as f:
        f.write("DB_PASSWORD=hunter2-secret\nother=1\n")
    inside = os.path.join(root, "model" + s.suffix)
    os.link(s.model, inside) if not os.path.exists(inside) else None
    os.symlink("/etc", os.path.join(root, "etc-link"))
    os.symlink("loop-a", os.path.join(root, "loop-b"))
    os.symlink("loop-b", os.path.join(root, "loop-a"))
    r = s.start("--models-dir", root)
    code, details = call_error(r.spi.loadModel,
                               rt.LoadModelRequest(modelId="s", modelPath=secret))
    expect("a file that is no model: INVALID_ARGUMENT", code == grpc.StatusCode.INVALID_ARGUMENT,
           str(code))
    expect("the error does not quote the file", "hunter2" not in details, details)
    for path in ("/proc/self/environ", os.path.join(root, "etc-link", "hostname"),
                 os.path.join(root, "..", "..")):
        code, details = call_error(r.spi.loadModel, rt.LoadModelRequest(modelId="p",
                                                                         modelPath=path))
        expect("a path outside --models-dir is refused: " + path,
               code == grpc.StatusCode.PERMISSION_DENIED and "outside" in details,
               "%s %r" % (code, details))
    code, details = call_error(r.spi.loadModel, rt.LoadModelRequest(
        modelId="l", modelPath=os.path.join(root, "loop-a")))
    expect("a symlink loop says so", "symbolic links" in details, details)
    code, details = call_error(r.spi.loadModel, rt.LoadModelRequest(modelId="m",
                                                                     modelPath=inside))
    expect("a model inside --models-dir loads", code == grpc.StatusCode.OK, details)
    evil = "x\nFORGED LINE\x1b[31mred\x07"
    call_error(r.spi.loadModel, rt.LoadModelRequest(modelId=evil, modelPath=secret))
    code, details = call_error(r.v2.ModelReady, pb.ModelReadyRequest(name="y" * 10000))
    expect("ModelReady of a 10 KB name answers", code in (grpc.StatusCode.OK,
                                                          grpc.StatusCode.INVALID_ARGUMENT),
           str(code))
    code, details = call_error(r.v2.ModelMetadata, pb.ModelMetadataRequest(name="y" * 1000))
    expect("a long model name gets NOT_FOUND with a capped message",
           code == grpc.StatusCode.NOT_FOUND and len(details.encode()) <= 512,
           "%s %d bytes" % (code, len(details)))
    code, details = call_error(r.v2.ModelMetadata, pb.ModelMetadataRequest(name="y" * 10000))
    expect("a 10 KB model name is refused with a capped message",
           code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT) and
           len(details.encode()) <= 512, "%s %d bytes" % (code, len(details)))
    rc = r.stop()
    err = r.stderr()
    expect("SIGTERM exits 0", rc == 0, str(rc))
    expect("the log holds no file contents", "hunter2" not in err)
    expect("the log holds no raw control characters",
           "\x1b" not in err and "\x07" not in err and "\nFORGED" not in err)
    expect("the log shows the escaped id", "x\\x0aFORGED LINE\\x1b[31mred\\x07" in err,
           err[-2000:])
    expect("no traceback or CancelledError at shutdown",
           "Traceback" not in err and "CancelledError" not in err, err[-2000:])


def bad_ids(s):
    """Ids and paths are text: NUL, invalid UTF-8 and overlong ones are refused, never cut at
    the NUL (a\\0b would alias a) or echoed back; a blank id names the field."""
    r = s.start()
    code, details = call_error(r.spi.loadModel, rt.LoadModelRequest(modelId="a",
                                                                     modelPath=s.model))
    expect("model a loads", code == grpc.StatusCode.OK, details)
    load = r.raw("/mmesh.ModelRuntime/loadModel")
    path = s.model.encode()
    cases = (
        ("an id with NUL", field(1, 2, b"a\0b") + field(3, 2, path), "NUL"),
        ("an id that is no UTF-8", field(1, 2, b"bad\xff\xfe") + field(3, 2, path),
         ("UTF-8", "do not decode")),
        ("a path with NUL", field(1, 2, b"c") + field(3, 2, path + b"\0junk"), "NUL"),
        ("a 2000-byte id", field(1, 2, b"z" * 2000) + field(3, 2, path), "at most 1024"),
    )
    for what, data, words in cases:
        code, details = call_error(load, data)
        words = words if isinstance(words, tuple) else (words,)
        expect("%s is refused" % what, code == grpc.StatusCode.INVALID_ARGUMENT and
               any(w in details for w in words), "%s %r" % (code, details))
    ready = r.raw("/inference.GRPCInferenceService/ModelReady")
    code, details = call_error(ready, field(1, 2, b"a\0b"))
    answer = b""
    if code == grpc.StatusCode.OK:
        answer = ready(field(1, 2, b"a\0b"), timeout=10)
    expect("a\\0b does not alias a", code == grpc.StatusCode.INVALID_ARGUMENT or
           answer == b"", "%s %r %r" % (code, details, answer))
    infer = r.raw("/inference.GRPCInferenceService/ModelInfer")
    code, details = call_error(infer, field(1, 2, b"a") + field(3, 2, b"req\xff"))
    expect("a request id that is no UTF-8 is refused, not echoed",
           code == grpc.StatusCode.INVALID_ARGUMENT, "%s %r" % (code, details))
    for name, fn, req in (("modelSize", r.spi.modelSize, rt.ModelSizeRequest()),
                          ("unloadModel", r.spi.unloadModel, rt.UnloadModelRequest())):
        code, details = call_error(fn, req)
        expect("%s without an id names modelId" % name,
               code == grpc.StatusCode.INVALID_ARGUMENT and "modelId" in details,
               "%s %r" % (code, details))
    code, details = call_error(r.v2.ModelMetadata, pb.ModelMetadataRequest())
    expect("ModelMetadata without a name names the field",
           code == grpc.StatusCode.INVALID_ARGUMENT and "name is required" in details,
           "%s %r" % (code, details))
    expect("ServerLive answers after", live_within(r, 2))
    r.stop()


def big_requests(s, max_peak):
    """A 16 MiB ModelInfer of 8.4M empty inputs (and others like it: outputs, parameters, shape
    dims, unknown fields) is refused before it is unpacked, naming the field and the bound: the
    peak RSS stays under max_peak bytes (twice that under AddressSanitizer, whose quarantine
    keeps freed buffers), and ServerLive from someone else answers meanwhile."""
    r = s.start("--workers", "2")
    if r.sanitized():
        max_peak *= 2
    code, details = call_error(r.spi.loadModel, rt.LoadModelRequest(modelId="m",
                                                                     modelPath=s.model),
                               timeout=30)
    expect("the model loads", code == grpc.StatusCode.OK, details)
    name = field(1, 2, b"m")
    n = (MAX_MESSAGE - 64) // 2
    tensor = field(3, 0, value=1)  # one shape dim, unpacked
    attacks = (
        ("inputs", name + field(5, 2) * n, "64 inputs"),
        ("outputs", name + field(6, 2) * n, "64 outputs"),
        ("parameters", name + field(4, 2) * n, "64 parameters"),
        ("shape dims", name + field(5, 2, tensor * ((MAX_MESSAGE - 64) // 2)), "shape dims"),
        ("unknown fields", name + field(15, 0, value=0) * n, "65536 fields"),
        ("bytes contents", name + field(5, 2, field(5, 2, field(8, 2) * ((MAX_MESSAGE - 64)
                                                                           // 2))),
         "fields"),
    )
    infer = r.raw("/inference.GRPCInferenceService/ModelInfer")
    stop = threading.Event()
    slowest = [0.0]

    def ping():
        while not stop.is_set():
            t0 = time.monotonic()
            ok = live_within(r, 5)
            took = time.monotonic() - t0
            slowest[0] = max(slowest[0], took if ok else 5.0)
            time.sleep(0.02)

    pinger = threading.Thread(target=ping)
    pinger.start()
    for what, data, words in attacks:
        if len(data) > MAX_MESSAGE:
            data = data[:MAX_MESSAGE - 8]
            data = data[:len(data) - len(data) % 2]
        futures = [infer.future(data, timeout=60) for _ in range(3)]
        for f in futures:
            try:
                f.result()
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
        expect("a request of 8M %s is refused naming the bound" % what,
               code == grpc.StatusCode.INVALID_ARGUMENT and words in details,
               "%s %r" % (code, details))
    stop.set()
    pinger.join()
    peak = r.peak_rss()
    expect("peak RSS stays under %d MB" % (max_peak >> 20), 0 < peak <= max_peak,
           "%d MB" % (peak >> 20))
    # Decoding on the loop stalled ServerLive for 2.6 s here; off the loop it answers in
    # milliseconds, and the bound leaves room for a loaded CI machine (twice under ASan).
    stall = 4.0 if r.sanitized() else 2.0
    expect("ServerLive answered within %.0f s throughout" % stall, slowest[0] < stall,
           "slowest %.2f s" % slowest[0])
    print("big_requests: peak RSS %d MB, slowest ServerLive %.3f s" % (peak >> 20, slowest[0]),
          flush=True)
    code, details = call_error(r.v2.ModelMetadata, pb.ModelMetadataRequest(name="m"))
    expect("the model still answers", code == grpc.StatusCode.OK, details)
    r.stop()


def odd_files(s):
    """Devices are refused; an empty file or directory is never sized 0."""
    r = s.start("--default-model-size", "123456")
    code, details = call_error(r.spi.loadModel, rt.LoadModelRequest(modelId="z",
                                                                     modelPath="/dev/zero"))
    expect("/dev/zero is refused at once", code == grpc.StatusCode.INVALID_ARGUMENT and
           "not a regular file" in details, "%s %r" % (code, details))
    empty = os.path.join(work, "empty" + s.suffix)
    open(empty, "w").close()
    empty_dir = os.path.join(work, "empty-dir")
    os.makedirs(empty_dir, exist_ok=True)
    fifo = os.path.join(work, "sized" + s.suffix)
    os.mkfifo(fifo)
    for path in (empty, empty_dir, "/dev/zero", fifo, os.path.join(work, "missing")):
        size = r.spi.predictModelSize(rt.PredictModelSizeRequest(modelId="e", modelPath=path),
                                      timeout=10).sizeInBytes
        expect("predictModelSize of %s is the default, not 0" % path, size == 123456, str(size))
    r.stop()
    os.unlink(fifo)


def outside_models_dir(s):
    """predictModelSize does not measure paths outside --models-dir, nor paths holding a NUL
    (refused)."""
    root = os.path.join(work, "root2")
    os.makedirs(root, exist_ok=True)
    r = s.start("--models-dir", root)
    size = r.spi.predictModelSize(rt.PredictModelSizeRequest(modelId="p",
                                                              modelPath=s.model),
                                  timeout=10).sizeInBytes
    expect("predictModelSize outside --models-dir measures nothing", size == 1000000, str(size))
    code, _ = call_error(r.spi.predictModelSize,
                         rt.PredictModelSizeRequest(modelId="p", modelPath=s.model + "\0x"))
    expect("predictModelSize of a path holding NUL is refused",
           code == grpc.StatusCode.INVALID_ARGUMENT, str(code))
    r.stop()


def run(cases):
    """Run (name, fn) cases (MM_HOSTILE_CASES=a,b runs only those), report, exit."""
    only = os.environ.get("MM_HOSTILE_CASES")
    try:
        for name, fn in cases:
            if only and name not in only.split(","):
                continue
            t0 = time.monotonic()
            n = len(failures)
            fn()
            print("%s: %s (%.1f s)" % (name, "ok" if len(failures) == n else "FAILED",
                                       time.monotonic() - t0), flush=True)
    finally:
        subprocess.run(["rm", "-rf", work])
    print("%d checks, %d failed" % (checks, len(failures)))
    sys.exit(1 if failures else 0)
