"""Datasets: manifests, hashing, fetch, verify, and one module per dataset."""
