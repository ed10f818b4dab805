"""Writes data/train.csv and data/val.csv: the example's dataset (already in the repository; this
script says how it was made, and makes the same bytes again).

Two interleaved half-moons in 2-D plus 6 noise features, 10% of labels flipped: small and noisy on
purpose, so that the validation accuracy of a small network has a real spread over seeds.
"""

import csv
import math
import random
from pathlib import Path


def rows(n: int, rng: random.Random) -> list[list[str]]:
    out = []
    for _ in range(n):
        label = rng.randrange(2)
        angle = rng.uniform(0, math.pi)
        x, y = (math.cos(angle), math.sin(angle)) if label == 0 else (1 - math.cos(angle), 0.5 - math.sin(angle))
        features = [x + rng.gauss(0, 0.25), y + rng.gauss(0, 0.25)] + [rng.gauss(0, 1) for _ in range(6)]
        if rng.random() < 0.10:
            label = 1 - label
        out.append([f"{v:.5f}" for v in features] + [str(label)])
    return out


def main() -> None:
    rng = random.Random(2024)
    root = Path(__file__).parent / "data"
    root.mkdir(exist_ok=True)
    header = [f"x{i}" for i in range(8)] + ["label"]
    for name, n in (("train.csv", 240), ("val.csv", 400)):
        with open(root / name, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows(n, rng))


if __name__ == "__main__":
    main()
