"""The deterministic training pieces every task shares."""
