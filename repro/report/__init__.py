"""Run bundles, claims, plots and the text to paste into a GitHub issue."""
