#!/usr/bin/env bash
# cluster.sh - a local ModelMesh cluster of real processes on 127.0.0.1, kept running between
# commands:
#   deploy/local/cluster.sh up            start it (fresh each time), print how to use it
#   deploy/local/cluster.sh status        one line per part; exit 0 all alive, 1 some dead, 3 none
#   deploy/local/cluster.sh logs [PART]   the log files, or one part's log (-f: follow it)
#   deploy/local/cluster.sh down          stop what up started (by pid), keep the logs
#
# The parts: etcd; s3 (s3rver, bucket modelmesh-example-models holding the example models); two
# pods per ServingRuntime of deploy/runtimes (runtime-<rt>-<k> and node-<rt>-<k> beside it, the
# node's --cache-dir being the runtime's --models-dir); controller-0 and controller-1; gateway
# (mm-gateway on 127.0.0.1:$MM_LOCAL_GRPC_PORT, playing the modelmesh-serving Service).
#
# Environment:
#   MM_LOCAL_DIR        state dir (default <repo>/.cluster): env, logs/, pids/, models/, data/
#   MM_BUILD_DIR        the meson build dir (default <repo>/build)
#   MM_LOCAL_SETUP=0    do not run scripts/setup.sh first (install what is missing, build)
#   MM_LOCAL_GRPC_PORT  the gateway's port (default 8033; 0 = any free)
#   MM_LOCAL_ETCD_PORT  etcd's client port (default 2379 when free, else any free; 0 = any free;
#                       a port given and taken is an error naming it)
#   MM_LOCAL_S3_PORT    s3rver's port (default 0 = any free)
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
me=deploy/local/cluster.sh
state=${MM_LOCAL_DIR:-$top/.cluster}
build=${MM_BUILD_DIR:-$top/build}
cluster_name=local
namespace=modelmesh-serving
bucket=modelmesh-example-models
# The walkthrough's example credentials (AWS's documentation pair), which our s3rver accepts.
access_key=AKIAIOSFODNN7EXAMPLE
secret_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
runtimes=(mm-runtime mm-sklearn) # deploy/runtimes/<name>.yaml
pods_per_runtime=2
node_shutdown=10s # mm-node --shutdown-timeout; down waits this long and 5 s more for nodes

say() { printf '%s\n' "$*"; }
err() { printf '%s: %s\n' "$me" "$*" >&2; }

# Every part, in start order.
all_parts() {
  local rt k
  echo etcd
  echo s3
  for rt in "${runtimes[@]}"; do
    for ((k = 0; k < pods_per_runtime; k++)); do
      echo "runtime-$rt-$k"
      echo "node-$rt-$k"
    done
  done
  echo controller-0
  echo controller-1
  echo gateway
}

abs_state() {
  mkdir -p "$state"
  state=$(cd "$state" && pwd)
}

# ---------------------------------------------------------------- processes and their identity

pid_file() { echo "$state/pids/$1.pid"; }
log_file() { echo "$state/logs/$1.log"; }

# Whether process PID runs PART's recorded command line (a /proc file says size 0: through a pipe,
# which cmp does not compare by size).
# shellcheck disable=SC2002 # the cat is the point: a pipe, not a regular file
runs_part() { cat "/proc/$2/cmdline" 2>/dev/null | cmp -s "$state/pids/$1.cmdline" -; }

# The recorded pid of PART, only while that process still is PART: its /proc cmdline is the one
# recorded at start and its start time too (a pid reused by anything else does not match).
part_pid() {
  local part=$1 pid start
  pid=$(cat "$(pid_file "$part")" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  runs_part "$part" "$pid" || return 1
  if [ -f "$state/pids/$part.start" ]; then
    start=$(proc_start "$pid") || return 1
    [ "$start" = "$(cat "$state/pids/$part.start")" ] || return 1
  fi
  echo "$pid"
}

# Field 22 of /proc/PID/stat (start time in clock ticks); the name in field 2 may hold spaces.
proc_start() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # shellcheck disable=SC2086 # split on spaces: field 3 of stat is $1 here
  set -- $stat
  echo "${20}"
}

