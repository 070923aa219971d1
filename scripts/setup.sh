#!/usr/bin/env bash
# setup.sh - install what is missing (Debian packages), then configure and build.
# Idempotent and quick when everything is there: one dpkg query, no apt call, ninja no-op.
#   scripts/setup.sh [BUILD_DIR] [extra meson setup args...]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
shift || true

# The build toolchain and libraries, the packages of the servers the tests run, h2load
# (nghttp2-client), the load generator of bench_hop, and prometheus, which test_prometheus runs
# (from the test, on its own port and data dir; its system service is never started).
packages=(
  gcc libc6-dev pkg-config meson ninja-build git curl ca-certificates openssl procps
  libcurl4-openssl-dev libcjson-dev libev-dev libbsd-dev libyaml-dev libssl-dev libmicrohttpd-dev
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
  clang libclang-rt-14-dev
  python3 python3-grpcio python3-grpc-tools python3-protobuf
  libxgboost-dev python3-sklearn python3-joblib python3-numpy zlib1g-dev
  etcd-server etcd-client
  nghttp2-client
  prometheus
)

# One dpkg query; a package it has never heard of is simply absent from the installed list.
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${packages[@]}" 2>/dev/null |
            awk '$2 == "installed" { print $1 }' || true)
missing=()
for p in "${packages[@]}"; do
  grep -qx "$p" <<<"$installed" || missing+=("$p")
done
# Node.js and npm run the object stores of the storage tests (tests/servers): Debian's, unless
# this machine has a node and npm already.
command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
# kubectl renders deploy/k8s in test_k8s (kubectl kustomize): Debian's kubernetes-client, unless
# this machine has a kubectl already.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cd "$top"
# s3rver and azurite at the versions tests/servers/package-lock.json pins, once (again only when
# the lock file changes).
servers=tests/servers
if [ ! -f "$servers/node_modules/.package-lock.json" ] ||
   [ "$servers/package-lock.json" -nt "$servers/node_modules/.package-lock.json" ]; then
  echo "setup: installing the test object stores (npm ci in $servers)"
  npm_log=$(mktemp)
  ok=0
  for attempt in 1 2 3; do  # a registry hiccup or a busy npm cache is worth another try
    if npm ci --prefix "$servers" --no-audit --no-fund --ignore-scripts --loglevel=error \
         >"$npm_log" 2>&1; then
      ok=1; break
    fi
    echo "setup: npm ci failed (attempt $attempt of 3)" >&2
    sleep $((attempt * 2))
  done
  if [ $ok -eq 0 ]; then
    cat "$npm_log" >&2; rm -f "$npm_log"
    echo "setup: cannot install the test object stores (npm ci in $servers): see above" >&2
    exit 1
  fi
  rm -f "$npm_log"
fi
setup_log=$(mktemp)
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$@" >"$setup_log" 2>&1 || {
    cat "$setup_log" >&2; echo "setup: meson setup $build failed (above)" >&2; exit 1; }
  rm -f "$setup_log"
elif [ $# -gt 0 ]; then
  # options given again win over an older setup
  meson configure "$build" "$@" >"$setup_log" 2>&1 || {
    cat "$setup_log" >&2; echo "setup: meson configure $build failed (above)" >&2; exit 1; }
  rm -f "$setup_log"
fi
rm -f "$setup_log"
build_log=$(mktemp)
if ! ninja -C "$build" >"$build_log" 2>&1; then
  grep -v '^\[' "$build_log" >&2 || true   # the compiler's words, without ninja's progress
  rm -f "$build_log"
  echo "setup: the build in $top/$build failed (above)" >&2
  exit 1
fi
rm -f "$build_log"
echo "setup: built in $top/$build"
