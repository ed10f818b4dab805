"""Same bits on another machine (issue 44): the gpt2-shapley smoke run in the portable CPU mode gives
this machine the figures an AMD EPYC gave for the same setting (tests/data/crosscpu/, copied from
../shared/crosscpu/: figures.py's line per oneMKL setting on that machine). Skipped, with the reason,
where the comparison means nothing: a CPU that is neither Intel nor AMD, torch kernels other than the
AVX-512 ones both machines ran, another torch, no oneMKL."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from repro.env.determinism import PORTABLE_CPU_ENV, PORTABLE_REFERENCE_CAPABILITY
from repro.probe import collect

DATA = Path(__file__).resolve().parent / "data" / "crosscpu"
AMD = DATA / "amd-epyc-avx512.md"
AMD_CORES = 2  # "2 usable cores": a row without a thread count ran at 2


def _figures_module():
    spec = importlib.util.spec_from_file_location("crosscpu_figures", DATA / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def amd_rows() -> list[tuple[dict[str, str], dict]]:
    """Each table row of the AMD file: its environment (thread counts filled in) and its figures."""
    rows = []
    for env, line in re.findall(r"^\| ([^|]+) \| `(\{.*\})` \|$", AMD.read_text(), re.M):
        setting = dict(item.split("=", 1) for item in env.split() if "=" in item)
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            setting.setdefault(key, str(AMD_CORES))
        rows.append((setting, json.loads(line)))
    return rows


def comparable() -> str | None:
    """Why this machine's figures cannot be set beside the AMD EPYC's (None: they can)."""
    import torch

    cpu = collect.cpu()
    if cpu.get("vendor") not in ("GenuineIntel", "AuthenticAMD"):
        return f"the CPU is neither Intel nor AMD ({cpu.get('vendor')}, {cpu.get('model')})"
    level = collect.cpu_capability(torch)
    if level != PORTABLE_REFERENCE_CAPABILITY:
        return f"torch's CPU kernels here are {level}; both measured machines ran {PORTABLE_REFERENCE_CAPABILITY}"
    if not torch.__version__.startswith("2.11.0"):
        return f"torch {torch.__version__}; the AMD EPYC's figures are torch 2.11.0's (requirements.lock)"
    if collect.Mkl.loaded() is None:
        return "this torch has no oneMKL"
    return None


def test_the_amd_file_has_the_portable_setting_and_two_equal_default_runs():
    rows = amd_rows()
    defaults = [f for env, f in rows if "MKL_CBWR" not in env]
    assert len(defaults) == 2 and {k: v for k, v in defaults[0].items() if k != "bundle"} == \
        {k: v for k, v in defaults[1].items() if k != "bundle"}
    assert [f for env, f in rows if env == PORTABLE_CPU_ENV]  # the mode's setting was measured there


@pytest.mark.slow
@pytest.mark.xdist_group("gpt2-smoke")
def test_the_portable_smoke_figures_equal_the_amd_epycs(gpt2_smoke):
    reason = comparable()
    if reason:
        pytest.skip(f"no cross-machine comparison here: {reason}")
    ours = _figures_module().figures(gpt2_smoke)
    theirs = next(f for env, f in amd_rows() if env == PORTABLE_CPU_ENV)
    ours.pop("bundle"), theirs.pop("bundle")
    assert ours == theirs, f"this machine: {json.dumps(ours)}\nAMD EPYC:     {json.dumps(theirs)}"
