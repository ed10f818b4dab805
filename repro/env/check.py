"""`repro env check`: the installed set against the lock, as a table a person can act on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from repro.env.lock import Drift, Lock, compare, parse_locks

_FIX = {
    "missing": "pip install --require-hashes --no-deps -r {lock}",
    "extra": "pip uninstall {name}",
    "version": "pip install --require-hashes --no-deps -r {lock}",
}


@dataclass
class Checked:
    lock: Lock
    dev: Lock | None  # the dev lock whose tools were accepted beside it
    drift: list[Drift]


def check(lock_path: str | Path | None = None, dev_lock_path: str | Path | None = None) -> Checked:
    lock, dev = parse_locks(lock_path, dev_lock_path)
    return Checked(lock, dev, compare(lock, dev=dev))


def as_json(result: Checked) -> dict:
    return {
        "lock": str(result.lock.path),
        "lock_sha256": result.lock.sha256,
        "locked_packages": len(result.lock.packages),
        "dev_lock": str(result.dev.path) if result.dev else None,
        "ok": not result.drift,
        "drift": [
            {"name": d.name, "kind": d.kind, "locked": d.locked, "installed": d.installed} for d in result.drift
        ],
    }


def render(result: Checked, console: Console) -> None:
    lock, drift = result.lock, result.drift
    if not drift:
        tools = f" but the dev tools of {result.dev.path}" if result.dev else ""
        console.print(
            f"[green]ok[/]: the {len(lock.packages)} packages of {lock.path} are installed at their locked "
            f"versions, nothing else{tools} (lock sha256 {lock.sha256[:12]})"
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
