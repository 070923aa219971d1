# lib-etcd.sh - a throwaway local etcd for scripts (the shell twin of tests/harness/harness.c).
# shellcheck shell=bash
# Source it, then:
#   etcd_start DIR [extra etcd flags...]   data in DIR/data, log in DIR/etcd.log, pid in
#                                          DIR/etcd.pid; sets ETCD_ENDPOINT, ETCD_PID, ETCD_LOG
#   etcd_stop DIR                          SIGTERM by the recorded pid, up to 5 s, then SIGKILL
# Every loop is bounded; failures return non-zero and print etcd's log tail. Needs bash, curl.

# True when nothing listens on 127.0.0.1:$1 (ss when present, else a connect probe).
etcd_port_free() {
  if command -v ss >/dev/null 2>&1; then
    ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
  else
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

# Prints a port P such that P and P+1 were free a moment ago.
etcd_free_port_pair() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + (RANDOM * 7 + i) % 30000))
    etcd_port_free "$p" && etcd_port_free "$((p + 1))" && { echo "$p"; return 0; }
  done
  echo "lib-etcd: no free port pair found" >&2
  return 1
}

# The pid recorded in DIR/etcd.pid, only if that process is still the etcd of DIR.
etcd_pid_of() {
  local pid
  pid=$(cat "$1/etcd.pid" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--data-dir $1/data" || return 1
  echo "$pid"
}

etcd_start() {
  local dir=${1:?usage: etcd_start DIR [etcd flags...]}
  shift
  mkdir -p "$dir" || return 1
  dir=$(cd "$dir" && pwd)
  if etcd_pid_of "$dir" >/dev/null; then
    echo "lib-etcd: an etcd already runs on $dir (pid $(cat "$dir/etcd.pid"))" >&2
    return 1
  fi
  local port url peer i
  for _ in 1 2 3; do # a port taken between the probe and etcd's bind: pick again
    port=$(etcd_free_port_pair) || return 1
    url="http://127.0.0.1:$port"
    peer="http://127.0.0.1:$((port + 1))"
    : >"$dir/etcd.log"
    etcd --name local --data-dir "$dir/data" \
      --listen-client-urls "$url" --advertise-client-urls "$url" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "local=$peer" --logger zap --log-level warn "$@" \
      >>"$dir/etcd.log" 2>&1 </dev/null &
    ETCD_PID=$!
    echo "$ETCD_PID" >"$dir/etcd.pid"
    ETCD_ENDPOINT=$url
    ETCD_LOG=$dir/etcd.log
    for i in $(seq 1 300); do # 300 x 50 ms = 15 s
      if curl -fsS -m 1 "$url/health" 2>/dev/null | grep -q '"health":"true"'; then
        export ETCD_ENDPOINT ETCD_PID ETCD_LOG
        return 0
      fi
      kill -0 "$ETCD_PID" 2>/dev/null || break
      sleep 0.05
    done
    if kill -0 "$ETCD_PID" 2>/dev/null; then
      echo "lib-etcd: etcd not healthy on $url within 15 s" >&2
      etcd_stop "$dir"
      tail -n 20 "$dir/etcd.log" >&2
      return 1
    fi
    wait "$ETCD_PID" 2>/dev/null || true
    rm -f "$dir/etcd.pid"
    grep -q "address already in use" "$dir/etcd.log" && continue
    echo "lib-etcd: etcd exited during start-up; log tail:" >&2
    tail -n 20 "$dir/etcd.log" >&2
    return 1
  done
  echo "lib-etcd: ports kept being taken; log tail:" >&2
  tail -n 20 "$dir/etcd.log" >&2
  return 1
}

etcd_stop() {
  local dir=${1:?usage: etcd_stop DIR} pid i
  dir=$(cd "$dir" 2>/dev/null && pwd) || return 0
  pid=$(etcd_pid_of "$dir") || { rm -f "$dir/etcd.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 100); do # 100 x 50 ms = 5 s
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true # reaps it when it is our child; harmless otherwise
  rm -f "$dir/etcd.pid"
  return 0
}
