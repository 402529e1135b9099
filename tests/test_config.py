"""Config round trip, presets, overrides and every bad-input case (one clear line, exit 2)."""

import subprocess
import sys

import pytest

from attnlab import config as C
from attnlab.config import ConfigError
from attnlab.data import DataConfig  # noqa: F401
from attnlab.evaluate import EvalConfig
from attnlab.experiments import NOTEBOOKS, load
from attnlab.model import ModelConfig


def test_round_trip_every_notebook_and_profile():
    for name in NOTEBOOKS.names():
        for profile in C.PROFILES:
            cfg = load(name, profile)
            again = C.validate(type(cfg), C.to_dict(cfg))
            assert again == cfg


def test_configs_are_frozen():
    cfg = load("01", "smoke")
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        cfg.max_distance = 3  # type: ignore[misc]


def test_precedence_defaults_preset_override():
    smoke = load("01", "smoke")
    assert smoke.max_distance == C.load_presets("01_positional_encodings")["smoke"]["max_distance"]
    assert load("01", "smoke", {"max_distance": 64}).max_distance == 64


def test_auto_profile_resolution(monkeypatch):
    monkeypatch.delenv("ATTNLAB_AUTO_PROFILE", raising=False)
    import torch

    assert C.resolve_profile("auto") == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("ATTNLAB_AUTO_PROFILE", "smoke")
    assert C.resolve_profile("auto") == "smoke"


@pytest.mark.parametrize(("call", "pattern"), [
    (lambda: load("99_nope", "smoke"), r"notebook = '99_nope': unknown; valid choices: 01_positional_encodings"),
    (lambda: load("01", "fast"), r"profile = 'fast': unknown; valid choices: smoke, cpu, gpu, auto"),
    (lambda: load("01", "smoke", {"max_dist": 3}), r"max_dist: unknown parameter; valid choices: .*max_distance"),
    (lambda: load("01", "smoke", {"max_distance": "far"}), r"max_distance = 'far': expected an integer"),
    (lambda: load("01", "smoke", {"max_distance": 2.5}), r"max_distance = 2.5: expected an integer"),
    (lambda: load("01", "smoke", {"max_distance": 1}), r"max_distance = 1: must be >= 8"),
    (lambda: load("01", "smoke", {"seed": True}), r"seed = True: expected a number"),
    (lambda: load("02", "smoke", {"train.lr": "fast"}), r"train.lr = 'fast': expected a number"),
    (lambda: load("02", "smoke", {"model.attention": "sdpaa"}),
     r"model.attention.name = 'sdpaa': unknown; valid choices: .*\beager, .*\bflex, .*\bsdpa\b"),
    (lambda: load("02", "smoke", {"model.attention.window": 8}),
     r"model.attention.window: unknown parameter; valid choices: none \(it takes no parameters\)"),
    (lambda: load("02", "smoke", {"encodings": ["alibi", {"name": "t5", "buckets": 4}]}),
     r"encodings\[1\].buckets: unknown parameter; valid choices: max_distance, num_buckets"),
    (lambda: load("05", "smoke", {"variants": [{"name": "local", "window": 0}]}),
     r"variants\[0\].window = 0: must be >= 1"),
])
def test_bad_input_raises_one_clear_line(call, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        call()
    assert "\n" not in str(e.value)


def test_component_validation():
    with pytest.raises(ConfigError, match="^d_model = 100: must be divisible by n_heads = 3"):
        C.validate(ModelConfig, {"d_model": 100, "n_heads": 3})
    with pytest.raises(ConfigError, match="02_lm_length_extrapolation: model.pad_id = 300: must be a token id below"):
        load("02", "smoke", {"model.pad_id": 300})
    with pytest.raises(ConfigError, match="pad_id = -2: must be >= -1"):
        C.validate(ModelConfig, {"pad_id": -2})
    with pytest.raises(ConfigError, match=r"lengths\[1\] = 'x': expected an integer"):
        C.validate(EvalConfig, {"lengths": [128, "x"]})
    with pytest.raises(ConfigError, match=r"lengths\[0\] = 1: must be >= 2"):
        C.validate(EvalConfig, {"lengths": [1]})


def test_parse_overrides_reads_yaml_scalars_and_every_number_notation():
    assert C.parse_overrides(["a=3", "b=0.5", "c=true", "d=[1, 2]", "e=rope"]) == \
        {"a": 3, "b": 0.5, "c": True, "d": [1, 2], "e": "rope"}
    assert C.parse_overrides(["lr=3e-4", "x=1E-3", "y=2.5e+6", "z=-1e2", "w=[1e-3, 3e-4]"]) == \
        {"lr": 3e-4, "x": 1e-3, "y": 2.5e6, "z": -100.0, "w": [1e-3, 3e-4]}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        C.parse_overrides(["steps"])


@pytest.mark.parametrize("text", ["3e-4", "3E-4", "0.0003", "3.0e-04", "+3e-4"])
def test_learning_rates_in_any_notation_from_set_presets_and_notebooks(text, tmp_path, monkeypatch):
    """--set (YAML 1.1 reads 3e-4 as a string), a preset file, and a notebook's overrides dict."""
    assert load("02", "smoke", C.parse_overrides([f"train.lr={text}"])).train.lr == pytest.approx(3e-4)
    assert load("02", "smoke", {"train.lr": text}).train.lr == pytest.approx(3e-4)
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "02_lm_length_extrapolation.yaml").write_text(f"smoke:\n  train: {{lr: {text}}}\n")
    monkeypatch.setenv("ATTNLAB_NOTEBOOKS", str(tmp_path))
    assert load("02", "smoke").train.lr == pytest.approx(3e-4)


