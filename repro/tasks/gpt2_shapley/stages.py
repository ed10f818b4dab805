"""gpt2-shapley's stages, per seed: score (train from scratch on a fixed sequence of window ids,
valuing every sample at every step), replay (the baseline replays the scored sequence, the filtered
run the same minus the windows whose total value is negative, re-batched), analyze (negative
fraction, value distribution, sign stability, speed-up, valuation overhead). Each stage is marked
done in the bundle's run.json through the run lifecycle, so --resume skips it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from repro import seeding
from repro.bundle import Bundle
from repro.errors import UsageError
from repro.progress import note
from repro.tasks.gpt2_shapley.settings import GPT2Shapley
from repro.tasks.gpt2_shapley.training import train
from repro.tasks.run import Run, stage_done
from repro.valuation import values as vals

REPLAYS = ("baseline", "filtered")
STAGES = {"score": ("score",), "replay": tuple(f"replay-{r}" for r in REPLAYS), "analyze": ("analysis",)}


def stages(cfg: GPT2Shapley) -> list[str]:
    """The stages a run of this config does, per seed: what the bundle marks done and --resume skips."""
    wanted = [s for name, group in STAGES.items() if cfg.stages.run in ("all", name) for s in group]
    return [f"{prefix(cfg, seed)}{s}" for seed in seeding.seeds(cfg.task.seed, cfg.stages.seeds) for s in wanted]


def prefix(cfg: GPT2Shapley, seed: int) -> str:
    return "" if cfg.stages.seeds == 1 else f"seed-{seed}/"


def score_sequence(train_windows: int, steps: int, batch: int, seed: int) -> list[int]:
    """The window ids the scoring run trains on, in order: seeded permutations, one per epoch."""
    from repro.train.batches import epoch_order

    sequence: list[int] = []
    epoch = 0
    while len(sequence) < steps * batch:
        sequence.extend(epoch_order(train_windows, seed, epoch))
        epoch += 1
    return sequence[: steps * batch]


@dataclass
class Part:
    """One seed's share of a run: its files (the bundle, or its seed-N/ folder) and its stages."""

    run: Run
    seed: int

    @property
    def files(self) -> Bundle:
        return self.run.bundle if self.run.config.stages.seeds == 1 else self.run.bundle.seed(self.seed)

    def key(self, stage: str) -> str:
        return prefix(self.run.config, self.seed) + stage

    def done(self, stage: str) -> bool:
        if self.run.bundle.done(self.key(stage)):
            note(f"{self.key(stage)}: finished earlier in this bundle, skipped")
            return True
        return False

    def finished(self, stage: str, run_name: str | None = None) -> None:
        """The stage is done (tasks/run.stage_done): marked, its checkpoint gone."""
        stage_done(self.run, self.key(stage),
                             checkpoints=[self.files.checkpoint_path(run_name)] if stage != "analysis" else [])

    def train(self, corpus, batches, name: str | None, valuation: bool, show_progress,
              initial: tuple[int, float] | None = None) -> dict[str, Any]:
        run = self.run
        return train(run.config, corpus=corpus, batches=batches, device=run.device, files=self.files, name=name,
                     valuation=valuation, seed=self.seed, state=run.checkpoint(self.files, name),
                     max_steps=run.max_steps, show_progress=show_progress, initial=initial)


def initial_loss(score: dict[str, Any]) -> tuple[int, float] | None:
    """(test windows, test loss) of the seed's initial weights, from the scoring run's curve: each
    replay builds the same weights from the same seed, so its step-0 loss is this one and is not
    evaluated again (twice per seed)."""
    curve = score.get("curve") or []
    return (score["eval_windows"], curve[0][1]) if curve and curve[0][0] == 0 and score.get("eval_windows") else None


def score(part: Part, corpus, show_progress) -> dict[str, Any]:
    files = part.files
    if part.done("score"):
        return files.record("score")
    cfg = part.run.config
    steps, B = cfg.train.steps, cfg.train.batch
    sequence = score_sequence(corpus.num_windows("train"), steps, B, part.seed)
    files.path.mkdir(parents=True, exist_ok=True)
    files.write_record("sequence", {"batch": B, "steps": steps, "seed": part.seed, "windows": sequence})
    batches = [sequence[i:i + B] for i in range(0, len(sequence), B)]
    result = part.train(corpus, batches, None, True, show_progress)
    files.write_record("score", result)
    if result["finished"]:
        part.finished("score")
    return result


@dataclass(frozen=True)
class ReplayPlan:
    baseline: list[list[int]]  # the two replays' batches (values.replay_sequences)
    filtered: list[list[int]]
    kept_steps: int  # the step at which the filtered run's kept windows ran out the first time
    dropped: int  # windows the filtered run leaves out


