#!/usr/bin/env bash
# The peer benchmark (issue 24): the gateway's CPU per request against nginx, in the
# same run, in front of the same upstream (`passport-gate echo`).
#
#   crates/passport-gate-cli/benches/peers.sh          # from the repository root
#
# Configurations, in alternating rounds (every round runs each once, in this order):
#   nginx             nginx, worker_processes 1, keep-alive upstream, proxy_buffering off
#   off               passport-gate serve, agent_envelope.enabled = false
#   cached            passport-gate serve, the same passport and signature each time
#                     (no replay protection, no audit file)
#   replay_audit      as cached, plus replay protection (the default disk store) and an audit file;
#                     each request has a distinct body and signature (wrk cycles through
#                     pre-signed requests, see examples/peers_requests.rs)
#   nginx_tls, off_tls, cached_tls
#                     the same with TLS on both sides: wrk -> proxy over TLS, proxy -> an
#                     nginx TLS front of the echo upstream (the same front and the same
#                     certificates for both proxies)
# Each run: wrk, 1 thread, PEERS_CONNECTIONS (32) connections, PEERS_SECONDS (8) s, a
# 77-byte chat body, after a 1 s warm-up. CPU per request is utime + stime of every
# thread of the proxy's processes (nginx: master and worker) from /proc/PID/stat over the
# measured run, divided by the requests wrk completed. The upstream's and wrk's CPU are
# not counted. Prints one row per run, then medians, then the two ratio lines.
#
# Environment: PEERS_ROUNDS (3), PEERS_SECONDS (8), PEERS_CONNECTIONS (32),
# PEERS_DISTINCT (pre-signed distinct requests; default 400000), PEERS_TLS (1; 0 skips
# the TLS configurations), PEERS_PORT (39100; uses the next 3 ports too),
# PEERS_GATE_WORKERS (the gateway's [server] worker_threads; default 0, one per core),
# CARGO_TARGET_DIR (default target), PEERS_NO_BUILD=1 (use the binaries already built),
# PEERS_KEEP=1 (keep the work directory: configurations, logs). Installs nginx and wrk from Debian when missing
# (needs root, as .ci/run).
set -euo pipefail

cd "$(dirname "$0")/../../.."
ROUNDS=${PEERS_ROUNDS:-3}
SECONDS_RUN=${PEERS_SECONDS:-8}
CONNECTIONS=${PEERS_CONNECTIONS:-32}
DISTINCT=${PEERS_DISTINCT:-400000}
TLS=${PEERS_TLS:-1}
PORT=${PEERS_PORT:-39100}
TARGET=${CARGO_TARGET_DIR:-target}
GATE_WORKERS=${PEERS_GATE_WORKERS:-0}
PROXY_PORT=$PORT
FRONT_PORT=$((PORT + 1))

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing from Debian: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ "${PEERS_NO_BUILD:-0}" != 1 ]; then
  echo "== building (release)"
  cargo build --release -q -p passport-gate-cli --bin passport-gate --example peers_requests
fi
GATE=$TARGET/release/passport-gate

WORK=$(mktemp -d /tmp/pg-peers.XXXXXX)
PIDS=()
CURRENT=""
cleanup() {
  for p in "${PIDS[@]}" $CURRENT; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${PEERS_KEEP:-0}" = 1 ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

echo "== signing $DISTINCT distinct requests"
"$TARGET/release/examples/peers_requests" "$WORK" "$DISTINCT"

# The upstream.
"$GATE" echo --listen 127.0.0.1:0 >"$WORK/echo.out" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 100); do grep -q "http://" "$WORK/echo.out" 2>/dev/null && break; sleep 0.1; done
ECHO=$(grep -o 'http://[0-9.:]*' "$WORK/echo.out" | head -1 | sed 's|http://||')
[ -n "$ECHO" ] || { echo "echo upstream did not start" >&2; exit 1; }

user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"

# nginx configuration: $1 = name, $2 = server block.
nginx_conf() {
  mkdir -p "$WORK/$1"
  cat >"$WORK/$1/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1/body;
  proxy_temp_path $WORK/$1/proxy;
  fastcgi_temp_path $WORK/$1/fastcgi;
  uwsgi_temp_path $WORK/$1/uwsgi;
  scgi_temp_path $WORK/$1/scgi;
  $2
}
EOF
}

