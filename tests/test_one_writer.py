"""One writer per directory (repro/writer_lock.py), a full disk that costs one line, and bad input
that leaves nothing behind (docs/cli.md, "One writer")."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from repro import writer_lock
from repro.errors import UsageError

KIT = Path(__file__).resolve().parent.parent
ESCONV = ["esconv-sft", "--profile", "smoke", "--set", "train.epochs=3"]  # 81 steps: long enough to meet, short to wait for


def _start(*args, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "repro", *map(str, args)], env={**os.environ, "PYTHONHASHSEED": "0", **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _holding(directory: Path, proc: subprocess.Popen, timeout: float = 120) -> dict:
    """Wait until proc holds the writer lock of directory (its record is in the lock file)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        record = writer_lock.holder(directory)
        if record and record.get("pid") == proc.pid:
            return record
        assert proc.poll() is None, f"the writer ended before it held the lock: {proc.stderr.read()[-2000:]}"
        time.sleep(0.02)
    raise AssertionError(f"{directory} never locked by pid {proc.pid}")


def _same_run(a: Path, b: Path) -> None:
    """Two bundles of one config: the files a run computes are byte-identical."""
    for name in ("trace.jsonl", "metrics.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert ra["metrics"] == rb["metrics"]
    assert (a / writer_lock.LOCK_NAME).read_bytes() == (b / writer_lock.LOCK_NAME).read_bytes() == b""


# ---------------------------------------------------------------- the lock itself


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_one_releases(tmp_path):
    target = tmp_path / "bundle"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from repro import writer_lock; "
                               f"writer_lock.acquire({str(target)!r}, 'run bundle'); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UsageError) as refused:
        writer_lock.acquire(target, "run bundle")
    line = refused.value.line()
    assert f"pid {holder.pid} on " in line and "since 20" in line and str(target) in line and "\n" not in line
    os.kill(holder.pid, signal.SIGKILL)  # SIGKILL: no chance to clean up, the kernel drops the lock
    holder.wait()
    with writer_lock.acquire(target, "run bundle"):
        assert writer_lock.holder(target)["pid"] == os.getpid() and writer_lock.held(target)
    assert not writer_lock.held(target) and (target / writer_lock.LOCK_NAME).read_bytes() == b""


def test_a_file_system_without_locks_is_a_clear_refusal(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(writer_lock.fcntl, "lockf", no_locks)
    with pytest.raises(UsageError) as refused:
        writer_lock.acquire(tmp_path / "d", "run bundle")
    assert "refuses file locks" in refused.value.line() and writer_lock.NO_LOCK_ENV in refused.value.line()
    monkeypatch.setenv(writer_lock.NO_LOCK_ENV, "1")  # the stated fallback: run without the guarantee
    with writer_lock.acquire(tmp_path / "d", "run bundle"):
        pass


# ---------------------------------------------------------------- two processes on one bundle


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """An undisturbed run: what every disturbed one must equal, byte for byte."""
    out = tmp_path_factory.mktemp("clean") / "bundle"
    assert _start("run", *ESCONV, "--output", out).wait() == 0
    return out


@pytest.mark.slow
def test_a_resume_while_the_run_trains_is_refused_and_the_bundle_stays_whole(clean, tmp_path, repro):
    busy = tmp_path / "busy"
    first = _start("run", *ESCONV, "--output", busy)
    record = _holding(busy, first)
    # a reader takes no lock: env diff reads the bundle while it is written, and waits for nothing
    while not (busy / "fingerprint.json").exists():
        time.sleep(0.02)
    code, _, err = repro("env", "diff", busy, busy)
    assert code == 0, err
    assert writer_lock.holder(busy)["pid"] == first.pid  # still the run's
    code, _, err = repro("run", *ESCONV, "--output", busy, "--resume")
    assert code == 2 and f"pid {first.pid}" in err and record["since"] in err and "Traceback" not in err
    code, _, err = repro("run", *ESCONV, "--output", busy)  # and without --resume: the same answer
    assert code == 2 and f"pid {first.pid}" in err
    assert first.wait() == 0, first.stderr.read()[-2000:]
    _same_run(clean, busy)


@pytest.mark.slow
def test_two_resumes_of_a_killed_run_one_writes_and_the_bundle_equals_an_undisturbed_one(clean, tmp_path):
    killed = tmp_path / "killed"
    run = _start("run", *ESCONV, "--output", killed)
    _holding(killed, run)
    while not (killed / "trace.jsonl").exists() or (killed / "trace.jsonl").read_text().count("\n") < 35:
        assert run.poll() is None
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)  # the killed holder does not block the resumes
    run.wait()
    a = _start("run", *ESCONV, "--output", killed, "--resume")
    _holding(killed, a)
    b = _start("run", *ESCONV, "--output", killed, "--resume")
    assert b.wait() == 2 and f"pid {a.pid}" in b.stderr.read()
    assert a.wait() == 0, a.stderr.read()[-2000:]
    _same_run(clean, killed)


class _SlowArchive(BaseHTTPRequestHandler):
    """Serves one zip in small chunks with a pause between them: the first fetch is still
    downloading when the second one starts."""

    body = b""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        chunk = max(1, len(self.body) // 40)  # 40 pieces, 0.1 s apart: about 4 s for the whole archive
        for i in range(0, len(self.body), chunk):
            self.wfile.write(self.body[i:i + chunk])
            time.sleep(0.1)


@pytest.mark.slow
def test_two_fetches_into_one_root_one_writes(tmp_path, dataset):
    from test_download_paths import _manifest_with_sources, _zip_with_top_folder

    source = dataset("esc50")
    _SlowArchive.body = _zip_with_top_folder(source, "ESC-50-master")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowArchive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/master.zip"
    manifest = _manifest_with_sources(source, "esc50-slow", tmp_path, [{"type": "zip", "url": url, "strip_prefix": "ESC-50-master"}])
    root = tmp_path / "root"
    try:
        first = _start("data", "fetch", manifest, "--root", root)
        _holding(root, first)
        second = _start("data", "fetch", manifest, "--root", root)
        assert second.wait() == 2 and f"pid {first.pid}" in second.stderr.read()
        assert first.wait() == 0, first.stderr.read()[-2000:]
    finally:
        server.shutdown()
    done = subprocess.run([sys.executable, "-m", "repro", "data", "verify", manifest, "--root", root],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- a full disk


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount a small tmpfs")
def test_a_full_disk_is_one_line_and_a_resume_after_freeing_space_finishes_identical(clean, tmp_path, repro):
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        run = _start("run", *ESCONV, "--output", small / "bundle")
        err = run.stderr.read()
        assert run.wait() == 1, err
        lines = [line for line in err.splitlines() if line.startswith("repro: error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert "No space left on device" in lines[0] and "free on" in lines[0] and "--resume" in lines[0]
        status = json.loads((small / "bundle" / "run.json").read_text())
        assert status["status"] == "failed" and "No space left" in status["error"]
        assert not [p for p in (small / "bundle").rglob("*") if p.name.endswith(".tmp")], "a partial file was left"
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)  # space freed
        code, _, err = repro("run", *ESCONV, "--output", small / "bundle", "--resume")
        assert code == 0, err
        _same_run(clean, small / "bundle")
    finally:
        subprocess.run(["umount", "-l", str(small)])


# ---------------------------------------------------------------- bad input costs nothing


def _licences(directory: Path, n: int = 6) -> list[Path]:
    """A few long documents, as a user's own corpus often is (docs/tasks.md)."""
    directory.mkdir(parents=True)
    words = ("permission is hereby granted free of charge to any person obtaining a copy of this software and "
             "associated documentation files to deal in the software without restriction").split()
    files = []
    for i in range(n):
        text = " ".join(words[(i * 7 + j) % len(words)] for j in range(900 + 50 * i))
        path = directory / f"licence-{i}.txt"
        path.write_text(text)
        files.append(path)
    return files


def test_prepare_cuts_long_documents_so_every_split_gets_text(tmp_path, repro):
    files = _licences(tmp_path / "text")
    code, _, err = repro("data", "prepare", *files, "--output", tmp_path / "corpus", "--window", "64")
    assert code == 0, err
    meta = json.loads((tmp_path / "corpus" / "corpus.json").read_text())
    assert all(meta["splits"][s]["windows"] > 0 for s in ("train", "val", "test")), meta["splits"]
    assert "repro run gpt2-shapley --corpus" in err


def test_prepare_refuses_a_split_the_task_needs_empty_and_leaves_nothing(tmp_path, repro):
    files = _licences(tmp_path / "text", n=1)
    code, _, err = repro("data", "prepare", files[0], "--output", tmp_path / "corpus", "--window", "64",
                         "--test-fraction", "0")
    assert code == 2 and "test" in err and "0 window" in err
    assert "repro run gpt2-shapley" not in err and not (tmp_path / "corpus").exists()


def test_a_run_refused_on_its_corpus_leaves_no_directory_and_the_fixed_command_just_works(tmp_path, repro):
    from repro.data import corpus

    files = _licences(tmp_path / "text")
    code, _, err = repro("data", "prepare", *files, "--output", tmp_path / "corpus", "--window", "64")
    assert code == 0, err
    meta_path = tmp_path / "corpus" / "corpus.json"
    good = meta_path.read_text()
    meta = json.loads(good)
    meta["splits"]["test"].update(tokens=0, windows=0)  # a corpus whose test split is empty
    (tmp_path / "corpus" / "test.bin").write_bytes(b"")
    meta_path.write_text(json.dumps(meta))
    subprocess.run([sys.executable, "-m", "repro", "data", "lock", tmp_path / "corpus", "--name",
                    corpus.manifest_name(tmp_path / "corpus"), "--output", corpus.manifest_path(tmp_path / "corpus")],
                   check=True, capture_output=True)
    out = tmp_path / "run"
    command = ["run", "gpt2-shapley", "--corpus", tmp_path / "corpus", "--output", out, "--set", "train.steps=2",
               "--set", "train.batch=2", "--set", "train.micro_batch=2"]
    code, _, err = repro(*command)
    assert code == 2 and "no test windows" in err and not out.exists()
    shutil.rmtree(tmp_path / "corpus")
    corpus.manifest_path(tmp_path / "corpus").unlink()
    assert repro("data", "prepare", *files, "--output", tmp_path / "corpus", "--window", "64")[0] == 0
    code, _, err = repro(*command)
    assert code == 0, err
