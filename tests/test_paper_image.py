"""A paper's own image (docs/own-paper.md, "Your paper's image"): the task file's [environment], the
image lock and what makes it stale, the Dockerfile built from it, `--image`, and the image named in
fingerprints and diffs. Every bad input is one line, exit 2 or 1, with no image and no bundle; most
need no engine. With a Docker engine and the rehearsal's kit image (`make image-rehearse`, which CI
runs first), an image is locked, built and run for real; the example paper's image is compared with
its native run by `repro image rehearse` itself (workflows/image_example.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from repro import digest
from repro.bundle import Summary
from repro.workflows import image_lock, image_paper, task_file
from repro.workflows.image_build import IMAGE, SYSTEM_CA, engine_answers, image_id

KIT = Path(__file__).resolve().parent.parent
EXAMPLE = KIT / "examples" / "toy-paper"
FAKE_ID = "sha256:" + "ab" * 32


def paper(tmp_path: Path, requirements: str = "torch==2.11.0\n", environment: str = "") -> Path:
    """A copy of the example paper with its own requirements and [environment] lines."""
    work = tmp_path / "paper"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("*.image.lock.toml", "*.requirements.lock"))
    (work / "requirements.txt").write_text(requirements)
    if environment:
        text = (work / "task.toml").read_text().replace('python = "3.11"', f'python = "3.11"\n{environment}')
        (work / "task.toml").write_text(text)
    return work / "task.toml"


def hand_lock(task: Path, base: str = FAKE_ID, apt: dict[str, str] | None = None) -> Path:
    """An image lock written as `repro image lock` writes it, for a kit image this machine need not have."""
    tf = task_file.read(task)
    lock_path, compiled = image_lock.paths(tf)
    compiled.write_text((KIT / "requirements.lock").read_text())
    doc = {"schema": image_lock.SCHEMA, "task": tf.name, "locked_at": "2026-12-07T00:00:00+00:00",
           "environment_sha256": digest.sha256(tf.environment.table),
           "base": {"given": "kit", "ref": IMAGE, "digest": base, "local": True},
           "kit": {"ref": IMAGE, "image_id": FAKE_ID, "python": "3.11.2"},
           "python": {"requested": "3.11", "version": "3.11.2", "interpreter": image_lock.KIT_PYTHON},
           "requirements": {"input": "requirements.txt", "input_sha256": image_lock.sha256_file(tf.environment.requirements),
                            "lock": compiled.name, "lock_sha256": image_lock.sha256_file(compiled), "packages": 1},
           "apt": {"distribution": "debian trixie", "snapshot": "", "how": "", "packages": apt or {}}}
    lock_path.write_text(tomli_w.dumps(doc))
    return lock_path


def images() -> set[str]:
    if engine_answers():
        return set()
    done = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True)
    return {line for line in done.stdout.splitlines() if line.startswith("repro-paper/")}


def one_line(code: int, err: str, want_code: int, *parts: str) -> None:
    assert code == want_code, err
    assert err.count("\n") == 1, err
    for part in parts:
        assert part in err, err


# ---------------------------------------------------------------- bad input, no engine needed


def test_an_unpinned_requirement_without_a_lock_is_refused_by_build_and_by_run(repro, tmp_path):
    task = paper(tmp_path, "torch==2.11.0\nnumpy\n")
    before = images()
    code, _, err = repro("image", "build", task)
    one_line(code, err, 2, "requirements.txt: 'numpy' is not pinned and there is no image lock",
             f"fix: repro image lock {task}")
    code, _, err = repro("run", task, "--image", "--output", tmp_path / "bundle")
    one_line(code, err, 2, "'numpy' is not pinned")
    code, _, err = repro("reproduce", "--tasks", task, "--image", "--output", tmp_path / "summary")
    one_line(code, err, 2, "no image lock")
    assert not (tmp_path / "bundle").exists() and not (tmp_path / "summary").exists()
    assert not list(task.parent.glob("*.image.lock.toml")) and images() == before


@pytest.mark.parametrize("change, says", [
    ("requirements", "requirements.txt changed since the lock"),
    ("compiled", "task.requirements.lock changed since the lock (its sha256 no longer matches)"),
    ("environment", "[environment] changed since the lock"),
    ("base tag", "base 'repro:0.1.0' is a tag, not a sha256 digest"),
])
def test_a_stale_lock_is_one_line_naming_what_changed(repro, tmp_path, change, says):
    task = paper(tmp_path)
    lock = hand_lock(task, base="repro:0.1.0" if change == "base tag" else FAKE_ID)
    if change == "requirements":
        (task.parent / "requirements.txt").write_text("torch==2.10.0\n")
    elif change == "compiled":  # the hash of one wheel edited: the lock no longer matches what was resolved
        compiled = task.parent / "task.requirements.lock"
        text = compiled.read_text()
        compiled.write_text(text.replace(text.split("--hash=sha256:")[1][:64], "0" * 64, 1))
    elif change == "environment":
        task.write_text(task.read_text().replace('python = "3.11"', 'python = "3.11"\napt = ["jq"]'))
    for command in (["image", "build", task], ["image", "verify", task], ["run", task, "--image", "--output", tmp_path / "b"]):
        code, _, err = repro(*command)
        one_line(code, err, 2, says, f"fix: repro image lock {task}")
    assert not (tmp_path / "b").exists() and lock.exists()


def test_no_engine_is_one_line_and_nothing_is_written(repro, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    task = paper(tmp_path)
    code, _, err = repro("image", "lock", task)
    one_line(code, err, 2, "no Docker engine answers", "fix: start a Docker engine")
    assert not list(task.parent.glob("*.image.lock.toml")) and not (task.parent / "task.requirements.lock").exists()
    hand_lock(task)
    code, _, err = repro("image", "build", task)
    one_line(code, err, 2, "no Docker engine answers")
    code, _, err = repro("reproduce", "--tasks", task, "--seeds", "2", "--image", "--output", tmp_path / "s")
    one_line(code, err, 2, "no Docker engine answers")
    assert not (tmp_path / "s").exists()


def test_environment_mistakes_and_image_on_a_built_in_task(repro, tmp_path):
    for environment, says in (('base = "my image"', "environment.base: 'my image' is not an image reference"),
                              ('apt = ["Not A Package"]', "environment.apt: 'Not A Package' is not a Debian/Ubuntu package name"),
                              ('pip = "x"', "environment.pip: unknown key")):
        code, _, err = repro("image", "lock", paper(tmp_path / environment[:3], environment=environment))
        one_line(code, err, 2, says)
    task = paper(tmp_path / "b")
    text = task.read_text().replace('requirements = "requirements.txt"', 'requirements = "missing.txt"')
    task.write_text(text)
    code, _, err = repro("run", task)
    one_line(code, err, 2, "environment.requirements", "missing.txt not found")
    code, _, err = repro("reproduce", "--tasks", "esconv-sft", "--image", "--output", tmp_path / "s")
    one_line(code, err, 2, "--image: esconv-sft is a built-in task", "make reproduce")
    code, _, err = repro("run", "esconv-sft", "--image")
    one_line(code, err, 2, "--image: esconv-sft is a built-in task", "make reproduce")


# ---------------------------------------------------------------- what a lock builds


def test_the_dockerfile_names_the_base_by_digest_enforces_hashes_and_pins_apt(tmp_path):
    task = paper(tmp_path)
    hand_lock(task)
    lock = image_lock.current(task_file.read(task))
    lock["apt"] = {"distribution": "debian trixie", "snapshot": "20261207T000000Z", "how": "", "packages": {"jq": "1.7.1-6"}}
    text = image_paper.dockerfile(lock, ca=True)
    assert f"FROM {FAKE_ID} AS env" in text and f"FROM {FAKE_ID} AS paper" in text
    assert "install --require-hashes --no-deps --no-compile -r /opt/paper-build/install.txt" in text
    assert "apt-get install -y --no-install-recommends jq=1.7.1-6" in text
    assert "snapshot.debian.org/archive/debian/20261207T000000Z" in text
    assert "ca.pem" not in text.split("AS paper")[1]  # the CA only in the build stage
    other = {**lock, "base": {"given": "python:3.11-slim", "ref": "python:3.11-slim", "digest": "sha256:" + "cd" * 32, "local": False}}
    text = image_paper.dockerfile(other, ca=False)
    assert f"FROM python@sha256:{'cd' * 32} AS paper" in text
    assert f"COPY --from={FAKE_ID} /opt/venv /opt/venv" in text  # repro and its Python from the kit image
    ubuntu = {**lock, "apt": {**lock["apt"], "distribution": "ubuntu noble"}}
    assert "apt-get update -qq --snapshot 20261207T000000Z" in image_paper.dockerfile(ubuntu, ca=False)


def test_packages_hash_identical_to_the_kits_are_linked_the_rest_installed(tmp_path):
    kit = (KIT / "requirements.lock").read_text()
    lines = kit.split("\ntorch==")[1].split("\n    #")[0]
    mine = tmp_path / "mine.lock"
    mine.write_text("torch==" + lines + "\nsix==1.17.0 \\\n    --hash=sha256:" + "1" * 64 + "\n")
    parts = image_paper.split(mine, kit)
    assert parts.from_kit == ("torch==2.11.0",)
    assert parts.install.startswith("six==1.17.0 --hash=sha256:111")
    mine.write_text("torch==" + lines.replace(lines.split("--hash=sha256:")[1][:64], "2" * 64) + "\n")
    assert image_paper.split(mine, kit).from_kit == ()  # another hash: not the kit's wheel, installed


def test_env_diff_names_the_image_each_side_ran_in():
    from repro.env import diff

    native = {"image": {"in_image": False}, "digests": {}}
    inside = {"image": {"in_image": True, "kind": "paper", "ref": "repro-paper/toy-paper:0123456789ab", "image_id": FAKE_ID,
                        "image_lock": "task.image.lock.toml", "image_lock_sha256": "ef" * 32, "requirements_lock_sha256": "12" * 32,
                        "base_ref": IMAGE, "base_digest": FAKE_ID}, "digests": {}}
    result = diff.diff(native, inside)
    assert result["images"]["a"].startswith("native run")
    assert "repro-paper/toy-paper:0123456789ab" in result["images"]["b"] and "image lock task.image.lock.toml efefefefefef" in result["images"]["b"]
    assert "repro-paper/toy-paper:0123456789ab" in diff.markdown(result)


# ---------------------------------------------------------------- where runs go: the executor, in the image

FAKE_DOCKER = """#!{python}
# A stand-in `docker` that logs each call and runs a `docker run`'s `repro ...` here, with its -e
# variables and in its -w directory (mounts, --user and --network are only recorded).
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:2] == ["image", "inspect"]:
    print("{image_id}")
