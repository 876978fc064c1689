"""Mid-stage checkpoints: data position, RNG states, damaged checkpoint files, and in-process kill-and-resume."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from helpers import CHECKPOINTED, compose_config, model_hashes
from torch.utils.data import DataLoader

from pit import checkpointing
from pit.checkpointing import OTHER_THREADS, StageCheckpoint, StepStream, latest_checkpoint, rng_state, set_rng_state
from pit.run import run


def shuffled(n: int, batch_size: int, seed: int) -> DataLoader:
    return DataLoader(list(range(n)), batch_size=batch_size, shuffle=True, drop_last=True,
                      generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("skip", [0, 1, 4, 5, 6, 13])
def test_step_stream_resumes_at_any_batch_across_epochs(skip: int) -> None:
    """17 items in batches of 3: 5 batches per epoch; skipping k batches gives batches k.. of the full stream."""
    full = [b.tolist() for b in StepStream(shuffled(17, 3, seed=7), total=14)]
    assert len(full) == 14 and full[0] != full[5]                     # reshuffled each epoch
    resumed = StepStream(shuffled(17, 3, seed=7), total=14, skip=skip)
    assert [b.tolist() for b in resumed] == full[skip:]
    assert len(resumed) == 14                                          # Lightning counts the skipped ones as done


def test_step_stream_leaves_the_generator_where_an_uninterrupted_run_does() -> None:
    a, b = shuffled(10, 4, seed=1), shuffled(10, 4, seed=1)
    list(StepStream(a, total=7))
    list(StepStream(b, total=7, skip=5))
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path: Path) -> None:
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    torch.save({"rng": rng_state()}, tmp_path / "s.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def write_checkpoint(directory: Path, batches: int, payload: bytes) -> Path:
    from pit.artifacts import file_sha256

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{batches:08d}.ckpt"
    path.write_bytes(payload)
    path.with_suffix(".json").write_text(json.dumps({"batches": batches, "size": len(payload),
                                                     "sha256": file_sha256(path)}))
    return path


@pytest.mark.parametrize("damage, problem", [
    (lambda p: p.write_bytes(p.read_bytes()[:-3]), "is truncated"),
    (lambda p: p.write_bytes(b"X" + p.read_bytes()[1:]), "is corrupted (checksum differs)"),
    (lambda p: p.unlink(), "is missing"),
    (lambda p: p.with_suffix(".json").write_text("{"), "has an unreadable sidecar"),
])
def test_a_damaged_checkpoint_is_named_and_an_older_one_used(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                             damage, problem: str) -> None:
    write_checkpoint(tmp_path, 10, b"older checkpoint")
    newest = write_checkpoint(tmp_path, 20, b"newest checkpoint")
    damage(newest)
    with caplog.at_level(logging.WARNING):
        resume = latest_checkpoint(tmp_path)
    assert resume is not None and resume.batches == 10
    assert f"checkpoint {newest} {problem}" in caplog.text
    assert not newest.exists()                                         # never tried again


def test_a_checkpoint_without_its_sidecar_is_not_complete(tmp_path: Path) -> None:
    """Killed between writing the file and its sidecar: the file alone is ignored."""
    (tmp_path / "step-00000005.ckpt").write_bytes(b"half")
    assert latest_checkpoint(tmp_path) is None


class Line(L.LightningModule):
    """The smallest module Lightning trains: one weight, a squared output as its loss."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Linear(1, 1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.weight(batch).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("every, keep_last, steps, kept", [(1, 2, 5, [4, 5]), (2, 3, 7, [4, 6, 7]), (3, 1, 4, [4])])
def test_only_the_newest_keep_last_checkpoints_stay(tmp_path: Path, every: int, keep_last: int, steps: int,
                                                    kept: list[int]) -> None:
    """A checkpoint every `every` batches and one at the end of training; older ones go, with their sidecars."""
    callback = StageCheckpoint(tmp_path, every=every, keep_last=keep_last)
    L.Trainer(max_steps=steps, callbacks=[callback], logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, accelerator="cpu").fit(
        Line(), DataLoader(torch.ones(steps, 1), batch_size=1))
    names = [f"step-{n:08d}.{ext}" for n in kept for ext in ("ckpt", "json")]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert latest_checkpoint(tmp_path).batches == steps


