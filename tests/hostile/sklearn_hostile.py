"""Hostile and careless callers against the sklearn runtime process, with a grpcio client
(Debian python3-grpcio): the cases both runtimes share (hostile.py) and the sklearn runtime's
own. Each case starts what it needs on free loopback ports, stops it by pid, and says what it
saw; the run exits 1 if any expectation failed.
usage: sklearn_hostile.py PYTHON SERVER_PY PROTO_DIR MAKE_MNIST_SVM_PY"""
import glob
import os
import subprocess
import sys
import tempfile
import threading
import time

import grpc

import hostile
from hostile import call_error, expect, live_within, work

PYTHON, RUNTIME, PROTO_DIR, MAKE_MNIST = sys.argv[1:5]
hostile.load_protos(PROTO_DIR)
pb, pbg, rt = hostile.pb, hostile.pbg, hostile.rt
COMMAND = [PYTHON, RUNTIME, "--proto-dir", PROTO_DIR]
# The runtimes' own temp dir, so that what they leave is not confused with other tests' files.
runtime_tmp = os.path.join(work, "tmp")
os.mkdir(runtime_tmp)


def Runtime(*flags, **kw):
    kw.setdefault("env", dict(os.environ, TMPDIR=runtime_tmp))
    return hostile.Runtime(COMMAND, *flags, **kw)


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
    s = hostile.Suite(COMMAND, "sklearn", mnist, ".joblib")
    hostile.run([
        ("idle_streams", lambda: idle_streams(mnist)),
        ("stuck_load", lambda: hostile.stuck_load(s)),
        ("no_leaks", lambda: hostile.no_leaks(s)),
        ("bad_ids", lambda: hostile.bad_ids(s)),
        ("big_requests", lambda: hostile.big_requests(s, 800 << 20)),
        ("odd_files", lambda: hostile.odd_files(s)),
        ("outside_models_dir", lambda: hostile.outside_models_dir(s)),
        ("addresses", addresses),
    ])


if __name__ == "__main__":
    main()
