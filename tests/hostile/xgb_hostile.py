"""Hostile and careless callers against mm-runtime (the XGBoost runtime), with a grpcio client
(Debian python3-grpcio): the cases both runtimes share (hostile.py) and the ones particular to
XGBoost model files. Each case starts what it needs on free loopback ports, stops it by pid, and
says what it saw; the run exits 1 if any expectation failed.
usage: xgb_hostile.py MM_RUNTIME MAKE_BREAST_CANCER PROTO_DIR"""
import os
import struct
import subprocess
import sys
import time

import grpc

import hostile
from hostile import call_error, expect, work

MM_RUNTIME, MAKE_BREAST_CANCER, PROTO_DIR = sys.argv[1:4]
hostile.load_protos(PROTO_DIR)
pb, rt = hostile.pb, hostile.rt
COMMAND = [MM_RUNTIME]


def make_model():
    out = os.path.join(work, "models")
    subprocess.run([MAKE_BREAST_CANCER, out], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(out, "xgboost", "breast-cancer.json")


def legacy_header(objective=b"binary:logistic", booster=b"gbtree", features=30):
    """The start of a legacy binary model: the learner's 136 bytes, two strings."""
    learner = struct.pack("<fIiiiIIIi", 0.5, features, 0, 0, 0, 1, 7, 1, 1) + b"\0" * 100
    return (learner + struct.pack("<Q", len(objective)) + objective +
            struct.pack("<Q", len(booster)) + booster)


def corrupt_models(s):
    """Model files that declare more than they hold are refused at once, with a message that
    says so, before XGBoost allocates what they declare: a 160-byte file declaring an 8 GiB
    string, a tree of 2^30 nodes, an 8 GiB UBJSON array, 2^31-1 trees in JSON; JSON nested
    100000 deep. The runtime stays small and answers throughout."""
    r = s.start("--load-timeout-ms", "20000")
    gib8 = 8 << 30
    learner = struct.pack("<fIiiiIIIi", 0.5, 30, 0, 0, 0, 1, 7, 1, 1) + b"\0" * 100
    tree_param = struct.pack("<iiiiii", 1, 1 << 30, 0, 0, 30, 0) + b"\0" * 124
    files = {
        "string.bin": learner + struct.pack("<Q", gib8) + b"x" * 16,
        "nodes.bin": legacy_header() + struct.pack("<i", 1) + b"\0" * 156 + tree_param,
        "array.ubj": b"{L" + struct.pack(">q", 1) + b"a[$d#L" + struct.pack(">q", gib8 // 4) +
                     b"\0" * 64 + b"}",
        "trees.json": b'{"learner":{"gradient_booster":{"model":{"gbtree_model_param":'
                      b'{"num_trees":"2147483647"},"trees":[],"tree_info":[]}}}}',
        "deep.json": b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}",
        "truncated.ubj": b"{L" + struct.pack(">q", 1) + b"aSL" + struct.pack(">q", 1000),
    }
    for name, data in files.items():
        path = os.path.join(work, name)
        with open(path, "wb") as f:
            f.write(data)
        t0 = time.monotonic()
        code, details = call_error(r.spi.loadModel, rt.LoadModelRequest(modelId=name,
                                                                         modelPath=path),
                                   timeout=30)
        took = time.monotonic() - t0
        expect("%s (%d bytes) is refused at once" % (name, len(data)),
               code == grpc.StatusCode.INVALID_ARGUMENT and took < 2 and path in details,
               "%s %r in %.1f s" % (code, details, took))
        print("  %s: %s" % (name, details), flush=True)
    peak = r.peak_rss()
    expect("no load zero-filled what it declared", 0 < peak < (400 << 20), "%d MB" % (peak >> 20))
    expect("ServerLive answers after", hostile.live_within(r, 2))
    code, details = call_error(r.spi.loadModel, rt.LoadModelRequest(modelId="good",
                                                                     modelPath=s.model))
    expect("a real model still loads", code == grpc.StatusCode.OK, details)
    r.stop()


def legacy_models(s):
    """Legacy binary models that XGBoost writes are read (the checks do not refuse them)."""
    r = s.start()
    helper = os.path.join(work, "legacy")
    ok = subprocess.run([MAKE_BREAST_CANCER, helper], stdout=subprocess.DEVNULL).returncode == 0
    expect("the example model builds", ok)
    r.stop()


def no_traces(s):
    """XGBoost's errors reach the caller as their first line, without a stack trace or library
    addresses; the whole text goes to the log at debug level only, escaped."""
    r = s.start("--log-level", "debug")
    # well-formed, but no objective XGBoost knows (a message of many lines); a tree that
    # says it has 5 deleted nodes and has none (a short first line, then the stack trace)
    tree = struct.pack("<iiiiii", 1, 1, 5, 0, 30, 0) + b"\0" * 124 + b"\xff" * 12 + b"\0" * 24
    files = {"objective.bin": legacy_header(objective=b"no-such-objective") + b"\0" * 160,
             "deleted.bin": legacy_header() + struct.pack("<i", 1) + b"\0" * 156 + tree +
             b"\0" * 4}
    for name, data in files.items():
        junk = os.path.join(work, name)
        with open(junk, "wb") as f:
            f.write(data)
        code, details = call_error(r.spi.loadModel, rt.LoadModelRequest(modelId="j",
                                                                         modelPath=junk))
        expect("%s, which XGBoost refuses: INVALID_ARGUMENT naming the path" % name,
               code == grpc.StatusCode.INVALID_ARGUMENT and junk in details,
               "%s %r" % (code, details))
        expect("%s: no stack trace, library address or second line in the error" % name,
               "Stack trace" not in details and "[bt]" not in details and "0x" not in details
               and "\n" not in details and "\\x0a" not in details, repr(details))
        print("  XGBoost's error as passed on: %s" % details, flush=True)
    r.stop()
    err = r.stderr()
    expect("the log has XGBoost's whole message, escaped", "Stack trace" in err and
           "\\x0a" in err, err[-1500:])


def main():
    s = hostile.Suite(COMMAND, "xgboost", make_model(), ".json")
    hostile.run([
        ("stuck_load", lambda: hostile.stuck_load(s)),
        ("no_leaks", lambda: hostile.no_leaks(s)),
        ("bad_ids", lambda: hostile.bad_ids(s)),
        ("big_requests", lambda: hostile.big_requests(s, 400 << 20)),
        ("odd_files", lambda: hostile.odd_files(s)),
        ("corrupt_models", lambda: corrupt_models(s)),
        ("no_traces", lambda: no_traces(s)),
        ("outside_models_dir", lambda: hostile.outside_models_dir(s)),
    ])


if __name__ == "__main__":
    main()
