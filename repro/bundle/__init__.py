"""What the kit writes under runs/: the one owner of the layout. Every other module reads and writes
these directories through the accessors below and never spells a file name.

A run bundle (`repro run`; runs/<task>/<profile>-s<seed>-<time>/ or --output):

    run.json                  task, profile, seed, status (running / stopped / finished / failed and
                              where), the stages done (what --resume skips)
    config.toml               the resolved config (paper values + profile + --set)
    fingerprint.json          the environment at the start (fingerprint-resume.json at a --resume)
    fingerprint-end.json      ... and at the end (results.json environment_changed says if it moved)
    data-verification.json    every dataset check of this run
    metrics.jsonl, trace.jsonl, checkpoint.pt     the task's training run
    metrics-NAME.jsonl, trace-NAME.jsonl, checkpoint-NAME.pt   further training runs (gpt2-shapley's replays)
    best.pt, best-TAG.pt      the selected weights while a classifier run needs them
    NAME.json                 a stage's record (gpt2-shapley: sequence, score, replay-*, analysis)
    values.parquet            gpt2-shapley's value table
    seed-N/                   one seed of a multi-seed gpt2-shapley bundle (same layout, no run.json)
    results.json, report.md, determinism.json, plots/*.png

An exec bundle (`repro exec -- CMD`; runs/exec/<time>/ or --output): run.json (kind exec: the
command, its working directory, its exit status, finished / failed / interrupted), config.toml (the
command and the options, secrets redacted), fingerprint.json (the training interpreter's packages
and lock drift), data-verification.json, output.log (the command's output, secrets redacted),
trace.jsonl (rank 0's optimizer steps; trace-rankN.jsonl, trace-rankN-K.jsonl for other ranks and
later processes), processes.json (what each training process loaded), outputs.json, results.json,
report.md.

Under torchrun only rank 0 writes the bundle. Every other rank runs the same code against its own
scratch copy (`Bundle.scratch`, a temporary directory outside the bundle, removed when the run
ends), so nothing a rank > 0 writes can race with or land in the bundle.

A reproduce summary (`repro reproduce`; runs/reproduce-<profile>/<time>/, `latest` points at the newest):

    summary.json, summary.md, fingerprint.json, data/NAME.json, tasks/TASK-sSEED/ (bundles),
    determinism/TASK/ (a determinism check: run-1, run-2 bundles, determinism.json)

A determinism check (`repro verify-determinism`; runs/verify-determinism/<what>-<time>/ or --output):

    determinism.json, run-1/ ... run-N/ (bundles; a resume check: run-a/, run-b/, run-b-resumed/),
    run-N.log, requests/run-N.json (a command's runs: what `repro exec --request` ran), slurm/

(repro/bundle/run.py: Bundle.) The directories that hold bundles (repro/bundle/command_dirs.py):

An ablation (`repro ablate`; runs/ablate/<task>-<profile>-<time>/ or --output):

    ablation.json, ablation.md, fingerprint.json, plots/ablation.png,
    cells/<cell>/s<seed>/ (a bundle per cell and seed), cells/<cell>/s<seed>.log

A rehearsal (`repro rehearse`; runs/rehearse/<time>/ or --output):

    rehearsal.json, rehearsal.md, fingerprint.json, TASK/ (a bundle per task), TASK-run.log,
    TASK-resume.log, TASK-report.md, hf-home/ (the hub cache the runs downloaded into)

An image rehearsal (`repro image rehearse`): image-rehearsal.json, image-rehearsal.md, *.log, native/,
image-runs/, image-data/. A sanity check (`repro sanity overfit`): overfit.json, overfit-loss.png.

Every one of them is written by one process at a time (claim: repro/writer_lock.py).
"""

from repro.bundle.command_dirs import JOB_BOOK, Ablation, Check, ImageRehearsal, Overfit, Rehearsal, Summary, kind
from repro.bundle.run import Bundle, claim, data_digest, data_identity, is_empty, new_dir

__all__ = ["JOB_BOOK", "Ablation", "Bundle", "Check", "ImageRehearsal", "Overfit", "Rehearsal", "Summary", "claim", "data_digest",
           "data_identity", "is_empty", "kind", "new_dir"]
