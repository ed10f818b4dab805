# The repro image: CUDA 13.0 runtime (the CUDA that PyPI's torch 2.11.0 wheel is built for),
# CPython 3.11 (the Python requirements.lock was compiled for), the runtime lock installed with
# --require-hashes, the kit on top, a non-root user. Build with `make image` (it passes the build
# args below); `make pin-base` re-resolves the base digest where a registry is reachable; `make lint`
# runs hadolint on this file (.hadolint.yaml says why each ignored rule is ignored).
#
# Plain Dockerfile syntax, no `# syntax=` frontend line, no heredoc, no RUN --mount: it builds on
# the classic builder and on BuildKit alike, and on an air-gapped cluster that only mirrors its base.
# Everything that differs between the real build and a stand-in is a build argument, never an
# edited copy of this file: `make image-rehearse` (docs/image.md) builds these very lines with a
# Debian trixie base and CPython from Debian's source package, and says so.
#
# Base image, pinned by tag AND digest (BASE_IMAGE). nvidia/cuda tags are re-pushed (contents change
# under a fixed tag), so the digest is what pins; the tag says what it is meant to be. The `runtime`
# variant, not `cudnn-runtime`: torch's wheel brings its own cuDNN (nvidia-cudnn-cu13, in the lock)
# and the process loads that one, so a base cuDNN would be an unused second copy that the
# fingerprint would have to explain. This digest of nvidia/cuda:13.0.3-runtime-ubuntu24.04 is as
# pinned in a public Dockerfile found by code search on 2026-11-24 (the kit cannot reach a registry
# where it was written; run `make pin-base` on a machine that can, and commit the result).
#   tag:    nvidia/cuda:13.0.3-runtime-ubuntu24.04
#   digest: sha256:76f46f3e649824ebd3685d3d86c42b0ea62af04f59242f419f56cd5804a72efb
# The apt package names below are checked against docker/apt-packages-ubuntu24.04.txt (tests).
ARG BASE_IMAGE=nvidia/cuda:13.0.3-runtime-ubuntu24.04@sha256:76f46f3e649824ebd3685d3d86c42b0ea62af04f59242f419f56cd5804a72efb

