"""Fixtures of every test: one torch intra-op thread per test.

The tensors in these tests are tiny; on a small shared CPU extra OpenMP threads only spin
against each other (10–50× slower). The previous setting is restored afterwards.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
