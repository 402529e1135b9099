"""Training loop (schedule, NaN guard, resume after kill -9, cache) and evaluation protocols."""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch import nn

from attnlab.config import replace
from attnlab.data import DataConfig
from attnlab.evaluate import by_length, nonoverlapping, sliding
from attnlab.model import ModelConfig, build_model
from attnlab.train import TrainConfig, TrainingDiverged, TrainStep, lm_batches, lr_at, train, train_or_load

MODEL = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)
DATA = torch.randint(0, 256, (20000,), generator=torch.Generator().manual_seed(0)).to(torch.uint8)


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 99))


def test_training_lowers_the_loss():
    m = build_model(MODEL, "alibi")
    text = torch.tensor(list(b"abcabcabcabd" * 2000), dtype=torch.uint8)
    r = train(m, lm_batches(text, 8, 32), TrainConfig(steps=60, warmup=5, lr=3e-3), progress=False)
    assert r.status == "completed" and r.steps == 60
    assert sum(r.losses[-5:]) / 5 < 0.5 * sum(r.losses[:5]) / 5
    assert r.tokens_per_s > 0


def test_non_finite_loss_stops_with_a_clear_error():
    m = build_model(MODEL, "none")
    m.loss = lambda *a, **k: torch.tensor(float("nan"), requires_grad=True)
    with pytest.raises(TrainingDiverged, match="non-finite loss .* at step 0"):
        train(m, lm_batches(DATA, 2, 16), TrainConfig(steps=5), progress=False)


