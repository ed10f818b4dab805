# Services CI starts for the tests that use them the way users run them, and stops again:
# a Docker engine (the image rehearsal, tests/test_image.py) and a one-node Slurm (tests/test_slurm.py).
# Sourced by .ci/run, which runs as root on a fresh Debian machine: each installs what it needs from
# Debian's packages when it is missing.

apt_install() {  # apt_install PACKAGE... : install the missing ones (one apt-get update per CI run)
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start_docker() {
    apt_install docker.io mmdebstrap
    if docker info >/dev/null 2>&1; then echo "docker: an engine answers already"; return 0; fi
    # No bridge and no iptables: these machines have neither; builds and runs use --network host / none.
    dockerd --storage-driver=overlay2 --iptables=false --bridge=none >/tmp/repro-ci-dockerd.log 2>&1 &
    echo $! >/tmp/repro-ci-dockerd.pid
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && { echo "docker: engine started"; return 0; }; sleep 1; done
    echo "docker: the engine did not start (log: /tmp/repro-ci-dockerd.log)" >&2
    tail -20 /tmp/repro-ci-dockerd.log >&2
    return 1
}

stop_docker() {  # remove what CI built (images are GBs), then stop the engine CI started
    if docker info >/dev/null 2>&1; then
        .venv/bin/repro image clean || true
        docker system prune -af >/dev/null 2>&1 || true
    fi
    rm -rf data/image-standins
    if [ -f /tmp/repro-ci-dockerd.pid ]; then
        kill "$(cat /tmp/repro-ci-dockerd.pid)" 2>/dev/null || true
        rm -f /tmp/repro-ci-dockerd.pid
    fi
}

install_slurm() {  # the tests start their own one-node cluster (tests/slurm_cluster.py); CI only installs it
    apt_install slurm-wlm munge
    command -v slurmctld >/dev/null && command -v munged >/dev/null
}
