import os

import pytest
import torch

os.environ.setdefault("ATTNLAB_AUTO_PROFILE", "smoke")
# pytest-xdist (make test: 2 workers, one test file each): the cores are shared among the workers
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_threads = max(1, min(2, (os.cpu_count() or 1) // _workers))
torch.set_num_threads(_threads)
# and in every process a test starts (papermill and nbval kernels, torchrun, submitit jobs): two workers' kernels
# with two OpenMP threads each on two cores run several times slower than with one each
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(_threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _isolated_model_cache(tmp_path_factory):
    """Trained-model cache in a temporary folder, so tests always exercise training."""
    os.environ["ATTNLAB_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))
    yield
