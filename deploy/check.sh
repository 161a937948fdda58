#!/usr/bin/env bash
# Offline validation of deploy/: no registry, no cluster, no systemd as PID 1 needed.
#
#   deploy/check.sh                   every check whose tool is here; the others say SKIP
#   deploy/check.sh --install-tools   first install the optional tools (apt: docker-compose,
#                                     haproxy, systemd; a private venv with pyyaml + kubernetes)
#   deploy/check.sh --e2e             also run the compose stack with the local images
#                                     (deploy/images/) and a real `ebb rolling-restart` through it
#
# What is checked (details in deploy/check.py):
#   check.py         YAML of every manifest; Kubernetes objects against the API schema (with the
#                    `kubernetes` Python client), names, selectors, ports, probes, Secret/ConfigMap
#                    references; compose, systemd and Kubernetes: the kill timeout exceeds the
#                    drain deadline + the node's exit work, and the paced drain fits its deadline;
#                    every EBB_* variable is one ebb reads; `ebb serve` (k8s/serve.yaml, compose
#                    service ebb-serve, systemd/ebb-serve.service): 2+ replicas, listening where
#                    its readiness probe (/api/status), Service or published port point, --redis
#                    from config, secret and API token from a Secret or the caller's environment
#                    (never the file), restarted after any exit; ebb-agent
#                    (k8s/ws-app-agent.yaml, systemd/ebb-agent@.service): the app after `--`, the
#                    pod's name, probe and agent on the same health URL, KillMode=mixed, the kill
#                    timeout above the agent's EBB_DRAIN_DEADLINE + its exit work; Dockerfile
#                    structure
#   docker           Docker's own parser on deploy/Dockerfile, Dockerfile.kubectl and
#                    examples/node-ws/Dockerfile (the legacy builder parses the whole file
#                    before it would pull anything; asked for a missing target, it stops there)
#   docker-compose   `config` of deploy/compose.yaml with the default image names
#   haproxy          `haproxy -c` of deploy/compose/haproxy.cfg
#   systemd-analyze  `verify` of the units (ExecStart pointed at stand-in binaries)
#   kubectl          `kubectl kustomize deploy/k8s` (or `kustomize build`)
#   redis-server     deploy/redis/acl.example.conf loads as a throwaway server's `aclfile` (on a
#                    Unix socket, no port), each user logs in, a few rules refuse what they must;
#                    with a built `ebb`, the file is what deploy/redis/generate.sh prints
# Exit status: 0 when nothing failed (skips are not failures), 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

install_tools=0
e2e=0
for arg in "$@"; do
    case $arg in
        --install-tools) install_tools=1 ;;
        --e2e) e2e=1 ;;
        -h | --help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: deploy/check.sh [--install-tools] [--e2e]" >&2; exit 2 ;;
    esac
done

failures=0
ok() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }
skip() { echo "SKIP  $*"; }
have() { command -v "$1" >/dev/null 2>&1; }
section() { echo "--    $*"; }

venv=${XDG_CACHE_HOME:-$HOME/.cache}/ebb-deploy-check/venv
work=$(mktemp -d "${TMPDIR:-/tmp}/ebb-deploy-check.XXXXXX")
cleanup_steps=()
cleanup() {
    local step
    for step in "${cleanup_steps[@]}"; do eval "$step"; done
    rm -rf "$work"
}
trap cleanup EXIT