if args[:1] != ["run"]:
    sys.exit(0)
env, cwd, i = dict(os.environ), None, 1
while args[i].startswith("-"):
    if args[i] == "--rm":
        i += 1
        continue
    if args[i] == "-e":
        env.update([args[i + 1].split("=", 1)])
    cwd = args[i + 1] if args[i] == "-w" else cwd
    i += 2
assert args[i + 1] == "repro", args
sys.exit(subprocess.call([sys.executable, "-m", "repro", *args[i + 2:]], env=env, cwd=cwd))
"""


def test_a_task_files_target_places_its_runs_in_its_image_and_the_executor_starts_each_child_there(tmp_path, monkeypatch):
    """Where runs go is the executor's: with --image a task file's target hands it the paper's image,
    and every child it starts (a seed run, a determinism run) goes through `docker run`; a
    determinism run's request is mounted read-only, its bundle (and a resumed run's killed bundle)
    writable, and it starts in our working directory, so a relative path in the request means the same."""
    import dataclasses

    from repro.workflows import image_run
    from repro.workflows.executor import Executor, Work
    from repro.workflows.target import Target

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    task = paper(tmp_path)
    image = image_run.PaperImage("repro-paper/toy-paper:0123456789ab", FAKE_ID, (str(task.parent),))
    monkeypatch.setattr(image_run.PaperImage, "of", staticmethod(lambda tf: image))
    target = Target.of(str(task))
    assert target.executor_for(Executor()).in_image is None  # no --image: here, as before
    placed = target.executor_for(Executor(image=True))
    assert placed.in_image == image
    started = []
    monkeypatch.setattr(image_run, "run", lambda img, args, log, env: started.append((img, [str(a) for a in args])) or 0)
    outcomes = placed.run([Work("s0", ["run", task, "--output", "b"], tmp_path / "b.log"),
                           Work("run-1", ["exec", "--request", "r.json"], tmp_path / "r.log")], folder=tmp_path / "slurm")
    assert [(img, args[0]) for img, args in started] == [(image, "run"), (image, "exec")] and {o.code for o in outcomes.values()} == {0}
    killed, resumed = tmp_path / "check" / "run-b", tmp_path / "check" / "run-b-resumed"
    request = tmp_path / "check" / "requests" / "run-b-resumed.json"
    request.parent.mkdir(parents=True)
    request.write_text(json.dumps(dataclasses.replace(target.request(Path("check/run-b-resumed")), placeholder=killed).to_json()))
    call = image_run.argv(image, ["exec", "--request", "check/requests/run-b-resumed.json"], {}, who="1000:1000")
    assert f"{request}:{request}:ro" in call and f"{resumed}:{resumed}" in call and f"{killed}:{killed}" in call
    assert f"{task.parent}:{task.parent}:ro" in call and call[call.index("-w") + 1] == str(tmp_path)
    assert call[-5:] == [FAKE_ID, "repro", "exec", "--request", str(request)]
    # the numerics settings of this shell go in with it (the native run has them); others do not
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    monkeypatch.setenv("HOME_SECRET_TOKEN", "x")
    call = image_run.argv(image, ["exec", "--request", "check/requests/run-b-resumed.json"], {}, who="1000:1000")
    given = [call[i + 1] for i, word in enumerate(call) if word == "-e"]
    assert "OMP_NUM_THREADS=3" in given and "MKL_CBWR=AVX2" in given and not any(g.startswith("HOME_SECRET") for g in given)


def stand_in_engine(tmp_path: Path, monkeypatch) -> Path:
    """A `docker` first on PATH that runs each child here (FAKE_DOCKER); the file its calls are logged to."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "docker.jsonl"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER.format(python=sys.executable, image_id=FAKE_ID))
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(calls))
    return calls


