"""Inference-time improvement: PIT's iterative y_{k+1} = M_PIT(x, y_k) and the Self-Refine prompting baselines."""
