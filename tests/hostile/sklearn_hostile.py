"""Hostile and careless callers against the sklearn runtime process, with a grpcio client
(Debian python3-grpcio). Each case starts what it needs on free loopback ports, stops it by
pid, and says what it saw; the run exits 1 if any expectation failed.
usage: sklearn_hostile.py PYTHON RUNTIME_PY PROTO_DIR MAKE_MNIST_SVM_PY"""
import glob
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
import protos  # noqa: E402

PYTHON, RUNTIME, PROTO_DIR, MAKE_MNIST = sys.argv[1:5]
m = protos.load(PROTO_DIR)
pb, pbg = m["grpc_predict_v2_pb2"], m["grpc_predict_v2_pb2_grpc"]
rt, rtg = m["model_runtime_pb2"], m["model_runtime_pb2_grpc"]
failures = []
checks = 0
work = tempfile.mkdtemp(prefix="mm-hostile-")
# The runtimes' own temp dir, so that what they leave is not confused with other tests' files.
runtime_tmp = os.path.join(work, "tmp")
os.mkdir(runtime_tmp)


def expect(what, cond, detail=""):
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print("FAILED: %s %s" % (what, detail), flush=True)


class Runtime:
    """One runtime process: started with extra flags, its stderr kept in a file."""

    def __init__(self, *flags, listen="127.0.0.1:0", wait=True):
        self.err_path = os.path.join(work, "stderr-%d-%d" % (os.getpid(), time.monotonic_ns()))
        self.err = open(self.err_path, "w+b")
        self.proc = subprocess.Popen([PYTHON, RUNTIME, "--listen", listen, "--proto-dir",
                                      PROTO_DIR] + list(flags), stdout=subprocess.PIPE,
                                     stderr=self.err, stdin=subprocess.DEVNULL,
                                     env=dict(os.environ, TMPDIR=runtime_tmp))
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
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
        self.spi = rtg.ModelRuntimeStub(self.channel)
        self.v2 = pbg.GRPCInferenceServiceStub(self.channel)

    def stderr(self):
        self.err.flush()
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def exit_code(self, timeout=20):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            if self.exit_code(timeout) is None:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "channel"):
            self.channel.close()
        return self.proc.returncode


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


def make_mnist():
    out = os.path.join(work, "models")
    subprocess.run([PYTHON, MAKE_MNIST, out], check=True, stdout=subprocess.DEVNULL)
    found = glob.glob(os.path.join(out, "**", "*.joblib"), recursive=True)
    if not found:
        raise SystemExit("make_mnist_svm.py made no .joblib under %s" % out)
    return found[0]


def idle_streams(mnist):
    """Streams that send headers and never a message must hold no thread: 50 of them (the old
    threaded server froze at 7), then ServerLive and a load from someone else still answer."""
    r = Runtime()
    ch = grpc.insecure_channel("127.0.0.1:%d" % r.port)
    never = threading.Event()

    def silent():
        never.wait(60)
        return iter(())

    def requests():
        never.wait(60)  # headers go out; the message never does
        yield b""

    idle = []
    for i in range(50):
        method = ch.stream_unary("/inference.GRPCInferenceService/ServerLive",
                                 request_serializer=None, response_deserializer=None)
        idle.append(method.future(requests(), timeout=60))
    time.sleep(1.0)
    expect("ServerLive answers beside 50 idle streams", live_within(r, 3))
    code, _ = call_error(r.spi.loadModel, rt.LoadModelRequest(modelId="mnist", modelPath=mnist),
                         timeout=30)
    expect("a load completes beside 50 idle streams", code == grpc.StatusCode.OK, str(code))
    never.set()
    for f in idle:
        f.cancel()
    ch.close()
    r.stop()


def stuck_load(mnist):
    """A load that never gets its bytes (a FIFO nobody writes) fails at the load timeout and
    frees its slot; callers whose deadlines pass first are answered at their deadline, not
    held; other loads complete meanwhile."""
    fifo = os.path.join(work, "never.joblib")
    os.mkfifo(fifo)
    r = Runtime("--load-timeout-ms", "3000", "--max-loading-concurrency", "1")
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
    t0 = time.monotonic()
    code, _ = call_error(r.spi.loadModel, rt.LoadModelRequest(modelId="mnist", modelPath=mnist),
                         timeout=30)
    expect("the slot is free again: another load completes", code == grpc.StatusCode.OK,
           str(code))
    expect("ServerLive answers after", live_within(r, 2))
    r.stop()
    os.unlink(fifo)


