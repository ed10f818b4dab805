"""In-Run Data Shapley (first order): per-sample gradient dot products without per-sample gradients."""
