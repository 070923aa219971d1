"""Hostile and careless callers against the gRPC server layer (rpc/rpc.c), through the mm-runtime
process that is built on it: taken and invalid addresses, file descriptor exhaustion, a gzip
bomb, many half-sent messages, and the gRPC core's own log lines. Clients are Debian's
python3-grpcio and a few lines of raw HTTP/2 (for what no well-behaved client sends). Each case
starts what it needs on free loopback ports or in a temp dir and stops it by pid; the run exits
1 if any expectation failed.
The sklearn runtime (grpcio's own server) gets what its options can give: its case checks them.
usage: rpc_hostile.py MM_RUNTIME PROTO_DIR SKLEARN_SERVER_PY CASE..."""
import os
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
import protos  # noqa: E402

MM_RUNTIME, PROTO_DIR, SKLEARN = sys.argv[1:4]
CASES = sys.argv[4:]
m = protos.load(PROTO_DIR)
pb, pbg = m["grpc_predict_v2_pb2"], m["grpc_predict_v2_pb2_grpc"]
failures = []
checks = 0
work = tempfile.mkdtemp(prefix="mm-rpc-hostile-")


def expect(what, cond, detail=""):
    global checks
    checks += 1
    print("%s: %s %s" % ("ok" if cond else "FAILED", what, detail if not cond else ""),
          flush=True)
    if not cond:
        failures.append(what)


def child_env(extra):
    """The environment of a server: ours, plus extra; under AddressSanitizer, a small quarantine
    (ASan keeps up to 256 MiB of freed memory resident, which peak-memory checks would count)."""
    env = dict(extra or {})
    if "ASAN_OPTIONS" in os.environ:
        env["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"] + ":quarantine_size_mb=8"
    return env


class Runtime:
    """One mm-runtime process, its stderr kept in a file. nofile=(soft, hard) is set before
    exec. wait=False: do not wait for LISTENING (for a start that must fail)."""

    def __init__(self, *flags, listen="127.0.0.1:0", wait=True, nofile=None, env=None,
                 sklearn=False):
        self.listen = listen
        self.err_path = os.path.join(work, "stderr-%d" % time.monotonic_ns())
        self.err = open(self.err_path, "w+b")

        def limits():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        program = ["/usr/bin/python3", SKLEARN, "--proto-dir", PROTO_DIR] if sklearn else \
            [MM_RUNTIME]
        self.proc = subprocess.Popen(program + ["--listen", listen] + list(flags),
                                     stdout=subprocess.PIPE, stderr=self.err,
                                     stdin=subprocess.DEVNULL, preexec_fn=limits,
                                     env=dict(os.environ, **child_env(env)))
        self.word = ""
        self.port = 0
        self.channel = None
        if wait:
            self.wait_listening()

    def wait_listening(self, seconds=30):
        ready, _, _ = select.select([self.proc.stdout], [], [], seconds)
        line = self.proc.stdout.readline() if ready else b""
        if not line.startswith(b"LISTENING "):
            self.stop()
            raise SystemExit("mm-runtime did not announce LISTENING: %r %s" %
                             (line, self.stderr()))
        self.word = line.split()[1].decode()
        self.port = int(self.word) if self.word.isdigit() else 0
        target = self.listen if self.listen.startswith("unix:") else "127.0.0.1:%d" % self.port
        self.channel = grpc.insecure_channel(target)
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

    def status(self, field):
        """A field of /proc/PID/status in kB (VmHWM, VmRSS), 0 if gone."""
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def nofile(self):
        with open("/proc/%d/limits" % self.proc.pid) as f:
            for line in f:
                if line.startswith("Max open files"):
                    return tuple(int(x) for x in line.split()[3:5])
        return (0, 0)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stop it; one that served must exit 0 at SIGTERM (under ASan: no leak, no error)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            if self.exit_code(timeout) is None:
                self.proc.kill()
                self.proc.wait()
            if self.channel:
                expect("the server on %s exits 0 at SIGTERM" % self.listen,
                       self.proc.returncode == 0,
                       "exit %s: %s" % (self.proc.returncode, self.stderr()[-1500:]))
        if self.channel:
            self.channel.close()
            self.channel = None
        return self.proc.returncode