# The TLS front of the echo upstream, shared by every TLS configuration.
if [ "$TLS" = 1 ]; then
  nginx_conf front "upstream echo { server $ECHO; keepalive 64; }
  server {
    listen 127.0.0.1:$FRONT_PORT ssl;
    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
    keepalive_requests 1000000;
    location / { proxy_pass http://echo; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }
  }"
  "$NGINX" -c "$WORK/front/nginx.conf" -e "$WORK/front/error.log" &
  PIDS+=($!)
fi

# The nginx under test: $1 = name, $2 = "tls" or "".
nginx_under_test() {
  local listen="listen 127.0.0.1:$PROXY_PORT;" upstream="server $ECHO; keepalive 64;" scheme=http extra=""
  if [ "$2" = tls ]; then
    listen="listen 127.0.0.1:$PROXY_PORT ssl; ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;"
    upstream="server 127.0.0.1:$FRONT_PORT; keepalive 64;"
    scheme=https
    extra="proxy_ssl_trusted_certificate $WORK/ca.pem; proxy_ssl_verify on; proxy_ssl_name localhost; proxy_ssl_server_name on; proxy_ssl_session_reuse on;"
  fi
  nginx_conf "$1" "upstream echo { $upstream }
  server {
    $listen
    keepalive_requests 1000000;
    location / { proxy_pass $scheme://echo; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; $extra }
  }"
}

# passport-gate configuration: $1 = name, $2 = "tls" or "", $3 = extra TOML.
gate_conf() {
  mkdir -p "$WORK/$1"
  local upstream="http://$ECHO" tls=""
  if [ "$2" = tls ]; then
    upstream="https://localhost:$FRONT_PORT\"
upstream_ca_file = \"$WORK/ca.pem"
    tls="[server.tls]
cert_file = \"$WORK/cert.pem\"
key_file = \"$WORK/key.pem\""
  fi
  cat >"$WORK/$1/gateway.toml" <<EOF
[server]
worker_threads = $GATE_WORKERS
listen = "127.0.0.1:$PROXY_PORT"
admin_listen = "127.0.0.1:0"
upstream = "$upstream"
$tls

$3
EOF
}

ENVELOPE_OFF='[agent_envelope]
enabled = false
chain_id = "gonka-mainnet"'
ENVELOPE_ON='[agent_envelope]
enabled = true
chain_id = "gonka-mainnet"'

nginx_under_test nginx ""
gate_conf off "" "$ENVELOPE_OFF"
gate_conf cached "" "$ENVELOPE_ON"
# One principal sends every request: its replay quota must exceed what one run sends.
gate_conf replay_audit "" "$ENVELOPE_ON
replay_protection = true
replay_cache_capacity = 10000000
replay_records_per_principal = 100000000

[replay]
store = \"disk\"
data_dir = \"$WORK/replay_audit/data\"

[attribution]
audit_file = \"$WORK/replay_audit/audit.jsonl\""
mkdir -p "$WORK/replay_audit/data"
CONFIGS=(nginx off cached replay_audit)
if [ "$TLS" = 1 ]; then
  nginx_under_test nginx_tls tls
  gate_conf off_tls tls "$ENVELOPE_OFF"
  gate_conf cached_tls tls "$ENVELOPE_ON"
  CONFIGS+=(nginx_tls off_tls cached_tls)
fi

TCK=$(getconf CLK_TCK)
# utime + stime (clock ticks) of the given processes, every thread included.
ticks() {
  local sum=0 p
  for p in "$@"; do
    # A process gone since the list was made (an nginx worker replaced) has no stat: its
    # ticks are lost, so say so rather than stop the run.
    local stat
    if ! stat=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || [ -z "$stat" ]; then
      echo "warning: process $p ended during the run; its CPU is not counted" >&2
      continue
    fi
    # Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    sum=$((sum + $(echo "$stat" | awk '{print $12 + $13}')))
  done
  echo $sum
}

wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# p99 from wrk --latency, in ms.
p99_ms() {
  awk '$1 == "99%" { v = $2; u = v; gsub(/[0-9.]/, "", u); gsub(/[a-z]/, "", v);
    if (u == "us") v /= 1000; else if (u == "s") v *= 1000; printf "%.2f", v }' "$1"
}

RESULTS=$WORK/results.txt
: >"$RESULTS"
printf '%-14s %5s %10s %9s %11s %8s\n' config round "req/s" "p99 ms" "cpu us/req" non2xx

run_one() {
  local name=$1 round=$2 scheme=http script=$WORK/cached.lua pids
  case $name in *_tls) scheme=https ;; esac
  [ "$name" = replay_audit ] && script=$WORK/distinct.lua
  case $name in
    nginx*)
      "$NGINX" -c "$WORK/$name/nginx.conf" -e "$WORK/$name/error.log" &
      local main=$!
      ;;
    *)
      rm -f "$WORK/$name/audit.jsonl"*
      # Each run starts with an empty replay store: the distinct requests are the same
      # in every round, and a kept record would refuse them as replays.
      rm -f "$WORK/$name/data/replay.redb"
      PASSPORT_GATE_LOG=warn "$GATE" serve --config "$WORK/$name/gateway.toml" >/dev/null 2>"$WORK/$name/stderr" &
      local main=$!
      ;;
  esac
  wait_port "$PROXY_PORT"
  sleep 0.3
  CURRENT=$main
  pids="$main $(pgrep -P "$main" | tr '\n' ' ' || true)"
  local url="$scheme://localhost:$PROXY_PORT/v1/chat/completions"
  # Warm-up, not measured. It sends the cached request (under replay protection only
  # its first copy is accepted), never one of the distinct ones the measured run sends.
  wrk -t1 -c"$CONNECTIONS" -d1s -s "$WORK/cached.lua" "$url" >/dev/null 2>&1 || true
  local before after
  # shellcheck disable=SC2086
  before=$(ticks $pids)
  wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_RUN}s" --latency -s "$script" "$url" >"$WORK/wrk.out" 2>&1
  # shellcheck disable=SC2086
  after=$(ticks $pids)
  kill "$main" 2>/dev/null || true
  wait "$main" 2>/dev/null || true
  local requests rps p99 non2xx cpu
  requests=$(awk '/requests in/ { print $1 }' "$WORK/wrk.out")
  rps=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' "$WORK/wrk.out")
  p99=$(p99_ms "$WORK/wrk.out")
  non2xx=$(awk '/Non-2xx/ { print $5 }' "$WORK/wrk.out")
  non2xx=${non2xx:-0}
  cpu=$(awk -v t=$((after - before)) -v hz="$TCK" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
  printf '%-14s %5s %10s %9s %11s %8s\n' "$name" "$round" "$rps" "$p99" "$cpu" "$non2xx"
  echo "$name $round $rps $p99 $cpu $non2xx" >>"$RESULTS"
}

