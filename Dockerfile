# syntax=docker/dockerfile:1
# Build stage: nes-py is an sdist and needs a C++ compiler; the runtime image does not.
FROM python:3.11-slim-bookworm AS build
# torch==2.13.0 from this index is the CPU build (PyPI's default is a multi-GB CUDA one).
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/ scripts/
COPY mario_apo/ mario_apo/
COPY wrappers/ wrappers/
COPY models/ models/
# The same install steps as `make install` (and so CI), into /opt/venv; with Ray, so that the
# image also serves as the node image of a Ray cluster (README: suites on Ray).
RUN bash scripts/install.sh /opt/venv '.[ray]'

FROM python:3.11-slim-bookworm
# nes-py's emulator is C++: its shared library needs the C++ runtime (not the compiler).
# tini is PID 1: it forwards `docker stop`'s SIGTERM to mario-apo (which finishes its update and
# checkpoints) and reaps the env worker processes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libstdc++6 tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH WANDB_MODE=offline PYTHONUNBUFFERED=1
WORKDIR /work
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "mario-apo"]
CMD ["--help"]
