"""Hostile callers against the external port (8033) of mm-node and mm-gateway: the routing of
KServe V2 inference and the model API on one server (gateway/route.c, gateway/table.c). Each case
starts a real etcd, an mm-runtime beside an mm-node, and an mm-gateway, all on free loopback
ports with small limits set by flags, registers a model, attacks both external ports, checks
that both still serve a good request, and stops everything by pid (no sanitizer report in any
log). Clients are Debian's python3-grpcio and a few lines of raw HTTP/2. Exit 1 on any failure.
usage: gateway_hostile.py MM_NODE MM_GATEWAY MM_RUNTIME MAKE_BREAST_CANCER PROTO_DIR CASE"""
import importlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import grpc

import hostile
from hostile import call_error, expect, field, until, work

MM_NODE, MM_GATEWAY, MM_RUNTIME, MAKE_BREAST_CANCER, PROTO_DIR, CASE = sys.argv[1:7]
hostile.load_protos(PROTO_DIR)
pb, pbg = hostile.pb, hostile.pbg
mm = importlib.import_module("model_mesh_pb2")
mmg = importlib.import_module("model_mesh_pb2_grpc")

INFER = "/inference.GRPCInferenceService/ModelInfer"
MAX_MESSAGE = hostile.MAX_MESSAGE
MAX_STATUS = 512


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def child_env():
    env = dict(os.environ)
    if "ASAN_OPTIONS" in env:  # a small quarantine: memory checks count what ASan keeps
        env["ASAN_OPTIONS"] += ":quarantine_size_mb=8"
    return env