def test_a_resume_with_another_thread_count_says_its_weights_will_differ(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """The count is saved with the checkpoint: resumed with another one (which splits sums differently) the log says
    the weights will not be bit-identical and which `threads=` would make them so; with the same count it is quiet."""
    def fit(steps: int, threads: int, resume: Path | None = None) -> None:
        torch.set_num_threads(threads)
        L.Trainer(max_steps=steps, callbacks=[StageCheckpoint(tmp_path, every=1, keep_last=1)], logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  accelerator="cpu").fit(Line(), DataLoader(torch.ones(4, 1), batch_size=1), ckpt_path=resume,
                                         weights_only=True)

    before = torch.get_num_threads()
    try:
        fit(2, threads=1)
        with caplog.at_level(logging.WARNING, logger="pit.checkpointing"):
            fit(3, threads=2, resume=latest_checkpoint(tmp_path).path)
            assert f"the checkpoint in {tmp_path} {OTHER_THREADS} (2, written with 1)" in caplog.text
            assert "threads=1 resumes it bit-identically" in caplog.text
            caplog.clear()
            fit(4, threads=2, resume=latest_checkpoint(tmp_path).path)
            assert OTHER_THREADS not in caplog.text
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("device, ranks, rank_zero, said", [
    ("cpu", 2, True, "OMP_NUM_THREADS=7 resumes it"),   # Lightning's CPU DDP sets each rank's count over threads=
    ("cpu", 2, False, None),                            # said once, by rank zero
    ("cuda", 1, True, None),                            # the GPU's sums do not depend on the CPU threads
])
def test_the_thread_warning_under_ddp_and_on_gpu(tmp_path: Path, caplog: pytest.LogCaptureFixture, device: str,
                                                 ranks: int, rank_zero: bool, said: str | None) -> None:
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), world_size=ranks,
                              is_global_zero=rank_zero)
    with caplog.at_level(logging.WARNING, logger="pit.checkpointing"):
        checkpointing.warn_if_threads_differ(tmp_path, torch.get_num_threads() + 6, trainer)
        checkpointing.warn_if_threads_differ(tmp_path, None, trainer)   # a checkpoint from before the count was kept
    assert (said in caplog.text) if said else caplog.text == ""
    assert caplog.text.count(OTHER_THREADS) == (1 if said else 0)


@pytest.mark.slow
@pytest.mark.parametrize("stage, batch", [("sft_policy", 27), ("reward", 2), ("rlhf_policy", 3),
                                          ("pit_rl/2_policy", 1)])
def test_killed_inside_a_stage_resumes_bit_identically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       checkpointed_reference: tuple[dict, dict[str, str]], stage: str,
                                                       batch: int) -> None:
    """SFT (killed in its second epoch), reward, RLHF and curriculum-round PPO: same weights as never stopped."""
    real = checkpointing.StageCheckpoint.on_train_batch_end

    def dies(self, trainer, module, *args):
        real(self, trainer, module, *args)
        if self.directory.parent.name == stage.split("/")[-1] and self.batches == batch:
            raise RuntimeError("killed")

    monkeypatch.setattr(checkpointing.StageCheckpoint, "on_train_batch_end", dies)
    with pytest.raises(RuntimeError, match="killed"):
        run(compose_config(CHECKPOINTED, tmp_path))
    monkeypatch.setattr(checkpointing.StageCheckpoint, "on_train_batch_end", real)
    results = run(compose_config(CHECKPOINTED, tmp_path))
    record = results["stages"][stage]
    assert record["status"] == "resumed" and record["resumed_from_batch"] == batch
    reference, hashes = checkpointed_reference
    assert model_hashes(tmp_path / "cache") == hashes
    assert results["eval"]["pairs"] == reference["eval"]["pairs"]
    timings = ("train_seconds", "checkpoint_seconds")
    assert {k: v for k, v in record["metrics"].items() if k not in timings} == \
        {k: v for k, v in reference["stages"][stage]["metrics"].items() if k not in timings}


@pytest.mark.slow
def test_nan_stops_the_stage_and_its_last_good_checkpoint_stays(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN reward at RLHF iteration 3: one clear error, checkpoints 1-2 stay; the rerun resumes from 2."""
    from pit.errors import TrainingDiverged
    from pit.models.reward import RewardModel

    real, calls = RewardModel.score, {"n": 0}

    def nan_at_third_iteration(self, inputs, responses, response_ids=None, batch_size=64):
        scores = real(self, inputs, responses, response_ids, batch_size)
        if len(inputs) == 8:                                      # a PPO batch of rlhf_policy (FAST: 8 prompts)
            calls["n"] += 1
            if calls["n"] == 3:
                return torch.full_like(scores, float("nan"))
        return scores

    monkeypatch.setattr(RewardModel, "score", nan_at_third_iteration)
    with pytest.raises(TrainingDiverged, match="rlhf_policy: non-finite PPO loss at iteration 2"):
        run(compose_config(CHECKPOINTED, tmp_path))
    (directory,) = (tmp_path / "cache" / "rlhf_policy").glob(".ckpt-*")
    assert sorted(p.name for p in directory.glob("*.ckpt")) == ["step-00000001.ckpt", "step-00000002.ckpt"]
    monkeypatch.setattr(RewardModel, "score", real)
    resumed = run(compose_config(CHECKPOINTED, tmp_path))
    assert resumed["stages"]["rlhf_policy"]["status"] == "resumed"
    assert resumed["stages"]["rlhf_policy"]["resumed_from_batch"] == 2
