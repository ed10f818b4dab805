"""The paper's-image half of `repro image rehearse`: examples/toy-paper's image locked and built on the
kit image the rehearsal just built (its local image id is the base: no registry, no second torch
download), then `repro reproduce --tasks task.toml --seeds 2` natively and with --image, as a uid
without a passwd entry, and compared:

    toy-paper image: lock and build    `repro image lock --kit-image IMAGE`, `repro image build`
    toy-paper natively, in its image   both reproduce runs end the same way, every run finished
    toy-paper bits equal               traces and metrics byte-identical, results' metrics equal
    toy-paper image named              the summary's Environment and each run's fingerprint name the
                                       image by id and its image lock

A copy of the example is locked and built (the repository's tree gets no lock files); its image is
removed at the end (`repro image clean` removes the kit's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from repro.bundle import Bundle, ImageRehearsal, Summary
from repro.paths import kit_root
from repro.progress import note
from repro.workflows import child

EXAMPLE = "toy-paper"


def _path_env() -> dict[str, str]:
    """The example's command is `python train.py`: the kit's environment first on PATH, as `make example` runs it."""
    return {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _timed(args: list[Any], log: Path) -> tuple[int, float]:
    started = time.perf_counter()
    code = child.repro(args, log=log, env_extra=_path_env())
    return code, time.perf_counter() - started


def checks(out: ImageRehearsal, image: str, ca: Path | None, check) -> list[Any]:
    """The rows (`check(step, ok, detail)`, the rehearsal's Check) of the example paper in its image."""
    work = out.path / EXAMPLE
    shutil.copytree(kit_root() / "examples" / EXAMPLE, work, ignore=shutil.ignore_patterns("*.image.lock.toml", "*.requirements.lock"))
    task = work / "task.toml"
    rows = []
    note(f"image rehearse: {EXAMPLE}'s image, locked and built on {image} (log: {out.log_path('toy-image')})")
    code, lock_s = _timed(["image", "lock", task, "--kit-image", image], out.log_path("toy-image"))
    built, build_s = (1, 0.0)
    if code == 0:
        built, build_s = _timed(["image", "build", task, *(["--ca-cert", ca] if ca else [])], out.log_path("toy-image-build"))
    ref = _built_ref(out.log_path("toy-image-build"))
    rows.append(check(f"{EXAMPLE} image: lock and build", code == 0 and built == 0 and ref is not None,
                      f"lock {lock_s:.0f} s, build {build_s:.0f} s: {ref}" if ref else f"exit {code or built} (see the toy-image logs)"))
    if not rows[-1].ok:
        return rows
    try:
        native, inside = out.path / f"{EXAMPLE}-native", out.path / f"{EXAMPLE}-image"
        note(f"image rehearse: {EXAMPLE} reproduced natively and with --image (logs: {EXAMPLE}-native.log, {EXAMPLE}-image.log)")
        a, native_s = _timed(["reproduce", "--tasks", task, "--seeds", "2", "--output", native], out.log_path(f"{EXAMPLE}-native"))
        b, image_s = _timed(["reproduce", "--tasks", task, "--seeds", "2", "--image", "--output", inside], out.log_path(f"{EXAMPLE}-image"))
        runs = [_finished(native), _finished(inside)]
        rows.append(check(f"{EXAMPLE} natively, in its image", a == b and a in (0, 1) and runs == [2, 2],
                          f"exit {a} natively ({native_s:.0f} s), {b} with --image ({image_s:.0f} s); finished runs {runs[0]} and {runs[1]}"))
        rows.append(_bits(native, inside, check))
        rows.append(_named(inside, ref, check))
    finally:
        subprocess.run(["docker", "image", "rm", "-f", ref], capture_output=True)
    return rows


def _built_ref(log: Path) -> str | None:
    if not log.exists():
        return None
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.startswith("repro-paper/")]
    return lines[-1] if lines else None


def _finished(summary: Path) -> int:
    if not (summary / Summary.SUMMARY).exists():
        return 0
    doc = Summary(summary).read()
    return sum(1 for t in (doc.get("tasks") or {}).values() for r in t.get("runs") or [] if r.get("status") == "finished")


def _bits(native: Path, inside: Path, check) -> Any:
    from repro.workflows.image_build import compared_files

    step = f"{EXAMPLE} bits equal to the native run"
    a, b = compared_files(native), compared_files(inside)
    if not a or set(a) != set(b):
        return check(step, False, f"trace files: {sorted(a)} natively, {sorted(b)} in the image")
    differ = [name for name in a if a[name] != b[name]]
    metrics = [json.dumps(Bundle(p.parent).results().get("metrics"), sort_keys=True) for root in (native, inside)
               for p in sorted(root.glob(f"tasks/*/{Bundle.RESULTS}"))]
    half = len(metrics) // 2
    if differ or metrics[:half] != metrics[half:]:
        return check(step, False, f"{len(differ)} of {len(a)} trace files differ" + ("" if differ else "; results' metrics differ"))
    return check(step, True, f"{len(a)} trace files byte-identical, {half} results' metrics equal")


def _named(inside: Path, ref: str, check) -> Any:
    step = f"{EXAMPLE} image named in the summary and fingerprints"
    text = (inside / Summary.TEXT).read_text(errors="replace") if (inside / Summary.TEXT).exists() else ""
    fps = [Bundle(p.parent).fingerprint("start") or {} for p in sorted(inside.glob(f"tasks/*/{Bundle.FINGERPRINTS['start']}"))]
    wrong = [f"{p.get('image', {}).get('ref')!r}" for p in fps if (p.get("image") or {}).get("ref") != ref
             or not (p.get("image") or {}).get("image_lock_sha256")]
    if ref not in text or not fps or wrong:
        return check(step, False, f"summary names it: {ref in text}; fingerprints naming another image: {wrong or 'none'}")
    return check(step, True, f"{ref} with its image lock in {Summary.TEXT} and {len(fps)} fingerprints")