def replay_plan(part: Part) -> ReplayPlan:
    """What the two replays train on, from the scored sequence and the value table."""
    files, cfg = part.files, part.run.config
    sequence = files.record("sequence")["windows"]
    dropped = vals.dropped_windows(vals.totals(vals.read(files.values_path), cfg.replay.value_kind),
                                   cfg.replay.threshold, cfg.replay.drop)
    baseline, filtered, kept_steps = vals.replay_sequences(sequence, dropped, cfg.train.batch, cfg.replay.budget)
    if cfg.stages.replay_steps:  # a rehearsal: a warm plain step to time, not the whole replay
        baseline, filtered = baseline[:cfg.stages.replay_steps], filtered[:cfg.stages.replay_steps]
    return ReplayPlan(baseline, filtered, kept_steps, len(dropped))


def replay(part: Part, corpus, show_progress) -> dict[str, Any]:
    files, cfg = part.files, part.run.config
    score = files.record("score")
    if score is None:
        raise UsageError("no scoring run in this bundle", where=str(files.path), fix="run --stage score first (or --stage all)")
    if not score["finished"]:
        raise UsageError("the scoring run did not finish", where=str(files.path), fix="continue it with --stage score --resume")
    plan = replay_plan(part)
    out = {"value_kind": cfg.replay.value_kind, "threshold": cfg.replay.threshold, "drop": cfg.replay.drop,
           "dropped_windows": plan.dropped, "budget": cfg.replay.budget, "baseline_steps": len(plan.baseline),
           "filtered_steps": len(plan.filtered), "kept_windows_ran_out_at": plan.kept_steps}
    for name, batches in zip(REPLAYS, (plan.baseline, plan.filtered)):
        stage = f"replay-{name}"
        if part.done(stage):
            out[name] = files.record(stage)
            continue
        out[name] = part.train(corpus, batches, name, False, show_progress, initial=initial_loss(score))
        files.write_record(stage, out[name])
        if out[name]["finished"]:
            part.finished(stage, name)
    return out


def analyze(part: Part) -> dict[str, Any]:
    from repro import plots

    files, cfg = part.files, part.run.config
    if part.done("analysis"):
        return files.record("analysis")
    table = vals.read(files.values_path)
    kind = cfg.replay.value_kind
    total = vals.totals(table, kind)
    negatives = vals.negative_windows(total, cfg.replay.threshold)
    score = files.record("score")
    out: dict[str, Any] = {
        "value_kind": kind,
        "windows_scored": len(total),
        "negative_fraction": len(negatives) / max(1, len(total)),
        "negative_fraction_per_use": float(np.mean(table["dot"] < 0)) if len(table["dot"]) else None,
        "value_quantiles": dict(zip(["min", "p10", "p50", "p90", "max"],
                                    np.quantile(np.fromiter(total.values(), float), [0, 0.1, 0.5, 0.9, 1]).tolist())) if total else {},
        "sign_stability": vals.sign_stability(table, kind),
        "valuation_plan": sorted(set((score.get("valuation_plan") or {}).values())),
    }
    plots.histogram(list(total.values()), files.plots / "value-histogram.png",
                    title=f"total value per window ({kind}); {out['negative_fraction'] * 100:.1f}% negative",
                    xlabel="total value" + (" (eta * dot)" if kind == "eta" else " (raw dot product)"))
    base, filt = (files.record(f"replay-{r}") for r in REPLAYS)
    replayed = bool(base and filt and base.get("finished") and filt.get("finished"))
    if replayed:
        bc, fc = [tuple(c) for c in base["curve"]], [tuple(c) for c in filt["curve"]]
        targets = list(cfg.analyze.targets) or vals.auto_targets(bc, list(cfg.analyze.target_fractions))
        plan = replay_plan(part)
        out["speedups"] = vals.speedups(bc, fc, targets)
        out["speedup_estimate"] = vals.headline_speedup(out["speedups"])
        out["speedup"] = out["speedup_estimate"]["speedup"]
        out["budgets"] = {"rule": cfg.replay.budget, "baseline_steps": base["steps"], "filtered_steps": filt["steps"],
                          "kept_windows_ran_out_at": plan.kept_steps}
        out["final_test_loss"] = {"baseline": bc[-1][1], "filtered": fc[-1][1]}
        if score.get("step_seconds_mean") and base.get("step_seconds_mean"):
            out["valuation_overhead"] = score["step_seconds_mean"] / base["step_seconds_mean"]
        plots.loss_curves({"baseline replay": ([s for s, _ in bc], [v for _, v in bc]),
                           "filtered replay": ([s for s, _ in fc], [v for _, v in fc]),
                           "scoring run": ([s for s, _ in score["curve"]], [v for _, v in score["curve"]])},
                          files.plots / "test-loss.png", title="test loss: baseline vs filtered replay", targets=targets,
                          marks={"kept windows ran out": plan.kept_steps} if plan.kept_steps < filt["steps"] else None)
    files.write_record("analysis", out)
    if replayed:  # an analysis without the replays is redone once they exist
        part.finished("analysis")
    return out
