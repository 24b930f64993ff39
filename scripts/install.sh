#!/usr/bin/env bash
# The one install procedure, shared by `make` (dev, CI) and the Dockerfile:
#   scripts/install.sh VENV PIP_TARGET...   e.g.  scripts/install.sh .venv -e '.[test]'
set -euo pipefail
venv=$1; shift
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# torch first, pinned: unpinned, pip would resolve a multi-GB CUDA build. TORCH_INDEX_URL (the
# Dockerfile sets it) makes one index the only source of torch, so its CPU build cannot be swapped
# for PyPI's CUDA one; torch's own dependencies (filelock, sympy, ...) then come with the project's
# from the usual indexes, as a mirror of the torch index may hold torch alone.
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$venv/bin/pip" install --disable-pip-version-check --index-url "$TORCH_INDEX_URL" --no-deps torch==2.13.0
else
    "$venv/bin/pip" install --disable-pip-version-check torch==2.13.0
fi
# Venvs made before minigrid joined hold pygame, which shares its files with pygame-ce: remove it first.
"$venv/bin/pip" uninstall --disable-pip-version-check -y -q pygame 2>/dev/null || true
"$venv/bin/pip" install --disable-pip-version-check "$@"