for round in $(seq "$ROUNDS"); do
  for c in "${CONFIGS[@]}"; do
    run_one "$c" "$round"
  done
done

median() { # $1 = config, $2 = column (3 req/s, 4 p99, 5 cpu)
  awk -v c="$1" -v k="$2" '$1 == c { print $k }' "$RESULTS" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
echo "medians of $ROUNDS rounds (wrk -t1 -c$CONNECTIONS -d${SECONDS_RUN}s, 77-byte body; load average $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-14s %10s %9s %11s %9s\n' config "req/s" "p99 ms" "cpu us/req" "x nginx"
for c in "${CONFIGS[@]}"; do
  ref=nginx
  case $c in *_tls) ref=nginx_tls ;; esac
  printf '%-14s %10s %9s %11s %9s\n' "$c" "$(median "$c" 3)" "$(median "$c" 4)" "$(median "$c" 5)" \
    "$(awk -v a="$(median "$c" 5)" -v b="$(median "$ref" 5)" 'BEGIN { printf "%.2f", a / b }')"
done
ratio() { awk -v a="$(median "$1" 5)" -v b="$(median "$2" 5)" 'BEGIN { printf "%.2f", a / b }'; }
echo "replay+audit adds $(awk -v a="$(median replay_audit 5)" -v b="$(median cached 5)" 'BEGIN { printf "%.0f", (a / b - 1) * 100 }') % to the cached-passport cpu per request"
if [ "$TLS" = 1 ]; then
  echo "tls: proxy $(ratio off_tls nginx_tls) x nginx, cached passport $(ratio cached_tls nginx_tls) x nginx"
fi
echo "peers: proxy cpu per request $(ratio off nginx) x nginx"
echo "peers: cached passport cpu per request $(ratio cached nginx) x nginx"
