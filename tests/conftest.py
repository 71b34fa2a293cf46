"""Shared fixtures: the tiny random model pair, loaded once per test session."""

import pytest

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
