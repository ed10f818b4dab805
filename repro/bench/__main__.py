"""python -m repro.bench {fingerprint,hashing,gpt2,gpt2-cpu,probe,ops,portable-cpu,gpt2-cpu-paper,cli,all} [--output docs/benchmarks.md] [--json FILE]"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

from repro import clock
from repro.bench import machine

HEADER = """# Benchmarks

Written by `make bench` (`python -m repro.bench all --output docs/benchmarks.md`). Each section is
rewritten by the benchmark that owns it and names the machine it ran on; a benchmark that cannot run
on a machine (the GPU one on a CPU machine) leaves its section as it was. Targets are checked here,
never in unit tests.
"""


def render_fingerprint(r: dict[str, Any]) -> list[str]:
    return [
        "| | repro env fingerprint | python -m torch.utils.collect_env |",
        "| --- | --- | --- |",
        f"| median wall time, fresh process ({r['rounds']} rounds) | {r['repro_seconds_median']:.2f} s | {r['collect_env_seconds_median']:.2f} s |",
        f"| fields reported | {r['repro_fields']} | {r['collect_env_fields']} |",
        "",
        f"Ratio {r['ratio']:.2f} (target: {r['target']}): **{'met' if r['met'] else 'not met'}**.",
    ]


def render_hashing(r: dict[str, Any]) -> list[str]:
    return [
        f"{r['files']} files, {r['bytes'] / 2**20:.0f} MiB (4 x 128 MiB + 2,000 ESC-50-sized clips), page cache warm, median of 3.",
        "",
        "| | seconds | MB/s |",
        "| --- | --- | --- |",
        f"| repro data verify hashing ({r['jobs']} threads) | {r['repro_seconds_median']:.2f} | {r['repro_mb_per_s']:.0f} |",
        f"| sha256sum (one process) | {r['sha256sum_seconds_median']:.2f} | {r['sha256sum_mb_per_s']:.0f} |",
        "",
        f"Ratio {r['ratio']:.2f} (target: {r['target']}): **{'met' if r['met'] else 'not met'}**.",
    ]


def render_gpt2(r: dict[str, Any]) -> list[str]:
    model = "GPT-2 small" if r.get("size", "small") == "small" else \
        f"GPT-2 of {r['n_layer']} layers, width {r['n_embd']}, vocabulary {r['vocab']:,}"
    lines = [f"{model}, batch {r['batch']} x {r['seq']} tokens, {r['precision']}, deterministic algorithms "
             f"{'on' if r['deterministic'] else 'off'}, median step time after warm-up.", "",
             "| variant | torch.compile | step (ms) | tokens/s | peak memory (GiB) | linear-layer forms |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in r["rows"]:
        if "error" in row:
            lines.append(f"| {row['variant']} | {row['mode']} | failed: {row['error']} | | | |")
        else:
            memory = f"{row['peak_memory_gib']:.1f}" if "peak_memory_gib" in row else "n/a"
            lines.append(f"| {row['variant']} | {row['mode']} | {row['step_seconds'] * 1000:.1f} | "
                         f"{row['tokens_per_second']:,.0f} | {memory} | {', '.join(row.get('plan', []))} |")
    lines.append("")
    target = r.get("size", "small") == "small"  # the target is for GPT-2 small on a GPU
    for mode in ("eager", "compile"):
        if f"overhead_{mode}" in r:
            verdict = f" (target <= 1.15): **{'met' if r[f'overhead_{mode}'] <= 1.15 else 'not met'}**" if target else ""
            lines.append(f"- scoring (joint; the default on CUDA) / plain step time ({mode}): {r[f'overhead_{mode}']:.3f}{verdict}")
        for key, what in (("overhead_per_sample", "scoring (joint, all per-sample)"), ("overhead_separate", "scoring (separate validation pass)")):
            if f"{key}_{mode}" in r:
                lines.append(f"- {what} / plain step time ({mode}): {r[f'{key}_{mode}']:.3f}")
        if f"validation_share_{mode}" in r:  # results written before the joint pass existed
            lines.append(f"- share of the scoring overhead ({mode}) spent in the validation forward/backward: {r[f'validation_share_{mode}']:.0%}")
    if "plain_vs_best_hf" in r:
        ok = r["plain_vs_best_hf"] >= 0.9
        verdict = f" (target >= 0.90): **{'met' if ok else 'not met'}**" if target else ""
        lines.append(f"- plain throughput / best transformers GPT-2 throughput: {r['plain_vs_best_hf']:.3f}{verdict}")
    bw = r.get("bitwise_values") or {}
    if bw:
        lines.append(f"- two deterministic scoring runs ({bw['steps']} steps): values and weights "
                     f"{'bitwise identical' if bw['identical'] else 'DIFFER'}")
    return lines


def _gpt2(size: str) -> Callable[[], dict]:
    return lambda: __import__("repro.bench.gpt2", fromlist=["run"]).run(size=size)


BENCHES: dict[str, tuple[str, Callable[[], dict], Callable[[dict], list[str]]]] = {
    "fingerprint": ("Fingerprint collection vs collect_env", lambda: __import__("repro.bench.fingerprint_speed", fromlist=["run"]).run(), render_fingerprint),
    "hashing": ("Data verification hashing vs sha256sum", lambda: __import__("repro.bench.verify_speed", fromlist=["run"]).run(), render_hashing),
    "gpt2": ("GPT-2 small: plain training vs In-Run Data Shapley scoring (GPU)", _gpt2("small"), render_gpt2),
    "gpt2-cpu": ("GPT-2, a small model on the CPU: the scoring variants side by side (not the GPU target)", _gpt2("cpu-small"), render_gpt2),
    "probe": ("The probe's cost: `repro exec` around a training command",
              lambda: __import__("repro.bench.probe_overhead", fromlist=["run"]).run(),
              lambda r: __import__("repro.bench.probe_overhead", fromlist=["render"]).render(r)),
    "ops": ("The op recorder's cost: a step replayed by `verify-determinism --ops` / `repro diverge`",
            lambda: __import__("repro.bench.ops_replay", fromlist=["run"]).run(),
            lambda r: __import__("repro.bench.ops_replay", fromlist=["render"]).render(r)),
    "portable-cpu": ("The portable CPU mode's cost: oneMKL's COMPATIBLE branch and one thread, against the CPU's own paths",
                     lambda: __import__("repro.bench.portable_cpu", fromlist=["run"]).run(),
                     lambda r: __import__("repro.bench.portable_cpu", fromlist=["render"]).render(r)),
    "gpt2-cpu-paper": ("GPT-2 small at the paper's shape on the CPU: plain vs scoring step, the kit's own step",
                       lambda: __import__("repro.bench.gpt2_cpu_paper", fromlist=["run"]).run(),
                       lambda r: __import__("repro.bench.gpt2_cpu_paper", fromlist=["render"]).render(r)),
    "cli": ("The command line's start: `repro COMMAND --help` in a fresh interpreter",
            lambda: __import__("repro.bench.cli_startup", fromlist=["run"]).run(),
            lambda r: __import__("repro.bench.cli_startup", fromlist=["render"]).render(r)),
}


def section(name: str, result: dict[str, Any], info: dict[str, Any]) -> str:
    title, _, renderer = BENCHES[name]
    date = clock.today()
    body = [f"<!-- bench:{name} start -->", f"## {title}", "", f"Machine: {machine.line(info)}. Date: {date}.", ""]
    body += renderer(result)
    body += ["", "<details><summary>raw result</summary>", "", "```json", json.dumps(result, indent=2, sort_keys=True, default=str), "```", "", "</details>",
             f"<!-- bench:{name} end -->"]
    return "\n".join(body)


def update(path: Path, name: str, text: str) -> None:
    from repro.atomic import write_text

    current = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{name} start -->.*?<!-- bench:{name} end -->", re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: text, current)
    else:
        current = current.rstrip() + "\n\n" + text + "\n"
    write_text(path, current)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.bench", description=__doc__)
    parser.add_argument("name", choices=[*BENCHES, "all"])
    parser.add_argument("--output", help="markdown file to update (e.g. docs/benchmarks.md)")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    names = list(BENCHES) if args.name == "all" else [args.name]
    info = machine.describe()
    results: dict[str, Any] = {"machine": info}
    for name in names:
        if name == "gpt2" and not info.get("gpu"):
            print(f"skip {name}: no CUDA GPU on this machine (its section of the report is kept as it was)", file=sys.stderr)
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = BENCHES[name][1]()
        results[name] = result
        print(section(name, result, info))
        if args.output:
            update(Path(args.output), name, section(name, result, info))
    if args.json:
        from repro.atomic import write_json

        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
