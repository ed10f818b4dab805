"""gpt2-shapley: GPT-2 trained with first-order In-Run Data Shapley, negative-value samples filtered,
convergence speed-up measured (Wang et al., "Data Shapley in One Training Run", ICLR 2025, Sec. 5.3.1).

One idea per file:
    settings.py   every key of manifests/experiments/gpt2-shapley.toml, typed
    checks.py     the config's and the corpus's checks, where the corpus is, what it decides
    model.py      GPT-2 from its config, the loss, the corpus's windows, the test loss
    step.py       one step's passes: plain, or scoring (every sample's dot product with G_val)
    training.py   one training loop (the scoring run or a replay) on train/lm.py's loop
    stages.py     score -> replay (baseline, filtered) -> analyze, per seed, resumable
    analysis.py   mean and spread over seeds, cross-seed sign agreement
    rehearsal.py  what `repro rehearse` serves for the paper corpus, and the paper run's figures
"""

from __future__ import annotations

from typing import Any

from repro import seeding
from repro.config import set_item
from repro.data import corpus as corpus_mod
from repro.tasks.gpt2_shapley import stages as st
from repro.tasks.gpt2_shapley.analysis import aggregate, brief, cross_seed_agreement, speedup_table
from repro.tasks.gpt2_shapley.checks import check_config, check_corpus, corpus_location, derive_config
from repro.tasks.gpt2_shapley.rehearsal import figures, standin_repositories
from repro.tasks.gpt2_shapley.settings import GPT2Shapley
from repro.tasks.gpt2_shapley.step import validation_pass
from repro.tasks.run import Results, Run
from repro.tasks.spec import Flag, RehearsalSpec, TaskSpec

SPEC = TaskSpec(
    name="gpt2-shapley",
    summary="GPT-2 with exact In-Run Data Shapley values, negative-value windows filtered, convergence speed-up",
    settings=GPT2Shapley,
    flags=(Flag("--stage", "stages.run", "gpt2-shapley: score, replay, analyze or all (default: the config's, all)",
                choices=("score", "replay", "analyze", "all"), continues=("replay", "analyze")),
           Flag("--corpus", "data.corpus", "gpt2-shapley: train on a corpus `repro data prepare` wrote (the model's "
                "context and vocabulary follow it)", metavar="DIR"),),
    seeds_key="stages.seeds",
    stages=st.stages,
    data=corpus_location,
    derive=derive_config,
    check=check_config,
    check_data=lambda cfg, resolved, root: check_corpus(cfg, corpus_mod.load(root), resolved.where),
    rehearsal=RehearsalSpec(hub=standin_repositories, dataset=None, micro_batch_key="train.micro_batch", figures=figures,
                            extra=lambda steps: [set_item("train.steps", steps + 1), set_item("stages.replay_steps", 1)],
                            warm_steps=1),
)


def run(run: Run, *, show_progress: bool = True) -> Results:
    """Every seed's stages in order (a stage done earlier in the bundle is skipped), then the
    summary across seeds."""
    cfg = run.config
    stage = cfg.stages.run
    corpus = corpus_mod.load(run.data_root)
    per_seed: dict[str, Any] = dict((run.bundle.results() or {}).get("seeds", {}))
    stopped = False
    for seed in seeding.seeds(cfg.task.seed, cfg.stages.seeds):
        part = st.Part(run, seed)
        entry = dict(per_seed.get(str(part.seed), {}))
        if stage in ("score", "all"):
            entry["score"] = brief(st.score(part, corpus, show_progress))
            stopped = stopped or not entry["score"]["finished"]
        if stage in ("replay", "all") and not stopped:
            replay = st.replay(part, corpus, show_progress)
            entry["replay"] = {k2: (brief(v) if isinstance(v, dict) else v) for k2, v in replay.items()}
            stopped = stopped or not all(replay[n]["finished"] for n in st.REPLAYS)
        if stage in ("analyze", "all") and not stopped:
            entry["analysis"] = st.analyze(part)
        per_seed[str(part.seed)] = entry
        if stopped:
            break
    tables = [speedup_table(seed, entry["analysis"]) for seed, entry in per_seed.items()
              if "speedups" in entry.get("analysis", {})]
    summary = {"stage": stage, "seeds": per_seed, "metrics": aggregate(per_seed),
               "tables": tables,
               "config_notes": {
                   "value_kind": cfg.replay.value_kind, "threshold": cfg.replay.threshold,
                   "valuation_method": cfg.valuation.method, "grad_clip_disabled": cfg.quirks.grad_clip_disabled,
                   "decay_steps": cfg.train.schedule.decay_steps, "precision": cfg.train.precision,
                   "tf32": cfg.train.tf32, "val_windows": cfg.data.val_windows,
                   "validation_pass": validation_pass(cfg, run.device.type)}}
    if cfg.stages.seeds > 1 and not stopped:
        summary["cross_seed_sign_agreement"] = cross_seed_agreement(run.bundle, cfg.task.seed, cfg.stages.seeds,
                                                                    cfg.replay.value_kind)
    return Results(summary, stopped)