part_port() { cat "$state/pids/$1.port" 2>/dev/null || true; }
part_probe() { cat "$state/pids/$1.probe" 2>/dev/null || true; }

# True when nothing listens on 127.0.0.1:PORT.
port_free() {
  if command -v ss >/dev/null 2>&1; then
    if ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; then return 1; fi
  elif (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    return 1
  fi
  return 0
}

# True when $1 is a TCP port number (0 included: any free port).
is_port() { [[ "$1" =~ ^[0-9]{1,5}$ ]] && (("$1" < 65536)); }

# A port that was free a moment ago (and, with "pair", the one above it too).
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + (RANDOM * 7 + i) % 30000))
    port_free "$p" || continue
    [ "${1:-}" = pair ] && ! port_free "$((p + 1))" && continue
    echo "$p"
    return 0
  done
  err "no free port found on 127.0.0.1"
  return 1
}

# Whether PROGRAM's --help lists --probe-listen (health endpoints, PROBES <port> on stdout).
declare -A probe_cache=()
has_probes() {
  if [ -z "${probe_cache[$1]:-}" ]; then
    probe_cache[$1]=no
    "$1" --help 2>&1 | grep -q -- '--probe-listen' && probe_cache[$1]=yes
  fi
  [ "${probe_cache[$1]}" = yes ]
}

# Whether PROGRAM's --help lists --rest-listen (KServe V2 REST, REST <port> on stdout).
declare -A rest_cache=()
has_rest() {
  if [ -z "${rest_cache[$1]:-}" ]; then
    rest_cache[$1]=no
    "$1" --help 2>&1 | grep -q -- '--rest-listen' && rest_cache[$1]=yes
  fi
  [ "${rest_cache[$1]}" = yes ]
}

# "--metrics-listen 127.0.0.1:0" when PROGRAM's --help lists it (Prometheus /metrics, METRICS
# <port> on stdout): its default port would be shared by every part on this host.
metrics_args() {
  "$1" --help 2>&1 | grep -q -- '--metrics-listen' && echo "--metrics-listen 127.0.0.1:0"
  return 0
}

# The part's metrics port, when it announced one (METRICS, printed before LISTENING).
record_metrics() {
  if has_announced "$1" METRICS; then announced "$1" METRICS >"$state/pids/$1.metrics"; fi
}

# ---------------------------------------------------------------- up

started=() # parts this up started, in order
up_done=0

# start_part PART COMMAND...: in a session of its own (a closed terminal does not end it),
# output to logs/PART.log, the pid and the command line recorded.
start_part() {
  local part=$1
  shift
  local log
  log=$(log_file "$part")
  : >"$log"
  printf '%s\0' "$@" >"$state/pids/$part.cmdline"
  setsid "$@" >>"$log" 2>&1 </dev/null &
  echo "$!" >"$(pid_file "$part")"
  started+=("$part")
}

# After the part has announced itself: its start time, so that down knows it is still the same.
seal_part() {
  local part=$1 pid start
  pid=$(cat "$(pid_file "$part")")
  if ! runs_part "$part" "$pid"; then
    fail "$part" "pid $pid does not run the command started (setsid forked?)"
  fi
  start=$(proc_start "$pid") || fail "$part" "pid $pid is gone"
  echo "$start" >"$state/pids/$part.start"
}

# fail PART MESSAGE: say which part, its log and its tail, stop what up started, exit 1.
fail() {
  local part=$1 log
  log=$(log_file "$part")
  err "$part failed: $2"
  if [ -s "$log" ]; then
    err "its log: $log (last lines below)"
    tail -n 20 "$log" | sed 's/^/    /' >&2
  else
    err "its log: $log (empty)"
  fi
  stop_started
  exit 1
}