def test_nest_and_merge_components():
    assert C.nest({"train.steps": 3, "train.lr": 0.1, "seed": 1}) == {"train": {"steps": 3, "lr": 0.1}, "seed": 1}
    # a component given by name, then a parameter of it: {name, parameter}
    assert C.nest({"model.attention": "local", "model.attention.window": 8}) == \
        {"model": {"attention": {"name": "local", "window": 8}}}
    assert C.merge({"attention": "local"}, {"attention": {"window": 8}}) == {"attention": {"name": "local", "window": 8}}


def test_a_partial_nested_override_keeps_the_notebooks_own_defaults():
    cfg = load("03", "gpu", {"model.d_ff": 128})
    assert cfg.model.d_ff == 128 and cfg.model.n_layers == 5  # notebook 03's default, not ModelConfig's 4
    cfg = load("05", "smoke", {"pe.name": "rope"})
    assert cfg.pe.name == "rope"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "attnlab", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "needle"), [
    (["run", "--profile", "turbo", "--only", "01"], "profile = 'turbo': unknown; valid choices"),
    (["run", "--profile", "smoke", "--only", "zz"], "notebook = 'zz': unknown; valid choices"),
    (["run", "--profile", "smoke", "--only", "01", "--set", "bogus=1"], "--set bogus: unknown parameter"),
    (["run", "--profile", "smoke", "--only", "01", "--set", "max_distance=-4"], "max_distance = -4: must be >= 8"),
    (["run", "--profile", "smoke", "--only", "01", "--set", "seed=abc"], "seed = 'abc': expected an integer"),
    (["run", "--profile", "smoke", "--only", "01", "--jobs", "0"], "--jobs = 0: must be >= 1"),
    (["report", "/nonexistent/run"], "is not a run folder"),
])
def test_cli_bad_input_exit_2_without_traceback(args, needle, tmp_path):
    r = _cli(*args, *(["--out", str(tmp_path / "run")] if args[0] == "run" else []))
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing started


def test_cli_list_shows_parameters():
    r = _cli("list")
    assert r.returncode == 0
    assert "01_positional_encodings" in r.stdout and "max_distance = 256" in r.stdout and "smoke=128" in r.stdout
    # every registered component, with its parameters and the paper its docstring names
    assert "    shaw(clip=16, values=False)  Shaw et al. 2018" in r.stdout
    assert "    combiner_axial(row=16, summary=wsum)  Combiner-Axial (Ren et al. 2021)" in r.stdout
