import pytest

from dali_snapmix.data import ensure_synthetic_birds


@pytest.fixture(scope="session")
def birds(tmp_path_factory):
    """A small copy of the embedded set: 12 classes, real JPEG files."""
    return ensure_synthetic_birds(cache_dir=tmp_path_factory.mktemp("cache"), train_per_class=5, test_per_class=2, size=(120, 160))
