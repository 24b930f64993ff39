#!/usr/bin/env bash
# The accelerator check (BENCHMARKS.md, "GPU"): one prepared script for a lent GPU machine, run once.
#
#   scripts/device-check.sh prepare   here, once: the wheels that machine lacks, into .whl/ (ignored by git)
#   scripts/device-check.sh run       there: install .whl/ beside its own packages, then the CUDA tests
#                                     and `bench train` on the GPU and, as the baseline, on its CPUs
#
# With the device tool: run(command="bash scripts/device-check.sh run", carry=[".whl"], timeout_s=560).
# The machine (the tool's nvidia-h100-x1 / nvidia-h200) has Python 3.12 with a CUDA torch, numpy 2,
# opencv, matplotlib, scipy, pytest, and no package index. So `prepare` fetches (or builds, with this
# box's pyenv Python 3.12) what we need on top: numpy 1.26 (nes-py 8.2.1 fails under numpy 2), gym
# 0.26 and nes-py 8.2.1 (sdists: built here into wheels), gym-super-mario-bros, gymnasium. Their torch
# (2.11) stands in for our pin (2.13): the tests and the benchmark need nothing newer.
#
# `run` writes each step's output to OUT (the tool's $OUT; device-check/ elsewhere) as it goes, each
# step under its own time limit, so what finished comes back even if a later step runs out of time.
# Settings for `run`, all optional:
#   OUT      where the logs and JSON results go (default: $OUT, else device-check/)
#   DEVICE   the learner's device for the benchmark (default cuda)
#   ENVS     env counts for bench train on DEVICE (default 16,32; the first is also the CPU baseline's)
#   STEPS    agent steps per benchmark job (default 32768: 4 updates at 16 envs x 512, 2 at 32)
#   PYTHON   the interpreter (default python3, the one that holds the machine's torch)
#   WHEELS   the folder of wheels to install (default .whl; a missing folder installs nothing)
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=${WHEELS:-.whl}
PYTHON=${PYTHON:-python3}

prepare() {
    set -e
    local py312 pins=(numpy==1.26.4 gymnasium==1.4.0 farama-notifications==0.0.6 gym-notices==0.1.0
        gym-super-mario-bros==7.4.0 pyglet==1.5.21)
    py312=$(PYENV_VERSION=3.12.1 pyenv which python3.12 2>/dev/null || command -v python3.12 || true)
    if [ -z "$py312" ]; then
        echo "device-check prepare: needs a Python 3.12 here (pyenv 3.12.1 or python3.12 on PATH) to build nes-py for the device's Python" >&2
        exit 2
    fi
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" "${pins[@]}"
    "$py312" -m pip wheel -q --no-deps -w "$WHEELS" gym==0.26.2 nes-py==8.2.1
    ls -l "$WHEELS"
    local tree wheels
    tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb | tail -1 | cut -f1)
    wheels=$(du -cb "$WHEELS"/*.whl | tail -1 | cut -f1)
    echo "travels: working tree $((tree / 2 ** 20)) MiB + wheels $((wheels / 2 ** 20)) MiB (the tool's limit: 64 MiB)"
}

# step NAME SECONDS COMMAND...: COMMAND's output to the terminal and to $OUT/NAME.log, under a time limit.
step() {
    local name=$1 seconds=$2
    shift 2
    echo "== $name ($(date -u +%T), at most ${seconds} s): $*" | tee "$OUT/$name.log"
    timeout -k 10 "$seconds" "$@" 2>&1 | tee -a "$OUT/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]}" | tee -a "$OUT/$name.log"
}

run() {
    OUT=${OUT:-device-check}
    mkdir -p "$OUT"
    local device=${DEVICE:-cuda} envs=${ENVS:-16,32} steps=${STEPS:-32768}
    if [ -d "$WHEELS" ]; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$WHEELS"/*.whl || exit 1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    local bench=("$PYTHON" -m mario_apo.cli bench train --skip-sb3 --skip-cartpole --mario-steps "$steps")
    # The bench JSON records cores, Python, torch and the GPU's name; this adds what the carried wheels
    # changed (numpy under the machine's opencv) and fails early if the emulator does not import.
    step versions 60 bash -c "nvidia-smi -L; free -g | head -2; $PYTHON -c 'import numpy, cv2, gymnasium, nes_py; \
print(\"numpy\", numpy.__version__, \"cv2\", cv2.__version__, \"gymnasium\", gymnasium.__version__)'"
    step "bench-$device" 240 "${bench[@]}" --device "$device" --num-envs "$envs" --json "$OUT/bench-train-$device.json"
    step tests 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_device.py
    [ "$device" = cpu ] || step bench-cpu 150 "${bench[@]}" --device cpu --num-envs "${envs%%,*}" --json "$OUT/bench-train-cpu.json"
}

case ${1:-} in
prepare) prepare ;;
run) run ;;
*)
    echo "usage: scripts/device-check.sh prepare|run (prepare: here, the wheels into .whl/; run: on the GPU machine)" >&2
    exit 2
    ;;
esac
