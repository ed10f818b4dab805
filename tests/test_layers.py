"""The package's structure, checked: imports only go down the layers, no two modules import each
other round a circle (imports inside functions count: a circle hidden in a function body is still a
circle), and only repro/bundle/ spells the names of the files a run writes (everything else asks
it). The checker is shown to fail on a planted back-edge and a planted circle, and counts a module
named by a string for importlib (the task list's MODULES) as an import."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "repro"

# Lowest first. A module may import its own layer and the ones below, never one above.
LAYERS = [
    ("probe", ["repro.probe"]),  # loaded into a wrapped command's own interpreter: imports nothing of repro
    ("base", ["repro", "repro.errors", "repro.json_file", "repro.distributed", "repro.atomic", "repro.paths", "repro.clock", "repro.config",
              "repro.digest", "repro.seeding", "repro.writer_lock", "repro.bundle", "repro.records", "repro.plots",
              "repro.progress", "repro.byte_tokenizer", "repro.spread", "repro.traces"]),
    ("env", ["repro.env"]),
    ("data", ["repro.data"]),
    ("train, valuation, report", ["repro.train", "repro.valuation", "repro.report"]),
    ("tasks", ["repro.tasks"]),
    ("workflows", ["repro.workflows"]),
    ("entry points", ["repro.cli", "repro.bench", "repro.__main__"]),
]
BUNDLE_FILES = ("run.json", "config.toml", "fingerprint.json", "fingerprint-end.json", "fingerprint-resume.json",
                "data-verification.json", "results.json", "report.md", "determinism.json", "trace.jsonl",
                "metrics.jsonl", "values.parquet", "checkpoint.pt", "summary.json", "summary.md", "ablation.json", "jobs.json",
                "ablation.md", "overfit.json", "rehearsal.json", "image-rehearsal.json", "output.log", "outputs.json",
                "processes.json")


def layer_of(module: str) -> int:
    best = None
    for level, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (level, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


@functools.lru_cache(maxsize=None)
def modules(package: Path = PACKAGE) -> dict[str, ast.AST]:
    """Every module of the package: dotted name -> its syntax tree."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text())
    return out


def imports(name: str, tree: ast.AST, known: set[str]) -> set[str]:
    """The package's modules that `name` imports, at the top or inside a function: `from repro
    import clock` is repro.clock when that is a module; relative imports are resolved."""
    found = set()
    package = name if any(k.startswith(name + ".") for k in known) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known:
            found.add(node.value)  # a module named by a string, for importlib (tasks/registry.py's MODULES)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
            found |= submodules or {base}
    return {m for m in found if m in known and m != name}


def graph(trees: dict[str, ast.AST]) -> dict[str, set[str]]:
    known = set(trees)
    return {name: imports(name, tree, known) for name, tree in trees.items()}


def back_edges(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                  for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted lists. A package
    importing its own submodules (repro.cli -> repro.cli.options) is not a circle by itself."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def _without_package_init_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ naming its submodules (registration, re-exports) is how Python packages
    are built, not a dependency circle: drop package -> own-submodule edges."""
    return {a: {b for b in targets if not b.startswith(a + ".")} for a, targets in edges.items()}


EDGES = _without_package_init_edges(graph(modules()))


def test_imports_only_go_down_the_layers():
    assert back_edges(EDGES) == []


def test_no_module_imports_itself_round_a_circle():
    assert circles(EDGES) == []


def _planted(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    package = tmp_path / "repro"
    for rel, text in {"__init__.py": "", **files}.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(text)
    return _without_package_init_edges(graph(modules(package)))


def package_circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Circles between the packages of one layer (repro.train <-> repro.report): two packages that
    import each other, each module only once, are still one concept split in two."""
    top = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    packages: dict[str, set[str]] = {}
    for a, targets in edges.items():
        packages.setdefault(top(a), set()).update(top(b) for b in targets if top(b) != top(a))
    return circles(packages)


def test_no_two_packages_import_each_other():
    """train/trace.py once imported report/verdicts.py while report/exec_report.py imported train/trace.py:
    the trace format's reader and comparison now live below both (repro/traces.py)."""
    assert package_circles(EDGES) == []


def test_the_checker_finds_a_planted_package_circle(tmp_path):
    edges = _planted(tmp_path, {"train/__init__.py": "", "report/__init__.py": "",
                                "train/trace.py": "from repro.report import verdicts\n",
                                "report/verdicts.py": "", "report/exec_report.py": "from repro.train import trace\n"})
    assert circles(edges) == [] and package_circles(edges) == [["repro.report", "repro.train"]]


def test_the_checker_finds_a_planted_back_edge(tmp_path):
    edges = _planted(tmp_path, {"bundle.py": "def f():\n    from repro.tasks import lifecycle\n",
                                "tasks/__init__.py": "", "tasks/lifecycle.py": "from repro import bundle\n"})
    assert back_edges(edges) == ["repro.bundle (base) imports repro.tasks.lifecycle (tasks)"]


def test_the_checker_finds_a_planted_circle_inside_one_layer(tmp_path):
    edges = _planted(tmp_path, {"data/__init__.py": "", "data/corpus.py": "def f():\n    from repro.data import record\n",
                                "data/record.py": "from . import corpus\n", "data/verify.py": "from repro.data import corpus\n"})
    assert back_edges(edges) == []
    assert circles(edges) == [["repro.data.corpus", "repro.data.record"]]


def test_the_checker_counts_a_module_named_by_a_string_for_importlib(tmp_path):
    """The task list reaches each task through importlib: a task that imports the list's importer
    back closes a circle the import statements alone do not show."""
    edges = _planted(tmp_path, {"tasks/__init__.py": "", "tasks/registry.py": "MODULES = {'a': 'repro.tasks.a'}\n",
                                "tasks/lifecycle.py": "from repro.tasks import registry\n",
                                "tasks/a.py": "from repro.tasks.lifecycle import Run\n"})
    assert circles(edges) == [["repro.tasks.a", "repro.tasks.lifecycle", "repro.tasks.registry"]]


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
    spelled = [module for module, tree in modules().items()
               if not module.startswith("repro.bundle") and not module.startswith("repro.cli")  # --help text may name files
               and any(name in s for s in _code_strings(tree))]
    assert spelled == [], f"{name} is spelled in {spelled}: ask repro.bundle (Bundle / Summary) instead"


MAX_FILE_LINES, MAX_FUNCTION_LINES = 450, 60
WHOLE = "# reads better whole:"  # on a def line: why this function is longer than MAX_FUNCTION_LINES


def test_files_and_functions_stay_small():
    """Small modules with one job each: no file over 450 lines, no function over 60 lines unless its
    def line says why it reads better whole."""
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(PACKAGE.parent)}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and WHOLE not in lines[node.lineno - 1]:
                    too_long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}(): {length} lines")
    assert too_long == []


def test_the_probe_imports_only_the_standard_library():
    """The probe runs in a training command's own interpreter, which may not have repro's
    dependencies: its modules import the standard library and each other; torch only inside a
    function (it is the process's own, imported by the script)."""
    import sys

    for name, tree in modules().items():
        if not name.startswith("repro.probe"):
            continue
        top = {node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = [node.module or ""]
            else:
                continue
            for root in roots:
                first = root.split(".")[0]
                if root.startswith("repro.probe") or first in sys.stdlib_module_names or first == "__future__":
                    continue
                assert first == "torch" and node not in top, f"{name} imports {root}"
