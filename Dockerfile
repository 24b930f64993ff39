# Build stage: nes-py is an sdist and needs a C++ compiler; the runtime image does not.
# (No `# syntax=` line: it makes BuildKit fetch a frontend image from Docker Hub first, which a
# machine without Docker Hub cannot; nothing here needs it.)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE} AS build
# Where packages come from, for clusters behind a proxy or a private index (none is baked into the
# final image: this stage is discarded):
#   PIP_INDEX_URL / PIP_EXTRA_INDEX_URL  pip's own settings, for every package;
#   PIP_TRUSTED_HOST                     hosts of those indexes served over plain http;
#   TORCH_INDEX_URL                      the only index torch is installed from (its CPU build by default;
#                                        a CUDA one, e.g. https://download.pytorch.org/whl/cu128, with
#                                        TORCH_FLAVOUR=cuda);
#   a CA bundle: put it at docker/ca/ca.pem in the build context (pip and apt of this stage trust it).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FLAVOUR=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/ca/ /tmp/ca/
# hadolint ignore=DL3008
RUN if [ -f /tmp/ca/ca.pem ]; then cp /tmp/ca/ca.pem /usr/local/share/ca-certificates/build-ca.crt \
        && update-ca-certificates; fi \
    && apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/ scripts/
COPY mario_apo/ mario_apo/
COPY wrappers/ wrappers/
COPY models/ models/
# The same install steps as `make install` (and so CI), into /opt/venv; with Ray, so that the
# image also serves as the node image of a Ray cluster (README: suites on Ray). Then the torch
# that landed is checked: the CPU build unless TORCH_FLAVOUR=cuda (a CUDA build pulls ~2.5 GB).
RUN if [ -f /tmp/ca/ca.pem ]; then export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; fi \
    && TORCH_INDEX_URL="${TORCH_INDEX_URL}" bash scripts/install.sh /opt/venv '.[ray]' \
    && /opt/venv/bin/python -c "import sys, torch; cuda = torch.version.cuda; \
want = '${TORCH_FLAVOUR}'; ok = (cuda is None) == (want == 'cpu'); \
print(f'torch {torch.__version__}, CUDA {cuda}: {\"ok\" if ok else \"NOT the \" + want + \" build\"}'); \
sys.exit(0 if ok else 1)"

FROM ${PYTHON_IMAGE}
# nes-py's emulator is C++: its shared library needs the C++ runtime (not the compiler).
# tini is PID 1: it forwards `docker stop`'s SIGTERM to mario-apo (which finishes its update and
# checkpoints) and reaps the env worker processes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libstdc++6 tini \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -m 1777 /tmp/home
COPY --from=build /opt/venv /opt/venv
# HOME and the caches point at a folder any user can write: with `docker run --user UID:GID` the
# user has no home in the image, and W&B and matplotlib would fail to create their cache dirs.
ENV PATH=/opt/venv/bin:$PATH WANDB_MODE=offline PYTHONUNBUFFERED=1 \
    HOME=/tmp/home XDG_CACHE_HOME=/tmp/home/.cache MPLCONFIGDIR=/tmp/home/.matplotlib
WORKDIR /work
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "mario-apo"]
CMD ["--help"]
