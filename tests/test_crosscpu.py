"""Same bits on another machine (issue 44): the gpt2-shapley smoke run in the portable CPU mode set
beside what an AMD EPYC gave for the same setting (tests/data/crosscpu/, copied from
../shared/crosscpu/: figures.py's line per oneMKL setting on that machine). Measured (README, "Which
bits match where"): in this mode the two machines print the same figures (the summary's 4 significant
digits; the negative fraction exactly) while their last bits differ; on MKL's own path even the
printed figures differ. Skipped, with the reason, where the comparison means nothing: a CPU that is
neither Intel nor AMD, torch kernels other than the AVX-512 ones both machines ran, another torch, no
oneMKL."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from repro.env import determinism
from repro.env.determinism import PORTABLE_CPU_ENV, PORTABLE_REFERENCE
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
    if level != PORTABLE_REFERENCE["capability"]:
        return f"torch's CPU kernels here are {level}; both measured machines ran {PORTABLE_REFERENCE['capability']}"
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


def printed(figures: dict) -> dict:
    """The figures as the smoke summary prints them (report/issue.fmt_number: 4 significant digits)."""
    from repro.report.issue import fmt_number

    return {"final_test_loss_baseline": fmt_number(float.fromhex(figures["final_test_loss_baseline"])),
            "final_test_loss_filtered": fmt_number(float.fromhex(figures["final_test_loss_filtered"])),
            "negative_fraction": figures["negative_fraction"]}


def test_the_amd_epyc_prints_this_machines_figures_only_in_the_portable_mode():
    """The measured table in one assertion: the AMD EPYC's own path prints what its portable mode
    prints; the README's figures (an Intel Xeon on MKL's own path) print otherwise."""
    rows = amd_rows()
    portable = printed(next(f for env, f in rows if env == PORTABLE_CPU_ENV))
    assert all(printed(f) == portable for _, f in rows)  # on that CPU every setting prints the same
    assert portable == {"final_test_loss_baseline": "2.074", "final_test_loss_filtered": "2.149",
                        "negative_fraction": 0.2791983414}


@pytest.mark.slow
@pytest.mark.xdist_group("gpt2-smoke")
def test_the_portable_smoke_figures_beside_the_amd_epycs(gpt2_smoke, capsys):
    reason = comparable()
    if reason:
        pytest.skip(f"no cross-machine comparison here: {reason}")
    ours = _figures_module().figures(gpt2_smoke)
    theirs = next(f for env, f in amd_rows() if env == PORTABLE_CPU_ENV)
    ours.pop("bundle"), theirs.pop("bundle")
    lines = f"this machine: {json.dumps(ours)}\nAMD EPYC:     {json.dumps(theirs)}"
    with capsys.disabled():  # the report: equal or not, bit for bit
        print(f"\ncross-machine figures ({'bit-identical' if ours == theirs else 'the bits differ'}):\n{lines}")
    assert printed(ours) == printed(theirs), lines


def test_a_run_in_the_portable_mode_says_when_no_setting_gives_the_readmes_bits():
    assert determinism.unequal_to_reference("AVX512", "GenuineIntel") == []
    amd, = determinism.unequal_to_reference("AVX512", "AuthenticAMD")
    assert "AuthenticAMD's" in amd and "no measured setting gives two CPU vendors the same bits" in amd
    avx2, = determinism.unequal_to_reference("AVX2", "GenuineIntel")
    assert "kernels here are AVX2" in avx2 and "no setting gives those bits" in avx2
