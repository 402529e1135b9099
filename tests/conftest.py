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


@pytest.fixture(scope="session")
def kernels_built():
    """attnlab's compiled CPU kernels, built once per machine; skipped only where they cannot be: no C++
    compiler, or ATTNLAB_KERNELS=0."""
    from attnlab import kernels

    if not kernels.enabled():
        pytest.skip("ATTNLAB_KERNELS=0: attnlab's compiled kernels are off")
    if kernels.compiler() is None:
        pytest.skip("no C++ compiler: attnlab's compiled kernels cannot be built here")
    for stem in kernels.STEMS:
        assert kernels.available(stem), f"attnlab's compiled kernel {stem!r} failed to build (see the warning)"
