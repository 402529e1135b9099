import os

import pytest
import torch

os.environ.setdefault("ATTNLAB_AUTO_PROFILE", "smoke")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _isolated_model_cache(tmp_path_factory):
    """Trained-model cache in a temporary folder, so tests always exercise training."""
    os.environ["ATTNLAB_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))
    yield