class Proc:
    """One server process, its stdout and stderr kept in a file; announce: wait for
    "LISTENING <port>" on stdout."""

    def __init__(self, name, argv, announce=True):
        self.name = name
        self.log_path = os.path.join(work, "%s-%d.log" % (name, time.monotonic_ns()))
        self.log = open(self.log_path, "w+b")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE if announce else self.log,
                                     stderr=self.log, stdin=subprocess.DEVNULL, env=child_env())
        self.port = 0
        self.rest_port = 0  # its "REST <port>" line, printed before LISTENING
        if not announce:
            return
        deadline = time.monotonic() + 40
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(b"REST "):
                    self.rest_port = int(line.split()[1])
                if not line or line.startswith(b"LISTENING "):
                    break
            elif self.proc.poll() is not None:
                break
        if not line.startswith(b"LISTENING "):
            self.stop(check=False)
            raise SystemExit("%s did not announce LISTENING: %s" % (name, self.text()[-3000:]))
        self.port = int(line.split()[1])

    def text(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def status(self, key):
        """A field of /proc/PID/status in kB (VmRSS, VmHWM), 0 if gone."""
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def sanitized(self):
        try:
            with open("/proc/%d/maps" % self.proc.pid) as f:
                return "libasan" in f.read()
        except OSError:
            return False

    def stop(self, check=True, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                if check:
                    expect("%s exits within %d s of SIGTERM" % (self.name, timeout), False)
        if check:
            text = self.text()
            expect("%s exits 0 at SIGTERM" % self.name, self.proc.returncode == 0,
                   "exit %s: %s" % (self.proc.returncode, text[-2000:]))
            expect("no sanitizer report from %s" % self.name,
                   "Sanitizer" not in text and "runtime error:" not in text, text[-4000:])


class Mesh:
    """etcd, mm-runtime + mm-node (instance n0), mm-gateway; the breast-cancer model registered
    and loaded as "bc"; node_flags / gateway_flags: each external port's limits."""

    def __init__(self, node_flags=(), gateway_flags=(), stuck=False):
        self.procs = []
        self.dir = os.path.join(work, "mesh")
        os.makedirs(self.dir)
        root = os.path.join(self.dir, "models")
        subprocess.run([MAKE_BREAST_CANCER, root], check=True, stdout=subprocess.DEVNULL)
        cache = os.path.join(self.dir, "cache")
        os.makedirs(cache)
        client, peer, metrics = free_port(), free_port(), free_port()
        self.etcd_url = "http://127.0.0.1:%d" % client
        self.etcd = Proc("etcd", [
            "etcd", "--name", "e0", "--data-dir", os.path.join(self.dir, "etcd"),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", "http://127.0.0.1:%d" % peer,
            "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
            "--initial-cluster", "e0=http://127.0.0.1:%d" % peer,
            "--listen-metrics-urls", "http://127.0.0.1:%d" % metrics,
            "--logger", "zap", "--log-level", "warn"], announce=False)
        self.procs.append(self.etcd)
        if not until(lambda: etcd_healthy(metrics), 15):
            self.close()
            raise SystemExit("etcd not healthy: %s" % self.etcd.text()[-2000:])
        self.runtime = Proc("mm-runtime", [MM_RUNTIME, "--listen", "127.0.0.1:0",
                                           "--models-dir", cache, "--models-dir", root,
                                           "--log-level", "info"])
        self.procs.append(self.runtime)
        self.node = Proc("mm-node", [
            MM_NODE, "--etcd-endpoints", self.etcd_url, "--cluster", "h", "--instance-id", "n0",
            "--runtime", "127.0.0.1:%d" % self.runtime.port, "--model-types", "xgboost",
            "--internal-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0",
            "--models-root", root, "--cache-dir", cache, "--lease-ttl", "5s",
            "--publish-min-interval", "100ms", "--shutdown-timeout", "5s",
            "--probe-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
            "--rest-listen", "127.0.0.1:0",
            "--log-level", "info"] + list(node_flags))
        self.procs.append(self.node)
        self.frozen = None
        if stuck:
            # a second pod serving type "slow" whose runtime is stopped (SIGSTOP) once its node
            # runs: a load there never ends (until --load-timeout), so calls for it park
            cache2 = os.path.join(self.dir, "cache2")
            os.makedirs(cache2)
            self.frozen = Proc("mm-runtime-2", [MM_RUNTIME, "--listen", "127.0.0.1:0",
                                                "--models-dir", cache2, "--models-dir", root,
                                                "--log-level", "info"])
            self.procs.append(self.frozen)
            self.procs.append(Proc("mm-node-2", [
                MM_NODE, "--etcd-endpoints", self.etcd_url, "--cluster", "h", "--instance-id",
                "n1", "--runtime", "127.0.0.1:%d" % self.frozen.port, "--model-types", "slow",
                "--internal-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0",
                "--models-root", root, "--cache-dir", cache2, "--lease-ttl", "5s",
                "--publish-min-interval", "100ms", "--shutdown-timeout", "5s",
                "--load-timeout", "60s", "--probe-listen", "127.0.0.1:0",
                "--metrics-listen", "127.0.0.1:0", "--rest-listen", "127.0.0.1:0",
                "--log-level", "info"]))
            self.frozen.proc.send_signal(signal.SIGSTOP)
        self.gateway = Proc("mm-gateway", [
            MM_GATEWAY, "--etcd-endpoints", self.etcd_url, "--cluster", "h", "--gateway-id",
            "gw0", "--listen", "127.0.0.1:0", "--probe-listen", "127.0.0.1:0",
            "--metrics-listen", "127.0.0.1:0", "--rest-listen", "127.0.0.1:0",
            "--log-level", "info"] + list(gateway_flags))
        self.procs.append(self.gateway)
        self.ports = {"node": self.node.port, "gateway": self.gateway.port}
        self.channels = []
        api = mmg.ModelMeshStub(self.channel("node"))
        try:
            api.registerModel(mm.RegisterModelRequest(
                modelId="bc", modelInfo=mm.ModelInfo(type="xgboost",
                                                     path="xgboost/breast-cancer.json"),
                loadNow=True, sync=True), timeout=30)
        except grpc.RpcError as e:
            self.close()
            raise SystemExit("registerModel bc: %s %s" % (e.code(), e.details()))
        if stuck:
            api.registerModel(mm.RegisterModelRequest(
                modelId="stuck", modelInfo=mm.ModelInfo(type="slow",
                                                        path="xgboost/breast-cancer.json")),
                timeout=10)
        self.good_request = good_infer_request()
        for where in self.ports:  # the gateway learns of the copy through its mirror
            until(lambda: self.infer_ok(where, timeout=2), 10)

    def channel(self, where, **kw):
        ch = grpc.insecure_channel("127.0.0.1:%d" % self.ports[where], options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.use_local_subchannel_pool", 1)], **kw)  # its own connection
        self.channels.append(ch)
        return ch

    def raw(self, where, method=INFER):
        return self.channel(where).unary_unary(method, request_serializer=None,
                                               response_deserializer=None)

    def infer_ok(self, where, timeout=10):
        """A fresh connection's good ModelInfer of bc is answered OK with its outputs."""
        ch = grpc.insecure_channel("127.0.0.1:%d" % self.ports[where])
        try:
            resp = pbg.GRPCInferenceServiceStub(ch).ModelInfer(self.good_request,
                                                               timeout=timeout)
            return resp.model_name == "bc" and len(resp.outputs) > 0
        except grpc.RpcError:
            return False
        finally:
            ch.close()

    def serves(self, what):
        for where in self.ports:
            expect("%s: the %s still serves a good request after it" % (what, where),
                   self.infer_ok(where))

    def close(self):
        for ch in self.channels:
            ch.close()
        if self.frozen:
            self.frozen.proc.send_signal(signal.SIGCONT)
        for p in reversed(self.procs):
            p.stop(check=p is not self.etcd)


def etcd_healthy(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return b'"health":"true"' in data
    except OSError:
        return False


def good_infer_request(name="bc"):
    req = pb.ModelInferRequest(model_name=name)
    t = req.inputs.add(name="input-0", datatype="FP32", shape=[1, 30])
    t.contents.fp32_contents.extend([1.0] * 30)
    return req


def clean(details):
    """A status message a client may print: bounded, no control characters."""
    return (len(details.encode()) <= MAX_STATUS and
            not any(ord(ch) < 32 or ord(ch) == 127 for ch in details))


def log_clean(mesh):
    for p in (mesh.node, mesh.gateway):
        text = p.text()
        bad = [ch for ch in text if ch not in "\n\t" and (ord(ch) < 32 or ord(ch) == 127)]
        expect("%s's log holds no raw control characters" % p.name, not bad,
               repr(bad[:5]))


# ------------------------------------------------------------------ raw HTTP/2

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def hpack_literal(name, value):
    """A header as a literal without indexing, new name, no Huffman coding; bytes as given."""
    name = name.encode() if isinstance(name, str) else name
    value = value.encode() if isinstance(value, str) else value
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


class H2Conn:
    """One HTTP/2 connection driven by hand: a thread reads the server's frames, answers
    SETTINGS and PING, and notes how each stream ended (its grpc-status when in plain text)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.lock = threading.Condition()
        self.ended = {}
        self.closed = False
        self.settled = False
        self.next_id = 1
        self.send_raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        self.frame(SETTINGS, 0, 0, b"")
        self.reader = threading.Thread(target=self.read_frames, daemon=True)
        self.reader.start()

    def send_raw(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def frame(self, kind, flags, stream, payload):
        self.send_raw(struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) +
                      struct.pack(">I", stream) + payload)

    def read_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def read_frames(self):
        try:
            self.sock.settimeout(None)
            while True:
                head = self.read_exact(9)
                length = int.from_bytes(head[0:3], "big")
                kind, flags = head[3], head[4]
                stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                payload = self.read_exact(length)
                with self.lock:
                    if kind == SETTINGS and not flags & ACK:
                        self.frame(SETTINGS, ACK, 0, b"")
                        self.settled = True
                    elif kind == PING and not flags & ACK:
                        self.frame(PING, ACK, 0, payload)
                    elif kind == RST_STREAM:
                        self.ended[stream] = "rst:%d" % struct.unpack(">I", payload)[0]
                    elif kind == HEADERS and flags & END_STREAM:
                        self.ended[stream] = "headers"
                    elif kind == GOAWAY:
                        pass
                    self.lock.notify_all()
        except (EOFError, OSError):
            pass
        with self.lock:
            self.closed = True
            self.lock.notify_all()

    def open_stream(self, path=INFER, extra=()):
        with self.lock:
            sid = self.next_id
            self.next_id += 2
            block = b"".join(hpack_literal(k, v) for k, v in (
                (":method", "POST"), (":scheme", "http"), (":path", path),
                (":authority", "localhost"), ("content-type", "application/grpc"),
                ("te", "trailers")) + tuple(extra))
            self.frame(HEADERS, END_HEADERS, sid, block)
        return sid

    def send_message(self, sid, data, end=True):
        """Data within the initial windows on sid, in frames of at most 16 KiB."""
        with self.lock:
            for i in range(0, max(len(data), 1), 16384):
                last = end and i + 16384 >= len(data)
                self.frame(DATA, END_STREAM if last else 0, sid, data[i:i + 16384])

    def wait_settled(self, seconds=5):
        end = time.monotonic() + seconds
        with self.lock:
            while not self.settled and not self.closed and time.monotonic() < end:
                self.lock.wait(0.2)
            return self.settled

    def wait_ended(self, sid, seconds):
        end = time.monotonic() + seconds
        with self.lock:
            while sid not in self.ended and not self.closed and time.monotonic() < end:
                self.lock.wait(0.2)
            return self.ended.get(sid) or ("closed" if self.closed else None)

    def reset(self):
        """Vanish: close with a TCP reset (the reader thread's recv holds the socket open until
        it returns, so it is woken first)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        self.reader.join(5)
        self.sock.close()


def grpc_message(data, compressed=False):
    return struct.pack(">BI", 1 if compressed else 0, len(data)) + data


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def count_sockets(pid):
    n = 0
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                n += os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:")
            except OSError:
                pass
    except OSError:
        pass
    return n


# ------------------------------------------------------------------ cases


def malformed():
    """Malformed ModelInfer bytes on the external port: a clean INVALID_ARGUMENT or NOT_FOUND
    naming what was wrong (RESOURCE_EXHAUSTED for a message over 16 MiB), a bounded message
    without control characters, never a crash."""
    m = Mesh()
    body = good_infer_request().SerializeToString()[len(field(1, 2, b"bc")):]
    cases = (
        ("an empty request", b"", (grpc.StatusCode.INVALID_ARGUMENT,), "model_name is required"),
        ("a truncated varint tag", b"\x8a", (grpc.StatusCode.INVALID_ARGUMENT,), "malformed"),
        ("a truncated length", b"\x0a\xff\xff", (grpc.StatusCode.INVALID_ARGUMENT,),
         "malformed"),
        ("an 11-byte varint", b"\x08" + b"\xff" * 10 + b"\x01",
         (grpc.StatusCode.INVALID_ARGUMENT,), "malformed"),
        ("model_name as a varint", b"\x08\x05" + body, (grpc.StatusCode.INVALID_ARGUMENT,),
         ""),
        ("model_name as a fixed64", b"\x09" + b"\0" * 8 + body,
         (grpc.StatusCode.INVALID_ARGUMENT,), ""),
        ("wire type 7", b"\x0f" + body, (grpc.StatusCode.INVALID_ARGUMENT,), "malformed"),
        ("field 1 with a 2 GiB length", b"\x0a" + varint(2 << 30) + b"bc",
         (grpc.StatusCode.INVALID_ARGUMENT,), "malformed"),
        ("field 1 with a 2^63 length", b"\x0a" + varint(1 << 63) + b"bc",
         (grpc.StatusCode.INVALID_ARGUMENT,), "malformed"),
        ("field 0", b"\x02\x02bc" + field(1, 2, b"bc") + body,
         (grpc.StatusCode.INVALID_ARGUMENT,), "malformed"),
        ("a NUL in model_name", field(1, 2, b"b\0c") + body, (grpc.StatusCode.NOT_FOUND,),
         "not found"),
        ("invalid UTF-8 in model_name", field(1, 2, b"bc\xff\xfe") + body,
         (grpc.StatusCode.NOT_FOUND,), "not found"),
        ("control characters in model_name", field(1, 2, b"bc\x1b[31m\nFORGED") + body,
         (grpc.StatusCode.NOT_FOUND,), "not found"),
        ("a 10 KB model_name", field(1, 2, b"y" * 10000) + body, (grpc.StatusCode.NOT_FOUND,),
         "not found"),
        ("a 254-byte model_name", field(1, 2, b"y" * 254) + body, (grpc.StatusCode.NOT_FOUND,),
         "not found"),
        ("a model_name with a slash", field(1, 2, b"../bc") + body,
         (grpc.StatusCode.NOT_FOUND,), "not found"),
        ("an unknown model", field(1, 2, b"nosuch") + body, (grpc.StatusCode.NOT_FOUND,),
         "nosuch"),
        ("a 16 MiB + 1 message", field(1, 2, b"bc") + field(15, 2, b"\0" * (MAX_MESSAGE - 8)),
         (grpc.StatusCode.RESOURCE_EXHAUSTED,), ""),
    )
    assert len(cases[-1][1]) == MAX_MESSAGE + 1
    for where in ("node", "gateway"):
        infer = m.raw(where)
        for what, data, codes, words in cases:
            code, details = call_error(infer, data, timeout=20)
            expect("%s: %s is refused %s" % (where, what, "/".join(c.name for c in codes)),
                   code in codes and words in details and clean(details),
                   "%s %r" % (code, details[:600]))
        # the other methods that read field 1
        for method in ("ModelMetadata", "ModelReady"):
            raw = m.raw(where, "/inference.GRPCInferenceService/" + method)
            for what, data, want in (("a truncated length", b"\x0a\xff",
                                      grpc.StatusCode.INVALID_ARGUMENT),
                                     ("a NUL in name", field(1, 2, b"b\0c"),
                                      grpc.StatusCode.NOT_FOUND)):
                code, details = call_error(raw, data)
                expect("%s: %s %s is refused %s" % (where, method, what, want.name),
                       code == want and clean(details), "%s %r" % (code, details))
        expect("%s: alive after the malformed requests" % where, m.infer_ok(where))
    # a model_name that is fine but the rest of the request malformed reaches the runtime,
    # which refuses it itself (the bytes are forwarded untouched)
    for where in ("node", "gateway"):
        code, details = call_error(m.raw(where), field(1, 2, b"bc") + b"\x2a\xff\xff")
        expect("%s: a good name and malformed tensors: the runtime's INVALID_ARGUMENT" % where,
               code == grpc.StatusCode.INVALID_ARGUMENT and clean(details),
               "%s %r" % (code, details))
    m.serves("malformed requests")
    m.close()
    log_clean(m)


def headers():
    """Hostile mm-model-id / mm-vmodel-id (-bin) headers: bad base64, NUL, 10 KB, control
    characters: NOT_FOUND (or the call refused by gRPC) with a clean message, nothing raw in
    the logs; a good header still routes."""
    m = Mesh()
    req = good_infer_request("ignored").SerializeToString()
    for where in ("node", "gateway"):
        infer = m.raw(where)
        for key in ("mm-model-id", "mm-vmodel-id"):
            try:
                resp = infer.with_call(req, metadata=((key, "bc"),), timeout=10)[0]
                ok = pb.ModelInferResponse.FromString(resp).model_name == "bc"
            except grpc.RpcError as e:
                ok = False
                print("  %s %s" % (e.code(), e.details()))
            expect("%s: %s: bc routes" % (where, key), ok)
            # headers over 8 KiB (gRPC's limit): RESOURCE_EXHAUSTED, and gRPC 1.51 may close
            # the connection, so each hostile call has its own
            for what, value, want in (
                    ("a 10 KB value", "y" * 10000, (grpc.StatusCode.RESOURCE_EXHAUSTED,)),
                    ("a value with a slash", "a/b", (grpc.StatusCode.NOT_FOUND,)),
                    ("an unknown model", "nosuch", (grpc.StatusCode.NOT_FOUND,))):
                code, details = grpc.StatusCode.OK, ""
                try:
                    m.raw(where)(req, metadata=((key, value),), timeout=10)
                except grpc.RpcError as e:
                    code, details = e.code(), e.details() or ""
                expect("%s: %s: %s is refused %s" % (where, key, what, want[0].name),
                       code in want and clean(details), "%s %r" % (code, details[:600]))
            for what, value in (("a NUL", b"b\0c"), ("an escape and a newline",
                                                      b"bc\x1b[31m\nFORGED\x07"),
                                ("invalid UTF-8", b"bc\xff\xfe"), ("10 KB", b"z" * 10000),
                                ("an empty value", b"")):
                code, details = grpc.StatusCode.OK, ""
                try:
                    m.raw(where)(field(1, 2, b"nosuch"), metadata=((key + "-bin", value),),
                                 timeout=10)
                except grpc.RpcError as e:
                    code, details = e.code(), e.details() or ""
                # an empty -bin value names nothing: field 1 ("nosuch") does
                want = grpc.StatusCode.RESOURCE_EXHAUSTED if len(value) > 8192 else \
                    grpc.StatusCode.NOT_FOUND
                expect("%s: %s-bin with %s: %s, clean" % (where, key, what, want.name),
                       code == want and clean(details),
                       "%s %r" % (code, details[:600]))
        # raw HTTP/2: what grpcio will not send (control characters in a text header, bad
        # base64 in a -bin one, a header of 10 KB)
        c = H2Conn(m.ports[where])
        msg = grpc_message(good_infer_request("nosuch").SerializeToString())
        sids = []
        for key, value in (("mm-model-id", b"bc\x1b[31m\nFORGED\x07"),
                           ("mm-vmodel-id", b"\x00bc"),
                           ("mm-model-id-bin", b"!!not base64!!"),
                           ("mm-model-id-bin", b"YmM=YmM="),
                           ("mm-vmodel-id-bin", b"Y" * 10001),
                           ("mm-model-id", b"\x7f\x80\xff")):
            sid = c.open_stream(INFER, ((key, value),))
            c.send_message(sid, msg)
            sids.append((key, value, sid))
        for key, value, sid in sids:
            ended = c.wait_ended(sid, 10)
            expect("%s: raw %s %r is answered (or the stream reset), not held" %
                   (where, key, value[:20]), ended is not None, str(ended))
        c.reset()
        expect("%s: alive after the hostile headers" % where, m.infer_ok(where))
    m.serves("hostile headers")
    m.close()
    log_clean(m)
    for p in (m.node, m.gateway):
        text = p.text()
        expect("%s: no forged line in the log" % p.name, "\nFORGED" not in text)


KILLED_CLIENT = """
import sys, time, grpc
ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[1])
infer = ch.unary_unary("%s", request_serializer=None, response_deserializer=None)
calls = [infer.future(bytes.fromhex(sys.argv[2]), timeout=50) for _ in range(8)]
time.sleep(2)
print(sum(f.done() for f in calls), flush=True)
time.sleep(60)
""" % INFER


def parked():
    """--max-parked 8: calls for a model whose load never ends park up to the bound; more are
    refused UNAVAILABLE at once, naming the bound, memory bounded; parked clients that vanish
    (connections reset) are released: the bound is reached again by new calls, which park (and
    end at their deadline) instead of being refused. Good requests are served throughout."""
    m = Mesh(node_flags=("--max-parked", "8"),
             gateway_flags=("--max-parked", "8"), stuck=True)
    stuck = good_infer_request("stuck").SerializeToString()
    for where in ("gateway", "node"):
        proc = m.gateway if where == "gateway" else m.node
        conns = [H2Conn(m.ports[where]) for _ in range(2)]
        held = []
        for i in range(8):
            c = conns[i % 2]
            sid = c.open_stream(INFER, (("grpc-timeout", "50S"),))
            c.send_message(sid, grpc_message(stuck))
            held.append((c, sid))
        time.sleep(1.0)
        expect("%s: 8 calls park (none answered)" % where,
               all(c.wait_ended(sid, 0.01) is None for c, sid in held),
               str([c.ended.get(sid) for c, sid in held]))
        infer = m.raw(where)
        t0 = time.monotonic()
        code, details = call_error(infer, stuck, timeout=10)
        took = time.monotonic() - t0
        expect("%s: the 9th is refused UNAVAILABLE at once, naming the bound" % where,
               code == grpc.StatusCode.UNAVAILABLE and "8 requests wait" in details and
               took < 3 and clean(details), "%s %r in %.1f s" % (code, details, took))
        rss0 = proc.status("VmRSS")
        flood = [infer.future(stuck, timeout=20) for _ in range(400)]
        codes = {}
        for f in flood:
            try:
                f.result()
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
            codes[code] = codes.get(code, 0) + 1
        rss1 = proc.status("VmRSS")
        expect("%s: a flood of 400 more is refused UNAVAILABLE" % where,
               codes == {grpc.StatusCode.UNAVAILABLE: 400}, str(codes))
        bound = 64 << 10 if proc.sanitized() else 16 << 10
        expect("%s: memory bounded under the flood (< %d MiB more)" % (where, bound >> 10),
               rss1 - rss0 < bound, "VmRSS %d -> %d kB" % (rss0, rss1))
        expect("%s: a good request is served while 8 wait" % where, m.infer_ok(where))
        # the parked clients vanish
        for c in conns:
            c.reset()
        t0 = time.monotonic()
        released = until(lambda: call_error(infer, stuck, timeout=0.5)[0] ==
                         grpc.StatusCode.DEADLINE_EXCEEDED, 10)
        expect("%s: vanished parked clients are released within 5 s" % where,
               released and time.monotonic() - t0 < 5,
               "%s after %.1f s" % (released, time.monotonic() - t0))
        late = [infer.future(stuck, timeout=2) for _ in range(8)]
        codes = {}
        for f in late:
            try:
                f.result()
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
            codes[code] = codes.get(code, 0) + 1
        expect("%s: vanished clients are released: 8 new calls park up to their deadline" %
               where, codes == {grpc.StatusCode.DEADLINE_EXCEEDED: 8}, str(codes))
        code, details = call_error(infer, stuck, timeout=1)
        expect("%s: and the count is back to zero after them" % where,
               code == grpc.StatusCode.DEADLINE_EXCEEDED, "%s %r" % (code, details))
        # a grpcio client process killed while its 8 calls are parked
        client = subprocess.Popen(["/usr/bin/python3", "-c", KILLED_CLIENT, str(m.ports[where]),
                                   stuck.hex()], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        ready, _, _ = select.select([client.stdout], [], [], 20)
        done = client.stdout.readline().strip() if ready else b"(nothing)"
        code, details = call_error(infer, stuck, timeout=2)
        expect("%s: a client process parks 8 calls (and no more are taken)" % where,
               done == b"0" and code == grpc.StatusCode.UNAVAILABLE,
               "%s answered, then %s %r" % (done, code, details))
        client.kill()
        client.wait()
        t0 = time.monotonic()
        released = until(lambda: call_error(infer, stuck, timeout=0.5)[0] ==
                         grpc.StatusCode.DEADLINE_EXCEEDED, 10)
        expect("%s: the killed client's parked calls are released within 5 s" % where,
               released and time.monotonic() - t0 < 5,
               "%s after %.1f s" % (released, time.monotonic() - t0))
    m.serves("parked calls")
    m.close()


def halfsent():
    """A message that stops halfway on the fast path (the model Loaded, the name in a header)
    and on the slow path is ended at --message-timeout-ms; the ports serve meanwhile."""
    m = Mesh(node_flags=("--message-timeout-ms", "2000"),
             gateway_flags=("--message-timeout-ms", "2000"))
    for where in ("node", "gateway"):
        c = H2Conn(m.ports[where])
        sids = []
        t0 = time.monotonic()
        for extra in ((("mm-model-id", "bc"),), (("mm-model-id", "unknown"),), ()):
            sid = c.open_stream(INFER, extra)
            c.send_message(sid, struct.pack(">BI", 0, 60000) + b"\x0a\x02bc" + b"\0" * 20000,
                           end=False)
            sids.append(sid)
        expect("%s: served while messages stall" % where, m.infer_ok(where))
        ended = [c.wait_ended(sid, 10) for sid in sids]
        took = time.monotonic() - t0
        expect("%s: the stalled messages are ended at the timeout (2 s)" % where,
               all(e not in (None, "closed") for e in ended) and 1.5 < took < 6,
               "%s after %.1f s" % (ended, took))
        c.reset()
        # a message that never comes, from grpcio: DEADLINE_EXCEEDED saying so
        never = threading.Event()

        def nothing():
            never.wait(20)
            yield b""

        method = m.channel(where).stream_unary(INFER, request_serializer=None,
                                               response_deserializer=None)
        t0 = time.monotonic()
        try:
            method(nothing(), metadata=(("mm-model-id", "bc"),), timeout=15)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
        took = time.monotonic() - t0
        never.set()
        expect("%s: a message that never comes: DEADLINE_EXCEEDED at the timeout" % where,
               code == grpc.StatusCode.DEADLINE_EXCEEDED and "2000 ms" in details and
               1.5 < took < 6, "%s %r after %.1f s" % (code, details, took))
    m.serves("half-sent messages")
    m.close()


def gzip():
    """Compressed requests are refused UNIMPLEMENTED before they are inflated (identity only),
    on the fast path (a Loaded model) and the slow one."""
    m = Mesh()
    size = 96 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    bomb = b"".join([comp.compress(b"\x0a" + varint(size))] +
                    [comp.compress(chunk) for _ in range(size >> 20)] + [comp.flush()])
    small = zlib.compress(good_infer_request().SerializeToString())
    for where in ("node", "gateway"):
        proc = m.node if where == "node" else m.gateway
        ch = m.channel(where, compression=grpc.Compression.Gzip)
        infer = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        for what, md in (("by model_name", ()), ("by mm-model-id", (("mm-model-id", "bc"),))):
            try:
                infer(good_infer_request().SerializeToString(), metadata=md, timeout=10)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
            expect("%s: a gzip request %s is refused UNIMPLEMENTED" % (where, what),
                   code == grpc.StatusCode.UNIMPLEMENTED and clean(details),
                   "%s %r" % (code, details))
        before = proc.status("VmHWM")
        c = H2Conn(m.ports[where])
        sids = []
        for extra in ((), (("mm-model-id", "bc"),)):
            sid = c.open_stream(INFER, (("grpc-encoding", "gzip"),) + extra)
            sids.append(sid)
        # the bomb is ~100 KB: more than a window; send what the windows let through
        for sid in sids:
            c.send_message(sid, grpc_message(bomb, True)[:16000], end=False)
        sid = c.open_stream(INFER, (("grpc-encoding", "deflate"),))
        c.send_message(sid, grpc_message(small, True))
        sids.append(sid)
        ended = [c.wait_ended(s, 10) for s in sids]
        c.reset()
        after = proc.status("VmHWM")
        expect("%s: raw compressed streams are answered" % where,
               all(e not in (None,) for e in ended), str(ended))
        expect("%s: peak memory did not grow by the bomb" % where, after - before < 32 << 10,
               "VmHWM %d -> %d kB" % (before, after))
    m.serves("compressed requests")
    m.close()


def streams():
    """More streams than --max-streams on one connection are refused; a client that queues its
    calls gets them all answered."""
    m = Mesh(node_flags=("--max-streams", "4"), gateway_flags=("--max-streams", "4"))
    msg = grpc_message(good_infer_request().SerializeToString())
    for where in ("node", "gateway"):
        c = H2Conn(m.ports[where])
        c.wait_settled()
        time.sleep(0.2)
        sids = [c.open_stream("/inference.GRPCInferenceService/ServerLive") for _ in range(10)]
        extra = [c.wait_ended(sid, 1.5) for sid in sids[4:]]
        expect("%s: streams 5 to 10 at --max-streams 4 are refused" % where,
               all(e in ("rst:7", "closed") for e in extra), str(extra))
        c.reset()
        ch = m.channel(where)
        stub = pbg.GRPCInferenceServiceStub(ch)
        calls = [stub.ModelInfer.future(good_infer_request(), timeout=20) for _ in range(40)]
        answered = sum(1 for f in calls if f.exception() is None)
        expect("%s: 40 inferences at once on one connection all complete" % where,
               answered == 40, "%d of 40" % answered)
        # streams that stall their message hold no slot past the message timeout
        c = H2Conn(m.ports[where])
        c.wait_settled()
        held = [c.open_stream(INFER) for _ in range(4)]
        for sid in held:
            c.send_message(sid, msg[:10], end=False)
        expect("%s: another connection is served while one holds its 4 streams" % where,
               m.infer_ok(where))
        c.reset()
    m.serves("streams")
    m.close()


def connections():
    """More connections than --max-connections wait in the backlog; silent ones are closed
    after --connection-idle-ms; once they go, clients are served."""
    m = Mesh(node_flags=("--max-connections", "4", "--connection-idle-ms", "1500"),
             gateway_flags=("--max-connections", "4", "--connection-idle-ms", "1500"))
    for where in ("node", "gateway"):
        proc = m.node if where == "node" else m.gateway
        base = count_sockets(proc.proc.pid)
        held = [socket.create_connection(("127.0.0.1", m.ports[where]), timeout=5)
                for _ in range(10)]
        time.sleep(1.0)
        socks = count_sockets(proc.proc.pid)
        expect("%s: 10 clients hold at most 4 accepted sockets" % where, socks - base <= 4,
               "%d sockets, %d before" % (socks, base))
        t0 = time.monotonic()
        served = until(lambda: m.infer_ok(where, timeout=1), 20)
        expect("%s: silent connections are closed at the idle time and a client is served" %
               where, served, "after %.1f s" % (time.monotonic() - t0))
        for s in held:
            s.close()
        expect("%s: and once they close, at once" % where, m.infer_ok(where, timeout=5))
    m.serves("connections")
    m.close()


def hop():
    """mm-hop from a client on the external port: served from the node's own copy or not at
    all (UNAVAILABLE, never parked, never forwarded: the gateway holds nothing); a model that
    is not loaded is not loaded for it."""
    m = Mesh(stuck=True)
    req = good_infer_request().SerializeToString()
    infer = m.raw("node")
    try:
        resp = infer(req, metadata=(("mm-hop", "1"),), timeout=10)
        ok = pb.ModelInferResponse.FromString(resp).model_name == "bc"
    except grpc.RpcError as e:
        ok = False
        print("  %s %s" % (e.code(), e.details()))
    expect("node: mm-hop for its own Loaded copy is served", ok)
    for where, name in (("gateway", "bc"), ("gateway", "stuck"), ("node", "stuck"),
                        ("gateway", "nosuch")):
        t0 = time.monotonic()
        details = ""
        try:
            m.raw(where)(good_infer_request(name).SerializeToString(),
                         metadata=(("mm-hop", "1"),), timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
        took = time.monotonic() - t0
        expect("%s: mm-hop for %s: UNAVAILABLE at once, not forwarded or parked" %
               (where, name), code == grpc.StatusCode.UNAVAILABLE and took < 3 and
               "not loaded on instance" in details, "%s %r %.1f s" % (code, details, took))
    for value in ("0", "", "x" * 5000):
        code, details = grpc.StatusCode.OK, ""
        try:
            m.raw("gateway")(req, metadata=(("mm-hop", value),), timeout=10)
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
        expect("gateway: mm-hop %r is a hop too" % value[:10],
               code == grpc.StatusCode.UNAVAILABLE, "%s %r" % (code, details))
    api = mmg.ModelMeshStub(m.channel("node"))
    st = api.getModelStatus(mm.GetStatusRequest(modelId="stuck"), timeout=10)
    expect("a hop did not load the stuck model", st.status == mm.ModelStatusInfo.NOT_LOADED,
           str(st.status))
    m.serves("mm-hop")
    m.close()


def modelapi():
    """The model API on the external port with oversized or invalid fields: INVALID_ARGUMENT
    naming the field, clean messages; nothing is registered; good calls still work."""
    m = Mesh()
    big = "x" * 100000
    for where in ("node", "gateway"):
        api = mmg.ModelMeshStub(m.channel(where))
        reg = api.registerModel
        info = mm.ModelInfo(type="xgboost", path="xgboost/breast-cancer.json")
        cases = (
            ("registerModel with a 10 KB modelId", reg,
             mm.RegisterModelRequest(modelId="y" * 10000, modelInfo=info), "modelId"),
            ("registerModel with a modelId with a slash", reg,
             mm.RegisterModelRequest(modelId="a/b", modelInfo=info), "modelId"),
            ("registerModel with control characters", reg,
             mm.RegisterModelRequest(modelId="a\x1b[31m\nb", modelInfo=info), "modelId"),
            ("registerModel with a 100 KB path", reg,
             mm.RegisterModelRequest(modelId="p", modelInfo=mm.ModelInfo(type="xgboost",
                                                                          path=big)), "path"),
            ("registerModel with a 100 KB type", reg,
             mm.RegisterModelRequest(modelId="p", modelInfo=mm.ModelInfo(type=big, path="x")),
             "type"),
            ("registerModel without modelInfo", reg, mm.RegisterModelRequest(modelId="p"),
             "modelInfo"),
            ("registerModel with an empty modelId", reg,
             mm.RegisterModelRequest(modelInfo=info), "modelId"),
            ("getModelStatus of a 10 KB id", api.getModelStatus,
             mm.GetStatusRequest(modelId="y" * 10000), "modelId"),
            ("ensureLoaded of a 10 KB id", api.ensureLoaded,
             mm.EnsureLoadedRequest(modelId="y" * 10000), "modelId"),
            ("unregisterModel of an id with a NUL", api.unregisterModel,
             mm.UnregisterModelRequest(modelId="b\0c"), "modelId"),
            ("setVModel with a 10 KB vModelId", api.setVModel,
             mm.SetVModelRequest(vModelId="v" * 10000, targetModelId="bc"), "vModelId"),
            ("setVModel with a 10 KB owner", api.setVModel,
             mm.SetVModelRequest(vModelId="v", targetModelId="bc", owner=big), "owner"),
            ("getVModelStatus of a vModelId with a NUL", api.getVModelStatus,
             mm.GetVModelStatusRequest(vModelId="v\0w"), "vModelId"),
        )
        for what, fn, req, words in cases:
            code, details = call_error(fn, req)
            ok = code == grpc.StatusCode.INVALID_ARGUMENT and words in details
            if where == "gateway" and code == grpc.StatusCode.UNIMPLEMENTED and "vmodel" in \
                    details.lower():
                ok = True  # a gateway that keeps no vmodels says so
            expect("%s: %s: INVALID_ARGUMENT naming %s" % (where, what, words),
                   ok and clean(details), "%s %r" % (code, details[:600]))
        raw = m.channel(where).unary_unary("/mmesh.ModelMesh/registerModel",
                                           request_serializer=None, response_deserializer=None)
        for what, data in (
                ("invalid UTF-8 in modelId", field(1, 2, b"a\xff") +
                 field(2, 2, field(1, 2, b"xgboost") + field(2, 2, b"p"))),
                ("a truncated message", b"\x0a\xff\xff"),
                ("70 modelIds", field(1, 2, b"a") * 70),
                ("16 MiB of unknown fields", field(15, 0, value=0) * ((MAX_MESSAGE - 64) // 2)),
                ("a 16 MiB path", field(1, 2, b"q") +
                 field(2, 2, field(1, 2, b"xgboost") + field(2, 2, b"p" * (MAX_MESSAGE - 64))))):
            code, details = call_error(raw, data, timeout=30)
            expect("%s: registerModel with %s: INVALID_ARGUMENT" % (where, what),
                   code == grpc.StatusCode.INVALID_ARGUMENT and clean(details),
                   "%s %r" % (code, details[:600]))
        st = api.getModelStatus(mm.GetStatusRequest(modelId="p"), timeout=10)
        expect("%s: nothing was registered as p" % where,
               st.status == mm.ModelStatusInfo.NOT_FOUND, str(st.status))
        st = api.getModelStatus(mm.GetStatusRequest(modelId="bc"), timeout=10)
        expect("%s: getModelStatus of bc answers LOADED" % where,
               st.status == mm.ModelStatusInfo.LOADED, str(st.status))
    m.serves("model API abuse")
    m.close()
    log_clean(m)


def http(port, data, read_s=10):
    """Send raw bytes to 127.0.0.1:port; (status or 0, the whole answer) once the server has
    answered and closed, or after read_s."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_s) as c:
        try:
            c.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out and b"Content-Length: " in out:
                    head, _, body = out.partition(b"\r\n\r\n")
                    n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    if len(body) >= n:
                        break
        except OSError:
            pass
    status = int(out.split(b" ")[1]) if out.startswith(b"HTTP/1.1 ") else 0
    return status, out


def post(path, body, extra=b""):
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%sContent-Length: %d\r\n\r\n"
            % (path, extra, len(body)) + body)


def rest():
    """KServe V2 REST (--rest-listen) of mm-node and mm-gateway: garbage, huge headers, long and
    odd model names, deeply nested and huge JSON, 200 stalled connections, parked REST requests
    up to --max-parked (then 503 naming the bound); the gateway stopped while 8 REST requests
    are parked answers each 503 and exits 0. A good REST request is served throughout."""
    m = Mesh(node_flags=("--max-parked", "8"), gateway_flags=("--max-parked", "8"), stuck=True)
    good = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 30],
                                   "data": [1.0] * 30}]}).encode()

    def good_ok(port):
        st, out = http(port, post(b"/v2/models/bc/infer", good))
        return st == 200 and b'"model_name":"bc"' in out

    procs = {"node": m.node, "gateway": m.gateway}
    for where, proc in procs.items():
        port = proc.rest_port
        expect("%s: REST port announced and serving" % where, port > 0 and good_ok(port))
        st, out = http(port, b"\x16\x03\x01garbage\r\n\r\n")
        expect("%s: garbage: 400 or closed" % where, st in (0, 400), out[:200])
        st, out = http(port, b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 +
                       b"\r\n\r\n")
        expect("%s: 64 KiB of headers: 431 or closed" % where, st in (0, 431), out[:200])
        st, out = http(port, post(b"/v2/models/" + b"n" * 300 + b"/infer", good))
        expect("%s: a 300-byte model name: 404" % where, st == 404 and b'"error"' in out,
               out[:300])
        for name in (b"%00", b"a%0Ab", b"%FF%FE", b"..", b"a%2Fb"):
            st, out = http(port, post(b"/v2/models/" + name + b"/infer", good))
            expect("%s: model name %r: 404 (or 400), JSON error" % (where, name),
                   st in (400, 404) and b'{"error":' in out, out[:300])
        st, out = http(port, post(b"/v2/models/bc/infer", b"[" * 200000))
        expect("%s: JSON nested 200,000 deep: 400" % where, st == 400, out[:300])
        huge = b'{"inputs":[{"name":"input-0","datatype":"FP32","shape":[1,4000000],"data":[' + \
            b",".join([b"1"] * 4000000) + b"]}]}"
        rss0 = proc.status("VmRSS")
        st, out = http(port, post(b"/v2/models/bc/infer", huge), read_s=60)
        expect("%s: 4,000,000 values (8 MiB of JSON) refused before the parse: 413 naming "
               "the bound" % where, st == 413 and b"more than 1048576 JSON values" in out,
               out[:300])
        rss1 = proc.status("VmRSS")
        bound = 96 << 10 if proc.sanitized() else 48 << 10  # the body held, nothing parsed
        expect("%s: memory after it bounded (< %d MiB more)" % (where, bound >> 10),
               rss1 - rss0 < bound, "VmRSS %d -> %d kB" % (rss0, rss1))
        stalled = []
        for _ in range(200):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.sendall(b"POST /v2/models/bc/infer HTTP/1.1\r\nHost: x\r\nContent-Le")
            stalled.append(c)
        expect("%s: 200 stalled connections: a good request is served" % where, good_ok(port))
        for c in stalled:
            c.close()
        # a client that sends a request and more behind it (a pipelined one), then closes: its
        # slot is freed too (the 8 below would find one taken for 120 s)
        c = socket.create_connection(("127.0.0.1", port), timeout=30)
        piped = post(b"/v2/models/stuck/infer", good).replace(b"Connection: close",
                                                              b"Connection: keep-alive")
        c.sendall(piped)
        time.sleep(0.3)  # parked: the server reads no more of this connection meanwhile
        c.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        early, _, _ = select.select([c], [], [], 0)
        expect("%s: a request with another pipelined behind it waits (not cancelled)" % where,
               not early, repr(c.recv(200) if early else b""))
        c.close()

        def park(n):
            socks = []
            for _ in range(n):
                c = socket.create_connection(("127.0.0.1", port), timeout=30)
                c.sendall(post(b"/v2/models/stuck/infer", good))
                socks.append(c)
            return socks

        def park_within(n, seconds):
            """n requests that all wait (a refusal comes at once), tried again for up to
            seconds while slots are still being freed; then none answered in 1.5 s more."""
            deadline = time.time() + seconds
            while True:
                socks = park(n)
                refused, _, _ = select.select(socks, [], [], 0.3)
                if not refused or time.time() >= deadline:
                    break
                for c in socks:
                    c.close()
            answered, _, _ = select.select(socks, [], [], 1.5)
            return socks, [c.recv(200) for c in answered]

        # parked: 8 REST requests for the model whose load never ends (the pipelined client's
        # slot free within 5 s), then the 9th refused
        parked, early = park_within(8, 5.0)
        expect("%s: the pipelined client's slot freed: 8 requests wait" % where, not early,
               repr(early))
        st, out = http(port, post(b"/v2/models/stuck/infer", good))
        expect("%s: the 9th parked REST request: 503 naming the bound" % where,
               st == 503 and b"8 requests wait" in out, out[:300])
        expect("%s: a good request is served while 8 wait" % where, good_ok(port))
        # the 8 clients go away: their slots are free again at once (not at the answer or the
        # 120 s timeout): 8 new requests wait, the 9th is refused
        for c in parked:
            c.close()
        parked, early = park_within(8, 0.5)
        expect("%s: 8 clients gone while parked: 8 new requests take their slots" % where,
               not early, repr(early))
        st, out = http(port, post(b"/v2/models/stuck/infer", good))
        expect("%s: ... and the 9th is refused again: 503 naming the bound" % where,
               st == 503 and b"8 requests wait" in out, out[:300])
        if where == "gateway":  # stopped with 8 parked: each answered 503, exit 0
            proc.proc.send_signal(signal.SIGTERM)
            answers = []
            for c in parked:
                data = b""
                try:
                    while True:
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
                answers.append(data)
            good_stops = sum(1 for a in answers if a.startswith(b"HTTP/1.1 503") or
                             a.startswith(b"HTTP/1.1 504"))
            expect("gateway stopped with 8 parked REST requests: each answered 503",
                   good_stops == 8, repr([a[:80] for a in answers]))
            try:
                proc.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
            m.procs.remove(proc)
            proc.stop()  # exit 0, no sanitizer report
            del m.ports["gateway"]
        for c in parked:
            c.close()
    m.serves("REST abuse")
    m.close()
    log_clean(m)


CASES = {"rest": rest, "malformed": malformed, "headers": headers, "parked": parked, "halfsent": halfsent,
         "gzip": gzip, "streams": streams, "connections": connections, "hop": hop,
         "modelapi": modelapi}

try:
    print("== %s" % CASE, flush=True)
    t0 = time.monotonic()
    CASES[CASE]()
    print("%s: %.1f s" % (CASE, time.monotonic() - t0), flush=True)
finally:
    shutil.rmtree(work, ignore_errors=True)
print("%d checks, %d failed" % (hostile.checks, len(hostile.failures)))
sys.exit(1 if hostile.failures else 0)
