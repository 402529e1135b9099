import os
import shutil
import tempfile

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


@pytest.fixture(autouse=True)
def _flex_uncompiled_unless_marked(request, monkeypatch):
    """FlexAttention's semantics (score_mods, block masks) are checked uncompiled, through torch's own reference
    of the kernel; the tests marked compiled_flex check the compiled kernel against eager. Every new graph the
    compiled path meets is C++ compiled (5-15 s on a fresh machine), which made up a third of the suite."""
    if request.node.get_closest_marker("compiled_flex") is None:
        from torch.nn.attention.flex_attention import flex_attention

        from attnlab.attention import backends

        monkeypatch.setattr(backends, "_compiled_flex", lambda: flex_attention)


# Trained models go to a temporary cache made for this test run (so the run always exercises training), one
# cache for all of the run's processes: set here at import, in pytest's first process, before pytest-xdist
# starts its workers, which inherit it. A notebook's smoke run (papermill, tests/test_notebooks.py) and its
# nbval check (notebooks/) then train each model once between them, whichever comes first; every write to
# the cache is atomic and unique to its writer (train.train_or_load), so workers may share it.
_OWNS_RUN_CACHE = not os.environ.get("ATTNLAB_TEST_RUN_CACHE")  # False in xdist's workers
if _OWNS_RUN_CACHE:
    os.environ["ATTNLAB_TEST_RUN_CACHE"] = tempfile.mkdtemp(prefix="attnlab-test-models-")
os.environ["ATTNLAB_CACHE"] = os.environ["ATTNLAB_TEST_RUN_CACHE"]
# The two executions of each notebook (the papermill smoke run and nbval) also compute its results once between
# them (attnlab.memo, off by default): set for them only, a test function runs the library without it below.
os.environ["ATTNLAB_RESULTS_CACHE"] = os.path.join(os.environ["ATTNLAB_TEST_RUN_CACHE"], "results")
_NOTEBOOK_EXECUTIONS = "test_notebooks.py"  # and nbval's items, which take no fixtures


@pytest.fixture(autouse=True)
def _results_cache_for_notebook_executions_only(request, monkeypatch):
    if request.node.path.name != _NOTEBOOK_EXECUTIONS:
        monkeypatch.delenv("ATTNLAB_RESULTS_CACHE", raising=False)


def pytest_unconfigure(config):
    if _OWNS_RUN_CACHE:  # the process that made it (xdist's controller, or pytest alone)
        shutil.rmtree(os.environ["ATTNLAB_TEST_RUN_CACHE"], ignore_errors=True)


# The longest files first (make test: pytest-xdist --dist loadfile --no-loadscope-reorder), then the notebooks
# nbval runs, then the many short files, so that neither worker is left alone with a long one at the end.
_LONGEST = ("tests/test_notebooks.py", "tests/test_cluster.py", "notebooks/", "tests/test_parallel.py",
            "tests/test_gpu_presets.py", "tests/test_sweep.py")


def pytest_collection_modifyitems(items):
    # nbval takes the notebooks last to first while the papermill smoke run goes first to last: they meet once,
    # and each notebook's models are trained once, by whichever reaches it first (the shared cache above)
    notebooks = sorted({i.nodeid.split("::")[0] for i in items if i.nodeid.startswith("notebooks/")}, reverse=True)
    order = {n: k for k, n in enumerate(notebooks)}

    def rank(item) -> tuple[int, int]:
        r = next((i for i, p in enumerate(_LONGEST) if item.nodeid.startswith(p)), len(_LONGEST))
        return r, order.get(item.nodeid.split("::")[0], 0)

    items.sort(key=rank)  # stable: within a file, the collection order (a notebook's cells in order)
