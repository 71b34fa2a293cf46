"""Shared fixtures: the tiny random model pair, loaded once per test session."""

import pytest
import torch

from lsp_env import models


@pytest.fixture(scope="session")
def tiny_pair():
    """The frozen ``(model, tokenizer)`` of ``model="tiny-random"``.

    ``load_reference`` is cached, so envs made with ``model="tiny-random"`` share this very pair.
    """
    return models.load_reference("tiny-random")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_pair):
    return tiny_pair[1]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module (OMP_NUM_THREADS=1 in its subprocesses too): compared runs then do the same
    float arithmetic, and on a busy 2-core machine OpenMP spin-waits make the tiny model ~30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
