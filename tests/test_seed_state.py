"""labkit.callbacks.seed.EpochSeed's checkpoint state: a mid-epoch resume continues every random generator where the
interrupted run left it (python, numpy, torch's CPU one, and the GPUs' when the run used CUDA)."""
from __future__ import annotations

import logging
import random

import numpy as np
import torch

from labkit.callbacks.seed import EpochSeed


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_the_generators_continue_where_the_checkpoint_left_them():
    seed = EpochSeed(3)
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    _draws()
    state = seed.state_dict()
    expected = _draws()
    _draws()  # the run goes on, and is killed
    seed.load_state_dict(state)
    assert _draws() == expected
    assert state["cuda"] == []  # this process never used CUDA: not asked (it would start CUDA on a GPU machine)


def test_the_gpus_generators_are_saved_and_restored(monkeypatch):
    gpus = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3, 4], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(states))
    state = EpochSeed(0).state_dict()
    assert [s.tolist() for s in state["cuda"]] == [[1, 2], [3, 4]]
    gpus[0][0] = 9  # a copy was saved, not the live tensors
    EpochSeed(0).load_state_dict(state)
    assert [[s.tolist() for s in r] for r in restored] == [[[1, 2], [3, 4]]]


def test_another_number_of_gpus_says_the_resume_is_not_bit_for_bit(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(2, dtype=torch.uint8)] * 2)
    state = EpochSeed(0).state_dict()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: (_ for _ in ()).throw(AssertionError("set")))
    with caplog.at_level(logging.WARNING, logger="labkit"):
        EpochSeed(0).load_state_dict(state)
    assert "random generators of 2 GPU(s) and this process sees 0" in caplog.text


def test_a_checkpoint_from_before_the_gpu_generators_loads():
    state = EpochSeed(0).state_dict()
    del state["cuda"]
    expected = _draws()
    EpochSeed(0).load_state_dict(state)
    assert _draws() == expected
