#!/usr/bin/env bash
# `make docker-smoke`: build the image and check what the README's Docker section promises.
#
#   scripts/docker-smoke.sh            (as root, or as a user allowed to run Docker)
#
# Installs Debian's docker.io and debootstrap if missing (as root), starts a Docker daemon if none
# answers (and stops the one it started), builds the image, then
# checks: --help; torch is the CPU build; a 2,048-step Mario run writes its run dir into a
# mounted runs/; `docker stop -t 60` of a longer run exits 0 with a checkpoint, and --resume
# finishes it; a Ray population of 2 learners runs inside the container; with --user, the files
# in runs/ belong to that user. Prints each step's time and the image size.
#
# Where the base image cannot be pulled (no Docker Hub), a stand-in for python:3.11-slim-bookworm
# (Debian 12's Python 3.11) is made with debootstrap from this host's own apt sources. Where the
# PyTorch CPU index cannot be reached, a torch +cpu wheel found in this host's pip find-links is
# served to the build as a one-package index. Where this host's pip trusts a CA bundle (a proxy),
# the build is given it through docker/ca/ (build stage only). Settings, all optional:
#   PYTHON_IMAGE     the base image (default python:3.11-slim-bookworm)
#   TORCH_INDEX_URL  where torch comes from (default: the PyTorch CPU index, or the host's wheel)
#   SMOKE_IMAGE      the tag built (default mario-apo:smoke)
#   SMOKE_USER       UID:GID for the --user check (default: the caller's; nobody's when root)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11-slim-bookworm}
SMOKE_IMAGE=${SMOKE_IMAGE:-mario-apo:smoke}
STANDIN_IMAGE=mario-apo-standin/python:3.11-bookworm
work=$(mktemp -d /tmp/mario-apo-docker-smoke.XXXXXX)
chmod 755 "$work"
started_daemon= served_pid= made_ca= trusted_host= container=mario-apo-smoke-$$
t_all=$(date +%s)

