"""A dry run of every gpu preset on this CPU: each model a notebook trains at profile gpu is built at full
size on the meta device and stepped once (forward, loss, backward, the longest evaluation forward), with
its training memory estimated against an 80 GB GPU -- so a first GPU run does not fail on a shape."""

import pytest

from attnlab.bench.dryrun import GPU_BYTES, training_bytes
from attnlab.experiments import NOTEBOOKS, dry_run
from attnlab.model import ModelConfig

TRAINING = {"02_lm_length_extrapolation", "03_algorithmic_length_generalization", "05_efficient_attention_listops",
            "06_implicit_position", "07_attention_scaling_and_rope_extension", "08_long_context_retrieval"}


@pytest.fixture(scope="module")
def rows():
    return dry_run("gpu")


def test_every_training_notebook_is_planned(rows):
    assert {r["notebook"] for r in rows} == TRAINING
    assert TRAINING <= set(NOTEBOOKS.names())


def test_every_gpu_model_steps_and_fits_80gb(rows):
    for r in rows:
        assert r["params_with_grad"] > 0 and r["params"] > 0, r
        assert r["fits_80gb"], f"{r['notebook']} {r['model']}: {r['train_gb']:.1f} GB estimated"
        assert r["ran_on"] in ("meta", "cpu, batch 1")
    assert sum(r["ran_on"] == "meta" for r in rows) >= 0.9 * len(rows)  # nearly all without any compute


def test_the_estimate_scales_as_its_formula():
    sdpa, eager = ModelConfig(d_model=64, n_layers=2), ModelConfig(d_model=64, n_layers=2, attention="eager")
    one, two = training_bytes(sdpa, 0, 1, 512, False), training_bytes(sdpa, 0, 2, 512, False)
    assert two == pytest.approx(2 * one)
    assert training_bytes(sdpa, 0, 1, 1024, False) == pytest.approx(2 * one)  # fused attention: linear in T
    e1, e2 = training_bytes(eager, 0, 1, 512, False), training_bytes(eager, 0, 1, 1024, False)
    assert 2 * e1 < e2 < 4 * e1  # materialized scores: the T^2 term
    assert training_bytes(sdpa, 10**9, 1, 1, False) >= 16e9 and GPU_BYTES == 80e9