def live_within(target_or_runtime, seconds):
    if isinstance(target_or_runtime, Runtime):
        stub = target_or_runtime.v2
        ch = None
    else:
        ch = grpc.insecure_channel(target_or_runtime)
        stub = pbg.GRPCInferenceServiceStub(ch)
    try:
        return stub.ServerLive(pb.ServerLiveRequest(), timeout=seconds).live
    except grpc.RpcError:
        return False
    finally:
        if ch:
            ch.close()


def fresh_live(r, seconds=5):
    """ServerLive on a new connection (not the runtime's kept channel)."""
    if r.listen.startswith("unix:"):
        return live_within(r.listen, seconds)
    return live_within("127.0.0.1:%d" % r.port, seconds)


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
    """A header as a literal without indexing, new name, no Huffman coding."""
    name, value = name.encode(), value.encode()
    return (b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value)


class H2Conn:
    """One HTTP/2 connection that opens gRPC streams and sends their messages by hand, as far
    as the server's flow-control windows let it. A thread reads the server's frames: it answers
    SETTINGS and PING, applies WINDOW_UPDATEs and notes which streams the server ended."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.lock = threading.Condition()
        self.conn_window = 65535
        self.initial_window = 65535
        self.windows = {}
        self.ended = {}      # stream id -> "headers" | "rst:CODE"
        self.goaway = False
        self.closed = False
        self.settled = False  # the server's SETTINGS came and were acknowledged
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
                        for i in range(0, len(payload), 6):
                            ident, value = struct.unpack(">HI", payload[i:i + 6])
                            if ident == 4:  # SETTINGS_INITIAL_WINDOW_SIZE
                                for s in self.windows:
                                    self.windows[s] += value - self.initial_window
                                self.initial_window = value
                        self.frame(SETTINGS, ACK, 0, b"")
                        self.settled = True
                    elif kind == PING and not flags & ACK:
                        self.frame(PING, ACK, 0, payload)
                    elif kind == WINDOW_UPDATE:
                        inc = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
                        if stream == 0:
                            self.conn_window += inc
                        elif stream in self.windows:
                            self.windows[stream] += inc
                    elif kind == RST_STREAM:
                        self.ended[stream] = "rst:%d" % struct.unpack(">I", payload)[0]
                    elif kind == HEADERS and flags & END_STREAM:
                        self.ended[stream] = "headers"
                    elif kind == GOAWAY:
                        self.goaway = True
                    self.lock.notify_all()
        except (EOFError, OSError):
            pass
        with self.lock:
            self.closed = True
            self.lock.notify_all()

    def open_stream(self, path, extra=()):
        with self.lock:
            sid = self.next_id
            self.next_id += 2
            self.windows[sid] = self.initial_window
            block = b"".join(hpack_literal(k, v) for k, v in (
                (":method", "POST"), (":scheme", "http"), (":path", path),
                (":authority", "localhost"), ("content-type", "application/grpc"),
                ("te", "trailers")) + tuple(extra))
            self.frame(HEADERS, END_HEADERS, sid, block)
        return sid

    def send_data(self, sid, data, end=False, deadline=None):
        """Send data on sid as the windows allow, until done or deadline; bytes sent."""
        sent = 0
        while sent < len(data) or (end and sent == 0 and not data):
            with self.lock:
                while (not self.closed and sid not in self.ended and
                       (self.conn_window <= 0 or self.windows[sid] <= 0)):
                    left = deadline - time.monotonic() if deadline else 10
                    if left <= 0 or not self.lock.wait(min(left, 0.5)):
                        if deadline and time.monotonic() >= deadline:
                            return sent
                if self.closed or sid in self.ended:
                    return sent
                n = min(16384, len(data) - sent, self.conn_window, self.windows[sid])
                last = end and sent + n == len(data)
                self.frame(DATA, END_STREAM if last else 0, sid, data[sent:sent + n])
                self.conn_window -= n
                self.windows[sid] -= n
                sent += n
                if not data:
                    break
        return sent

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

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def grpc_prefix(length, compressed=False):
    return struct.pack(">BI", 1 if compressed else 0, length)


# ------------------------------------------------------------------ cases

def refused(err, addr, why=""):
    """err has an ERROR line saying that addr cannot be listened on (and why)."""
    return re.search(r"ERROR .*cannot listen on %s: .*%s" % (re.escape(addr), re.escape(why)),
                     err) is not None


def addresses():
    """A taken address is an error at start, naming it (no silent port sharing); an invalid
    port is refused, not replaced by a random one; a live unix socket is never replaced, a
    stale one is; LISTENING names what was bound."""
    a = Runtime()
    expect("LISTENING gives the port", a.port > 0, a.word)
    taken = "127.0.0.1:%d" % a.port
    for i in range(2):
        b = Runtime(listen=taken, wait=False)
        code = b.exit_code(15)
        err = b.stderr()
        out = b.proc.stdout.read().decode(errors="replace") if code is not None else ""
        expect("a second server on %s fails at start (try %d)" % (taken, i + 1),
               code not in (None, 0) and "LISTENING" not in out, "exit %s, stdout %r" %
               (code, out))
        expect("its error names the address and says it is in use",
               refused(err, taken, "in use"), err[-400:])
        b.stop()
    expect("the first server still answers", fresh_live(a))
    a.stop()

    for bad in ("127.0.0.1:99999", "127.0.0.1:-1", "127.0.0.1:80a", "127.0.0.1:", "nonsense"):
        b = Runtime(listen=bad, wait=False)
        code = b.exit_code(15)
        out = b.proc.stdout.read().decode(errors="replace") if code is not None else ""
        err = b.stderr()
        expect("--listen %s is refused" % bad, code not in (None, 0) and "LISTENING" not in out,
               "exit %s, stdout %r" % (code, out))
        expect("its error names %s" % bad, refused(err, bad), err[-400:])
        b.stop()

    path = os.path.join(work, "rt.sock")
    a = Runtime(listen="unix:" + path)
    expect("LISTENING names the unix socket", a.word == "unix:" + path, a.word)
    expect("the unix server answers", fresh_live(a))
    b = Runtime(listen="unix:" + path, wait=False)
    code = b.exit_code(15)
    err = b.stderr()
    expect("a second server on a live unix socket fails at start", code not in (None, 0),
           "exit %s" % code)
    expect("its error names the socket and says it is served",
           refused(err, "unix:" + path, "another process"), err[-400:])
    b.stop()
    expect("the live socket was not replaced: the first server still answers on it",
           fresh_live(a))
    a.stop()
    expect("a server removes its unix socket when it stops", not os.path.exists(path))

    # A stale socket (bound, nobody listening) is replaced; a file that is no socket is not.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    c = Runtime(listen="unix:" + path)
    expect("a stale unix socket is replaced", fresh_live(c))
    c.stop()
    regular = os.path.join(work, "regular")
    with open(regular, "w") as f:
        f.write("keep me")
    d = Runtime(listen="unix:" + regular, wait=False)
    code = d.exit_code(15)
    expect("a path that is no socket is refused and kept", code not in (None, 0) and
           open(regular).read() == "keep me", "exit %s" % code)
    d.stop()


def idle():
    """Connections that never send anything (or only HTTP/2's preface) are closed after the
    idle time, so a few silent sockets cannot fill --max-connections for good."""
    r = Runtime("--max-connections", "4", "--connection-idle-ms", "1500")
    silent = [socket.create_connection(("127.0.0.1", r.port), timeout=5) for _ in range(2)]
    preface = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", r.port), timeout=5)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        preface.append(s)
    deadline = time.monotonic() + 5  # until the server has accepted all four (+ its listener)
    while time.monotonic() < deadline and count_sockets(r.proc.pid) < 5:
        time.sleep(0.02)
    expect("4 silent connections fill --max-connections 4", not fresh_live(r, 0.5))
    t0 = time.monotonic()
    served = False
    while time.monotonic() - t0 < 15 and not served:
        served = fresh_live(r, 1)
    took = time.monotonic() - t0
    expect("the silent ones are closed after the idle time and a client is served",
           served, "after %.1f s" % took)
    for s in silent + preface:
        s.close()
    r.stop()


def fds():
    """At the open-file limit the server keeps accepting once clients close: the soft limit is
    raised to the hard one, connections are capped below it, and the accept loop survives
    running out of descriptors."""
    r = Runtime(nofile=(40, 64))
    expect("the soft open-file limit is raised to the hard one", r.nofile() == (64, 64),
           str(r.nofile()))
    r.stop()

    # At --max-connections, more clients wait in the backlog (not accepted, no descriptor).
    r = Runtime("--max-connections", "5")
    held = [socket.create_connection(("127.0.0.1", r.port), timeout=5) for _ in range(20)]
    time.sleep(1.0)
    socks = count_sockets(r.proc.pid)
    expect("at --max-connections 5, 20 clients hold at most 5 accepted sockets (+ listener)",
           socks <= 6, "%d sockets" % socks)
    expect("a sixth client waits", not fresh_live(r, 1))
    for s in held:
        s.close()
    expect("once they close, it is served", fresh_live(r, 5))
    r.stop()

    # The default cap (3/4 of the limit) keeps accept from running out; a cap set above the
    # limit lets it run out: accepting pauses (no busy loop) and resumes.
    for flags, what in (((), "the default cap"), (("--max-connections", "1000"),
                                                   "a cap above the limit")):
        r = Runtime(*flags, nofile=(64, 64))
        held = []
        for _ in range(150):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", r.port))
            except OSError:
                s.close()
                break
            held.append(s)
        cpu0 = cpu_seconds(r.proc.pid)
        time.sleep(1.5)  # let the server accept what it will
        cpu = cpu_seconds(r.proc.pid) - cpu0
        expect("%s: alive with %d connections at a 64-descriptor limit" % (what, len(held)),
               r.proc.poll() is None)
        expect("%s: no busy loop while they are held" % what, cpu < 0.5, "%.2f s CPU" % cpu)
        socks = count_sockets(r.proc.pid)
        if not flags:
            expect("it accepted at most 3/4 of its 64 descriptors", socks <= 48 + 1,
                   "%d sockets" % socks)
        for s in held:
            s.close()
        expect("%s: after the connections close, a new client is served" % what,
               fresh_live(r, 8))
        expect("%s: and again" % what, fresh_live(r, 5))
        err = r.stderr()
        expect("%s: no raw gRPC line in the log" % what,
               re.search(r"^[EIWD]\d{4} ", err, re.M) is None, err[-400:])
        if flags:
            n = err.count("Too many open files")
            expect("running out is logged, naming the cause, not at every retry",
                   1 <= n <= 3, "%d times: %s" % (n, err[-600:]))
        r.stop()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_sockets(pid):
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            n += os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:")
        except OSError:
            pass
    return n


def gzip_bomb(sklearn=False):
    """A small gzip message that inflates far past the message limit is refused before it is
    inflated: the server's peak memory stays small."""
    r = Runtime(sklearn=sklearn)
    time.sleep(0.3)
    before = r.status("VmHWM")
    ch = grpc.insecure_channel("127.0.0.1:%d" % r.port, compression=grpc.Compression.Gzip,
                               options=[("grpc.max_send_message_length", -1)])
    infer = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                           request_serializer=None, response_deserializer=None)
    # A ModelInfer request whose field 1 (model_name) is 96 MiB of zeros: 96 KiB compressed.
    size = 96 << 20
    body = b"\x0a" + bytes(pb_varint(size)) + bytes(size)
    code, details = grpc.StatusCode.OK, ""
    try:
        infer(body, timeout=30)
    except grpc.RpcError as e:
        code, details = e.code(), e.details() or ""
    del body
    after = r.status("VmHWM")
    expect("the gzip request is refused", code != grpc.StatusCode.OK, str(code))
    expect("with a status that says compression is not accepted",
           code == grpc.StatusCode.UNIMPLEMENTED and "gzip" in details.lower(),
           "%s %r" % (code, details))
    expect("the server's peak memory grew by less than 32 MiB (not inflated)",
           after - before < 32 * 1024, "VmHWM %d -> %d kB" % (before, after))
    expect("the server still answers", fresh_live(r))
    ch.close()

    if sklearn:
        r.stop()
        return
    # The same bomb by hand, on raw HTTP/2, with grpc-encoding: gzip.
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    payload = b"".join([comp.compress(b"\x0a" + bytes(pb_varint(size)))] +
                       [comp.compress(chunk) for _ in range(size >> 20)] + [comp.flush()])
    c = H2Conn(r.port)
    sid = c.open_stream("/inference.GRPCInferenceService/ModelInfer",
                        (("grpc-encoding", "gzip"),))
    c.send_data(sid, grpc_prefix(len(payload), True) + payload, end=True,
                deadline=time.monotonic() + 10)
    ended = c.wait_ended(sid, 10)
    c.close()
    after2 = r.status("VmHWM")
    expect("a raw gzip bomb is answered", ended is not None, str(ended))
    expect("and the peak memory stays small", after2 - before < 32 * 1024,
           "VmHWM %d -> %d kB" % (before, after2))
    r.stop()