def no_leaks(mnist):
    """Errors say what kind of failure happened and where, never the file's bytes; the models
    directory confines loads; control characters never reach the log raw; messages are capped."""
    root = os.path.join(work, "root")
    os.makedirs(root, exist_ok=True)
    secret = os.path.join(root, "secret.joblib")
    with open(secret, "w") as f:
        f.write("DB_PASSWORD=hunter2-secret\nother=1\n")
    inside = os.path.join(root, "mnist.joblib")
    os.link(mnist, inside) if not os.path.exists(inside) else None
    os.symlink("/etc", os.path.join(root, "etc-link"))
    os.symlink("loop-a", os.path.join(root, "loop-b"))
    os.symlink("loop-b", os.path.join(root, "loop-a"))
    r = Runtime("--models-dir", root)
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
    expect("ModelReady of a 10 KB name answers", code == grpc.StatusCode.OK, str(code))
    code, details = call_error(r.v2.ModelMetadata, pb.ModelMetadataRequest(name="y" * 10000))
    expect("a 10 KB model name gets NOT_FOUND with a capped message",
           code == grpc.StatusCode.NOT_FOUND and len(details.encode()) <= 512,
           "%s %d bytes" % (code, len(details)))
    code, details = call_error(r.spi.loadModel, rt.LoadModelRequest(modelId="a\0b",
                                                                     modelPath=inside))
    expect("an id with NUL is refused", code == grpc.StatusCode.INVALID_ARGUMENT and
           "NUL" in details, "%s %r" % (code, details))
    code, details = call_error(r.spi.loadModel, rt.LoadModelRequest(modelId="z" * 2000,
                                                                     modelPath=inside))
    expect("a 2000-byte id is refused", code == grpc.StatusCode.INVALID_ARGUMENT and
           "at most 1024" in details, "%s %r" % (code, details))
    code, details = call_error(r.spi.modelSize, rt.ModelSizeRequest())
    expect("modelSize without an id names modelId", code == grpc.StatusCode.INVALID_ARGUMENT
           and "modelId" in details, "%s %r" % (code, details))
    rc = r.stop()
    err = r.stderr()
    expect("SIGTERM exits 0", rc == 0, str(rc))
    expect("the log holds no file contents", "hunter2" not in err)
    expect("the log holds no raw control characters",
           "\x1b" not in err and "\x07" not in err and "\nFORGED" not in err)
    expect("the log shows the escaped id", "x\\x0aFORGED LINE\\x1b[31mred\\x07" in err)
    expect("no traceback or CancelledError at shutdown",
           "Traceback" not in err and "CancelledError" not in err, err[-2000:])


def odd_files():
    """Devices are refused; an empty file or directory is never sized 0."""
    r = Runtime("--default-model-size", "123456")
    code, details = call_error(r.spi.loadModel, rt.LoadModelRequest(modelId="z",
                                                                     modelPath="/dev/zero"))
    expect("/dev/zero is refused at once", code == grpc.StatusCode.INVALID_ARGUMENT and
           "not a regular file" in details, "%s %r" % (code, details))
    empty = os.path.join(work, "empty.joblib")
    open(empty, "w").close()
    empty_dir = os.path.join(work, "empty-dir")
    os.makedirs(empty_dir, exist_ok=True)
    for path in (empty, empty_dir, "/dev/zero", os.path.join(work, "missing")):
        size = r.spi.predictModelSize(rt.PredictModelSizeRequest(modelId="e", modelPath=path),
                                      timeout=10).sizeInBytes
        expect("predictModelSize of %s is the default, not 0" % path, size == 123456, str(size))
    r.stop()


def addresses():
    """A taken address is an error at start, naming it; so are impossible ports and a unix
    socket another process serves; none leaves a traceback or a temp dir."""
    before = set(glob.glob(os.path.join(runtime_tmp, "mm-sklearn-proto-*")))
    first = Runtime()
    taken = "127.0.0.1:%d" % first.port
    for listen, words in ((taken, "in use"), ("127.0.0.1:99999", "port from 0 to 65535")):
        second = Runtime(listen=listen, wait=False)
        rc = second.exit_code(60)
        err = second.stderr()
        expect("--listen %s is refused at start" % listen, rc not in (None, 0) and
               listen in err and words in err and "Traceback" not in err,
               "rc %s: %s" % (rc, err[-600:]))
        second.stop()
    expect("the first server still answers", live_within(first, 3))
    first.stop()
    sock = os.path.join(work, "rt.sock")
    a = Runtime(listen="unix:" + sock, wait=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not os.path.exists(sock):
        time.sleep(0.05)
    line = a.proc.stdout.readline().decode()
    expect("a unix socket announces its path", line.strip() == "LISTENING unix:" + sock, line)
    b = Runtime(listen="unix:" + sock, wait=False)
    rc = b.exit_code(60)
    err = b.stderr()
    expect("a second server on a live unix socket is refused", rc not in (None, 0) and
           "another process" in err, "rc %s: %s" % (rc, err[-600:]))
    b.stop()
    ch = grpc.insecure_channel("unix:" + sock)
    try:
        ok = pbg.GRPCInferenceServiceStub(ch).ServerLive(pb.ServerLiveRequest(), timeout=3).live
    except grpc.RpcError:
        ok = False
    ch.close()
    expect("the first unix server still answers", ok)
    a.stop()
    after = set(glob.glob(os.path.join(runtime_tmp, "mm-sklearn-proto-*")))
    expect("no temp dir left behind", after <= before, str(after - before))


def main():
    mnist = make_mnist()
    cases = [idle_streams, stuck_load, no_leaks, odd_files, addresses]
    only = os.environ.get("MM_HOSTILE_CASES")
    for case in cases:
        if only and case.__name__ not in only.split(","):
            continue
        t0 = time.monotonic()
        n = len(failures)
        if case is odd_files or case is addresses:
            case()
        else:
            case(mnist)
        print("%s: %s (%.1f s)" % (case.__name__, "ok" if len(failures) == n else "FAILED",
                                   time.monotonic() - t0), flush=True)
    print("%d checks, %d failed" % (checks, len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    try:
        main()
    finally:
        subprocess.run(["rm", "-rf", work])
