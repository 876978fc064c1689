"""The benchmark's FLOP accounting (the MFU it reports) on hand values; the timed runs live in `make bench`."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments" / "bench"))
from bench import median_after, peak_tflops, training_flops_per_token  # noqa: E402


def test_flops_per_token_gpt2_small() -> None:
    """GPT-2 124 M at 1,024 tokens: 6 · 124.44 M + 12 · 12 · 768 · 1024 = 746.6 M + 113.2 M."""
    assert training_flops_per_token(124_439_808, 12, 768, 1024) == pytest.approx(859.90e6, rel=1e-4)
    # issue #10's reference point: 104 k tokens/s on a 989.5 TFLOP/s card is 9.0-9.1 % MFU
    assert 104e3 * training_flops_per_token(124_439_808, 12, 768, 1024) / 989.5e12 == pytest.approx(0.0904, abs=5e-4)


def test_known_peaks_and_median_after_warmup() -> None:
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.5 and peak_tflops("NVIDIA H200") == 989.5
    assert peak_tflops("AMD EPYC") is None
    assert median_after([9.0, 9.0, 1.0, 3.0, 2.0], warmup=2) == 2.0
    with pytest.raises(RuntimeError, match="no timed steps"):
        median_after([1.0], warmup=2)
