"""`repro env diff A B`: what differs between two runs, grouped by how much it can move numbers.

A and B are fingerprint files or run bundle directories (then the resolved config and the data
verification are compared too). Every field is classified by the first rule that matches its dotted
path; a field no rule names counts as "may change numerics" (better a false alarm than a miss).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from repro import json_file
from repro.bundle import Bundle, data_identity
from repro.config import flatten
from repro.env.determinism import NUMERICS_ENV
from repro.errors import UsageError

CHANGES = "changes numerics"
MAY = "may change numerics"
COSMETIC = "cosmetic"
GROUPS = (CHANGES, MAY, COSMETIC)

# Packages whose version changes kernels, tokenization or feature extraction directly.
_NUMERIC_PACKAGES = r"(torch|torchaudio|transformers|tokenizers|numpy|scipy|scikit-learn|triton|soundfile|datasets|safetensors|nvidia-[a-z0-9-]+)"

RULES: list[tuple[str, str]] = [
    # derived or bookkeeping: never compared
    (r"^(digests|mismatches|schema)(\.|$)", "skip"),
    (r"^(collected_at|collection_seconds)$", COSMETIC),
    (r"^host\.(hostname_token|in_container)$", COSMETIC),
    (r"^python\.(executable|prefix|in_virtualenv)$", COSMETIC),
    (r"^lock\.path$", COSMETIC),
    (r"^memory\.", COSMETIC),
    (r"^git\.(changed_files|source|branch|remote|diff_bytes)", COSMETIC),
    (r"^image\.(source|reason|build_date)$", COSMETIC),
    (r"^gpus\.devices\.\d+\.(uuid|pci_bus_id|index|persistence_mode|unavailable)", COSMETIC),
    (r"^torch\.devices\.\d+\.index$", COSMETIC),
    (r"^env_vars\.(REPRO_IMAGE_INFO|LD_LIBRARY_PATH)$", MAY),
    (r"^torch\.cpu_math\.mkl\.(library|source)$", COSMETIC),  # where MKL was read, not what it is
    # what computes
    (r"^torch\.(version|built_for_cuda|built_for_hip|cuda_available|cpu_capability)$", CHANGES),
    # the CPU's math library: its code path follows the vendor and model, its pinned branch, its threads
    (r"^cpu\.(vendor|family|model_number)$", CHANGES),
    (r"^torch\.cpu_math\.", CHANGES),
    (r"^determinism\.num_threads$", CHANGES),
    # the CPU's vector units decide which kernels torch runs and so the order of float sums: an
    # AVX2 and an AVX-512 machine give other bits for the same run (README, "Which bits match where")
    (r"^cpu\.simd(\.|$)", CHANGES),
    (r"^torch\.loaded\.(cuda_runtime|cudnn|nccl)$", CHANGES),
    (r"^torch\.devices\.", CHANGES),
    (r"^gpus\.devices\.\d+\.(name|compute_capability|mig_mode)$", CHANGES),
    (r"^gpus\.devices$", CHANGES),
    (r"^processes\.ranks\.\d+\.(hostname_token|local_rank|pid)$", COSMETIC),
    (r"^processes\.(world_size|backend|nccl)$", CHANGES),  # how many share each batch, how gradients are summed
    (r"^processes", CHANGES),
    (r"^determinism\.num_interop_threads$", MAY),
    (r"^determinism\.", CHANGES),
    (r"^seeds\.", CHANGES),
    (rf"^packages\.installed\.{_NUMERIC_PACKAGES}$", CHANGES),
    (rf"^env_vars\.({'|'.join(NUMERICS_ENV)})$", CHANGES),
    (r"^config\.", CHANGES),
    (r"^data\.", CHANGES),
    (r"^host\.machine$", CHANGES),
    # could matter, usually does not
    (r"^packages\.", MAY),
    (r"^gpus\.", MAY),
    (r"^cpu\.", MAY),
    (r"^host\.", MAY),
    (r"^python\.", MAY),
    (r"^lock\.", MAY),
    (r"^image\.", MAY),
    (r"^git\.", MAY),
    (r"^torch\.", MAY),
    (r"^env_vars\.", MAY),
    (r"^repro_version$", MAY),
]
_COMPILED = [(re.compile(p), g) for p, g in RULES]

_THREADS = ("oneMKL and torch split a GEMM or a reduction by the thread count: another count, another order of "
            "the sums (measured: oneMKL's COMPATIBLE branch at 1 and 2 threads)")
# Why a difference changes numerics, in one line, where the reason is not plain from the field's name.
WHY: list[tuple[str, str]] = [
    (r"^cpu\.(vendor|family|model_number)$", "oneMKL picks its GEMM code path by CPU vendor and model, not by the vector "
     "units: an Intel Xeon and an AMD EPYC, both AVX-512, give other bits for the same run on MKL's own path and on "
     "every branch measured, the portable mode's included (README, \"Which bits match where\")"),
    (r"^torch\.cpu_math\.mkl\.auto_branch$", "the code path oneMKL takes on this CPU when nothing pins it "
     "(mkl_cbwr_get_auto_branch): another path, another order of the sums"),
    (r"^torch\.cpu_math\.mkl\.(branch|strict)$", "the code path the run pinned oneMKL to (MKL_CBWR, --portable-cpu): "
     "each branch has its own kernels"),
    (r"^torch\.cpu_math\.mkl\.(version|build)$", "another oneMKL build: its kernels can sum in another order"),
    (r"^torch\.cpu_math\.(blas|mkl\.reason)$", "another BLAS library computes every matmul"),
    (r"^torch\.cpu_math\.onednn\.", "oneDNN computes the convolutions: its version, its ISA cap (ONEDNN_MAX_CPU_ISA) and "
     "whether torch uses it choose the kernels"),
    (r"^(torch\.cpu_math\.(threads|openmp_threads|mkl\.threads)|determinism\.num_threads)$", _THREADS),
    (r"^env_vars\.(OMP_NUM_THREADS|MKL_NUM_THREADS)$", _THREADS),
    (r"^env_vars\.(MKL_CBWR|MKL_ENABLE_INSTRUCTIONS)$", "read by oneMKL at its start: pins or caps its code path"),
    (r"^env_vars\.(ONEDNN|DNNL)_MAX_CPU_ISA$", "read by oneDNN at its start: caps the ISA of its kernels"),
    (r"^(env_vars\.ATEN_CPU_CAPABILITY|torch\.cpu_capability)$", "torch's CPU kernel level (ATen picks it by the "
     "vector units, ATEN_CPU_CAPABILITY lowers it): another width, another order of the sums"),
    (r"^cpu\.simd(\.|$)", "the CPU's vector units: torch's kernel level and oneDNN's ISA follow them"),
]
_WHY = [(re.compile(p), text) for p, text in WHY]


def why(path: str) -> str | None:
    return next((text for pattern, text in _WHY if pattern.search(path)), None)


def classify(path: str) -> str:
    for pattern, group in _COMPILED:
        if pattern.search(path):
            return group
    return MAY


def load_side(path: str | Path) -> dict[str, Any]:
    """A fingerprint (plus config and data, for a run bundle) as one nested dict."""
    path = Path(path)
    if path.is_dir():
        bundle = Bundle(path)
        # an exec bundle: its training processes' environment (env/fingerprint.of_training), not repro's
        exec_kind = (bundle.path / Bundle.STATUS).exists() and bundle.status().get("kind") == "exec"
        side = (exec_kind and bundle.fingerprint("end")) or bundle.fingerprint("start")
        if side is None:
            raise UsageError(f"no {Bundle.FINGERPRINTS['start']} in this directory", where=str(path),
                             fix="pass a run bundle (runs/<task>/<run-id>) or a fingerprint file")
        if bundle.config_path.exists():
            side["config"] = bundle.config()
        verification = bundle.data_verification()
        if verification is not None:
            side["data"] = {name: {**data_identity(rec), "ok": rec.get("ok")}
                            for name, rec in (verification.get("datasets") or {}).items()}
        return side
    side = _read_json(path)
    if not isinstance(side, dict) or not str(side.get("schema", "")).startswith("repro.fingerprint/"):
        raise UsageError("not a repro fingerprint (no 'schema': 'repro.fingerprint/…')", where=str(path),
                         fix="create one with `repro env fingerprint --output FILE`")
    return side


def _read_json(path: Path) -> Any:
    return json_file.read(path, fix="pass a fingerprint file or a run bundle directory")


def image_name(fp: dict[str, Any]) -> str:
    from repro.env.render import image_name as name

    return name(fp)


def diff(a: dict[str, Any], b: dict[str, Any], labels: tuple[str, str] = ("A", "B")) -> dict[str, Any]:
    fa, fb = flatten(a), flatten(b)
    groups: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
    for key in sorted(set(fa) | set(fb)):
        group = classify(key)
        if group == "skip":
            continue
        va, vb = fa.get(key, "<absent>"), fb.get(key, "<absent>")
        if va == vb:
            continue
        reason = {"why": why(key)} if group == CHANGES and why(key) else {}
        if isinstance(va, list) and isinstance(vb, list) and len(va) == len(vb):  # a command line: name the argument
            groups[group] += [{"field": f"{key}.{i}", "a": x, "b": y, **reason} for i, (x, y) in enumerate(zip(va, vb)) if x != y]
        else:
            groups[group].append({"field": key, "a": va, "b": vb, **reason})
    numeric = bool(groups[CHANGES] or groups[MAY])
    return {
        "a": labels[0],
        "b": labels[1],
        "verdict": "differs" if numeric else "same-numerics",
        "digests": {"a": a.get("digests"), "b": b.get("digests")},
        "images": {"a": image_name(a), "b": image_name(b)},  # where each ran: native, or which image
        "counts": {g: len(v) for g, v in groups.items()},
        "groups": groups,
    }


def diff_paths(a: str, b: str) -> dict[str, Any]:
    return diff(load_side(a), load_side(b), labels=(str(a), str(b)))


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True)
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def reasons(result: dict[str, Any]) -> list[str]:
    """One line per reason among the differences that change numerics: the fields, then why."""
    fields: dict[str, list[str]] = {}
    for row in result["groups"][CHANGES]:
        if row.get("why"):
            fields.setdefault(row["why"], []).append(row["field"])
    return [f"{', '.join(names)}: {text}" for text, names in fields.items()]


def _full(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def by_position(row: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """A row as (field, A, B) lines: two command lines (or any two lists) of different lengths are
    named argument by argument, `FIELD.N`, each differing position with both values."""
    a, b = row["a"], row["b"]
    if not (isinstance(a, list) and isinstance(b, list)):
        return [(row["field"], a, b)]
    absent = "<absent>"
    return [(f"{row['field']}.{i}", a[i] if i < len(a) else absent, b[i] if i < len(b) else absent)
            for i in range(max(len(a), len(b))) if i >= len(a) or i >= len(b) or a[i] != b[i]]


def render(result: dict[str, Any], console) -> None:
    """On a terminal, a table per group (long values cut to fit); anywhere else (a pipe, a file: text
    to paste), one line per difference, field names and values whole. Each side with where it ran
    (natively, or which image)."""
    images = result.get("images") or {}
    console.print(f"A = {result['a']}\n    {images.get('a', '')}\nB = {result['b']}\n    {images.get('b', '')}",
                  markup=False, highlight=False)
    if not console.is_terminal:
        _render_text(result, console)
    else:
        _render_tables(result, console)
    for line in reasons(result):
        console.print(f"why {line}", markup=False, highlight=False, soft_wrap=True)
    if result["verdict"] == "same-numerics":
        console.print("[green]same numerics[/]: only cosmetic fields differ")
    else:
        console.print(f"[red]differs[/]: {result['counts'][CHANGES]} field(s) that change numerics, "
                      f"{result['counts'][MAY]} that may")


def _render_text(result: dict[str, Any], console) -> None:
    for group in GROUPS:
        rows = result["groups"][group]
        console.print(f"{group}: " + (f"{len(rows)} difference(s)" if rows else "no difference"), markup=False)
        for row in rows:
            for field, a, b in by_position(row):
                console.print(f"  {field}: A {_full(a)} | B {_full(b)}", markup=False, highlight=False, soft_wrap=True)


def _render_tables(result: dict[str, Any], console) -> None:
    from rich.table import Table

    for group in GROUPS:
        rows = result["groups"][group]
        if not rows:
            console.print(f"[green]{group}[/]: no difference")
            continue
        style = {CHANGES: "red", MAY: "yellow", COSMETIC: "dim"}[group]
        table = Table(title=f"{group} ({len(rows)})", title_justify="left", title_style=style)
        table.add_column("field")
        table.add_column("A")
        table.add_column("B")
        for row in rows:
            table.add_row(row["field"], _show(row["a"]), _show(row["b"]))
        console.print(table)


def markdown(result: dict[str, Any]) -> str:
    from repro.env.render import cell

    images = result.get("images") or {}
    lines = ["### Environment diff", "", f"A: `{result['a']}`, {images.get('a')}  ", f"B: `{result['b']}`, {images.get('b')}", ""]
    for group in GROUPS:
        rows = result["groups"][group]
        lines.append(f"#### {group} ({len(rows)})")
        lines.append("")
        if not rows:
            lines += ["No difference.", ""]
            continue
        lines += ["| field | A | B |", "| --- | --- | --- |"]
        lines += [f"| {cell(r['field'])} | {cell(_show(r['a']))} | {cell(_show(r['b']))} |" for r in rows]
        lines.append("")
    if reasons(result):
        lines += ["#### Why they change numerics", ""] + [f"- {line}" for line in reasons(result)] + [""]
    return "\n".join(lines)