# ---- stage 1: CPython 3.11 from its source tarball, checked by sha256 ---------------------------
# Ubuntu 24.04 ships Python 3.12 only; the lock is for 3.11. PYTHON_SHA256 is the sha256 of
# Python-3.11.12.tar.xz as published in the docker-library/python image (ENV PYTHON_SHA256).
# PYTHON_URL may name any copy of the tarball (a mirror, a local server): the sha256 is what pins.
# PYTHON_OPTIMIZE: pgo-lto (profile-guided and link-time optimisation, the release build) or none.
FROM ${BASE_IMAGE} AS python-build
# Every RUN with a pipe fails when any part of it fails (hadolint DL4006).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Ubuntu 24.04 names: libncurses-dev (libncursesw5-dev is gone), the t64 runtime libraries below.
# The build tools first, before any build argument: they stay cached whatever the CPython source is.
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        ca-certificates curl xz-utils build-essential pkg-config \
        libssl-dev libffi-dev zlib1g-dev libbz2-dev liblzma-dev libsqlite3-dev \
        libreadline-dev libncurses-dev uuid-dev libgdbm-dev; \
    rm -rf /var/lib/apt/lists/*
ARG PYTHON_VERSION=3.11.12
ARG PYTHON_URL=https://www.python.org/ftp/python/${PYTHON_VERSION}/Python-${PYTHON_VERSION}.tar.xz
ARG PYTHON_SHA256=849da87af4df137710c1796e276a955f7a85c9f971081067c8f565d15c352a09
ARG PYTHON_OPTIMIZE=pgo-lto
# An extra CA for a TLS-intercepting proxy (docker/ca/README.md): trusted by curl and pip in these
# build stages only; the runtime stage below never copies it.
COPY docker/ca/ /tmp/build-ca/
RUN set -eux; \
    curl -fsSL --cacert "$(/tmp/build-ca/bundle)" -o /tmp/python.tar "${PYTHON_URL}"; \
    echo "${PYTHON_SHA256}  /tmp/python.tar" | sha256sum -c -; \
    mkdir -p /usr/src/python; \
    tar -xf /tmp/python.tar -C /usr/src/python --strip-components=1; \
    rm /tmp/python.tar
WORKDIR /usr/src/python
RUN set -eux; \
    case "${PYTHON_OPTIMIZE}" in \
        pgo-lto) pgo=--enable-optimizations; lto=--with-lto ;; \
        none) pgo=--disable-optimizations; lto=--without-lto ;; \
        *) echo "PYTHON_OPTIMIZE must be pgo-lto or none, not ${PYTHON_OPTIMIZE}" >&2; exit 1 ;; \
    esac; \
    ./configure --prefix=/opt/python --enable-shared "${pgo}" "${lto}" LDFLAGS="-Wl,-rpath=/opt/python/lib"; \
    make -j"$(nproc)"; \
    make install; \
    /opt/python/bin/python3.11 -c "import ssl, sqlite3, lzma, bz2, ctypes, uuid; print('python ok')"

# ---- stage 2: the locked virtual environment ------------------------------------------------------
FROM python-build AS venv
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# make image passes the sha256 of requirements.lock; the build checks it against the copied file.
ARG LOCK_SHA256=unset
WORKDIR /opt/repro
# The lock, exactly as committed: every line hashed, installed without resolution.
COPY requirements.lock /opt/repro/requirements.lock
RUN set -eux; \
    actual="$(sha256sum /opt/repro/requirements.lock | cut -d' ' -f1)"; \
    if [ "${LOCK_SHA256}" != "unset" ] && [ "${LOCK_SHA256}" != "${actual}" ]; then \
        echo "requirements.lock sha256 ${actual} differs from LOCK_SHA256 ${LOCK_SHA256}" >&2; exit 1; \
    fi; \
    /opt/python/bin/python3.11 -m venv /opt/venv; \
    PIP_CERT="$(/tmp/build-ca/bundle)" PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        /opt/venv/bin/pip install --require-hashes --no-deps -r /opt/repro/requirements.lock; \
    /opt/venv/bin/pip check

# ---- stage 3: the runtime image --------------------------------------------------------------------
# The build args that change with every build (commit, date) are declared late, so that a rebuild
# reuses every layer above them (the 6 GB environment above all).
FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        ca-certificates libssl3t64 libffi8 zlib1g libbz2-1.0 liblzma5 libsqlite3-0 \
        libreadline8t64 libncursesw6 libuuid1 libgdbm6t64 git make; \
    rm -rf /var/lib/apt/lists/*

COPY --from=venv /opt/python /opt/python
COPY --from=venv /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:/opt/python/bin:${PATH} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REPRO_HOME=/opt/repro

# Non-root user 10001 (named repro-user: a name no path of the kit contains, so the fingerprint's
# scrubber never mistakes /opt/repro for a home). `make reproduce` runs the container as the
# caller's uid:gid instead, which has no passwd entry here: /work (the working directory) and
# /run/repro are writable by any uid, and the entrypoint gives it HOME, USER and LOGNAME.
RUN set -eux; \
    useradd --create-home --uid 10001 --user-group --shell /bin/bash repro-user; \
    mkdir -p /data /runs /run/repro /work; \
    chown 10001:10001 /data /runs; \
    chmod 1777 /run/repro /work

# The kit itself, built with the locked setuptools (no build isolation, no index: nothing unhashed,
# no network), here rather than in the venv stage so that a change to the kit copies kilobytes, not
# the environment. Then what the kit reads at run time besides its package: the lock and manifests/.
COPY pyproject.toml README.md /tmp/repro-src/
COPY repro /tmp/repro-src/repro
RUN pip install --no-deps --no-build-isolation --no-index /tmp/repro-src; \
    rm -rf /tmp/repro-src
COPY requirements.lock /opt/repro/requirements.lock
COPY manifests /opt/repro/manifests
COPY docker/entrypoint /usr/local/bin/repro-entrypoint
COPY docker/write-build-info /usr/local/bin/repro-write-build-info

ARG BASE_IMAGE
# The base's digest when BASE_IMAGE names none (a stand-in imported locally: its image id), and what
# a stand-in stands in for (empty for the real build). Both end up in /etc/repro/build.json.
ARG BASE_DIGEST=
ARG BASE_STANDIN=
ARG PYTHON_VERSION=3.11.12
ARG PYTHON_OPTIMIZE=pgo-lto
ARG IMAGE_REF=repro:0.1.0
ARG GIT_COMMIT=unknown
ARG BUILD_DATE=unknown
ARG LOCK_SHA256=unset
LABEL org.opencontainers.image.title="repro" \
      org.opencontainers.image.description="Reproducibility kit: locked environment, verified data, deterministic runs" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.repro.lock.sha256="${LOCK_SHA256}" \
      org.repro.python.version="${PYTHON_VERSION}" \
      org.repro.base.standin="${BASE_STANDIN}"
RUN set -eux; \
    chmod 0755 /usr/local/bin/repro-entrypoint; \
    repro env check --lock /opt/repro/requirements.lock; \
    python /usr/local/bin/repro-write-build-info /etc/repro/build.json \
        "ref=${IMAGE_REF}" "base_image=${BASE_IMAGE}" "base_digest=${BASE_DIGEST}" "base_standin=${BASE_STANDIN}" \
        "git_commit=${GIT_COMMIT}" "build_date=${BUILD_DATE}" "python_version=${PYTHON_VERSION}" \
        "python_optimize=${PYTHON_OPTIMIZE}" "lock=/opt/repro/requirements.lock"

USER 10001:10001
WORKDIR /work
ENV REPRO_GIT_COMMIT=${GIT_COMMIT} \
    HF_HOME=/data/hf-cache \
    REPRO_DATA=/data \
    REPRO_RUNS=/runs
VOLUME ["/data", "/runs"]
ENTRYPOINT ["/usr/local/bin/repro-entrypoint"]
CMD ["repro", "--help"]
