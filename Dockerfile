# syntax=docker/dockerfile:1
# The repro image: CUDA 13.0 runtime (the CUDA that PyPI's torch 2.11.0 wheel is built for),
# CPython 3.11 (the Python requirements.lock was compiled for), the runtime lock installed with
# --require-hashes, the kit on top, a non-root user. Build with `make image` (it passes the build
# args below); `make pin-base` re-resolves the base digest where a registry is reachable; `make lint`
# runs hadolint on this file (.hadolint.yaml says why each ignored rule is ignored).
#
# Base image, pinned by tag AND digest. nvidia/cuda tags are re-pushed (contents change under a
# fixed tag), so the digest is what pins; the tag says what it is meant to be. The `runtime` variant,
# not `cudnn-runtime`: torch's wheel brings its own cuDNN (nvidia-cudnn-cu13, in the lock) and the
# process loads that one, so a base cuDNN would be an unused second copy that the fingerprint would
# have to explain. This digest of nvidia/cuda:13.0.3-runtime-ubuntu24.04 is as pinned in a public
# Dockerfile found by code search on 2026-11-24 (the kit cannot reach a registry where it was
# written; run `make pin-base` on a machine that can, and commit the result).
#   tag:    nvidia/cuda:13.0.3-runtime-ubuntu24.04
#   digest: sha256:76f46f3e649824ebd3685d3d86c42b0ea62af04f59242f419f56cd5804a72efb
# The apt package names below are checked against docker/apt-packages-ubuntu24.04.txt (tests).

# ---- stage 1: CPython 3.11 from the python.org source tarball, checked by sha256 --------------
# Ubuntu 24.04 ships Python 3.12 only; the lock is for 3.11. PYTHON_SHA256 is the sha256 of
# Python-3.11.12.tar.xz as published in the docker-library/python image (ENV PYTHON_SHA256).
FROM nvidia/cuda:13.0.3-runtime-ubuntu24.04@sha256:76f46f3e649824ebd3685d3d86c42b0ea62af04f59242f419f56cd5804a72efb AS python-build
ARG PYTHON_VERSION=3.11.12
ARG PYTHON_SHA256=849da87af4df137710c1796e276a955f7a85c9f971081067c8f565d15c352a09
# Every RUN with a pipe fails when any part of it fails (hadolint DL4006).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Ubuntu 24.04 names: libncurses-dev (libncursesw5-dev is gone), the t64 runtime libraries below.
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        ca-certificates curl xz-utils build-essential pkg-config \
        libssl-dev libffi-dev zlib1g-dev libbz2-dev liblzma-dev libsqlite3-dev \
        libreadline-dev libncurses-dev uuid-dev libgdbm-dev; \
    curl -fsSL -o /tmp/python.tar.xz "https://www.python.org/ftp/python/${PYTHON_VERSION}/Python-${PYTHON_VERSION}.tar.xz"; \
    echo "${PYTHON_SHA256}  /tmp/python.tar.xz" | sha256sum -c -; \
    mkdir -p /usr/src/python; \
    tar -xJf /tmp/python.tar.xz -C /usr/src/python --strip-components=1
WORKDIR /usr/src/python
RUN set -eux; \
    ./configure --prefix=/opt/python --enable-optimizations --with-lto --enable-shared \
        LDFLAGS="-Wl,-rpath=/opt/python/lib"; \
    make -j"$(nproc)"; \
    make install; \
    /opt/python/bin/python3.11 -c "import ssl, sqlite3, lzma, bz2, ctypes, uuid; print('python ok')"

# ---- stage 2: the runtime image --------------------------------------------------------------
FROM nvidia/cuda:13.0.3-runtime-ubuntu24.04@sha256:76f46f3e649824ebd3685d3d86c42b0ea62af04f59242f419f56cd5804a72efb AS runtime

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG BASE_REF=nvidia/cuda:13.0.3-runtime-ubuntu24.04
ARG BASE_DIGEST=sha256:76f46f3e649824ebd3685d3d86c42b0ea62af04f59242f419f56cd5804a72efb
ARG IMAGE_REF=repro:0.1.0
ARG GIT_COMMIT=unknown
ARG BUILD_DATE=unknown
# make image passes the sha256 of requirements.lock; the build checks it against the copied file.
ARG LOCK_SHA256=unset

