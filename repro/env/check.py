"""`repro env check`: the installed set against the lock, as a table a person can act on."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from repro.env.lock import Drift, Lock, compare, parse_lock
from repro.paths import default_lock

_FIX = {
    "missing": "pip install --require-hashes --no-deps -r {lock}",
    "extra": "pip uninstall {name}",
    "version": "pip install --require-hashes --no-deps -r {lock}",
}


def check(lock_path: str | Path | None = None) -> tuple[Lock, list[Drift]]:
    lock = parse_lock(lock_path or default_lock())
    return lock, compare(lock)


def as_json(lock: Lock, drift: list[Drift]) -> dict:
    return {
        "lock": str(lock.path),
        "lock_sha256": lock.sha256,
        "locked_packages": len(lock.packages),
        "ok": not drift,
        "drift": [
            {"name": d.name, "kind": d.kind, "locked": d.locked, "installed": d.installed} for d in drift
        ],
    }


def render(lock: Lock, drift: list[Drift], console: Console) -> None:
    if not drift:
        console.print(
            f"[green]ok[/]: the {len(lock.packages)} packages of {lock.path} are installed at their locked "
            f"versions, nothing else (lock sha256 {lock.sha256[:12]})"
        )
        return
    table = Table(title=f"Drift from {lock.path}", title_justify="left")
    table.add_column("package")
    table.add_column("problem")
    table.add_column("locked")
    table.add_column("installed")
    table.add_column("fix")
    for d in drift:
        table.add_row(
            d.name,
            {"missing": "not installed", "extra": "not in the lock", "version": "other version"}[d.kind],
            d.locked or "-",
            d.installed or "-",
            _FIX[d.kind].format(lock=lock.path, name=d.name),
        )
    console.print(table)
    console.print(
        f"[red]{len(drift)} difference(s)[/] between this interpreter and the lock: numbers from this "
        "environment may not match a locked one."
    )
