"""PPO math against hand-computed values and a step-by-step reference."""

from __future__ import annotations

import math

import pytest
import torch

from pit.data.encode import pad_rows
from pit.models.generate import Sampling, sample
from pit.modules.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    group_advantages,
    kl_penalized_rewards,
    masked_entropy,
    masked_whiten,
    token_logprobs,
)


def test_gae_hand_values() -> None:
    rewards, values = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.2, 0.4]])
    advantages, returns = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.5)
    # deltas: 0.2-0.5=-0.3, 0.4-0.2=0.2, 1-0.4=0.6; A2=0.6, A1=0.2+0.5*0.6, A0=-0.3+0.5*0.5
    assert torch.allclose(advantages, torch.tensor([[-0.05, 0.5, 0.6]]), atol=1e-6)
    assert torch.allclose(returns, torch.tensor([[0.45, 0.7, 1.0]]), atol=1e-6)


def test_gae_stops_at_the_end_of_each_response() -> None:
    rewards, values = torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.5, 0.2, 9.0]])  # 9.0 is past EOS
    advantages, returns = gae(rewards, values, torch.tensor([[1.0, 1.0, 0.0]]), gamma=1.0, lam=0.5)
    assert torch.allclose(advantages, torch.tensor([[-0.3 + 0.5 * 0.8, 0.8, 0.0]]), atol=1e-6)
    assert torch.allclose(returns, torch.tensor([[0.6, 1.0, 0.0]]), atol=1e-6)


def test_gae_matches_the_backward_recursion() -> None:
    torch.manual_seed(0)
    rewards, values = torch.randn(4, 7), torch.randn(4, 7)
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2, [1] + [0] * 6], dtype=torch.float)
    gamma, lam = 0.99, 0.95
    expected = torch.zeros(4, 7)
    for b in range(4):
        last, length = 0.0, int(mask[b].sum())
        for t in reversed(range(length)):
            next_value = values[b, t + 1].item() if t + 1 < length else 0.0
            delta = rewards[b, t].item() + gamma * next_value - values[b, t].item()
            last = delta + gamma * lam * last
            expected[b, t] = last
    advantages, _ = gae(rewards, values, mask, gamma, lam)
    assert torch.allclose(advantages, expected, atol=1e-5)


def test_kl_penalty_and_score_at_last_response_token() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -0.5, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])         # row 0 ended (EOS) at token 1
    rewards, kl = kl_penalized_rewards(torch.tensor([2.0, -1.0]), logprobs, ref, mask, beta=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, 0.0], [0.0, -0.5, 0.0]]), atol=1e-6)
    assert torch.allclose(rewards, torch.tensor([[-0.05, 2.0, 0.0], [0.0, 0.05, -1.0]]), atol=1e-6)


