import numpy as np
import pytest
from mix_helpers import SEED


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)