@pytest.mark.example
def test_every_run_of_a_task_file_goes_through_its_image_seed_runs_and_determinism_runs(repro, tmp_path, monkeypatch):
    """reproduce --image: the executor a task file's target places in its image starts the seed run
    (`repro run FILE.toml`) and both determinism runs (`repro exec --request`) through `docker run`,
    with no network, the paper read-only, the request read-only and only each run's bundle writable
    (a stand-in engine runs them here: the verdict and the bundles are the real ones)."""
    task = paper(tmp_path)
    hand_lock(task)
    calls = stand_in_engine(tmp_path, monkeypatch)
    out = tmp_path / "summary"
    code, _, err = repro("reproduce", "--tasks", task, "--image", "--determinism-steps", "2", "--output", out)
    summary = Summary(out).read()
    steps = {s["name"]: s["status"] for s in summary["steps"]}
    assert steps["toy-paper: run"] == steps["toy-paper: determinism"] == "ok", err
    assert summary["tasks"]["toy-paper"]["determinism"]["verdict"] == "identical" and summary["command"].endswith(" --image")
    runs = [c for c in (json.loads(line) for line in calls.read_text().splitlines()) if c[0] == "run"]
    children = [c[c.index(FAKE_ID) + 1:] for c in runs]
    assert [c[1] for c in children] == ["run", "exec", "exec"], children
    seed_run = Path(children[0][4])
    assert children[0][2:4] == [str(task.resolve()), "--output"] and seed_run.parent == (out / "tasks").resolve()
    assert f"{seed_run}:{seed_run}" in runs[0]
    for call, child in zip(runs[1:], children[1:]):
        request, bundle = Path(child[3]), Path(json.loads(Path(child[3]).read_text())["output"]).resolve()
        assert child[2] == "--request" and request.is_absolute() and f"{request}:{request}:ro" in call
        assert f"{bundle}:{bundle}" in call and bundle.parent == (out / "determinism" / "toy-paper").resolve()
    for call in runs:
        assert call[call.index("--network") + 1] == "none" and f"{task.parent.resolve()}:{task.parent.resolve()}:ro" in call
    code, _, err = repro("reproduce", "--tasks", task, "esconv-sft", "--image", "--output", tmp_path / "mixed")
    one_line(code, err, 2, "--image: esconv-sft is a built-in task")
    assert not (tmp_path / "mixed").exists()


