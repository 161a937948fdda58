#!/usr/bin/env bash
# Builds the images the tests start, with no registry: each is `FROM scratch` plus a root
# filesystem assembled from a host binary and the shared libraries `ldd` lists for it (the
# dynamic loader included; glibc 2.36 has its nss modules built in, so nothing is dlopen'ed).
#
#   ebb/redis:local  Debian's /usr/bin/redis-server      (name: EBB_REDIS_IMAGE)
#   ebb/node:local   a built ebb-node, target/debug/...  (name: EBB_NODE_IMAGE, binary: EBB_NODE_BIN)
#
# An image whose inputs (the Dockerfile, the binary and its libraries) hash the same as the
# `ebb.inputs` label of the existing image is not rebuilt, and an image of that name that this
# script did not build (no such label: e.g. `EBB_REDIS_IMAGE=redis:7`, pulled) is left alone.
# Usage: deploy/images/build.sh [redis] [node]     (default: both)
set -euo pipefail
cd "$(dirname "$0")/../.."

redis_image=${EBB_REDIS_IMAGE:-ebb/redis:local}
node_image=${EBB_NODE_IMAGE:-ebb/node:local}
node_bin=${EBB_NODE_BIN:-target/debug/ebb-node}
redis_bin=/usr/bin/redis-server

# The legacy builder needs no buildx plugin and talks to any engine version (20.10 here).
export DOCKER_BUILDKIT=0

# Build contexts live here until the script exits.
work=$(mktemp -d "${TMPDIR:-/tmp}/ebb-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The files `ldd` says the binary $1 loads: libraries and the dynamic loader (not the vDSO);
# nothing for a static binary.
libraries() {
    local out
    out=$(ldd "$1" 2>&1) || return 0 # "not a dynamic executable"
    if grep -q 'not found' <<<"$out"; then
        echo "build.sh: $1 needs libraries this host lacks:" >&2
        grep 'not found' <<<"$out" >&2
        return 1
    fi
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out" | sort -u
}

# The passwd, group and nsswitch files every image gets, so that uid lookups and name
# resolution behave (Docker bind-mounts /etc/hosts and /etc/resolv.conf itself).
etc_files() {
    local root=$1
    mkdir -p "$root/etc" "$root/tmp"
    chmod 1777 "$root/tmp"
    printf 'root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
}

# build NAME BINARY PATH_IN_IMAGE DOCKERFILE_TAIL
build() {
    local name=$1 binary=$2 target=$3 tail=$4
    if [ ! -x "$binary" ]; then
        echo "build.sh: $binary is missing (build it first, e.g. cargo build --workspace --bins)" >&2
        return 1
    fi
    local libs
    libs=$(libraries "$binary")

    local dockerfile
    dockerfile=$(printf 'FROM scratch\nCOPY rootfs/ /\n%s\n' "$tail")
    # What the image is made of; sha256sum follows symlinks, so this hashes the real files.
    local hash
    hash=$( {
        printf '%s\n' "$dockerfile"
        declare -f etc_files
        sha256sum "$binary" | awk -v t="$target" '{ print $1, t }'
        # shellcheck disable=SC2086
        [ -z "$libs" ] || sha256sum $libs
    } | sha256sum | cut -c1-64)

    local current="" previous=""
    if previous=$(docker image inspect --format '{{ .Id }}' "$name" 2>/dev/null); then
        current=$(docker image inspect --format '{{ index .Config.Labels "ebb.inputs" }}' "$name")
        # An image this script did not build (e.g. a pulled redis:7 named by EBB_REDIS_IMAGE)
        # is left alone.
        if [ -z "$current" ] || [ "$current" = "<no value>" ]; then
            echo "build.sh: $name exists and was not built here; leaving it"
            return 0
        fi
    fi
    if [ "$current" = "$hash" ]; then
        echo "build.sh: $name is up to date (inputs ${hash:0:12})"
        return 0
    fi

    local context=$work/${name//[^a-zA-Z0-9]/_}
    local root=$context/rootfs
    mkdir -p "$root$(dirname "$target")"
    cp -L "$binary" "$root$target"
    local lib
    for lib in $libs; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    etc_files "$root"
    printf '%s\nLABEL ebb.inputs="%s"\n' "$dockerfile" "$hash" >"$context/Dockerfile"

    local started=$SECONDS log=$context/build.log
    if ! docker build --quiet --tag "$name" "$context" >"$log" 2>&1; then
        cat "$log" >&2
        echo "build.sh: building $name failed" >&2
        return 1
    fi
    local size id
    size=$(docker image inspect --format '{{ .Size }}' "$name")
    id=$(docker image inspect --format '{{ .Id }}' "$name")
    # The image this one replaces would linger untagged; remove it unless something still uses it.
    if [ -n "$previous" ] && [ "$previous" != "$id" ]; then
        docker image rm "$previous" >/dev/null 2>&1 || true
    fi
    echo "build.sh: built $name from $binary ($(( size / 1048576 )) MiB, $(( SECONDS - started ))s, inputs ${hash:0:12})"
}

build_redis() {
    # Redis picks its mode from argv[0], and Debian's redis-server is a symlink to
    # redis-check-rdb: the copy must be named redis-server.
    build "$redis_image" "$redis_bin" /usr/bin/redis-server "$(cat <<'EOF'
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["/usr/bin/redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
EOF
)"
}

build_node() {
    build "$node_image" "$node_bin" /ebb-node "$(cat <<'EOF'
EXPOSE 8080
ENTRYPOINT ["/ebb-node"]
CMD ["--listen", "0.0.0.0:8080"]
EOF
)"
}

[ $# -gt 0 ] || set -- redis node
for image in "$@"; do
    case $image in
        redis) build_redis ;;
        node) build_node ;;
        *) echo "usage: deploy/images/build.sh [redis] [node]" >&2; exit 2 ;;
    esac
done
