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


# The longest files first (make test: pytest-xdist --dist loadfile --no-loadscope-reorder), then the notebooks
# nbval runs, then the many short files, so that neither worker is left alone with a long one at the end.
_LONGEST = ("tests/test_notebooks.py", "tests/test_cluster.py", "notebooks/", "tests/test_parallel.py",
            "tests/test_gpu_presets.py", "tests/test_sweep.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        return next((i for i, p in enumerate(_LONGEST) if item.nodeid.startswith(p)), len(_LONGEST))

    items.sort(key=rank)  # stable: within a rank, the collection order