say() { printf '%s\n' "$*"; }
fail() { say "docker-smoke: FAILED: $*" >&2; exit 1; }
step() {  # step NAME COMMAND...: run it, print its time
    local name=$1 t0
    shift
    t0=$(date +%s)
    say "== $name"
    "$@" || fail "$name"
    say "   ok: $name ($(($(date +%s) - t0)) s)"
}
cleanup() {
    docker rm -f "$container" >/dev/null 2>&1 || true
    [ -n "$served_pid" ] && kill "$served_pid" 2>/dev/null || true
    [ -n "$made_ca" ] && rm -f docker/ca/ca.pem
    if [ -n "$started_daemon" ]; then
        kill "$started_daemon" 2>/dev/null || true
        wait "$started_daemon" 2>/dev/null || true
    fi
    rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

# What the smoke needs from the host: as root on Debian it installs what is missing (this project's
# machines have the Docker client but no engine); elsewhere it names the packages.
host_tools() {
    local missing=()
    docker info >/dev/null 2>&1 || command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ ${#missing[@]} = 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "   installing ${missing[*]} with apt-get"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$work/apt.log" 2>&1 \
            || { tail -5 "$work/apt.log"; return 1; }
    elif [[ " ${missing[*]} " == *" docker.io "* ]]; then
        say "no Docker daemon answers and dockerd is not installed (Debian: apt-get install docker.io)"
        return 1
    fi
}

start_daemon() {
    docker info >/dev/null 2>&1 && return 0
    dockerd >"$work/dockerd.log" 2>&1 &
    started_daemon=$!
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    tail -5 "$work/dockerd.log"
    return 1
}

# The first deb822 (or one-line) apt source of this host that serves bookworm: the mirror this
# machine is configured to use, so the repository names none.
host_debian_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ && u {print u; exit}' "$f"
    done
    awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true
}

base_image() {
    if docker image inspect "$PYTHON_IMAGE" >/dev/null 2>&1 || timeout 120 docker pull "$PYTHON_IMAGE" >/dev/null 2>&1; then
        base=$PYTHON_IMAGE
        return 0
    fi
    base=$STANDIN_IMAGE
    docker image inspect "$STANDIN_IMAGE" >/dev/null 2>&1 && return 0
    say "   $PYTHON_IMAGE cannot be pulled: making a stand-in with debootstrap"
    command -v debootstrap >/dev/null || { say "debootstrap is not installed (apt-get install debootstrap)"; return 1; }
    local mirror
    mirror=$(host_debian_mirror | head -1)
    [ -n "$mirror" ] || { say "no bookworm apt source on this host to make the stand-in from"; return 1; }
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -5 "$work/debootstrap.log"; return 1; }
    rm -rf "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/var/lib/apt/lists"/*
    tar -C "$work/rootfs" -c . | docker import -c 'CMD ["python3"]' - "$STANDIN_IMAGE" >/dev/null
    rm -rf "$work/rootfs"
}

# A CA bundle this host's pip trusts (a proxy's): the build stage gets it, the final image not.
build_ca() {
    local bundle=${PIP_CERT:-${SSL_CERT_FILE:-}}
    [ -n "$bundle" ] && [ -f "$bundle" ] || return 0
    [ -f docker/ca/ca.pem ] && return 0
    mkdir -p docker/ca
    cp "$bundle" docker/ca/ca.pem
    made_ca=1
}

# TORCH_INDEX_URL: given, or the PyTorch CPU index, or this host's torch +cpu wheel served on the
# Docker bridge as the only index the torch step sees.
torch_index() {
    [ -n "${TORCH_INDEX_URL:-}" ] && return 0
    if timeout 20 python3 -c "import urllib.request; urllib.request.urlopen('https://download.pytorch.org/whl/cpu/torch/', timeout=15)" 2>/dev/null; then
        TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
        return 0
    fi
    local links wheel gateway port
    links=${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null || true)}
    wheel=$(find ${links:-/nonexistent} -maxdepth 1 -name 'torch-2.13.0+cpu-cp311-*.whl' 2>/dev/null | head -1)
    [ -n "$wheel" ] || { say "the PyTorch CPU index is unreachable and no torch 2.13.0+cpu wheel is in pip's find-links: set TORCH_INDEX_URL"; return 1; }
    mkdir -p "$work/index/simple/torch"
    ln -s "$wheel" "$work/index/simple/torch/"
    printf '<a href="%s">%s</a>\n' "$(basename "$wheel")" "$(basename "$wheel")" >"$work/index/simple/torch/index.html"
    gateway=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
    # Older daemons leave the default bridge's gateway out of its IPAM config: docker0's address.
    [ -n "$gateway" ] || gateway=$(ip -4 -o addr show docker0 | awk '{sub("/.*", "", $4); print $4; exit}')
    [ -n "$gateway" ] || { say "cannot find the Docker bridge's address to serve torch on"; return 1; }
    port=$(python3 -c "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])")
    python3 -m http.server "$port" --bind "$gateway" --directory "$work/index" >"$work/index.log" 2>&1 &
    served_pid=$!
    TORCH_INDEX_URL=http://$gateway:$port/simple
    trusted_host=$gateway
    say "   the PyTorch CPU index is unreachable: serving $(basename "$wheel") at $TORCH_INDEX_URL"
}

build() {
    docker build -q --build-arg PYTHON_IMAGE="$base" --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" \
        ${trusted_host:+--build-arg PIP_TRUSTED_HOST="$trusted_host"} \
        -t "$SMOKE_IMAGE" . >"$work/build.log" 2>&1 || { tail -20 "$work/build.log"; return 1; }
}

# mario-apo in the image, runs/ mounted from the work folder.
in_image() { docker run --rm --shm-size=1g -v "$work/runs:/work/runs" "$SMOKE_IMAGE" "$@"; }

has_files() {  # has_files DIR FILE...
    local dir=$1 f
    shift
    for f in "$@"; do
        [ -s "$dir/$f" ] || { say "   $dir/$f is missing"; return 1; }
    done
}

check_help() { in_image --help | grep -q "Anchored Policy Optimization"; }
check_cpu_torch() {
    docker run --rm --entrypoint python "$SMOKE_IMAGE" -c \
        "import torch; print('   torch', torch.__version__, 'CUDA', torch.version.cuda); assert torch.version.cuda is None"
}
check_short_run() {
    in_image train --task mario:1-1 --total-steps 2048 --name short --final-eval-episodes 2 \
        --final-eval-greedy 1 --no-progress >"$work/short.log" 2>&1 || { tail -5 "$work/short.log"; return 1; }
    has_files "$work/runs/short" config.json metrics.jsonl checkpoint.pt summary.json
}
last_step() { python3 -c "import json, sys; print(max(json.loads(l).get('global_step', 0) for l in open(sys.argv[1])))" "$1"; }
check_stop_resume() {
    docker run -d --name "$container" --shm-size=1g -v "$work/runs:/work/runs" "$SMOKE_IMAGE" \
        train --task mario:1-1 --total-steps 20480 --checkpoint-every 1 --name stopped --final-eval-episodes 2 \
        --final-eval-greedy 1 --no-progress >/dev/null
    for _ in $(seq 300); do
        [ -s "$work/runs/stopped/checkpoint.pt" ] && break
        sleep 1
    done
    has_files "$work/runs/stopped" checkpoint.pt || return 1
    sleep 5
    docker stop -t 60 "$container" >/dev/null
    local code
    code=$(docker inspect -f '{{.State.ExitCode}}' "$container")
    docker logs "$container" >"$work/stopped.log" 2>&1
    docker rm "$container" >/dev/null
    [ "$code" = 0 ] || { say "   docker stop: exit code $code"; tail -5 "$work/stopped.log"; return 1; }
    [ ! -e "$work/runs/stopped/summary.json" ] || python3 -c "import json, sys; sys.exit(not json.load(open(sys.argv[1]))['interrupted'])" "$work/runs/stopped/summary.json" \
        || { say "   the stopped run says it finished"; return 1; }
    local at
    at=$(last_step "$work/runs/stopped/metrics.jsonl")
    say "   stopped at step $at (exit code 0, checkpoint written); resuming to $((at + 2048))"
    in_image train --resume runs/stopped --total-steps $((at + 2048)) --final-eval-episodes 2 \
        --final-eval-greedy 1 --no-progress >"$work/resumed.log" 2>&1 || { tail -5 "$work/resumed.log"; return 1; }
    has_files "$work/runs/stopped" summary.json || return 1
    [ "$(last_step "$work/runs/stopped/metrics.jsonl")" -gt "$at" ] || { say "   the resumed run did not go past step $at"; return 1; }
}
check_population() {
    in_image train --algo apo --task cartpole --learners 2 --share-anchors --total-steps 4096 \
        --name population --final-eval-episodes 2 --final-eval-greedy 1 --no-progress >"$work/population.log" 2>&1 \
        || { tail -10 "$work/population.log"; return 1; }
    has_files "$work/runs/population" population.json metrics.jsonl || return 1
    [ "$(find "$work/runs/population" -mindepth 2 -maxdepth 2 -name summary.json | wc -l)" = 2 ] \
        || { say "   not 2 learners' summary.json"; ls -R "$work/runs/population" | head -20; return 1; }
}
check_user() {
    local user=${SMOKE_USER:-}
    if [ -z "$user" ]; then
        user="$(id -u):$(id -g)"
        [ "$(id -u)" = 0 ] && user=65534:65534  # root's files prove nothing: a user without a home
    fi
    mkdir -p "$work/user-runs"
    chown "$user" "$work/user-runs" 2>/dev/null || chmod 777 "$work/user-runs"
    docker run --rm --user "$user" -v "$work/user-runs:/work/runs" "$SMOKE_IMAGE" train --task cartpole \
        --total-steps 2048 --name user --final-eval-episodes 2 --final-eval-greedy 0 --no-progress \
        >"$work/user.log" 2>&1 || { tail -5 "$work/user.log"; return 1; }
    has_files "$work/user-runs/user" config.json metrics.jsonl summary.json || return 1
    local owners
    owners=$(find "$work/user-runs/user" -printf '%U:%G\n' | sort -u)
    say "   run as $user: files owned by $owners"
    [ "$owners" = "$user" ]
}

mkdir -p "$work/runs"
step "host tools" host_tools
step "Docker daemon" start_daemon
step "base image" base_image
say "   base: $base"
step "CA bundle for the build" build_ca
step "torch index" torch_index
step "build $SMOKE_IMAGE" build
say "   image size: $(docker image inspect -f '{{.Size}}' "$SMOKE_IMAGE" | awk '{printf "%.2f GB", $1 / 1e9}')"
step "--help" check_help
step "torch is the CPU build" check_cpu_torch
step "2,048-step Mario run into a mounted runs/" check_short_run
step "docker stop -t 60, then --resume" check_stop_resume
step "Ray population of 2 inside the container" check_population
step "--user: files in runs/ belong to the user" check_user
say "docker-smoke: all checks passed in $(($(date +%s) - t_all)) s"
