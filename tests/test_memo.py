"""attnlab.memo: results reused only for the same code and inputs, and only where ATTNLAB_RESULTS_CACHE is set."""

import pandas as pd
import pytest
import torch

from attnlab import memo
from attnlab.evaluate import EvalConfig

CALLS = []


@memo.memoized
def measure(cfg: EvalConfig, data: torch.Tensor, progress: bool = True) -> pd.DataFrame:
    CALLS.append(1)
    return pd.DataFrame({"batch": [cfg.batch_size], "sum": [float(data.sum())]})


@pytest.fixture(autouse=True)
def _fresh():
    CALLS.clear()


def test_off_unless_the_variable_names_a_folder(monkeypatch):
    monkeypatch.delenv(memo.ENV, raising=False)
    measure(EvalConfig(), torch.ones(3))
    measure(EvalConfig(), torch.ones(3))
    assert len(CALLS) == 2


def test_same_inputs_read_back_other_inputs_computed(tmp_path, monkeypatch):
    monkeypatch.setenv(memo.ENV, str(tmp_path))
    first = measure(EvalConfig(), torch.ones(3))
    again = measure(EvalConfig(), torch.ones(3), progress=False)  # a progress bar is not an input
    pd.testing.assert_frame_equal(first, again)
    assert len(CALLS) == 1 and len(list(tmp_path.glob("*.pkl"))) == 1
    measure(EvalConfig(batch_size=3), torch.ones(3))  # another config
    measure(EvalConfig(), torch.tensor([1.0, 1.0, 2.0]))  # other data of the same shape
    assert len(CALLS) == 3
    assert measure(EvalConfig(), torch.tensor([1.0, 1.0, 2.0]))["sum"].item() == 4.0 and len(CALLS) == 3


def test_a_code_change_computes_afresh(tmp_path, monkeypatch):
    monkeypatch.setenv(memo.ENV, str(tmp_path))
    measure(EvalConfig(), torch.ones(3))
    monkeypatch.setattr(memo, "source_digest", lambda: "another version of the library")
    measure(EvalConfig(), torch.ones(3))
    assert len(CALLS) == 2


def test_the_digest_covers_every_source_file():
    from pathlib import Path

    root = Path(memo.__file__).parent
    assert len(memo.source_digest()) == 64 and len(list(root.rglob("*.py"))) > 50


def test_an_input_without_a_fingerprint_is_an_error():
    with pytest.raises(TypeError, match="no fingerprint for a object"):
        memo.fingerprint(object())


def test_a_file_as_the_folder_is_one_line_before_any_work(tmp_path, monkeypatch):
    from attnlab.errors import ConfigError

    (tmp_path / "f").write_text("")
    monkeypatch.setenv(memo.ENV, str(tmp_path / "f"))
    with pytest.raises(ConfigError, match=r"^ATTNLAB_RESULTS_CACHE = '.*/f': not a folder$"):
        measure(EvalConfig(), torch.ones(3))
    assert not CALLS
