"""The package's structure, checked: imports only go down the layers, and only repro/bundle.py
spells the names of the files a run writes (everything else asks it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "repro"

# Lowest first. A module may import its own layer and the ones below, never one above.
LAYERS = [
    ("base", ["repro", "repro.errors", "repro.distributed", "repro.atomic", "repro.paths", "repro.clock", "repro.config", "repro.settings",
              "repro.bundle", "repro.plots", "repro.progress", "repro.byte_tokenizer"]),
    ("env", ["repro.env"]),
    ("data", ["repro.data"]),
    ("train, valuation, report", ["repro.train", "repro.valuation", "repro.report"]),
    ("tasks", ["repro.tasks"]),
    ("workflows", ["repro.workflows"]),
    ("entry points", ["repro.cli", "repro.bench", "repro.__main__"]),
]
BUNDLE_FILES = ("run.json", "config.toml", "fingerprint.json", "fingerprint-end.json", "fingerprint-resume.json",
                "data-verification.json", "results.json", "report.md", "determinism.json", "trace.jsonl",
                "metrics.jsonl", "values.parquet", "checkpoint.pt", "summary.json", "summary.md", "ablation.json", "ablation.md")


def layer_of(module: str) -> int:
    best = None
    for level, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (level, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        yield name, path, ast.parse(path.read_text())


def imports(tree: ast.AST):
    """Every module a file imports, at the top or inside a function."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_imports_only_go_down_the_layers():
    back_edges = [f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                  for name, _, tree in modules() for target in imports(tree)
                  if target.startswith("repro") and layer_of(target) > layer_of(name)]
    assert back_edges == []


def test_the_layer_check_can_fail():
    assert layer_of("repro.tasks.lifecycle") > layer_of("repro.train.resume") > layer_of("repro.bundle")


def _code_strings(tree: ast.AST):
    """String constants that are not docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_only_the_bundle_module_names_a_bundle_file(name):
    spelled = [module for module, _, tree in modules()
               if module != "repro.bundle" and not module.startswith("repro.cli")  # --help text may name files
               and any(name in s for s in _code_strings(tree))]
    assert spelled == [], f"{name} is spelled in {spelled}: ask repro.bundle (Bundle / Summary) instead"