# Stop every part this up started (newest first), for a failed or interrupted up.
stop_started() {
  trap - INT TERM
  [ ${#started[@]} -gt 0 ] || return 0
  err "stopping what this up started"
  local parts=() i
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do parts+=("${started[i]}"); done
  started=()
  stop_parts 15 "${parts[@]}"
  rm -f "$state/env"
}

on_exit() {
  local rc=$?
  if [ "$up_done" = 0 ] && [ ${#started[@]} -gt 0 ]; then
    err "up did not finish (exit $rc)"
    stop_started
  fi
}

# wait_for PART WHAT SECONDS CHECK...: poll CHECK every 0.1 s until it succeeds, the part's
# process ends (fail) or SECONDS pass (fail); a line every 5 s while it waits.
wait_for() {
  local part=$1 what=$2 secs=$3
  shift 3
  local pid i
  pid=$(cat "$(pid_file "$part")")
  for ((i = 1; i <= secs * 10; i++)); do
    "$@" && return 0
    if ! kill -0 "$pid" 2>/dev/null || [ "$(proc_state "$pid")" = Z ]; then
      "$@" && return 0
      fail "$part" "exited while $what"
    fi
    if ((i % 50 == 0)); then say "    ... $part: still $what ($((i / 10)) s)"; fi
    sleep 0.1
  done
  fail "$part" "$what: not done within $secs s"
}

proc_state() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo X; return 0; }
  stat=${stat##*) }
  echo "${stat%% *}"
}

# The port a part announced with "WORD <port>" in its log (empty until then).
announced() { awk -v w="$2" '$1 == w && $2 ~ /^[0-9]+$/ { print $2; exit }' "$(log_file "$1")"; }
has_announced() { [ -n "$(announced "$1" "$2")" ]; }
# A line starting with WORD in the part's log.
has_line() { grep -q "^$2" "$(log_file "$1")"; }

# Record the part's ports (announced LISTENING, PROBES and REST when it has them) and seal it.
listened() {
  local part=$1 probes=${2:-no} rest=${3:-no}
  wait_for "$part" "starting (waiting for LISTENING in its log)" 60 has_announced "$part" LISTENING
  announced "$part" LISTENING >"$state/pids/$part.port"
  if [ "$probes" = yes ]; then
    wait_for "$part" "starting its probes (waiting for PROBES)" 20 has_announced "$part" PROBES
    announced "$part" PROBES >"$state/pids/$part.probe"
  fi
  if [ "$rest" = yes ]; then
    wait_for "$part" "starting its REST server (waiting for REST)" 20 has_announced "$part" REST
    announced "$part" REST >"$state/pids/$part.rest"
  fi
  record_metrics "$part"
  seal_part "$part"
}

etcd_healthy() { curl -fsS -m 1 "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"'; }

start_etcd() {
  local want=${MM_LOCAL_ETCD_PORT-} port peer attempt
  for attempt in 1 2 3; do
    if [ -n "$want" ] && [ "$want" != 0 ]; then
      is_port "$want" || { err "MM_LOCAL_ETCD_PORT=$want is not a port"; exit 2; }
      port_free "$want" ||
        { err "MM_LOCAL_ETCD_PORT=$want: 127.0.0.1:$want is taken (unset it or set 0: any free port)"; exit 1; }
      port=$want
    elif [ -z "$want" ] && [ "$attempt" = 1 ] && port_free 2379; then
      port=2379
    else
      port=$(free_port pair)
    fi
    peer=$((port + 1))
    port_free "$peer" || peer=$(free_port)
    etcd_url=http://127.0.0.1:$port
    say "[etcd] etcd $(etcd --version 2>/dev/null | awk 'NR == 1 { print $3 }') on $etcd_url"
    rm -rf "$state/data/etcd"
    start_part etcd etcd --name "$cluster_name" --data-dir "$state/data/etcd" \
      --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
      --listen-peer-urls "http://127.0.0.1:$peer" \
      --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "$cluster_name=http://127.0.0.1:$peer" \
      --logger zap --log-level warn
    local pid i
    pid=$(cat "$(pid_file etcd)")
    for ((i = 1; i <= 300; i++)); do
      etcd_healthy && break
      kill -0 "$pid" 2>/dev/null || break
      ((i % 50 == 0)) && say "    ... etcd: still not healthy ($((i / 10)) s)"
      sleep 0.1
    done
    if etcd_healthy; then
      echo "$port" >"$state/pids/etcd.port"
      seal_part etcd
      say "    etcd healthy (pid $pid, log $(log_file etcd))"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null && grep -q "address already in use" "$(log_file etcd)" &&
      { [ -z "$want" ] || [ "$want" = 0 ]; }; then
      say "    etcd's port was taken meanwhile: another one"
      wait "$pid" 2>/dev/null || true
      rm -f "$state"/pids/etcd.*
      started=() # etcd is the first part
      continue
    fi
    fail etcd "not healthy on $etcd_url"
  done
  fail etcd "ports kept being taken"
}

start_s3() {
  local servers=$top/tests/servers port=${MM_LOCAL_S3_PORT:-0}
  if [ ! -f "$servers/node_modules/s3rver/package.json" ]; then
    err "s3rver is not installed in $servers/node_modules: run scripts/setup.sh"
    stop_started
    exit 1
  fi
  is_port "$port" || { err "MM_LOCAL_S3_PORT=$port is not a port"; stop_started; exit 2; }
  if [ "$port" != 0 ] && ! port_free "$port"; then
    err "MM_LOCAL_S3_PORT=$port: 127.0.0.1:$port is taken"
    stop_started
    exit 1
  fi
  say "[s3] s3rver (tests/servers) with bucket $bucket"
  rm -rf "$state/data/s3"
  mkdir -p "$state/data/s3"
  # The key pair through the environment: not on a command line.
  S3RVER_ACCESS_KEY_ID=$access_key S3RVER_SECRET_ACCESS_KEY=$secret_key \
    start_part s3 node --openssl-legacy-provider "$servers/s3rver_run.js" \
    --dir "$state/data/s3" --port "$port" --bucket "$bucket"
  listened s3
  s3_url=http://127.0.0.1:$(part_port s3)
  say "    s3rver on $s3_url (pid $(cat "$(pid_file s3)"), log $(log_file s3))"
}

fill_bucket() {
  say "[s3] the example models (examples/make_models.sh), into bucket $bucket"
  rm -rf "$state/models"
  if ! "$top/examples/make_models.sh" "$build" "$state/models" >"$state/logs/models.log" 2>&1; then
    err "examples/make_models.sh failed; its output: $state/logs/models.log"
    tail -n 20 "$state/logs/models.log" | sed 's/^/    /' >&2
    stop_started
    exit 1
  fi
  local f rel n=0
  while IFS= read -r -d '' f; do
    rel=${f#"$state/models/"}
    # Unsigned PUTs: s3rver takes writes without a signature (reads are checked).
    if ! curl -fsS -m 30 -T "$f" "$s3_url/$bucket/$rel" >/dev/null 2>"$state/logs/upload.log"; then
      err "upload of $rel to $s3_url/$bucket failed: $(cat "$state/logs/upload.log")"
      stop_started
      exit 1
    fi
    say "    s3://$bucket/$rel ($(stat -c %s "$f") bytes)"
    n=$((n + 1))
  done < <(find "$state/models" -type f -print0 | sort -z)
  [ "$n" -gt 0 ] || { err "examples/make_models.sh made nothing"; stop_started; exit 1; }
}

mmctl_apply() {
  local what=$1 out
  shift
  if ! out=$("$build/cli/mmctl" apply "$@" 2>&1); then
    err "mmctl apply of $what failed:"
    printf '%s\n' "$out" | sed 's/^/    /' >&2
    stop_started
    exit 1
  fi
  printf '%s\n' "$out" | sed 's/^/    /'
}

apply_config() {
  local f
  say "[config] the storage-config Secret (key localMinIO: s3 on $s3_url, bucket $bucket)"
  (
    umask 077
    cat >"$state/storage-config.yaml" <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: storage-config
stringData:
  localMinIO: '{"type": "s3", "access_key": "$access_key", "secret_access_key": "$secret_key", "endpoint_url": "$s3_url", "bucket": "$bucket"}'
EOF
  )
  mmctl_apply "the storage-config Secret" -f "$state/storage-config.yaml"
  say "[config] the ServingRuntimes of deploy/runtimes"
  for f in "$top"/deploy/runtimes/*.yaml; do
    mmctl_apply "${f#"$top/"}" -f "$f"
  done
}

model_types() {
  awk '/supportedModelFormats:/ { on = 1; next } on && /- name:/ { print $3; exit }' \
    "$top/deploy/runtimes/$1.yaml"
}

start_pods() {
  local rt k part dir types conc program=()
  for rt in "${runtimes[@]}"; do
    for ((k = 0; k < pods_per_runtime; k++)); do
      part=runtime-$rt-$k
      dir=$state/data/$rt-$k
      rm -rf "$dir"
      mkdir -p "$dir/models"
      conc=$(awk -F'"' '/maxLoadingConcurrency:/ { print $2; exit }' \
        "$top/deploy/runtimes/$rt.yaml")
      case $rt in
        mm-runtime) program=("$build/runtimes/xgboost/mm-runtime") ;;
        mm-sklearn) program=(/usr/bin/python3 "$top/runtimes/sklearn/server.py") ;;
      esac
      say "[$part] ${program[*]##*/} (models dir $dir/models)"
      # The cache dir the node fills, and the models root its pvc links lead to.
      start_part "$part" "${program[@]}" --listen 127.0.0.1:0 --models-dir "$dir/models" \
        --models-dir "$state/models" --max-loading-concurrency "${conc:-1}" --log-level info
    done
  done
  for rt in "${runtimes[@]}"; do
    for ((k = 0; k < pods_per_runtime; k++)); do
      part=runtime-$rt-$k
      listened "$part"
      say "    $part on 127.0.0.1:$(part_port "$part") (pid $(cat "$(pid_file "$part")"))"
    done
  done
  local probe_args=()
  has_probes "$build/node/mm-node" && probe_args=(--probe-listen 127.0.0.1:0)
  local rest_args=() rest=no
  has_rest "$build/node/mm-node" && rest_args=(--rest-listen 127.0.0.1:0) && rest=yes
  for rt in "${runtimes[@]}"; do
    types=$(model_types "$rt")
    for ((k = 0; k < pods_per_runtime; k++)); do
      part=node-$rt-$k
      say "[$part] mm-node, instance $rt-$k, beside runtime-$rt-$k (runtime $rt, types $types)"
      start_part "$part" "$build/node/mm-node" --etcd-endpoints "$etcd_url" \
        --cluster "$cluster_name" --instance-id "$rt-$k" \
        --runtime "127.0.0.1:$(part_port "runtime-$rt-$k")" --runtime-name "$rt" \
        --model-types "$types" --zone local --listen 127.0.0.1:0 \
        --internal-listen 127.0.0.1:0 --models-root "$state/models" \
        --cache-dir "$state/data/$rt-$k/models" --shutdown-timeout "$node_shutdown" \
        "${probe_args[@]}" "${rest_args[@]}" $(metrics_args "$build/node/mm-node") \
        --log-level info
    done
  done
  local probes=no
  [ ${#probe_args[@]} -gt 0 ] && probes=yes
  for rt in "${runtimes[@]}"; do
    for ((k = 0; k < pods_per_runtime; k++)); do
      part=node-$rt-$k
      listened "$part" "$probes" "$rest"
      wait_for "$part" "registering its instance in etcd" 60 registered "$rt-$k"
      say "    $part on 127.0.0.1:$(part_port "$part"), registered (pid $(cat "$(pid_file "$part")"))"
    done
  done
}

registered() {
  env -u ETCDCTL_ENDPOINTS ETCDCTL_API=3 etcdctl --endpoints "$etcd_url" --command-timeout=2s \
    get --keys-only \
    "/modelmesh/$cluster_name/instances/$1" 2>/dev/null | grep -q .
}

start_controllers() {
  local k part probe_args=() probes=no
  if has_probes "$build/controller/mm-controller"; then
    probe_args=(--probe-listen 127.0.0.1:0)
    probes=yes
  fi
  for k in 0 1; do
    part=controller-$k
    say "[$part] mm-controller, identity $part"
    start_part "$part" "$build/controller/mm-controller" --etcd-endpoints "$etcd_url" \
      --cluster "$cluster_name" --identity "$part" "${probe_args[@]}" \
      $(metrics_args "$build/controller/mm-controller") --log-level info
    wait_for "$part" "starting (waiting for LEADING or FOLLOWING in its log)" 60 \
      has_role "$part"
    if [ "$probes" = yes ]; then
      wait_for "$part" "starting its probes (waiting for PROBES)" 20 has_announced "$part" PROBES
      announced "$part" PROBES >"$state/pids/$part.probe"
    fi
    record_metrics "$part"
    seal_part "$part"
    say "    $part: $(grep -m1 -E '^(LEADING|FOLLOWING)' "$(log_file "$part")") (pid $(cat "$(pid_file "$part")"))"
  done
}

has_role() { grep -qE '^(LEADING|FOLLOWING)' "$(log_file "$1")"; }

start_gateway() {
  local probe_args=() probes=no
  if has_probes "$build/gateway/mm-gateway"; then
    probe_args=(--probe-listen 127.0.0.1:0)
    probes=yes
  fi
  local rest_args=() rest=no
  has_rest "$build/gateway/mm-gateway" && rest_args=(--rest-listen 127.0.0.1:0) && rest=yes
  say "[gateway] mm-gateway on 127.0.0.1:$grpc_port (the modelmesh-serving Service)"
  start_part gateway "$build/gateway/mm-gateway" --etcd-endpoints "$etcd_url" \
    --cluster "$cluster_name" --gateway-id gateway --listen "127.0.0.1:$grpc_port" \
    "${probe_args[@]}" "${rest_args[@]}" $(metrics_args "$build/gateway/mm-gateway") \
    --log-level info
  listened gateway "$probes" "$rest"
  grpc_port=$(part_port gateway)
  say "    gateway on 127.0.0.1:$grpc_port (pid $(cat "$(pid_file gateway)"))"
  if [ "$rest" = yes ]; then
    say "    gateway's KServe V2 REST on http://127.0.0.1:$(cat "$state/pids/gateway.rest")"
  fi
}

# Every part with probes answers /ready 200 (nodes: runtime READY, registered, registry read;
# controllers and gateway: registry read).
probe_ready() { curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$(part_probe "$1")/ready" 2>/dev/null; }
wait_ready() {
  local part
  for part in $(all_parts); do
    [ -n "$(part_probe "$part")" ] || continue
    wait_for "$part" "getting ready (waiting for 200 on its /ready probe)" 60 probe_ready "$part"
  done
  say "[ready] every part with probes answers /ready"
}

write_env() {
  local tmp=$state/env.tmp
  {
    echo "# The local cluster ($me up); source it: . $state/env"
    printf 'export MM_ETCD_ENDPOINTS=%q MM_CLUSTER=%q MM_NAMESPACE=%q \\\n' \
      "$etcd_url" "$cluster_name" "$namespace"
    printf '  MM_GRPC_ADDRESS=%q MM_NODE_ADDRESS=%q MM_S3_ENDPOINT=%q \\\n' \
      "127.0.0.1:$grpc_port" "127.0.0.1:$grpc_port" "$s3_url"
    printf '  MM_LOCAL_DIR=%q MM_BUILD_DIR=%q\n' "$state" "$build"
  } >"$tmp"
  mv "$tmp" "$state/env"
}

# Parts with a pid file, alive ones and dead ones (sets alive_parts, dead_parts).
survey() {
  local part
  alive_parts=()
  dead_parts=()
  for part in $(all_parts); do
    [ -f "$(pid_file "$part")" ] || continue
    if part_pid "$part" >/dev/null; then alive_parts+=("$part"); else dead_parts+=("$part"); fi
  done
}

cmd_up() {
  abs_state
  survey
  if [ ${#alive_parts[@]} -gt 0 ] && [ ${#dead_parts[@]} -eq 0 ] &&
    [ ${#alive_parts[@]} -eq "$(all_parts | wc -l)" ]; then
    say "the local cluster already runs in $state: nothing started"
    cmd_status || true
    return 0
  fi
  if [ ${#alive_parts[@]} -gt 0 ]; then
    err "a cluster in $state is partly running: gone: ${dead_parts[*]:-(parts never started)}; running: ${alive_parts[*]}"
    err "run '$me down' first"
    exit 1
  fi
  if [ "${MM_LOCAL_SETUP:-1}" != 0 ]; then
    say "[setup] scripts/setup.sh ${build#"$top/"} (installs what is missing, builds)"
    "$top/scripts/setup.sh" "${build#"$top/"}"
  fi
  local prog
  for prog in node/mm-node gateway/mm-gateway controller/mm-controller \
    runtimes/xgboost/mm-runtime cli/mmctl examples/xgboost/make-breast-cancer; do
    [ -x "$build/$prog" ] || { err "$build/$prog is not built (scripts/setup.sh $build)"; exit 1; }
  done
  for prog in etcd etcdctl node curl setsid; do
    command -v "$prog" >/dev/null || { err "$prog is not installed (scripts/setup.sh)"; exit 1; }
  done
  grpc_port=${MM_LOCAL_GRPC_PORT:-8033}
  is_port "$grpc_port" || { err "MM_LOCAL_GRPC_PORT=$grpc_port is not a port"; exit 2; }
  if [ "$grpc_port" != 0 ] && ! port_free "$grpc_port"; then
    err "127.0.0.1:$grpc_port (MM_LOCAL_GRPC_PORT, default 8033) is taken: free it, or set MM_LOCAL_GRPC_PORT to another port (0: any free one)"
    exit 1
  fi
  # A fresh cluster: the previous one's pids, data and logs go (logs of a failed start were
  # printed then).
  rm -rf "$state/pids" "$state/data" "$state/env"
  mkdir -p "$state/pids" "$state/logs" "$state/data"
  rm -f "$state"/logs/*.log
  trap on_exit EXIT
  trap 'err "interrupted"; exit 130' INT TERM
  local t0=$SECONDS
  say "== starting the local cluster in $state"
  start_etcd
  start_s3
  fill_bucket
  export MM_ETCD_ENDPOINTS=$etcd_url MM_CLUSTER=$cluster_name MM_NAMESPACE=$namespace
  apply_config
  start_pods
  start_controllers
  start_gateway
  wait_ready
  write_env
  up_done=1
  trap - INT TERM
  say "== the local cluster is up ($((SECONDS - t0)) s)"
  cmd_status || true
  cat <<EOF

Use it:
  . $state/env                     # MM_ETCD_ENDPOINTS, MM_CLUSTER, MM_GRPC_ADDRESS, ... for mmctl
  $build/cli/mmctl get isvc            # apply, get, describe, delete: kubectl's verbs
  $build/cli/mmctl get secret storage-config -o json
  etcdctl --endpoints "\$MM_ETCD_ENDPOINTS" get --prefix /modelmesh/   # the registry
  gRPC (KServe V2 inference, the model API) on 127.0.0.1:$grpc_port, e.g.
    $build/cli/mmctl --address 127.0.0.1:$grpc_port infer MODEL --file request.json
  models in s3://$bucket on $s3_url (storage key localMinIO), made into $state/models
  $me status | logs [PART] | down
EOF
}

# ---------------------------------------------------------------- status

cmd_status() {
  abs_state
  local part pid port probe ready n_alive=0 n_dead=0 n=0 line
  for part in $(all_parts); do
    [ -f "$(pid_file "$part")" ] || continue
    n=$((n + 1))
    [ "$n" = 1 ] && printf '%-22s %-8s %-6s %-6s %-22s %s\n' PART PID PORT ALIVE READY LOG
    port=$(part_port "$part")
    ready=-
    if pid=$(part_pid "$part"); then
      n_alive=$((n_alive + 1))
      line=yes
      probe=$(part_probe "$part")
      if [ -n "$probe" ]; then
        ready=$(curl -sS -m 2 "http://127.0.0.1:$probe/ready" 2>&1 | head -n 1) || true
        [ -n "$ready" ] || ready="no answer on probe port $probe"
      elif [ "$part" = etcd ]; then
        if curl -fsS -m 2 "http://127.0.0.1:$port/health" 2>/dev/null | grep -q '"health":"true"'
        then ready=healthy; else ready=unhealthy; fi
      fi
    else
      pid=$(cat "$(pid_file "$part")" 2>/dev/null || echo -)
      n_dead=$((n_dead + 1))
      line=DEAD
    fi
    printf '%-22s %-8s %-6s %-6s %-22s %s\n' "$part" "$pid" "${port:--}" "$line" "$ready" \
      "$(log_file "$part")"
  done
  if [ "$n" = 0 ]; then
    say "no cluster in $state (nothing recorded)"
    return 3
  fi
  if [ "$n_alive" = 0 ]; then
    say "nothing of the cluster in $state runs"
    return 3
  fi
  if [ "$n_dead" -gt 0 ] || [ "$n" -lt "$(all_parts | wc -l)" ]; then
    say "$n_dead of $(all_parts | wc -l) parts are not running: '$me down', then '$me up'"
    return 1
  fi
  return 0
}

# ---------------------------------------------------------------- down

# stop_parts SECONDS PART...: SIGTERM those still alive, wait up to SECONDS (a line every 5 s),
# SIGKILL what is left; pid files removed, logs kept.
stop_parts() {
  local secs=$1
  shift
  local part pid i left=()
  declare -A pids=()
  for part in "$@"; do
    if pid=$(part_pid "$part"); then
      pids[$part]=$pid
      kill -TERM "$pid" 2>/dev/null || true
    elif [ -f "$state/pids/$part.pid" ] && [ ! -f "$state/pids/$part.start" ]; then
      # Started by this up, not sealed yet: our child, the command line checked.
      pid=$(cat "$state/pids/$part.pid")
      if runs_part "$part" "$pid"; then
        pids[$part]=$pid
        kill -TERM "$pid" 2>/dev/null || true
      fi
    fi
  done
  for ((i = 1; i <= secs * 10; i++)); do
    left=()
    for part in "${!pids[@]}"; do
      pid=${pids[$part]}
      if runs_part "$part" "$pid" && [ "$(proc_state "$pid")" != Z ]; then
        left+=("$part")
      fi
    done
    [ ${#left[@]} -eq 0 ] && break
    ((i % 50 == 0)) && say "    ... waiting for ${left[*]} to stop ($((i / 10)) s)"
    sleep 0.1
  done
  for part in "${left[@]}"; do
    say "    $part did not stop within $secs s: SIGKILL"
    kill -KILL "${pids[$part]}" 2>/dev/null || true
  done
  for part in "$@"; do
    [ -n "${pids[$part]:-}" ] && say "    stopped $part (pid ${pids[$part]})"
    rm -f "$state/pids/$part".*
  done
  # Reap those that are our own children (a failed up); others are not waitable.
  for part in "${!pids[@]}"; do wait "${pids[$part]}" 2>/dev/null || true; done
}

cmd_down() {
  abs_state
  survey
  if [ ${#alive_parts[@]} -eq 0 ]; then
    say "no local cluster runs in $state: nothing to stop"
    rm -rf "$state/pids" "$state/env"
    [ -d "$state/logs" ] && say "logs of the last run: $state/logs/"
    return 0
  fi
  local t0=$SECONDS parts=() part
  say "== stopping the local cluster in $state (${#alive_parts[@]} parts running)"
  rm -f "$state/env"
  stop_parts 10 gateway controller-1 controller-0
  for part in $(all_parts); do [[ $part == node-* ]] && parts+=("$part"); done
  say "    nodes move or unload their models (up to $node_shutdown)"
  stop_parts $((${node_shutdown%s} + 5)) "${parts[@]}"
  parts=()
  for part in $(all_parts); do [[ $part == runtime-* ]] && parts+=("$part"); done
  stop_parts 15 "${parts[@]}"
  stop_parts 10 s3
  stop_parts 10 etcd
  rm -rf "$state/pids"
  say "== stopped ($((SECONDS - t0)) s); logs kept in $state/logs/"
}

# ---------------------------------------------------------------- logs

cmd_logs() {
  abs_state
  local part=${1:-} f
  if [ -z "$part" ]; then
    [ -d "$state/logs" ] || { say "no logs in $state/logs"; return 1; }
    for f in "$state"/logs/*.log; do
      [ -e "$f" ] || continue
      printf '%-60s %8s bytes\n' "$f" "$(stat -c %s "$f")"
    done
    say "one of them: $me logs PART [-f]"
    return 0
  fi
  f=$(log_file "$part")
  [ -f "$f" ] || { err "no log for '$part' ($f); parts: $(all_parts | tr '\n' ' ')"; return 2; }
  if [ "${2:-}" = -f ]; then exec tail -n 50 -f "$f"; fi
  cat "$f"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