def test_compiled_step_equals_the_eager_step(tmp_path):
    """train.compile compiles the loss and the update (clipping + AdamW with a tensor learning rate): the
    weights after a warm-up + cosine schedule match eager training, the schedule does not recompile, and
    its checkpoint resumes eagerly."""
    cfg = TrainConfig(steps=8, warmup=3, lr=3e-3, seed=1)

    def fresh():
        torch.manual_seed(0)
        return build_model(MODEL, "rope")

    eager, compiled = fresh(), fresh()
    train(eager, lm_batches(DATA, 4, 16), cfg, progress=False)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
        r = train(compiled, lm_batches(DATA, 4, 16), replace(cfg, compile=True), progress=False,
                  checkpoint=tmp_path / "ck.pt")
    assert r.status == "completed" and len(set(r.losses)) == cfg.steps
    for (k, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    resumed = train(fresh(), lm_batches(DATA, 4, 16), replace(cfg, steps=9), progress=False,
                    checkpoint=tmp_path / "ck.pt")
    assert resumed.resumed_from == 8 and resumed.steps == 9


def test_step_raises_before_any_update_on_a_non_finite_loss():
    m = build_model(MODEL, "none")
    before = [p.detach().clone() for p in m.parameters()]
    opt = torch.optim.AdamW(m.parameters(), lr=1.0)
    step = TrainStep(lambda *a: torch.tensor(float("inf"), requires_grad=True), list(m.parameters()), opt, 1.0)
    with pytest.raises(TrainingDiverged, match="non-finite loss"):
        step(torch.zeros(1), lr=0.5)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert opt.param_groups[0]["lr"] == 0.5


def test_resume_equals_uninterrupted(tmp_path):
    cfg = TrainConfig(steps=20, warmup=2, checkpoint_every=5, seed=3)

    def fresh():
        torch.manual_seed(0)
        return build_model(MODEL, {"name": "randomized", "base": "rope", "max_len": 256})

    full = fresh()
    train(full, lm_batches(DATA, 4, 16), cfg, progress=False)

    class Crash(Exception):
        pass

    base = lm_batches(DATA, 4, 16)

    def crashing(step, gen):
        if step == 13:
            raise Crash
        return base(step, gen)

    ck = tmp_path / "ck.pt"
    with pytest.raises(Crash):
        train(fresh(), crashing, cfg, checkpoint=ck, progress=False)
    assert ck.exists()
    resumed = fresh()
    r = train(resumed, base, cfg, checkpoint=ck, progress=False)
    assert r.resumed_from == 10
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


SCRIPT = textwrap.dedent("""
    import sys, torch
    from attnlab.model import ModelConfig, build_model
    from attnlab.train import TrainConfig, lm_batches, train
    torch.set_num_threads(1)
    data = torch.randint(0, 256, (20000,), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    torch.manual_seed(0)
    m = build_model(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64), "alibi")
    cfg = TrainConfig(steps=int(sys.argv[3]), warmup=2, checkpoint_every=10, seed=1)
    train(m, lm_batches(data, 4, 32), cfg, checkpoint=__import__("pathlib").Path(sys.argv[1]), progress=False)
    torch.save(m.state_dict(), sys.argv[2])
""")


def test_kill_9_then_restart_continues_from_checkpoint(tmp_path):
    script = tmp_path / "t.py"
    script.write_text(SCRIPT)
    steps = "400"
    ref = subprocess.run([sys.executable, str(script), str(tmp_path / "ref.pt"), str(tmp_path / "ref_out.pt"), steps],
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    ck = tmp_path / "ck.pt"
    p = subprocess.Popen([sys.executable, str(script), str(ck), str(tmp_path / "out.pt"), steps])
    deadline = time.time() + 120
    while not ck.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert ck.exists(), "no checkpoint was written before the kill"
    step_at_kill = torch.load(ck, weights_only=True)["step"]
    assert 0 < step_at_kill < int(steps), step_at_kill
    again = subprocess.run([sys.executable, str(script), str(ck), str(tmp_path / "out.pt"), steps],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    a, b = torch.load(tmp_path / "ref_out.pt"), torch.load(tmp_path / "out.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k, atol=1e-5, rtol=1e-5)


def test_model_cache_reuses_trained_model():
    cfg = TrainConfig(steps=5, warmup=1, seed=7)
    torch.manual_seed(0)
    m1, r1 = train_or_load(build_model(MODEL, "t5"), lm_batches(DATA, 2, 16), cfg, MODEL,
                           "t5", DataConfig(), progress=False)
    torch.manual_seed(1)
    m2, r2 = train_or_load(build_model(MODEL, "t5"), lm_batches(DATA, 2, 16), cfg, MODEL,
                           "t5", DataConfig(), progress=False)
    assert r1.status == "completed" and r2.status == "cached"
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


class Uniform(nn.Module):
    """Predicts every byte with probability 1/256: exactly 8 bits per byte."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x, positions=None, **_):
        return torch.zeros(*x.shape, 256) + self.w


def test_uniform_model_scores_8_bits_per_byte_in_both_protocols():
    u = Uniform()
    r = nonoverlapping(u, DATA, 64, 1024)
    assert r["bpb"] == pytest.approx(8.0, rel=1e-5) and r["tokens"] == 1024 and r["ppl"] == pytest.approx(256.0, rel=1e-4)
    s = sliding(u, DATA, 64, 16, 256)
    assert s["bpb"] == pytest.approx(8.0, rel=1e-5) and s["tokens"] == 256 and s["stride"] == 16


def test_sliding_gives_context_nonoverlapping_does_not():
    # a model that is right only when it has seen >= 8 tokens of context (copies token t-8)
    data = torch.arange(4000) % 8
    data = data.to(torch.uint8)

    class Copy8(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x, positions=None, **_):
            out = torch.zeros(*x.shape, 256)
            out[:, 7:, :].scatter_(2, x[:, :-7, None], 20.0)  # next token = token 7 back
            return out

    m = Copy8()
    no = nonoverlapping(m, data, 16, 1600)
    sl = sliding(m, data, 16, 8, 800)
    assert sl["bpb"] < 0.01 < no["bpb"]


def test_lengths_beyond_the_table_are_recorded_as_skipped():
    df = by_length(Uniform(), DATA, [32, 64], 256, max_position=32)
    row = df[df["length"] == 64].iloc[0]
    assert math.isnan(row["bpb"]) and "skipped" in row["note"]


def test_every_length_and_protocol_scores_the_same_tokens():
    seen = {}

    class Spy(Uniform):
        def forward(self, x, positions=None, **_):
            seen.setdefault(x.shape[1], []).append(x)
            return super().forward(x)

    df = by_length(Spy(), DATA, [16, 32, 64], 512, sliding_stride=8, sliding_tokens=128)
    non = df[df["protocol"] == "nonoverlapping"]
    assert set(non["tokens"]) == {512}  # 8 segments of 64 tokens, whatever the window length
    sl = df[df["protocol"] == "sliding"]
    assert set(sl["tokens"]) == {128}
    # the tokens scored by non-overlapping windows are the same bytes at 16 and at 64
    w16 = torch.cat(seen[16][:1])[:, 1:].reshape(-1)[:64]
    w64 = torch.cat(seen[64][:1])[:1, 1:].reshape(-1)
    assert torch.equal(w16[:15], w64[:15])


def test_sliding_context_is_at_least_length_minus_stride():
    # scored tokens are the last `stride` of each window; windows lie inside the data
    r = sliding(Uniform(), DATA, 64, 16, 256, segment=128)
    assert r["tokens"] == 256


def test_masked_accuracy_per_token_and_exact():
    from attnlab.evaluate import masked_accuracy

    class Echo(nn.Module):  # predicts the input token at every position
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x, positions=None, **_):
            return torch.nn.functional.one_hot(x, 4).float()

    x = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])
    y = torch.tensor([[0, 1, 0, 3], [0, 1, 2, 3]])
    mask = torch.tensor([[False, True, True, True], [False, True, True, True]])
    assert masked_accuracy(Echo(), x, y, mask, 4) == pytest.approx(5 / 6)
    assert masked_accuracy(Echo(), x, y, mask, 4, exact=True) == pytest.approx(0.5)


def test_fused_adamw_equals_the_reference_update():
    """make_optimizer's AdamW, default and fused: their steps equal the single-tensor reference
    implementation with the same groups (decay on matrices only)."""
    from attnlab.train import make_optimizer

    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=4, d_ff=64)
    models = [build_model(cfg, "rope") for _ in range(3)]
    models[1].load_state_dict(models[0].state_dict())
    models[2].load_state_dict(models[0].state_dict())
    fused = make_optimizer(models[0], TrainConfig(), fused=True)
    default = make_optimizer(models[2], TrainConfig())
    assert fused.defaults["fused"] and not default.defaults["fused"]
    ref = torch.optim.AdamW([{"params": [p for p in models[1].parameters() if p.dim() >= 2], "weight_decay": 0.1},
                             {"params": [p for p in models[1].parameters() if p.dim() < 2], "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), foreach=False)
    x = torch.randint(0, 256, (2, 16))
    for _ in range(5):
        for m, opt in zip(models, (fused, ref, default)):
            opt.zero_grad()
            m.loss(x, x).backward()
            opt.step()
    for a, b, c in zip(models[0].parameters(), models[1].parameters(), models[2].parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(c, b, atol=1e-6, rtol=1e-5)