def test_masks_from_left_padded_prompts_and_early_eos() -> None:
    """Prompts left-padded with pad = EOS (GPT-2's tokenizer has no pad token): the response is the slice after the
    padded width, its mask follows its own first EOS, never the prompt's pads, and what follows EOS becomes pad."""
    eos = pad = 0
    prompt_ids, prompt_mask = pad_rows([[3, 4, 9], [9]], pad, left=True)
    assert prompt_ids.tolist() == [[3, 4, 9], [0, 0, 9]]          # row 1's pads are EOS ids
    generated = torch.tensor([[5, 0, 7, 7], [5, 6, 7, 8]])         # row 0 ends early; generate fills in after it

    class Scripted(torch.nn.Module):
        def generate(self, input_ids: torch.Tensor, **kwargs: object) -> torch.Tensor:
            return torch.cat([input_ids, generated], 1)

    response, mask = sample(Scripted(), prompt_ids, prompt_mask, Sampling(max_new_tokens=4), eos, pad)
    assert response.tolist() == [[5, 0, 0, 0], [5, 6, 7, 8]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    logits = torch.zeros(2, 4, 10)
    logits[0, 2:] = 50.0 * torch.nn.functional.one_hot(torch.tensor(3), 10)  # garbage after EOS must not count
    entropy = masked_entropy(logits, mask.float())
    assert entropy.item() == pytest.approx(math.log(10), rel=1e-5)
    assert token_logprobs(logits, response)[1].tolist() == pytest.approx([-math.log(10)] * 4, rel=1e-5)


def test_clipped_policy_loss_hand_values() -> None:
    logprobs, old = torch.full((1, 2), math.log(1.5)), torch.zeros(1, 2)
    mask = torch.ones(1, 2)
    up = clipped_policy_loss(logprobs, old, torch.ones(1, 2), mask, clip=0.2)
    assert up.loss.item() == pytest.approx(-1.2) and up.clip_fraction.item() == 1.0
    assert up.approx_kl.item() == pytest.approx(0.5 - math.log(1.5))
    down = clipped_policy_loss(logprobs, old, -torch.ones(1, 2), mask, clip=0.2)
    assert down.loss.item() == pytest.approx(1.5) and down.clip_fraction.item() == 0.0
    masked = clipped_policy_loss(logprobs, old, torch.tensor([[1.0, 100.0]]), torch.tensor([[1.0, 0.0]]), 0.2)
    assert masked.loss.item() == pytest.approx(-1.2)


def test_clipped_value_loss_hand_values() -> None:
    loss, clipped = clipped_value_loss(torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([[2.0]]),
                                       torch.ones(1, 1), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.7 - 2.0) ** 2) and clipped.item() == 1.0
    loss, clipped = clipped_value_loss(torch.tensor([[1.9]]), torch.tensor([[1.8]]), torch.tensor([[2.0]]),
                                       torch.ones(1, 1), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * 0.1**2) and clipped.item() == 0.0
    loss, clipped = clipped_value_loss(torch.tensor([[1.0, 9.0]]), torch.tensor([[0.5, 0.0]]),
                                       torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]), clip=None)
    assert loss.item() == pytest.approx(0.5 * 1.0**2) and clipped is None   # no clip; the masked 9 ignored


def test_whiten_and_explained_variance() -> None:
    """Masked values 2, 4, 12 (the 100 is masked out): mean 6, unbiased variance (16 + 4 + 36) / 2 = 28, so the
    whitened values are (-4, -2, 6) / sqrt(28); a std of 1 (e.g. 1, 2, 3) would hide a missing or biased division."""
    x, mask = torch.tensor([[2.0, 4.0, 12.0, 100.0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    std = math.sqrt(28.0)
    expected = torch.tensor([[-4.0 / std, -2.0 / std, 6.0 / std, 0.0]])
    torch.testing.assert_close(masked_whiten(x, mask), expected)
    # returns 0, 4, 8 (biased variance 32/3) against values 1, 4, 6: residuals -1, 0, 2 (biased variance 14/9), so
    # the explained variance is 1 - (14/9) / (32/3) = 41/48; the masked 50 and 9 count nowhere
    returns, values = torch.tensor([[0.0, 4.0, 8.0, 50.0]]), torch.tensor([[1.0, 4.0, 6.0, 9.0]])
    assert explained_variance(values, returns, mask).item() == pytest.approx(41 / 48)
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full((1, 4), 2.0), returns, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_group_advantages_leave_one_out_by_hand() -> None:
    """Returns 0, 3, 6 in one group of three: baselines (3+6)/2, (0+6)/2, (0+3)/2; every response token gets it."""
    rewards = torch.tensor([[0.0, 0.0, 9.0], [1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [1.0, 0.0, 0.0], [0.0, 3.0, 0.0],
                            [5.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0],
                         [1.0, 0.0, 0.0]])   # row 0's 9 lies past its end: not part of its return
    expected = torch.tensor([-4.5, 0.0, 4.5, -3.0, 0.0, 3.0])[:, None] * mask
    torch.testing.assert_close(group_advantages(rewards, mask, 3), expected)
    pairs = group_advantages(rewards, mask, 2)
    torch.testing.assert_close(pairs[:2, 0], torch.tensor([-3.0, 3.0]))   # returns 0 and 3: each minus the other
    with pytest.raises(ValueError, match="groups of >= 2"):
        group_advantages(rewards, mask, 4)


def test_kl_controllers() -> None:
    adaptive = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    assert adaptive.update(12.0, 100) == pytest.approx(0.1 * 1.002)        # above target: β grows (error clipped)
    adaptive.beta = 0.1
    assert adaptive.update(3.0, 100) == pytest.approx(0.1 * 0.998)         # below target: β shrinks
    adaptive.beta = 0.1
    assert adaptive.update(6.0, 100) == pytest.approx(0.1)
    assert FixedKLController(0.05).update(100.0, 100) == 0.05
