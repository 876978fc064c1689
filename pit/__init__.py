"""pit: implicit self-improvement (PIT, arXiv 2310.00898) as a Hydra + Lightning experiment framework."""

import warnings

__version__ = "0.1.0"

# torch deprecates `LeafSpec`, which Lightning (2.6) still builds for every fit's data loaders: a warning for
# Lightning to act on, not the user, which a run printed more than once
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
