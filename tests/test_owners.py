"""The small concepts with one owner each (docs/architecture.md): one rule for line digests, one
JSON reader for the files the kit writes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest


def test_one_line_digest_rule_for_split_ids_file_lists_and_parameter_hashes():
    import hashlib

    from repro import digest
    from repro.data import manifest
    from repro.train import trace

    assert digest.lines(["a", "b"]) == hashlib.sha256(b"a\nb\n").hexdigest()  # the documented form
    assert manifest.ids_sha256(["b", "a"]) == digest.lines(["a", "b"])  # what manifests/splits record
    assert trace.combined({"w": "1", "b": "2"}) == digest.lines(["b=2", "w=1"])[:16]


def test_a_broken_kit_file_is_one_usage_error_naming_it(tmp_path):
    from repro.errors import UsageError
    from repro.workflows.executor import JobBook

    book = tmp_path / "jobs.json"
    book.write_text('{"run-1": "12')  # cut short
    with pytest.raises(UsageError) as caught:
        JobBook(book)
    assert caught.value.where == str(book) and "not valid JSON" in caught.value.message and "delete it" in caught.value.fix


def test_one_spread_over_seeds_the_sample_sd_in_results_claims_and_the_ablation():
    """Two seeds at 0.90 and 0.92: every place that reports a spread over them says 0.01414 (the sample
    sd), none 0.01 (the population sd results.json once held), and one seed has no spread at all."""
    import math

    from repro.records import Cell, CellRun
    from repro.report import claims
    from repro.tasks.gpt2_shapley.analysis import aggregate
    from repro.workflows.ablate import table_document

    expected = math.sqrt(2) * 0.01
    seeds = {str(s): {"analysis": {"negative_fraction": v, "speedup": None, "final_test_loss": {"baseline": 2, "filtered": 2}}}
             for s, v in ((42, 0.90), (43, 0.92))}
    assert aggregate(seeds)["negative_fraction"]["std"] == pytest.approx(expected)  # results.json
    row = claims.evaluate("gpt2-shapley", "paper", [{"metrics": {"negative_fraction": 0.90}},
                                                     {"metrics": {"negative_fraction": 0.92}}])[0]
    assert row["spread"] == pytest.approx(expected)  # the claims of a reproduce summary
    reference = Cell("reference", "", [])
    reference.runs = [CellRun(42, "a", "finished", value=0.90), CellRun(43, "b", "finished", value=0.92)]
    doc = table_document("t", "smoke", "m", [42, 43], [reference], "")
    assert doc["reference"]["spread"]["std"] == pytest.approx(expected)  # the ablation's reference
    assert aggregate({"42": seeds["42"]})["negative_fraction"]["std"] is None  # one seed: no spread, not 0


# ---------------------------------------------------------------- architecture.md's owners, as checks

PACKAGE = Path(__file__).resolve().parent.parent / "repro"
SET_ITEM = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z0-9_]+)+=")  # `train.epochs=2`: a --set item's shape
FLAG_CALLS = {"use_deterministic_algorithms", "set_float32_matmul_precision"}
FLAG_ATTRIBUTES = {"deterministic", "benchmark", "allow_tf32"}  # torch.backends.cudnn.*, torch.backends.cuda.matmul.*
PEAK_MEMORY = {"ru_maxrss", "getrusage", "max_memory_allocated", "max_memory_reserved"}


def _text(node: ast.AST) -> str | None:
    """A string literal, or an f-string with {} for what it fills in."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def offences(package: Path = PACKAGE) -> dict[str, list[str]]:
    """Each owner rule of docs/architecture.md that a module other than the owner breaks:
    `module:line what` per rule."""
    found: dict[str, list[str]] = {"flags": [], "set items": [], "peak memory": [], "args": []}
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package.parent).as_posix()
        tree = ast.parse(path.read_text())
        pieces = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}  # an f-string's parts
        for node in ast.walk(tree):
            where = f"{name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FLAG_CALLS:
                found["flags"].append(f"{where} {node.func.attr}()")
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found["flags"] += [f"{where} .{t.attr} =" for t in targets
                                   if isinstance(t, ast.Attribute) and t.attr in FLAG_ATTRIBUTES]
            text = _text(node)
            if text and SET_ITEM.match(text) and id(node) not in pieces:
                found["set items"].append(f"{where} {text[:40]!r}")
            if isinstance(node, ast.Attribute) and node.attr in PEAK_MEMORY:
                found["peak memory"].append(f"{where} {node.attr}")
            if "/workflows/" in f"/{name}" and isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "args":
                found["args"].append(f"{where} args.{node.attr}")
    owners = {"flags": "repro/probe/determinism.py", "set items": "repro/config/files.py",
              "peak memory": "repro/train/measure.py", "args": None}
    return {rule: sorted({o for o in hits if owners[rule] is None or not o.startswith(owners[rule] + ":")})
            for rule, hits in found.items()}


def test_one_owner_each_for_determinism_flags_set_items_and_peak_memory_and_no_workflow_reads_argparse():
    """docs/architecture.md, executable: only probe/determinism.py sets torch's determinism flags (the
    probe and env/determinism call it), only config/files.py writes a `--set` item (`set_item`), only
    train/measure.py reads peak memory, and no workflow reads an argparse Namespace (`args.`: the
    CLI's options.py reads the command line once and hands typed requests down)."""
    assert offences() == {"flags": [], "set items": [], "peak memory": [], "args": []}


def test_the_owner_checks_find_a_planted_second_owner(tmp_path):
    package = tmp_path / "repro"
    (package / "workflows").mkdir(parents=True)
    (package / "workflows" / "w.py").write_text(
        "def f(args, torch, cfg):\n"
        "    torch.backends.cudnn.deterministic = True\n"
        "    torch.use_deterministic_algorithms(True)\n"
        "    items = [f'stop.max_steps={cfg}', 'train.epochs=2']\n"
        "    import resource\n"
        "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    return args.output\n")
    found = offences(package)
    assert [len(found[rule]) for rule in ("flags", "set items", "peak memory", "args")] == [2, 2, 2, 1], found
    assert found["args"] == ["repro/workflows/w.py:7 args.output"]


def test_one_branch_point_between_a_built_in_task_and_a_task_file():
    """Only Target.of (workflows/target.py) asks which kind a TASK argument is; everything else asks
    the target. (tests/test_layers.py-style: a second caller of `task_file.looks_like` fails this.)"""
    callers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "looks_like":
                callers.append(path.relative_to(PACKAGE.parent).as_posix())
    assert callers == ["repro/workflows/target.py"]
