"""`repro report`: the text to paste into an issue, from a run bundle or a reproduce summary."""

from __future__ import annotations

from repro.cli import options
from repro.cli.output import write_or_print


def cmd_report(args) -> int:
    from repro.report import issue

    text = issue.render(args.run_dir, fmt=args.format)
    if args.gh_issue:
        issue.post_to_github(text, args.gh_issue)
    write_or_print(text, args.output)
    return 0


def register(sub, help: str) -> None:
    p = options.command(sub, "report", handler=cmd_report, help=help,
                        description="Render results against the paper's claims, the fingerprint digest, the determinism "
                        "verdict and plots, with the full JSON in <details>.",
                        examples=["repro report runs/reproduce-smoke/latest",
                                  "repro report runs/esconv-sft/smoke-s42-... --format json",
                                  "repro report runs/reproduce-paper/latest --gh-issue dengyang17/PPDPP#4"])
    p.add_argument("run_dir", metavar="RUN_OR_SUMMARY", help="a run bundle or a reproduce summary directory")
    options.output_format(p, ("markdown", "json"), "markdown")
    options.output(p, "write here (atomically) instead of stdout")
    p.add_argument("--gh-issue", metavar="OWNER/REPO#N", help="post as a comment with the gh CLI (uses gh's own login)")


REGISTER = {"report": register}