def test_verify_determinism_of_a_task_file_with_image_runs_both_runs_in_it(repro, tmp_path, monkeypatch):
    """verify-determinism FILE.toml --image: both runs are `repro exec --request` children started
    through `docker run` (no network, the paper read-only, each bundle writable), and the verdict is
    the real comparison of their traces (a stand-in engine runs them here); a command after -- has
    no image and is refused in one line."""
    task = paper(tmp_path)
    hand_lock(task)
    calls = stand_in_engine(tmp_path, monkeypatch)
    out = tmp_path / "check"
    code, stdout, err = repro("verify-determinism", task, "--image", "--steps", "2", "--output", out, "--json")
    assert code == 0 and json.loads(stdout)["verdict"] == "identical", err
    runs = [c for c in (json.loads(line) for line in calls.read_text().splitlines()) if c[0] == "run"]
    children = [c[c.index(FAKE_ID) + 1:] for c in runs]
    assert [c[1:3] for c in children] == [["exec", "--request"]] * 2, children
    for call, child in zip(runs, children):
        bundle = Path(json.loads(Path(child[3]).read_text())["output"]).resolve()
        assert f"{bundle}:{bundle}" in call and bundle.parent == out.resolve()
        assert call[call.index("--network") + 1] == "none" and f"{task.parent.resolve()}:{task.parent.resolve()}:ro" in call
    code, _, err = repro("verify-determinism", "--image", "--output", tmp_path / "cmd", "--", sys.executable, "-c", "pass")
    one_line(code, err, 2, "a command after -- has no image")
    assert not (tmp_path / "cmd").exists()