def pb_varint(n):
    """A protobuf varint."""
    out = []
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return out


def streams():
    """Many streams that each announce a 16 MiB message and send most of it, then stall: the
    server's memory stays bounded (streams per connection, a memory quota), a fresh client is
    still served, and a message that stops arriving is timed out."""
    r = Runtime("--max-streams", "8", "--rpc-memory", "64Mi", "--message-timeout-ms", "3000")
    time.sleep(0.3)
    before = r.status("VmRSS")
    conns = [H2Conn(r.port) for _ in range(6)]
    declared = 16 << 20
    part = bytes(15 << 20)
    stalled = []
    threads = []
    deadline = time.monotonic() + 6
    for c in conns:
        for _ in range(8):  # --max-streams
            sid = c.open_stream("/inference.GRPCInferenceService/ModelInfer")
            stalled.append((c, sid))
            t = threading.Thread(target=c.send_data,
                                 args=(sid, grpc_prefix(declared) + part),
                                 kwargs={"deadline": deadline}, daemon=True)
            t.start()
            threads.append(t)
    for t in threads:
        t.join(10)
    peak = r.status("VmHWM")
    expect("a fresh client is served while %d streams stall" % len(stalled), fresh_live(r, 5))
    # ~760 MB before the bounds; AddressSanitizer's redzones and shadow need room on top
    with open("/proc/%d/maps" % r.proc.pid) as f:
        bound = 400 if "libasan" in f.read() else 200
    expect("the server's memory stays bounded (< %d MiB over its start)" % bound,
           peak - before < bound * 1024, "VmRSS at start %d kB, VmHWM %d kB" % (before, peak))
    ended = [c.wait_ended(sid, 8) for c, sid in stalled]
    expect("stalled messages are ended by the server (timeout or quota)",
           all(e is not None for e in ended), str(ended))
    for c in conns:
        c.close()
    expect("a fresh client is served after", fresh_live(r, 5))

    # Streams past --max-streams on one connection: gRPC 1.51 closes a connection that opens
    # more than the limit it announced (well-behaved clients queue their calls instead).
    c = H2Conn(r.port)
    c.wait_settled()
    time.sleep(0.2)  # the server applies its limit once it has our acknowledgement
    sids = [c.open_stream("/inference.GRPCInferenceService/ServerLive") for _ in range(12)]
    extra = [c.wait_ended(sid, 1.5) for sid in sids[8:]]
    expect("streams 9 to 12 of a connection at --max-streams 8 are refused",
           all(e in ("rst:7", "closed") for e in extra), str(extra))
    c.close()
    ch = grpc.insecure_channel("127.0.0.1:%d" % r.port)
    stub = pbg.GRPCInferenceServiceStub(ch)
    calls = [stub.ServerLive.future(pb.ServerLiveRequest(), timeout=10) for _ in range(20)]
    answered = sum(1 for f in calls if f.exception() is None)
    expect("20 calls at once on one client connection all complete", answered == 20,
           "%d of 20" % answered)
    ch.close()

    # Without memory pressure, a message that stops halfway is ended at the timeout; one that
    # never starts too, with a status that says so.
    c = H2Conn(r.port)
    sid = c.open_stream("/inference.GRPCInferenceService/ModelInfer")
    t0 = time.monotonic()
    c.send_data(sid, grpc_prefix(declared) + bytes(1 << 20), deadline=t0 + 3)
    ended = c.wait_ended(sid, 10)
    took = time.monotonic() - t0
    expect("a message stalled halfway is ended at --message-timeout-ms (3 s)",
           ended is not None and ended != "closed" and 2.5 < took < 6,
           "%s after %.1f s" % (ended, took))
    c.close()
    never = threading.Event()

    def nothing():
        never.wait(20)
        yield b""

    ch = grpc.insecure_channel("127.0.0.1:%d" % r.port)
    method = ch.stream_unary("/inference.GRPCInferenceService/ModelInfer",
                             request_serializer=None, response_deserializer=None)
    t0 = time.monotonic()
    try:
        method(nothing(), timeout=15)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        code, details = e.code(), e.details() or ""
    took = time.monotonic() - t0
    never.set()
    ch.close()
    expect("a message that never comes: DEADLINE_EXCEEDED at the timeout, saying so",
           code == grpc.StatusCode.DEADLINE_EXCEEDED and "3000 ms" in details and
           2.5 < took < 6, "%s %r after %.1f s" % (code, details, took))
    r.stop()


