"""repro: a reproducibility kit for ML papers.

The run itself is the evidence: a locked environment, verified data and splits, deterministic
training, and an environment fingerprint attached to every result.
"""

__version__ = "0.1.0"
