import os
import shutil
import tempfile

import pytest
import torch

os.environ.setdefault("ATTNLAB_AUTO_PROFILE", "smoke")
# pytest-xdist (make test: 2 workers, one test file each): the cores are shared among the workers
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _workers)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


NOTEBOOK_CACHE = "ATTNLAB_TEST_NOTEBOOK_CACHE"


def pytest_configure(config):
    """One model cache for every execution of a notebook in this test run (xdist workers inherit it): the
    papermill smoke run and nbval's run of the same notebook train each model once between them, and a
    notebook that reuses 02's models (06-08) finds them whichever worker ran 02."""
    if not hasattr(config, "workerinput") and NOTEBOOK_CACHE not in os.environ:
        config._attnlab_notebook_cache = os.environ[NOTEBOOK_CACHE] = tempfile.mkdtemp(prefix="attnlab-nb-cache-")


def pytest_unconfigure(config):
    path = getattr(config, "_attnlab_notebook_cache", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop(NOTEBOOK_CACHE, None)


@pytest.fixture(autouse=True, scope="session")
def _isolated_model_cache(tmp_path_factory):
    """Trained-model cache in a temporary folder, so tests always exercise training."""
    os.environ["ATTNLAB_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """nbval's cells run in a kernel that starts with the first one: it gets the notebooks' shared cache."""
    if type(item).__name__ == "IPyNbCell" and os.environ.get(NOTEBOOK_CACHE):
        item.config._attnlab_unit_cache = os.environ.get("ATTNLAB_CACHE")
        os.environ["ATTNLAB_CACHE"] = os.environ[NOTEBOOK_CACHE]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    unit = getattr(item.config, "_attnlab_unit_cache", None)
    if unit is not None and type(item).__name__ == "IPyNbCell":
        os.environ["ATTNLAB_CACHE"] = unit