def core_log():
    """The gRPC core's own log lines go through the project's log: formatted, escaped. gRPC
    quotes what it is given (here an unknown GRPC_TRACE name holding an escape sequence and a
    forged line) and, in its traces, what peers send."""
    r = Runtime("--log-level", "debug", env={"GRPC_VERBOSITY": "DEBUG",
                                             "GRPC_TRACE": "http,no\x1b[31m\nE1201 forged"})
    expect("a client is served", fresh_live(r))
    r.stop()
    err = r.stderr()
    raw = [line for line in err.splitlines() if re.match(r"^[EIWD]\d{4} ", line)]
    expect("no gRPC line in its own format on stderr", not raw, repr(raw[:3]))
    expect("gRPC's lines come through the project's log",
           re.search(r"^\d{4}-\d\d-\d\dT\S+Z \w+ +grpc: ", err, re.M) is not None, err[-600:])
    expect("gRPC's error about the trace name is there, escaped",
           re.search(r"ERROR grpc: .*no\\x1b\[31m\\x0aE1201 forged", err) is not None,
           err[:600])
    expect("no escape character or forged line reaches the log", "\x1b" not in err)


def sklearn():
    """The sklearn runtime: grpcio's options give it identity-only compression and no port
    sharing, and it raises its open-file limit (grpcio 1.51 offers no connection cap and no
    way to pass a resource quota from Python: README says so)."""
    r = Runtime(sklearn=True, nofile=(40, 64),
                env={"GRPC_VERBOSITY": "DEBUG", "GRPC_TRACE": "http,no\x1b[31m\nE1201 forged"})
    expect("sklearn: the soft open-file limit is raised to the hard one", r.nofile() == (64, 64),
           str(r.nofile()))
    expect("sklearn: a client is served", fresh_live(r))
    r.stop()
    err = r.stderr()
    raw = [line for line in err.splitlines() if re.match(r"^[EIWD]\d{4} ", line)]
    expect("sklearn: no gRPC line in its own format on stderr", not raw, repr(raw[:3]))
    expect("sklearn: gRPC's lines come through the runtime's log, escaped",
           re.search(r"ERROR grpc: trace\.cc:\d+: Unknown trace var: 'no\\x1b\[31m$", err,
                     re.M) is not None, err[:800])
    expect("sklearn: no escape character reaches the log", "\x1b" not in err)
    gzip_bomb(sklearn=True)


try:
    for name in CASES:
        print("== %s" % name, flush=True)
        {"addresses": addresses, "fds": fds, "idle": idle, "gzip": gzip_bomb, "streams": streams,
         "log": core_log, "sklearn": sklearn}[name]()
finally:
    shutil.rmtree(work, ignore_errors=True)
print("%d checks, %d failed" % (checks, len(failures)))
sys.exit(1 if failures else 0)
