"""pit: implicit self-improvement (PIT, arXiv 2310.00898) as a Hydra + Lightning experiment framework."""

__version__ = "0.1.0"