# ---------------------------------------------------------------- the real engine


@pytest.fixture(scope="module")
def kit_image():
    why = engine_answers()
    if why:
        pytest.skip(why)
    if image_id(IMAGE) is None:
        pytest.skip(f"no {IMAGE}: make image-rehearse builds it (CI runs it before the tests)")
    return IMAGE


@pytest.mark.docker
def test_the_example_in_its_image_same_bits_named_by_diff_verified_and_a_wrong_hash_builds_nothing(repro, tmp_path, kit_image,
                                                                                                  monkeypatch):
    """The example paper with the kit's own lock as its requirements (already hashed: no resolver, every
    package linked from the kit's environment): locked, built, run with --image and natively, the step
    traces equal and `env diff` naming the image; rebuilt by verify; then one wheel's hashes changed."""
    monkeypatch.setenv("REPRO_KIT_IMAGE", kit_image)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")  # `python train.py`, natively
    task = paper(tmp_path, (KIT / "requirements.lock").read_text())
    code, _, err = repro("image", "lock", task)
    assert code == 0, err
    assert not (task.parent / "task.requirements.lock").exists()  # already a hashed lock: used as it is
    ca = ["--ca-cert", SYSTEM_CA] if SYSTEM_CA.exists() else []
    code, out, err = repro("image", "build", task, *ca)
    assert code == 0, err
    ref = out.strip().splitlines()[-1]
    try:
        assert image_paper.packages(ref) == image_paper._lock_packages(KIT / "requirements.lock")  # exactly the lock
        runs = {}
        for where in ("native", "image"):
            runs[where] = tmp_path / where
            code, _, err = repro("run", task, "--seed", "1", "--output", runs[where], *(["--image"] if where == "image" else []))
            assert code == 0, err
        assert (runs["native"] / "trace.jsonl").read_bytes() == (runs["image"] / "trace.jsonl").read_bytes()
        code, out, _ = repro("env", "diff", runs["native"], runs["image"], "--format", "markdown")
        assert "native run" in out and ref in out and "image lock task.image.lock.toml" in out, out
        code, out, err = repro("image", "verify", task, *ca)
        assert code == 0 and "| the paper's packages | same |" in out, out + err
        # one wheel under hashes pip has never seen: pip refuses it, the build fails, nothing is tagged
        bad = task.parent / "requirements.txt"
        text = bad.read_text()
        start = text.index("\ntomli-w==") + 1
        entry = text[start:].split("\n    #")[0]
        bad.write_text(text.replace(entry, re.sub("sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, entry)))
        assert repro("image", "lock", task)[0] == 0
        code, _, err = repro("image", "build", task, *ca)
        assert code == 1 and err.splitlines()[-1].startswith("repro: error: ") and "image build: ERROR:" in err, err
        assert "DO NOT MATCH THE HASHES" in err or "hash" in err.splitlines()[-1].lower(), err
        assert image_id(image_paper.tag(image_lock.current(task_file.read(task)))) is None
    finally:
        subprocess.run(["docker", "image", "rm", "-f", ref], capture_output=True)


def test_the_kit_runtime_libraries_are_the_dockerfiles():
    text = (KIT / "Dockerfile").read_text().split("AS runtime", 1)[1]
    listed = text.split("apt-get install -y --no-install-recommends", 1)[1].split(";", 1)[0]
    assert tuple(listed.replace("\\", " ").split()) == image_lock.KIT_RUNTIME_APT


def test_a_child_in_the_image_has_no_network_read_only_code_and_data_and_only_its_bundle_writable(tmp_path, monkeypatch):
    from repro.workflows import image_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(image_run, "gpus", lambda: True)
    paper_dir = tmp_path / "paper"
    image = image_run.PaperImage("repro-paper/toy-paper:0123456789ab", FAKE_ID, (str(paper_dir),))
    argv = image_run.argv(image, ["run", "paper/task.toml", "--output", "runs/b", "--seed", "1"], {"OMP_NUM_THREADS": "1"},
                          who="4242:4242")
    text = " ".join(argv)
    assert "--network none" in text and "--user 4242:4242" in text and "--gpus all" in text
    assert f"-v {paper_dir}:{paper_dir}:ro" in text and f"-v {tmp_path / 'runs/b'}:{tmp_path / 'runs/b'} " in text
    assert argv[-7:] == ["repro", "run", str(paper_dir / "task.toml"), "--output", str(tmp_path / "runs/b"), "--seed", "1"]
    assert f"REPRO_IMAGE_ID={FAKE_ID}" in text and "OMP_NUM_THREADS=1" in text


def test_the_build_links_exactly_the_listed_packages_from_the_kits_environment(tmp_path):
    import sys
    import sysconfig

    kit_site = sysconfig.get_paths()["purelib"]
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    from importlib.metadata import version

    listing = tmp_path / "from-kit.txt"
    listing.write_text(f"tomli-w=={version('tomli-w')}\n")
    done = subprocess.run([sys.executable, str(image_paper.LINK_KIT), str(tmp_path / "venv"), kit_site, str(listing)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    linked = sorted(p.name for p in site.iterdir())
    assert "tomli_w" in linked and any(n.startswith("tomli_w-") and n.endswith(".dist-info") for n in linked)
    assert all((site / n).is_symlink() for n in linked) and len(linked) == 2  # that package, nothing else
    listing.write_text("tomli-w==0.0.1\n")
    done = subprocess.run([sys.executable, str(image_paper.LINK_KIT), str(tmp_path / "venv"), kit_site, str(listing)],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "tomli-w==0.0.1 is not in the kit's environment" in done.stderr


def test_a_tensors_digest_needs_no_numpy_and_is_the_same_bytes():
    """The probe runs in a paper's own interpreter, which may have torch and no numpy (the example's
    image has none): the digest reads the tensor's bytes directly, and they are numpy's bytes."""
    import hashlib as h

    import torch

    from repro.probe.digests import tensor_sha256

    for t in (torch.arange(12, dtype=torch.float32).reshape(3, 4).t(), torch.ones(5, dtype=torch.bfloat16),
              torch.tensor([2**40, -1]), torch.zeros(0), torch.tensor(3.5)):
        c = t.contiguous()
        want = h.sha256(f"{c.dtype}{tuple(c.shape)}".encode() + c.view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
        assert tensor_sha256(t) == want


def test_a_paper_image_compares_the_process_lock_with_the_papers_lock_not_the_kits():
    from repro.env import mismatches

    image = {"in_image": True, "kind": "paper", "lock_sha256": "aa" * 32, "requirements_lock_sha256": "bb" * 32}
    rows = lambda sha: [r for r in mismatches.declared_vs_loaded({"image": image, "lock": {"sha256": sha}}, {})  # noqa: E731
                        if "lock" in str(r)]
    assert rows("bb" * 32) == []  # the paper's own lock: as built
    assert rows("cc" * 32)  # another lock than the image was built with: named
