"""The staging directory the launcher names (REPRO_PROBE_DIR): where every process of a wrapped
command writes, and the note a probe failure leaves there. Standard library only."""

from __future__ import annotations

import os

from repro.probe.protocol import ENV_DIR, ERROR, staged


def failed(where: str, text: str) -> None:
    """A failure of the probe, noted for the launcher (processes.json's probe_errors); never raises."""
    directory = os.environ.get(ENV_DIR)
    if directory:
        try:
            with open(os.path.join(directory, staged(ERROR, os.getpid())), "a", encoding="utf-8") as handle:
                handle.write(f"{where}\n{text}\n")
        except OSError:
            pass
