"""The probe: what `repro exec` loads into every Python process of a wrapped training command.

The contract (docs/exec.md):
- It is loaded at interpreter start through a `sitecustomize` directory that `repro exec` puts
  first on PYTHONPATH (sitecustomize.py here; it runs the environment's own sitecustomize too).
- It imports nothing of repro outside this package and nothing but the standard library until the
  process itself imports torch; a process that never imports torch pays for one import watcher.
- It is inert until a process steps an optimizer: DataLoader workers, tokenizer pools and
  launchers (torchrun, bash) write nothing. A process that steps one writes, through torch's
  global optimizer-step hooks, one trace line per optimizer step and, at its first step, a record
  of what it really loaded (collect.py: the same collection `repro env fingerprint` uses).
- It writes only into the staging directory the launcher names (REPRO_PROBE_DIR); the launcher
  scrubs and files what it wrote into the bundle.

For hand-written loops whose loss is not the scalar they call .backward() on (the probe's
default), one line gives the trace the loss to record for the next optimizer step:

    try:
        from repro.probe import log
    except ImportError:  # run without `repro exec`
        def log(**values): pass
    ...
    log(loss=loss.item())
"""

from __future__ import annotations

import sys


def log(**values: float) -> None:
    """Record values for the trace line of this process's next optimizer step. `loss` replaces the
    loss the probe took from .backward(). A no-op when the probe is not active in this process."""
    hooks = sys.modules.get("repro.probe.hooks")
    if hooks is not None:
        hooks.log(values)
