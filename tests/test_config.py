"""Config round trip, presets, overrides and every bad-input case (one clear line, exit 2)."""

import subprocess
import sys

import pytest

from attnlab import config as C
from attnlab.config import ConfigError


def test_round_trip_every_notebook_and_profile():
    C._ensure_notebooks_registered()
    for name in C.NOTEBOOKS.names():
        for profile in C.PROFILES:
            cfg = C.load(name, profile)
            again = C.from_dict(type(cfg), C.to_dict(cfg))
            assert again == cfg


def test_configs_are_frozen():
    cfg = C.load("01", "smoke")
    with pytest.raises(AttributeError):
        cfg.max_distance = 3  # type: ignore[misc]


def test_precedence_defaults_preset_override():
    smoke = C.load("01", "smoke")
    assert smoke.max_distance == C.load_presets("01_positional_encodings")["smoke"]["max_distance"]
    assert C.load("01", "smoke", {"max_distance": 64}).max_distance == 64


def test_auto_profile_resolution(monkeypatch):
    monkeypatch.delenv("ATTNLAB_AUTO_PROFILE", raising=False)
    import torch

    assert C.resolve_profile("auto") == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("ATTNLAB_AUTO_PROFILE", "smoke")
    assert C.resolve_profile("auto") == "smoke"


@pytest.mark.parametrize(("call", "pattern"), [
    (lambda: C.load("99_nope", "smoke"), r"notebook = '99_nope': unknown; valid choices: 01_positional_encodings"),
    (lambda: C.load("01", "fast"), r"profile = 'fast': unknown; valid choices: smoke, cpu, gpu, auto"),
    (lambda: C.load("01", "smoke", {"max_dist": 3}), r"max_dist: unknown parameter; valid choices: .*max_distance"),
    (lambda: C.load("01", "smoke", {"max_distance": "far"}), r"max_distance = 'far': expected an integer"),
    (lambda: C.load("01", "smoke", {"max_distance": 2.5}), r"max_distance = 2.5: expected an integer"),
    (lambda: C.load("01", "smoke", {"max_distance": 1}), r"max_distance = 1: must be >= 8"),
    (lambda: C.load("01", "smoke", {"seed": True}), r"seed = True: expected an integer"),
])
def test_bad_input_raises_one_clear_line(call, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        call()
    assert "\n" not in str(e.value)


def test_component_validation():
    with pytest.raises(ConfigError, match="model.d_model = 100: must be divisible by model.n_heads = 3"):
        C.from_dict(C.ModelConfig, {"d_model": 100, "n_heads": 3})
    with pytest.raises(ConfigError, match="model.pad_id = 300: must be a token id below model.vocab_size = 256"):
        C.from_dict(C.ModelConfig, {"pad_id": 300})
    with pytest.raises(ConfigError, match="pad_id = -2: must be >= -1"):
        C.from_dict(C.ModelConfig, {"pad_id": -2})
    with pytest.raises(ConfigError, match="name = 'alibbi': unknown; valid choices: .*alibi"):
        C.from_dict(C.PEConfig, {"name": "alibbi"})
    with pytest.raises(ConfigError, match="kerple_variant = 'cubic': invalid; valid choices: log, power"):
        C.from_dict(C.PEConfig, {"kerple_variant": "cubic"})
    with pytest.raises(ConfigError, match=r"lengths\[1\] = 'x': expected an integer"):
        C.from_dict(C.EvalConfig, {"lengths": [128, "x"]})
    with pytest.raises(ConfigError, match="lengths = 1: must be >= 2"):
        C.from_dict(C.EvalConfig, {"lengths": [1]})


def test_parse_overrides_reads_yaml_scalars():
    assert C.parse_overrides(["a=3", "b=0.5", "c=true", "d=[1, 2]", "e=rope"]) == \
        {"a": 3, "b": 0.5, "c": True, "d": [1, 2], "e": "rope"}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        C.parse_overrides(["steps"])


def test_nest():
    assert C.nest({"train.steps": 3, "train.lr": 0.1, "seed": 1}) == {"train": {"steps": 3, "lr": 0.1}, "seed": 1}


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
