"""The environment: the lock, the fingerprint, determinism settings, and diffs between two runs."""
