"""The image built and run, where a Docker engine answers (CI starts one; `make image-rehearse`
builds the image these tests use): the build with the stand-ins, and the image rehearsal's checks,
each shown to fail when its subject is broken on purpose. Skipped with one line otherwise."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from repro import writer_lock
from repro.workflows import image

KIT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def engine():
    why = image.engine_answers()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="module")
def built(engine, tmp_path_factory):
    """The rehearsal image, built with the stand-ins (every layer cached after `make image-rehearse`,
    which CI runs first; from nothing it takes about ten minutes)."""
    for tool in ("mmdebstrap", "apt-get", "make"):
        if shutil.which(tool) is None and not image.image_id(image.BASE_TAG):
            pytest.skip(f"no {tool}: it makes the image's stand-ins")
    log = tmp_path_factory.mktemp("build") / "build.log"
    cache = KIT / "data" / "image-standins"  # where `make image-rehearse` keeps them (tests get their own data/)
    cache.mkdir(parents=True, exist_ok=True)
    with writer_lock.acquire(cache, "image stand-ins", wait=True):  # one test process builds at a time (make test -n)
        base = image.standin_base(cache, log)
        python_file, version, sha = image.standin_python(cache, log)
        ca = image.SYSTEM_CA if image.SYSTEM_CA.exists() else None
        image.build(image.Standins(base, python_file, version, sha, ca), image.IMAGE, log)
    return base


def test_image_builds_and_reports_its_identity(built):
    lock_sha = hashlib.sha256((KIT / "requirements.lock").read_bytes()).hexdigest()
    done = subprocess.run(["docker", "run", "--rm", "--network", "none", image.IMAGE, "repro", "env", "check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    label = subprocess.run(["docker", "image", "inspect", "--format", '{{index .Config.Labels "org.repro.lock.sha256"}}', image.IMAGE],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert label == lock_sha
    built_id = image.image_id(image.IMAGE)
    fp = json.loads(subprocess.run(["docker", "run", "--rm", "--network", "none", "--user", "4242:4242",
                                    "-e", f"REPRO_IMAGE_ID={built_id}",  # as make run-image passes it
                                    built_id, "repro", "env", "fingerprint"], capture_output=True, text=True, check=True).stdout)
    check = image.check_identity(fp, built=built_id, base_id=built, lock=KIT / "requirements.lock")
    assert check.ok, check.detail
    assert fp["torch"]["cpu_capability"]  # the CPU kernels torch dispatches to, inside the image too


def test_a_lock_that_differs_from_the_image_fails_the_identity_check(built, tmp_path):
    built_id = image.image_id(image.IMAGE)
    fp = json.loads(subprocess.run(["docker", "run", "--rm", "--network", "none", "-e", f"REPRO_IMAGE_ID={built_id}",
                                    built_id, "repro", "env", "fingerprint"], capture_output=True, text=True, check=True).stdout)
    lock = tmp_path / "requirements.lock"
    lock.write_text((KIT / "requirements.lock").read_text().replace("torch==2.11.0", "torch==2.11.1", 1))
    check = image.check_identity(fp, built=built_id, base_id=built, lock=lock)
    assert not check.ok and "lock_sha256" in check.detail
    assert image.failure_line([check]).startswith("image rehearsal, step 'image identity in the fingerprint': lock_sha256 is")


def test_an_entrypoint_that_cannot_write_its_identity_fails_its_check(built):
    assert image.check_identity_written(image.IMAGE, "4242:4242").ok
    broken = image.check_identity_written(image.IMAGE, "4242:4242", docker_args=("--read-only",))
    assert not broken.ok
    assert broken.detail.startswith("repro-entrypoint: error: cannot write the image identity")


def test_files_the_caller_does_not_own_fail_the_ownership_check(built, tmp_path):
    mount = image.mount_dir(tmp_path / "runs", "4242:4242")
    subprocess.run(["docker", "run", "--rm", "--network", "none", "--user", "4242:4242", "-v", f"{mount}:/runs", image.IMAGE,
                    "sh", "-c", "mkdir -p /runs/a && echo x > /runs/a/f"], check=True, capture_output=True)
    assert image.check_owner([mount], "4242:4242").ok
    subprocess.run(["docker", "run", "--rm", "--network", "none", "--user", "0:0", "-v", f"{mount}:/runs", image.IMAGE,
                    "sh", "-c", "echo y > /runs/a/g"], check=True, capture_output=True)
    broken = image.check_owner([mount], "4242:4242")
    assert not broken.ok and "/runs/a/g (0:0)" in broken.detail.replace(str(mount), "/runs")
    shutil.rmtree(mount)


def test_the_build_ca_is_not_in_the_image(built, tmp_path):
    assert image.check_ca_absent(image.IMAGE, image.SYSTEM_CA if image.SYSTEM_CA.exists() else None).ok
    planted = tmp_path / "ca.pem"  # a file the image does contain must be found by the same check
    planted.write_bytes(subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "cat", image.IMAGE,
                                       "/opt/repro/requirements.lock"], capture_output=True, check=True).stdout)
    assert not image.check_ca_absent(image.IMAGE, planted).ok


def test_the_default_build_args_fail_only_where_the_real_sources_are_out_of_reach(built, tmp_path):
    """With the stand-in base but the Dockerfile's own CPython arguments, the build stops at the
    download from python.org (unreachable here), not anywhere else."""
    log = tmp_path / "build.log"
    done = subprocess.run(["docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={image.BASE_TAG}",
                           "--target", "python-build", "-t", "repro:default-args", str(KIT)],
                          capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    log.write_text(done.stdout + done.stderr)
    assert done.returncode != 0
    assert "www.python.org/ftp/python/3.11.12/Python-3.11.12.tar.xz" in log.read_text()
    assert "curl" in log.read_text() and "returned a non-zero code" in log.read_text()