if [ "$install_tools" = 1 ]; then
    section "installing tools"
    missing=()
    have docker-compose || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
    have haproxy || missing+=(haproxy)
    have systemd-analyze || missing+=(systemd)
    have python3 || missing+=(python3)
    python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
    if [ ${#missing[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
            ok "apt-get install ${missing[*]}"
        else
            fail "apt-get install ${missing[*]}"
        fi
    fi
    # A private venv: the kubernetes client pins recent pydantic and dateutil, which must not
    # replace the system Python's.
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" || fail "python3 -m venv $venv"
    fi
    if "$venv/bin/pip" install -q --disable-pip-version-check pyyaml kubernetes; then
        ok "pyyaml and kubernetes in $venv"
    else
        fail "pip install pyyaml kubernetes into $venv"
    fi
fi

# ---- check.py: the structural checks and the numbers -----------------------------------------
section "check.py: structure and numbers"
python=${EBB_CHECK_PYTHON:-}
if [ -z "$python" ]; then
    if [ -x "$venv/bin/python" ]; then python=$venv/bin/python; else python=python3; fi
fi
if ! have "$python"; then
    skip "check.py: no python3"
elif ! "$python" -c 'import yaml' 2>/dev/null; then
    skip "check.py: PyYAML missing for $python (apt-get install python3-yaml, or --install-tools)"
else
    "$python" deploy/check.py || failures=$((failures + 1))
fi

# ---- Dockerfile: Docker's own parser ---------------------------------------------------------
section "docker: Dockerfiles"
if ! have docker || ! docker info >/dev/null 2>&1; then
    skip "Dockerfile parse: no Docker engine answers"
else
    mkdir -p "$work/empty-context"
    for dockerfile in deploy/Dockerfile deploy/Dockerfile.kubectl examples/node-ws/Dockerfile; do
        [ -f "$dockerfile" ] || continue
        out=$(DOCKER_BUILDKIT=0 docker build -f "$dockerfile" --target __ebb_parse_check__ \
            "$work/empty-context" 2>&1)
        if grep -q 'failed to reach build target __ebb_parse_check__' <<<"$out"; then
            ok "$dockerfile: Docker's parser reads every instruction (building it needs a registry)"
        else
            fail "$dockerfile: Docker's parser refused it: $(grep -v DEPRECATED <<<"$out" | grep -i 'error' | head -3)"
        fi
    done
fi

# ---- Compose ---------------------------------------------------------------------------------
section "compose, haproxy: compose.yaml"
compose=()
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif have docker-compose; then
    compose=(docker-compose)
fi
if [ ${#compose[@]} -eq 0 ]; then
    skip "compose config: neither \`docker compose\` nor docker-compose is installed"
else
    # With the default image names: the variables a user may have set are left out.
    if out=$(env -u EBB_NODE_IMAGE -u EBB_REDIS_IMAGE -u EBB_CLI_IMAGE -u EBB_HAPROXY_IMAGE \
        "${compose[@]}" -f deploy/compose.yaml config 2>&1); then
        ok "deploy/compose.yaml: \`${compose[*]} config\` accepts it"
        images=$(awk '$1 == "image:" { print $2 }' <<<"$out" | sort -u | tr '\n' ' ')
        echo "      default images: $images"
        if have docker && docker info >/dev/null 2>&1; then
            for image in $images; do
                docker image inspect "$image" >/dev/null 2>&1 \
                    || echo "      (not present locally: $image)"
            done
        fi
    else
        fail "deploy/compose.yaml: \`${compose[*]} config\` refused it: $out"
    fi
fi
if have haproxy; then
    if out=$(haproxy -c -f deploy/compose/haproxy.cfg 2>&1); then
        ok "deploy/compose/haproxy.cfg: \`haproxy -c\` accepts it (node names resolve only inside compose)"
    else
        fail "deploy/compose/haproxy.cfg: $(grep -E 'ALERT|error' <<<"$out" | head -5)"
    fi
else
    skip "haproxy.cfg: haproxy is not installed"
fi

# ---- systemd ---------------------------------------------------------------------------------
section "systemd-analyze: units"
if ! have systemd-analyze; then
    skip "systemd units: systemd-analyze is not installed (apt-get install systemd)"
else
    # verify wants ExecStart's binary to exist: stand-ins in a temporary directory, same names.
    mkdir -p "$work/bin" "$work/units"
    cp "$(type -P true)" "$work/bin/ebb-node"
    cp "$(type -P true)" "$work/bin/ebb"
    cp "$(type -P true)" "$work/bin/ebb-agent"
    for unit in deploy/systemd/*.service; do
        sed "s#/usr/local/bin/#$work/bin/#g" "$unit" >"$work/units/$(basename "$unit")"
    done
    # Warnings (unknown keys, bad values) exit 0 too: any output is a failure.
    out=$(cd "$work/units" && systemd-analyze verify --man=no ./*.service 2>&1)
    status=$?
    if [ $status -eq 0 ] && [ -z "$out" ]; then
        ok "deploy/systemd: \`systemd-analyze verify\` is silent on $(cd deploy/systemd && echo *.service)"
    else
        fail "deploy/systemd: systemd-analyze verify: ${out//$work\/units\//}"
    fi
fi

# ---- Kubernetes: kustomize -------------------------------------------------------------------
section "kubectl: kustomization"
if have kubectl && kubectl kustomize --help >/dev/null 2>&1; then
    kustomize=(kubectl kustomize deploy/k8s)
elif have kustomize; then
    kustomize=(kustomize build deploy/k8s)
else
    kustomize=()
fi
if [ ${#kustomize[@]} -eq 0 ]; then
    skip "kustomization: neither kubectl nor kustomize is installed"
elif out=$("${kustomize[@]}" 2>&1); then
    ok "deploy/k8s: \`${kustomize[*]}\` renders $(grep -c '^kind:' <<<"$out") objects"
else
    fail "deploy/k8s: ${kustomize[*]}: $out"
fi

# ---- Redis ACL file ---------------------------------------------------------------------------
section "redis-server: deploy/redis/acl.example.conf"
acl=deploy/redis/acl.example.conf
built_ebb=""
for dir in target/debug target/release; do
    [ -z "$built_ebb" ] && [ -x "$dir/ebb" ] && built_ebb=$dir/ebb
done
if [ -z "$built_ebb" ]; then
    skip "$acl: no built ebb CLI to regenerate it with (cargo build --workspace --bins)"
elif diff -u "$acl" <(deploy/redis/generate.sh "$built_ebb") >"$work/acl.diff" 2>&1; then
    ok "$acl: is what deploy/redis/generate.sh $built_ebb prints"
else
    fail "$acl differs from \`deploy/redis/generate.sh $built_ebb\` (regenerate it, or rebuild ebb): $(head -12 "$work/acl.diff")"
fi
if ! have redis-server || ! have redis-cli; then
    skip "$acl: redis-server and redis-cli are not installed"
else
    sock=$work/redis.sock
    redis-server --port 0 --unixsocket "$sock" --save '' --appendonly no --dir "$work" \
        --aclfile "$PWD/$acl" >"$work/redis.log" 2>&1 &
    redis_pid=$!
    cleanup_steps+=("kill $redis_pid 2>/dev/null; wait $redis_pid 2>/dev/null")
    as() { local user=$1; shift; redis-cli -s "$sock" --user "$user" --pass CHANGE-ME --no-auth-warning "$@" 2>&1; }
    up=0
    for _ in $(seq 50); do
        [ "$(as ebb-viewer PING)" = PONG ] && { up=1; break; }
        kill -0 "$redis_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$up" = 0 ]; then
        fail "$acl: redis-server did not start with it: $(grep -iE 'acl|error' "$work/redis.log" | head -3)"
    else
        problems=()
        for user in $(awk '$1 == "user" && $2 != "default" { print $2 }' "$acl"); do
            [ "$(as "$user" PING)" = PONG ] || problems+=("$user cannot log in and PING")
        done
        [[ $(redis-cli -s "$sock" PING 2>&1) == *NOAUTH* ]] || problems+=("the default user is not off")
        refuse() {
            local out
            out=$(as "$@")
            [[ $out == *NOPERM* ]] || problems+=("$1 ${*:2}: $out (expected NOPERM)")
        }
        refuse ebb-node-node-1 HSET 'ebb:{default}:node:node-2' state drained
        refuse ebb-node-node-1 PUBLISH 'ebb:{default}:commands:node-2' x
        refuse ebb-node-node-1 SET 'ebb:{default}:rollout:lock' x
        refuse ebb-trigger HSET 'ebb:{default}:node:node-1' state drained
        refuse ebb-trigger PUBLISH 'ebb:{default}:events' x
        refuse ebb-trigger SET 'ebb:{default}:rollout:state' x
        refuse ebb-viewer PUBLISH 'ebb:{default}:commands:node-1' x
        refuse ebb-coordinator HSET 'ebb:{default}:node:node-1' state drained
        refuse ebb-coordinator PUBLISH 'ebb:{default}:events' x
        if [ ${#problems[@]} -eq 0 ]; then
            ok "$acl: loads into redis-server $(redis-server --version | awk '{ sub("v=", "", $3); print $3 }'), every user logs in, nodes/trigger/viewer/coordinator are refused what they must be"
        else
            fail "$acl: ${problems[*]}"
        fi
    fi
fi

# ---- optional: the compose stack for real ----------------------------------------------------
e2e() {
    section "e2e: compose stack with local images"
    if [ ${#compose[@]} -eq 0 ] || ! have docker || ! docker info >/dev/null 2>&1; then
        skip "e2e: needs a Docker engine and docker compose"
        return
    fi
    local ebb="" load=""
    for dir in target/release target/debug; do
        [ -z "$ebb" ] && [ -x "$dir/ebb" ] && ebb=$dir/ebb
        [ -z "$load" ] && [ -x "$dir/ebb-load" ] && load=$dir/ebb-load
    done
    if [ -z "$ebb" ]; then
        skip "e2e: no built ebb CLI (cargo build --workspace --bins)"
        return
    fi
    export EBB_NODE_IMAGE=${EBB_NODE_IMAGE:-ebb/node:local}
    export EBB_REDIS_IMAGE=${EBB_REDIS_IMAGE:-ebb/redis:local}
    if ! docker image inspect "$EBB_NODE_IMAGE" "$EBB_REDIS_IMAGE" >/dev/null 2>&1; then
        deploy/images/build.sh || { fail "e2e: deploy/images/build.sh"; return; }
    fi
    # Free loopback ports, so the stack never collides with anything else running here.
    local ports
    ports=$(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
    )
    read -r EBB_REDIS_PORT EBB_N1_PORT EBB_N2_PORT EBB_N3_PORT <<<"$ports"
    export EBB_REDIS_PORT EBB_N1_PORT EBB_N2_PORT EBB_N3_PORT
    unset EBB_SECRET
    local project=ebbcheck$$
    local dc=("${compose[@]}" -p "$project" -f deploy/compose.yaml)
    local redis=redis://127.0.0.1:$EBB_REDIS_PORT
    cleanup_steps+=("${dc[*]} down --remove-orphans >/dev/null 2>&1")
    if ! "${dc[@]}" up -d >"$work/up.log" 2>&1; then
        fail "e2e: compose up: $(tail -5 "$work/up.log")"
        return
    fi
    local _ active=0
    for _ in $(seq 30); do
        active=$("$ebb" --redis "$redis" status 2>/dev/null | grep -c ' active ')
        [ "$active" -ge 3 ] && break
        sleep 1
    done
    if [ "$active" -lt 3 ]; then
        fail "e2e: only $active of 3 nodes registered active: $("${dc[@]}" logs --tail 5 2>&1)"
        return
    fi
    ok "e2e: n1, n2, n3 registered active in Redis (127.0.0.1:$EBB_REDIS_PORT)"
    local held=0
    if [ -n "$load" ]; then
        held=20
        "$load" hold --url "ws://127.0.0.1:$EBB_N1_PORT/ws" -n $held --for 120s >"$work/load.log" 2>&1 &
        cleanup_steps+=("kill $! 2>/dev/null")
        sleep 2
    fi
    local started=$SECONDS
    "$ebb" --redis "$redis" rolling-restart --json >"$work/report.json" 2>"$work/rollout.log"
    local status=$?
    if [ $status -ne 0 ]; then
        fail "e2e: ebb rolling-restart exited $status: $(tail -5 "$work/rollout.log")"
        return
    fi
    if python3 - "$work/report.json" "$held" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
held = int(sys.argv[2])
nodes = {n["name"]: n for n in report["nodes"]}
problems = []
if report["status"] != "completed":
    problems.append(f"status {report['status']}: {report.get('reason')}")
if sorted(nodes) != ["n1", "n2", "n3"]:
    problems.append(f"nodes {sorted(nodes)}")
for name, n in nodes.items():
    if not n["new_instance"] or n["new_instance"] == n["old_instance"]:
        problems.append(f"{name} was not replaced")
    if n["forced_closes"]:
        problems.append(f"{name} forced {n['forced_closes']} close(s)")
if held and nodes.get("n1", {}).get("clean_closes") != held:
    problems.append(f"n1 closed {nodes.get('n1', {}).get('clean_closes')} of {held} cleanly")
if problems:
    print("; ".join(problems))
    sys.exit(1)
EOF
    then
        ok "e2e: ebb rolling-restart completed in $((SECONDS - started))s: each node drained" \
            "(n1: $held connections, all closed cleanly), exited, and came back under its name"
    else
        fail "e2e: rolling-restart report: $(cat "$work/report.json")"
    fi
    local name count
    for name in n1 n2 n3; do
        count=$(docker inspect --format '{{ .RestartCount }}' "$("${dc[@]}" ps -q "$name")")
        if [ "$count" -ge 1 ]; then
            ok "e2e: $name was restarted by Docker's restart policy ($count restart(s)), not recreated"
        else
            fail "e2e: $name shows no restart by the restart policy"
        fi
    done
}
[ "$e2e" = 1 ] && e2e

echo
if [ "$failures" -gt 0 ]; then
    echo "deploy/check.sh: $failures check(s) failed"
    exit 1
fi
echo "deploy/check.sh: all checks passed (SKIP lines: tool missing here)"
