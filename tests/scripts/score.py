"""A training command in miniature, without torch: argparse options as a user's script has them,
a score that depends on the seed and the learning rate, printed and written to OUT/metrics.json.
Fast enough for the task-file tests to run it many times."""

import argparse
import json
import os

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--verbose", action="store_true")
args = parser.parse_args()
score = 0.5 + 0.01 * ((args.seed * 7) % 5) + args.lr  # a seed spread of a few hundredths
for epoch in range(3):
    print(f"epoch {epoch} score {score - 0.1 * (2 - epoch):.4f}")
print(f"final score {score:.4f}" + (" (verbose)" if args.verbose else ""))
if os.environ.get("SCORE_SHIFT"):  # moves the score written to metrics.json, not the one printed
    score += float(os.environ["SCORE_SHIFT"])
os.makedirs(args.out, exist_ok=True)
with open(os.path.join(args.out, "metrics.json"), "w") as handle:
    json.dump({"eval": {"score": score}}, handle)
