"""What every task run does around its training: config, determinism, bundle, data check,
fingerprints, and the closing bookkeeping. A task module only trains and evaluates."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro import config as cfgmod
from repro.env import determinism
from repro.errors import CheckFailed, UsageError
from repro.report.bundle import Bundle, now


@dataclass
class Run:
    task: str
    config: dict[str, Any]
    bundle: Bundle
    device: Any
    data_root: Path
    resume: bool
    started: float


def pick_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"train.device is {name!r} but no CUDA device is visible", fix="use device = \"auto\" or \"cpu\"")
    return torch.device(name)


def data_identity(report_json: dict[str, Any]) -> str:
    """A short digest of what the data verification established (manifest, files, splits)."""
    core = {k: report_json.get(k) for k in ("name", "manifest_sha256", "files_sha256", "label_map_sha256")}
    core["splits"] = {k: v.get("ids_sha256") for k, v in (report_json.get("splits") or {}).items()}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:12]


def obtain_data(config: dict[str, Any], data_root: str | Path | None, *, allow_fetch: bool = False,
                progress: bool = False) -> tuple[Path, dict[str, Any], str]:
    """Verify the task's dataset in data_root (default: the manifest's place under the data root).
    When the directory is missing: generate it on the smoke profile, fetch it when allowed.
    Returns (root, verification record, what was done); CheckFailed when it does not verify."""
    from repro.data import manifest as mf
    from repro.data import registry
    from repro.data.verify import verify

    name = config["data"]["manifest"]
    manifest, _ = mf.load_dataset_manifest(name)
    root = Path(data_root) if data_root else mf.default_root(manifest)
    action = "verified"
    if not root.exists():
        if manifest["profile"] == "smoke":
            registry.generate(manifest["kind"], root, seed=0)
            action = "generated, then verified"
        elif allow_fetch:
            from repro.data import fetch

            fetch.fetch_dataset(name, root=root)
            action = "fetched, then verified"
    report = verify(name, root=root, progress=progress)
    if not report.ok:
        first = report.problems[0]
        raise CheckFailed(f"data verification failed: {first.line()} ({len(report.problems)} problem(s))",
                          where=str(root), fix=f"see `repro data verify {name} --root {root}`; fetch or regenerate the data")
    return root, report.as_json(), action


def ensure_data(config: dict[str, Any], data_root: str | Path | None) -> tuple[Path, dict[str, Any]]:
    """Verify the task's dataset; on the smoke profile generate it first when it is missing."""
    root, record, _ = obtain_data(config, data_root)
    return root, record


def start(task: str, *, profile: str, config_path: str | None, seed: int | None, output: str | None, resume: bool,
          overrides: list[str], data_root: str | None, check=None) -> Run:
    """Load the config, set determinism, open the bundle, verify the data. `check(config, device)`,
    a task's own config check, runs before the bundle exists: a config mistake leaves nothing."""
    config = cfgmod.load(task, profile, path=config_path, overrides=overrides, seed=seed)
    train = config["train"]
    # Flags before anything touches the device, so the fingerprint records what is in force.
    determinism.configure(deterministic=bool(train["deterministic"]), tf32=bool(train["tf32"]))
    determinism.seed_everything(int(config["task"]["seed"]))
    device = pick_device(train["device"])
    if check is not None:
        check(config, device)
    bundle = Bundle.open(task, config, output, resume)
    try:
        root, report = ensure_data(config, data_root)
    except Exception as exc:
        bundle.fail("data-verification", exc)
        raise
    bundle.write_json("data-verification.json", {"datasets": {report["name"]: report}})
    bundle.fingerprint("resume" if resume else "start", config=config, seeds={"task": int(config["task"]["seed"])},
                       data_digest=data_identity(report))
    bundle.status("running", stage="train", device=str(device))
    return Run(task, config, bundle, device, root, resume, time.perf_counter())


def finish(run: Run, results: dict[str, Any]) -> Path:
    bundle = run.bundle
    bundle.fingerprint("end", config=run.config, seeds={"task": int(run.config["task"]["seed"])},
                       data_digest=json.loads((bundle.path / "fingerprint.json").read_text())["digests"].get("data"))
    changed = bundle.environment_changed()
    results = {
        "task": run.task,
        "profile": run.config["task"]["profile"],
        "seed": int(run.config["task"]["seed"]),
        "device": str(run.device),
        "wall_seconds": round(time.perf_counter() - run.started, 2),
        "environment_changed": changed,
        **results,
    }
    bundle.write_json("results.json", results)
    stopped = bool((results.get("training") or {}).get("stopped_early"))
    bundle.status("stopped" if stopped else "finished", stage="stopped by stop.max_steps" if stopped else "done",
                  finished_at=now())
    try:
        from repro.report import issue

        issue.write_run_report(bundle.path)
    except ImportError:
        pass
    if checkpoint_path(bundle).exists() and not stopped and not run.config["train"].get("keep_checkpoints"):
        checkpoint_path(bundle).unlink()
    return bundle.path


def checkpoint_path(bundle: Bundle) -> Path:
    from repro.train import checkpoint

    return bundle.path / checkpoint.NAME


def resume_state(run: Run) -> dict[str, Any] | None:
    """The saved checkpoint's position and extras (not the tensors), or None for a fresh run."""
    if not run.resume:
        return None
    path = checkpoint_path(run.bundle)
    if not path.exists():
        status = run.bundle.read_status()
        if status.get("status") == "finished":
            raise UsageError("this run already finished", where=str(run.bundle.path))
        raise UsageError("no checkpoint to resume from", where=str(path),
                         fix="the run stopped before its first checkpoint: start it again without --resume")
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)
    return {"position": state["position"], "extra": state["extra"]}
