"""The fingerprint as GitHub markdown: title, digest line, the fields that matter for numerics,
mismatches, and the full JSON folded in <details>. Same JSON in, same text out."""

from __future__ import annotations

import re
from typing import Any

from repro.atomic import dumps_json
from repro.env.fingerprint import digest_line, numerics_env
from repro.env.mismatches import from_wheel


def cell(value: Any) -> str:
    """A value made safe for a GitHub table cell."""
    text = "-" if value is None or value == "" else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def fenced(text: str, lang: str = "") -> str:
    """A code fence longer than any run of backticks inside `text`."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def details(summary: str, body: str) -> str:
    # The blank lines around the body make GitHub render markdown inside the block.
    return f"<details>\n<summary>{summary}</summary>\n\n{body}\n\n</details>"


def _on(flag: Any) -> str:
    return {True: "on", False: "off"}.get(flag, cell(flag))


def numerics_rows(fp: dict[str, Any]) -> list[tuple[str, str]]:
    torch_info = fp.get("torch") or {}
    loaded = torch_info.get("loaded") or {}
    gpus = fp.get("gpus") or {}
    cpu = fp.get("cpu") or {}
    host = fp.get("host") or {}
    lock = fp.get("lock") or {}
    image = fp.get("image") or {}
    git = fp.get("git") or {}
    det = fp.get("determinism") or {}

    devices = gpus.get("devices") or []
    if devices:
        names = {}
        for d in devices:
            key = f"{d.get('name')} (cc {d.get('compute_capability')}, {round((d.get('memory_total_bytes') or 0) / 2**30)} GiB, MIG {d.get('mig_mode') or 'n/a'})"
            names[key] = names.get(key, 0) + 1
        gpu_text = ", ".join(f"{n} × {k}" for k, n in names.items())
        driver = f"{gpus.get('driver_version')} (CUDA ≤ {gpus.get('driver_max_cuda')})"
    else:
        gpu_text = f"none ({gpus.get('reason') or 'unknown'})"
        driver = "-"
    if lock.get("error"):
        lock_text = f"unreadable: {lock['error']}"
    elif not lock.get("sha256") and lock.get("reason"):
        lock_text = f"not checked ({lock['reason']})"
    else:
        drift = lock.get("drift") or []
        lock_text = f"{(lock.get('sha256') or '-')[:12]}, " + ("installed set matches" if not drift else f"{len(drift)} package(s) differ")
    image_text = image_name(fp)
    git_text = "-"
    if git.get("available"):
        git_text = f"{(git.get('commit') or '')[:12]}" + {True: " (dirty)", False: "", None: ""}[git.get("dirty")]
    numeric_env = ", ".join(f"{k}={v}" for k, v in numerics_env(fp).items()) or "-"
    seeds = ", ".join(f"{k}={v}" for k, v in (fp.get("seeds") or {}).items()) or "-"
    return [
        ("torch", f"{torch_info.get('version')} (built for CUDA {torch_info.get('built_for_cuda') or '-'})"),
        ("CUDA runtime loaded", _library(loaded, "cuda_runtime")),
        ("cuDNN loaded", _library(loaded, "cudnn", image_declares=image.get("nv_cudnn_version"))),
        ("NCCL loaded", _library(loaded, "nccl")),
        ("GPU", gpu_text),
        ("driver", driver),
        ("CPU", _cpu(cpu, torch_info)),
        ("CPU math", cpu_math(fp) or "-"),
        ("Python", (fp.get("python") or {}).get("version")),
        ("OS", f"{host.get('distribution')}, kernel {host.get('kernel')}, {host.get('glibc')}"),
        ("lock", lock_text),
        ("image", image_text),
        ("git", git_text),
        ("deterministic algorithms", _on(det.get("deterministic_algorithms"))),
        ("cudnn.deterministic / benchmark", f"{_on(det.get('cudnn_deterministic'))} / {_on(det.get('cudnn_benchmark'))}"),
        ("TF32 matmul / cuDNN", f"{_on(det.get('cuda_matmul_allow_tf32'))} / {_on(det.get('cudnn_allow_tf32'))}"),
        ("float32 matmul precision", det.get("float32_matmul_precision")),
        ("torch threads", det.get("num_threads")),
        ("seeds", seeds),
        ("numerics env", numeric_env),
    ]


def _cpu(cpu: dict[str, Any], torch_info: dict[str, Any]) -> str:
    """'Intel(R) Xeon(R) ... (GenuineIntel family 6 model 106), 2 usable cores, avx/...; torch CPU kernels AVX512'."""
    ident = f" ({cpu['vendor']} family {cpu.get('family')} model {cpu.get('model_number')})" if cpu.get("vendor") else ""
    level = f"; torch CPU kernels {torch_info['cpu_capability']}" if torch_info.get("cpu_capability") else ""
    return f"{cpu.get('model')}{ident}, {cpu.get('usable_cores')} usable cores, {'/'.join(cpu.get('simd') or []) or '-'}{level}"


def cpu_math(fp: dict[str, Any]) -> str | None:
    """The CPU's math paths in words: "oneMKL 2024.2 pinned to COMPATIBLE (this CPU's own: AVX512_E1),
    1 thread" or "oneMKL 2024.2 on its own dispatch (AVX512_E1 on this CPU), 2 threads"; None when
    the fingerprint has no record of them (one made before they were recorded)."""
    math = (fp.get("torch") or {}).get("cpu_math") or {}
    if not math or math.get("error"):
        return None
    mkl, threads = math.get("mkl") or {}, math.get("threads")
    count = f"{threads} thread{'s' if threads != 1 else ''}"
    if not mkl.get("branch"):
        return f"BLAS {math.get('blas') or 'unknown'} (no oneMKL), {count}"
    if mkl["branch"] == "OFF":
        return f"oneMKL {mkl.get('version')} on its own dispatch ({mkl.get('auto_branch')} on this CPU), {count}"
    return f"oneMKL {mkl.get('version')} pinned to {mkl['branch']} (this CPU's own: {mkl.get('auto_branch')}), {count}"


def image_name(fp: dict[str, Any]) -> str:
    """Which image a fingerprint was taken in, by reference and digest (a paper's image: and its image
    lock), or that it was a native run."""
    image = fp.get("image") or {}
    if not image.get("in_image"):
        return "native run (not in the repro image)"
    base = f"base {image.get('base_ref') or '?'}@{(image.get('base_digest') or '?')[:19]}"
    if image.get("kind") == "paper":
        return (f"{image.get('ref') or '?'} ({(image.get('image_id') or '?')[:19]}; image lock {image.get('image_lock')} "
                f"{(image.get('image_lock_sha256') or '?')[:12]}, requirements lock {(image.get('requirements_lock_sha256') or '?')[:12]}; {base})")
    return f"{image.get('ref') or '?'} ({base})"


def _library(loaded: dict[str, Any], name: str, image_declares: str | None = None) -> str:
    """'9.19.0 (nvidia wheel)': the version torch reports and where the mapped file comes from."""
    version, path = loaded.get(name), (loaded.get("libraries") or {}).get(name)
    if not version:
        return "not loaded" + (f" ({loaded['nccl_reason']})" if name == "nccl" and loaded.get("nccl_reason") else "")
    source = "nvidia wheel" if from_wheel(path) else (f"system copy {path}" if path else "file not mapped")
    text = f"{version} ({source}"
    if image_declares and from_wheel(path):
        text += f"; the image's {image_declares} is unused"
    if loaded.get("reason"):
        text += "; no CUDA device: unused in this process"
    return text + ")"


def mismatch_lines(fp: dict[str, Any]) -> list[str]:
    lines = []
    for m in fp.get("mismatches") or []:
        lines.append(
            f"- **MISMATCH {m.get('what')}**: {m.get('declared_by')} says `{m.get('declared')}`, "
            f"the process has `{m.get('actual')}`. {m.get('note') or ''}".rstrip()
        )
    return lines


def markdown(fp: dict[str, Any], *, title: str | None = None) -> str:
    title = title or f"Environment fingerprint (repro {fp.get('repro_version')})"
    parts = [f"### {title}", "", f"`{digest_line(fp)}`", ""]
    parts += ["| field | value |", "| --- | --- |"]
    parts += [f"| {cell(k)} | {cell(v)} |" for k, v in numerics_rows(fp)]
    parts += ["", "#### Mismatches", ""]
    parts += mismatch_lines(fp) or ["None: what the process loaded matches what the image and the lock declare."]
    parts += ["", details("Full fingerprint (JSON)", fenced(dumps_json(fp), "json")), ""]
    return "\n".join(parts)
