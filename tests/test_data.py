"""Corpora: stdlib default without site-packages, file specs, clear errors, batching."""

import pytest
import torch

from attnlab.config import validate
from attnlab.data import DataConfig, check_sizes, decode, encode, load_corpus, random_batch, stdlib_files
from attnlab.errors import ConfigError


def test_stdlib_leaves_out_site_packages_and_is_deterministic():
    root, files = stdlib_files()
    assert files and all("site-packages" not in f.parts for f in files)
    assert files == sorted(files)
    a = load_corpus(DataConfig(max_bytes=3_000_000))
    load_corpus.cache_clear()
    b = load_corpus(DataConfig(max_bytes=3_000_000))
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert a.valid.numel() > 0 and a.test.numel() > 0 and a.train.numel() > a.test.numel()
    assert "import" in decode(a.train[:200000])


def test_file_corpus_single_file_and_folder(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("hello world " * 1000)
    c = load_corpus(DataConfig(corpus=f"file:{f}"))
    assert c.train.numel() + c.valid.numel() + c.test.numel() == 12000
    d = tmp_path / "many"
    d.mkdir()
    for i in range(40):
        (d / f"{i}.txt").write_text(f"file {i} " * 50)
    c = load_corpus(DataConfig(corpus=f"file:{d}"))
    assert c.n_files == 40 and c.valid.numel() > 0 and c.test.numel() > 0


@pytest.mark.parametrize(("spec", "match"), [
    ("file:/no/such/path", "no such file or folder"),
    ("s3://bucket", "unknown corpus; valid choices: stdlib, file:PATH, hf:NAME"),
])
def test_bad_corpus_specs(spec, match):
    with pytest.raises(ConfigError, match=match):  # refused when the config is built, before any loading
        load_corpus(validate(DataConfig, {"corpus": spec}))


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_corpus(validate(DataConfig, {"corpus": f"file:{tmp_path / 'empty.txt'}"}))


def test_too_small_for_longest_evaluation(tmp_path):
    f = tmp_path / "small.txt"
    f.write_text("x" * 5000)
    c = load_corpus(DataConfig(corpus=f"file:{f}"))
    with pytest.raises(ConfigError, match="fewer than the longest evaluation length"):
        check_sizes(c, 128, 2048)


def test_hf_offline_is_a_clear_error_or_skipped():
    pytest.importorskip("datasets", reason="optional extra 'hf' not installed")
    try:
        load_corpus(DataConfig(corpus="hf:wikitext/wikitext-2-raw-v1", max_bytes=100000))
    except ConfigError as e:
        assert "hf:wikitext" in str(e)
        pytest.skip(f"offline: {e}")


def test_random_batch_shifts_targets():
    data = encode(bytes(range(256)) * 4)
    x, y = random_batch(data, 3, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (3, 10) and x.dtype == torch.long
    assert torch.equal((x[:, 1:]), y[:, :-1])
