"""bench_hop.py - what a forwarding hop costs, measured with an independent load generator
(h2load, which sends raw gRPC frames) in one run: a client straight to an echo server, through the
bare C-core proxy (bare_proxy, the baseline), and through the rpc layer's proxy on the loop and on
the completion-queue thread (hop_server); and the echo servers themselves. 100 B and 64 KiB
requests, concurrency 1, 16 (one connection) and 64 (4 connections of 16 streams). Prints
p50/p99 latency, requests/s, the server's CPU per request and the ratios to the bare proxy, as
markdown (BENCHMARKS.md). The backend of every proxy is a bare echo.
Each cell is measured REPEAT times, the servers taking turns (noise on a shared machine hits them
alike); the medians are printed.
usage: bench_hop.py BARE_PROXY HOP_SERVER [seconds per run (default 2)] [REPEAT (default 3)]"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

BARE, HOP = sys.argv[1], sys.argv[2]
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
REPEAT = int(sys.argv[4]) if len(sys.argv) > 4 else 3
METHOD = "/inference.GRPCInferenceService/ModelInfer"
SIZES = [100, 65536]
CONCURRENCY = [(1, 1, 1), (16, 1, 16), (64, 4, 16)]  # (total, connections, streams each)
TICK = os.sysconf("SC_CLK_TCK")
work = tempfile.mkdtemp(prefix="mm-bench-hop-")
procs = []


def start(cmd):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(os.path.join(
        work, "%s-%d.log" % (os.path.basename(cmd[0]), len(procs))), "w"), text=True)
    procs.append(p)
    line = p.stdout.readline().split()
    if len(line) != 2 or line[0] != "LISTENING":
        raise SystemExit("bench_hop: %s did not start (logs in %s)" % (" ".join(cmd), work))
    return p, int(line[1])


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def request(size):
    """A ModelInferRequest: model_name "m" and one raw tensor of size bytes (field 7)."""
    tensor = bytes((i * 131 + 7) & 0xFF for i in range(size))
    return b"\x0a\x01m" + b"\x3a" + varint(size) + tensor


def data_file(size):
    msg = request(size)
    path = os.path.join(work, "req-%d.bin" % size)
    with open(path, "wb") as f:
        f.write(b"\x00" + len(msg).to_bytes(4, "big") + msg)
    return path


def h2load(port, path, conc, seconds, log=None):
    total, conns, streams = conc
    cmd = ["h2load", "-c", str(conns), "-m", str(streams), "-t", "1", "-D", "%dms" % (seconds * 1000),
           "-d", path, "-H", "content-type: application/grpc", "-H", "te: trailers",
           "http://127.0.0.1:%d%s" % (port, METHOD)]
    if log:
        cmd[1:1] = ["--log-file", log]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    if "finished in" not in out:
        raise SystemExit("bench_hop: h2load failed: %s\n%s" % (" ".join(cmd), out))
    done = failed = 0
    for line in out.splitlines():
        if line.startswith("requests:"):
            parts = line.replace(",", "").split()
            done = int(parts[parts.index("succeeded") - 1])
            failed = int(parts[parts.index("failed") - 1]) + int(parts[parts.index("errored") - 1])
    return done, failed, out


def check_echo(port, size):
    """One call through port: the echo chain gives the same bytes back (h2load does not read
    grpc-status)."""
    import grpc
    msg = request(size)
    with grpc.insecure_channel("127.0.0.1:%d" % port) as ch:
        back = ch.unary_unary(METHOD)(msg, timeout=10)
    if back != msg:
        raise SystemExit("bench_hop: port %d answered %d bytes, not the %d sent" %
                         (port, len(back), len(msg)))


def measure(port, pid, size, conc):
    path = data_file(size)
    h2load(port, path, conc, 0.3)  # warm-up: connections, buffers, caches
    log = os.path.join(work, "log")
    before = cpu_seconds(pid) if pid else 0.0
    t0 = time.monotonic()
    done, failed, out = h2load(port, path, conc, SECONDS, log)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(pid) - before if pid else 0.0
    lat = []
    with open(log) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3:
                lat.append(int(cols[2]))
    os.unlink(log)
    lat.sort()
    if not lat or failed:
        raise SystemExit("bench_hop: port %d: %d done, %d failed\n%s" % (port, done, failed, out))
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    return {"rps": len(lat) / SECONDS, "p50": pct(0.50), "p99": pct(0.99),
            "cpu_us": cpu / max(1, len(lat)) * 1e6 if pid else None, "n": len(lat),
            "wall": wall}


def median(runs):
    mid = lambda xs: sorted(xs)[len(xs) // 2]
    return {k: mid([r[k] for r in runs]) if runs[0][k] is not None else None for k in runs[0]}


def main():
    if not shutil.which("h2load"):
        print("bench_hop: h2load not found (Debian: nghttp2-client); skipped")
        return 77
    try:
        echo, echo_port = start([BARE])
        rows = [("direct to the echo (no proxy)", None, echo_port)]
        target = "127.0.0.1:%d" % echo_port
        p, port = start([BARE, "--backend", target])
        rows.append(("proxy, bare C core (baseline)", p, port))
        p, port = start([HOP, "proxy", "--backend", target])
        rows.append(("proxy, rpc layer on the loop", p, port))
        p, port = start([HOP, "proxy-fast", "--backend", target])
        rows.append(("proxy, rpc layer fast path", p, port))
        p, port = start([BARE])
        rows.append(("echo, bare C core", p, port))
        p, port = start([HOP, "echo"])
        rows.append(("echo, rpc layer on the loop", p, port))
        p, port = start([HOP, "echo-fast"])
        rows.append(("echo, rpc layer fast path", p, port))
        for name, p, port in rows:
            for size in SIZES:
                check_echo(port, size)
        print("h2load, %d runs of %.1f s per cell (medians), %d cores; latency in us; CPU: the "
              "server's (not the backend's) per request\n" % (REPEAT, SECONDS, os.cpu_count()))
        for size in SIZES:
            for conc in CONCURRENCY:
                print("### %s, concurrency %d (%d connection%s x %d streams)\n" %
                      ("100 B" if size == 100 else "64 KiB", conc[0], conc[1],
                       "s" if conc[1] > 1 else "", conc[2]))
                print("| server | req/s | p50 | p99 | CPU/req | p50 / bare proxy | "
                      "req/s / bare proxy |")
                print("| --- | --- | --- | --- | --- | --- | --- |")
                runs = {name: [] for name, _, _ in rows}
                for _ in range(REPEAT):
                    for name, p, port in rows:
                        runs[name].append(measure(port, p.pid if p else None, size, conc))
                res = {name: median(r) for name, r in runs.items()}
                base = res["proxy, bare C core (baseline)"]
                for name, _, _ in rows:
                    r = res[name]
                    print("| %s | %.0f | %d | %d | %s | %.2f | %.2f |" % (
                        name, r["rps"], r["p50"], r["p99"],
                        "%.0f us" % r["cpu_us"] if r["cpu_us"] is not None else "-",
                        r["p50"] / base["p50"], r["rps"] / base["rps"]))
                print(flush=True)
        return 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
