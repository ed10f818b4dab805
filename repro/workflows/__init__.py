"""Commands that run tasks, check them and gather the evidence: reproduce, verify-determinism, sanity."""
