import os

import pytest
import torch

os.environ.setdefault("ATTNLAB_AUTO_PROFILE", "smoke")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
