"""Task name -> its module; `repro run` goes through here."""

from __future__ import annotations

import importlib
from pathlib import Path

from repro.errors import UsageError
from repro.tasks import common

MODULES = {
    "esconv-sft": "repro.tasks.esconv_sft",
    "esc50-sft": "repro.tasks.esc50_sft",
    "gpt2-shapley": "repro.tasks.gpt2_shapley",
}


def module(task: str):
    if task not in MODULES:
        raise UsageError(f"unknown task {task!r}", fix=f"one of: {', '.join(MODULES)}")
    return importlib.import_module(MODULES[task])


def run_task(task: str, *, profile: str = "smoke", config_path: str | None = None, seed: int | None = None,
             output: str | None = None, resume: bool = False, overrides: list[str] | None = None,
             stage: str | None = None, folds: list[int] | None = None, seeds: int | None = None,
             data_root: str | None = None, max_steps: int | None = None, show_progress: bool = True) -> Path:
    mod = module(task)
    if stage is not None and task != "gpt2-shapley":
        raise UsageError("--stage is for gpt2-shapley only")
    if folds is not None and task != "esc50-sft":
        raise UsageError("--folds is for esc50-sft only")
    if seeds is not None and task != "gpt2-shapley":
        raise UsageError("--seeds is for gpt2-shapley only (use `repro reproduce --seeds` for the others)")
    extra = []
    if folds is not None:
        extra.append("data.folds=[" + ",".join(str(int(f)) for f in folds) + "]")
    if stage is not None:
        extra.append(f'stages.run="{stage}"')
    if seeds is not None:
        extra.append(f"stages.seeds={int(seeds)}")
    if stage in ("replay", "analyze"):
        if output is None:
            raise UsageError(f"--stage {stage} works on the bundle of a scoring run", fix="pass --output BUNDLE")
        resume = True  # the later stages continue an existing bundle
    run = common.start(task, profile=profile, config_path=config_path, seed=seed, output=output, resume=resume,
                       overrides=list(overrides or []) + extra, data_root=data_root,
                       check=getattr(mod, "check_config", None))
    try:
        results = mod.run(run, max_steps=max_steps, show_progress=show_progress)
    except BaseException as exc:
        run.bundle.fail("train", exc)
        raise
    return common.finish(run, results)
