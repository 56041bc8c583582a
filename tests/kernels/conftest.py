import pytest
import torch
from kernel_helpers import SEED


@pytest.fixture
def g():
    return torch.Generator().manual_seed(SEED)

