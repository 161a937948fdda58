#!/usr/bin/env bash
# The demo: a real rolling restart of a three-node cluster under a few thousand live clients.
#
# Starts Redis (EBB_REDIS_URL if it answers, else a local redis-server, else a container), three
# ebb-node processes under a small supervisor (a node that exits after its drain is started again
# under the same name, as systemd or Kubernetes would), a few thousand reconnecting clients
# sending steadily (ebb-load soak), then runs `ebb rolling-restart` with live progress and prints
# what happened: per node drain time and connections moved, messages sent and lost, reconnect
# spread. Everything it started is stopped on exit, Ctrl-C included.
#
# Knobs: EBB_DEMO_CLIENTS (3000), EBB_DEMO_RATE (msgs/s, 3000), EBB_DEMO_PORT (first node port,
# 9101), EBB_DEMO_REDIS_PORT (6399), EBB_DEMO_CLOSE_SPREAD (4s).
set -euo pipefail
cd "$(dirname "$0")/.."

clients=${EBB_DEMO_CLIENTS:-3000}
rate=${EBB_DEMO_RATE:-3000}
port=${EBB_DEMO_PORT:-9101}
redis_port=${EBB_DEMO_REDIS_PORT:-6399}
spread=${EBB_DEMO_CLOSE_SPREAD:-4s}
cluster=demo
bin=target/release

say() { printf '\n== %s\n' "$*"; }

say "building (release)"
cargo build --release --quiet -p ebb-node -p ebb-coordinator -p ebb-client

work=$(mktemp -d "${TMPDIR:-/tmp}/ebb-demo.XXXXXX")
supervisors=()
soak_pid=""
redis_pid=""
redis_container=""
cleanup() {
    trap - EXIT INT TERM
    touch "$work/stop"
    [ -n "$soak_pid" ] && kill "$soak_pid" 2>/dev/null || true
    # The nodes drain and exit (no clients are left); their supervisors see the stop file and
    # end with them.
    for pid in "${supervisors[@]}"; do
        pkill -TERM -P "$pid" 2>/dev/null || true
    done
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
    [ -n "$redis_container" ] && docker rm -f "$redis_container" >/dev/null 2>&1 || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "interrupted: cleaning up"; exit 130' INT TERM

say "starting Redis"
redis_answers() { "$bin/ebb" --redis "$1" --cluster "$cluster" status >/dev/null 2>&1; }
if [ -n "${EBB_REDIS_URL:-}" ] && redis_answers "$EBB_REDIS_URL"; then
    redis_url=$EBB_REDIS_URL
    echo "using $redis_url"
elif command -v redis-server >/dev/null; then
    redis_url=redis://127.0.0.1:$redis_port
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
    redis_pid=$!
    echo "redis-server on port $redis_port"
elif command -v docker >/dev/null; then
    image=${EBB_REDIS_IMAGE:-redis:7}
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        docker pull "$image" >/dev/null 2>&1 || { deploy/images/build.sh redis; image=ebb/redis:local; }
    fi
    redis_container=$(docker run -d --rm -p "127.0.0.1:$redis_port:6379" "$image")
    redis_url=redis://127.0.0.1:$redis_port
    echo "Redis container ($image) on port $redis_port"
else
    echo "need EBB_REDIS_URL, redis-server or docker" >&2
    exit 2
fi
for _ in $(seq 50); do redis_answers "$redis_url" && break; sleep 0.1; done
redis_answers "$redis_url" || { echo "Redis does not answer at $redis_url" >&2; exit 2; }

say "starting three nodes under a supervisor"
urls=()
for i in 1 2 3; do
    name=node-$i
    node_port=$((port + i - 1))
    urls+=("ws://127.0.0.1:$node_port/ws")
    # The supervisor: a node that exits (after a drain) is started again, same name. In its own
    # session, so a Ctrl-C reaches only this script, whose cleanup stops the nodes in order.
    setsid bash -c '
        while [ ! -e "$1/stop" ]; do
            "$2" --listen "127.0.0.1:$3" --name "$4" --redis "$5" --cluster "$6" \
                --close-spread "$7" --reconnect-spread 1s >>"$1/$4.log" 2>&1 || sleep 1
        done' supervisor "$work" "$bin/ebb-node" "$node_port" "$name" "$redis_url" "$cluster" "$spread" &
    supervisors+=($!)
    echo "$name on ws://127.0.0.1:$node_port/ws (log: $work/$name.log)"
done
for _ in $(seq 100); do
    n=$("$bin/ebb" --redis "$redis_url" --cluster "$cluster" status 2>/dev/null | grep -c ' active ' || true)
    [ "$n" = 3 ] && break
    sleep 0.1
done
"$bin/ebb" --redis "$redis_url" --cluster "$cluster" status

say "starting $clients clients sending $rate messages/s in total"
url_list=$(IFS=,; echo "${urls[*]}")
"$bin/ebb-load" soak --url "$url_list" -n "$clients" --rate "$rate" --for 10m --settle 20s \
    >"$work/soak.out" 2>"$work/soak.err" &
soak_pid=$!
for _ in $(seq 300); do
    connected=0
    for i in 1 2 3; do
        c=$( (exec 3<>"/dev/tcp/127.0.0.1/$((port + i - 1))" && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 && cat <&3) 2>/dev/null \
            | sed -n 's/.*"connections":\([0-9]*\).*/\1/p')
        connected=$((connected + ${c:-0}))
    done
    [ "$connected" -ge "$clients" ] && break
    sleep 0.2
done
echo "$connected clients connected"
sleep 2

say "ebb rolling-restart"
"$bin/ebb" --redis "$redis_url" --cluster "$cluster" rolling-restart || true

say "stopping the clients (they settle: every message must be answered)"
kill -INT "$soak_pid"
wait "$soak_pid" || true
soak_pid=""
cat "$work/soak.out"
"$bin/ebb" --redis "$redis_url" --cluster "$cluster" status
