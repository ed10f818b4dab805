"""How commands print: rich on a terminal, JSON on stdout for --json, one-line errors on stderr."""

from __future__ import annotations

import sys

from repro.errors import ERROR_PREFIX


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def emit_json(obj) -> None:
    from repro.atomic import dumps_json

    sys.stdout.write(dumps_json(obj))


def write_or_print(text: str, output: str | None) -> None:
    """Write `text` to the file `output` (atomically), or to stdout."""
    if output:
        from repro.atomic import write_text

        write_text(output, text)
        console(stderr=True).print(f"wrote {output}")
    else:
        sys.stdout.write(text)


def error_line(text: str) -> None:
    # Plain write: a rich console would wrap a long error over several lines.
    sys.stderr.write(f"{ERROR_PREFIX}{text}\n")


def warning_line(text: str) -> None:
    """One line on stderr for what went wrong beside a command that itself succeeded (an export)."""
    sys.stderr.write(f"repro: warning: {text}\n")