LABEL org.opencontainers.image.title="repro" \
      org.opencontainers.image.description="Reproducibility kit: locked environment, verified data, deterministic runs" \
      org.opencontainers.image.base.name="${BASE_REF}" \
      org.opencontainers.image.base.digest="${BASE_DIGEST}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.repro.lock.sha256="${LOCK_SHA256}" \
      org.repro.python.version="3.11.12"

RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        ca-certificates libssl3t64 libffi8 zlib1g libbz2-1.0 liblzma5 libsqlite3-0 \
        libreadline8t64 libncursesw6 libuuid1 libgdbm6t64 git make; \
    rm -rf /var/lib/apt/lists/*

COPY --from=python-build /opt/python /opt/python
ENV PATH=/opt/venv/bin:/opt/python/bin:${PATH} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REPRO_HOME=/opt/repro

# The lock, exactly as committed: every line hashed, installed without resolution.
COPY requirements.lock /opt/repro/requirements.lock
RUN set -eux; \
    actual="$(sha256sum /opt/repro/requirements.lock | cut -d' ' -f1)"; \
    if [ "${LOCK_SHA256}" != "unset" ] && [ "${LOCK_SHA256}" != "${actual}" ]; then \
        echo "requirements.lock sha256 ${actual} differs from LOCK_SHA256 ${LOCK_SHA256}" >&2; exit 1; \
    fi; \
    /opt/python/bin/python3.11 -m venv /opt/venv; \
    /opt/venv/bin/pip install --require-hashes --no-deps -r /opt/repro/requirements.lock; \
    /opt/venv/bin/pip check

# The kit itself, built with the locked setuptools (no build isolation: nothing unhashed).
COPY pyproject.toml README.md /opt/repro/
COPY repro /opt/repro/repro
COPY manifests /opt/repro/manifests
COPY docker/entrypoint /usr/local/bin/repro-entrypoint
RUN set -eux; \
    /opt/venv/bin/pip install --no-deps --no-build-isolation /opt/repro; \
    /opt/venv/bin/repro env check --lock /opt/repro/requirements.lock; \
    mkdir -p /etc/repro; \
    /opt/venv/bin/python - <<PY
import json, hashlib
info = {
    "ref": "${IMAGE_REF}",
    "base_ref": "${BASE_REF}",
    "base_digest": "${BASE_DIGEST}",
    "git_commit": "${GIT_COMMIT}",
    "build_date": "${BUILD_DATE}",
    "python_version": "3.11.12",
    "lock_sha256": hashlib.sha256(open("/opt/repro/requirements.lock", "rb").read()).hexdigest(),
}
json.dump(info, open("/etc/repro/build.json", "w"), indent=2, sort_keys=True)
PY

# Non-root user 10001; the directories it writes: data, runs, its caches and the runtime identity.
# `make reproduce` runs the container as the caller's uid:gid instead (so that ./data and ./runs
# on the host stay the caller's): /run/repro is writable by any uid, the entrypoint finds a HOME.
RUN set -eux; \
    useradd --create-home --uid 10001 --user-group --shell /bin/bash repro; \
    mkdir -p /data /runs /run/repro; \
    chown 10001:10001 /data /runs; \
    chmod 1777 /run/repro; \
    chmod 0755 /usr/local/bin/repro-entrypoint
USER 10001:10001
WORKDIR /home/repro
ENV REPRO_GIT_COMMIT=${GIT_COMMIT} \
    HF_HOME=/data/hf-cache \
    REPRO_DATA=/data \
    REPRO_RUNS=/runs
VOLUME ["/data", "/runs"]
ENTRYPOINT ["/usr/local/bin/repro-entrypoint"]
CMD ["repro", "--help"]
