#!/usr/bin/env bash
# The one install procedure, shared by `make` (dev, CI) and the Dockerfile:
#   scripts/install.sh VENV PIP_TARGET...   e.g.  scripts/install.sh .venv -e '.[test]'
set -euo pipefail
venv=$1; shift
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# torch first, pinned: unpinned, pip would resolve a multi-GB CUDA build.
"$venv/bin/pip" install --disable-pip-version-check torch==2.13.0
# Venvs made before minigrid joined hold pygame, which shares its files with pygame-ce: remove it first.
"$venv/bin/pip" uninstall --disable-pip-version-check -y -q pygame 2>/dev/null || true
"$venv/bin/pip" install --disable-pip-version-check "$@"
