"""Data-parallel training (DistributedDataParallel, gloo, 2 processes) and ring self-attention, on this CPU."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from attnlab.attention import eager_attention
from attnlab.io import read_json
from attnlab.model import ModelConfig, Transformer
from attnlab.parallel import DistributedRunFailed, launch, ring_attention, world
from attnlab.train import TrainConfig, cache_key, cache_root, train_or_load

ROOT = Path(__file__).resolve().parents[1]


def _batches(step, gen):
    x = torch.randint(0, 64, (8, 16), generator=gen)  # the global batch: 8 rows
    return x, x.roll(1, 1), None


def _masked_batches(step, gen):
    x, y, _ = _batches(step, gen)
    mask = torch.rand(x.shape, generator=gen) < torch.linspace(0.1, 0.9, 8)[:, None]  # rows differ in tokens
    return x, y, mask


def _model():
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2), "rope")


CFG = TrainConfig(steps=30, batch_size=8, seq_len=16, warmup=2, checkpoint_every=10)


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("batches", [_batches, _masked_batches], ids=["dense", "masked"])
def test_two_processes_train_as_one(batches):
    one, r1 = train_or_load(_model(), batches, CFG, "single", batches.__name__)
    two, r2 = train_or_load(_model(), batches, CFG.model_copy(update={"nproc": 2}), "ddp", batches.__name__)
    assert r1.status == "completed" and r2.status == "cached"  # read back from what rank 0 wrote
    info = read_json(cache_root() / cache_key(CFG, "ddp", batches.__name__) / "train.json")
    assert info["processes"] == 2
    assert abs(r1.losses[-1] - r2.losses[-1]) < 1e-4
    assert _max_diff(one, two) < 1e-4
    assert r1.losses[-1] < r1.losses[0] - 0.1  # it trained


def test_nproc_must_divide_the_batch():
    with pytest.raises(ValueError, match="batch_size = 8: must be a multiple of nproc = 3"):
        CFG.model_copy(update={"nproc": 3}).model_validate({**CFG.model_dump(), "nproc": 3})


def test_killed_rank_fails_clearly_and_the_rerun_resumes(tmp_path):
    marker = tmp_path / "killed"

    def dying(step, gen):
        if step == 15 and os.environ.get("RANK") == "1" and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return _batches(step, gen)

    cfg = CFG.model_copy(update={"nproc": 2})
    with pytest.raises(DistributedRunFailed) as e:
        train_or_load(_model(), dying, cfg, "killed")
    msg = str(e.value)
    assert "rank 1: killed by SIGKILL" in msg and "resumes from its checkpoint at step 10" in msg, msg
    again, _ = train_or_load(_model(), dying, cfg, "killed")
    info = read_json(cache_root() / cache_key(cfg, "killed") / "train.json")
    assert info["resumed_from"] == 10 and info["status"] == "completed"
    one, r1 = train_or_load(_model(), _batches, CFG, "uninterrupted")
    assert abs(info["final_loss"] - r1.losses[-1]) < 1e-4 and _max_diff(one, again) < 1e-4


def _rank_errors(stderr: str) -> str:
    """What a failed torchrun run printed: the ranks' own messages come first, torchrun's summary last."""
    return stderr if len(stderr) <= 6000 else f"{stderr[:4000]}\n[...]\n{stderr[-2000:]}"


def test_trainer_under_torchrun(tmp_path):
    script = tmp_path / "train_lm.py"
    script.write_text(textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})
        from test_parallel import CFG, _batches, _model
        from attnlab.parallel import world
        from attnlab.train import train
        r = train(_model(), _batches, CFG, progress=False)
        if world().main:
            print("final", r.losses[-1], "world", world().size)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, _rank_errors(out.stderr)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("final"))
    _, r1 = train_or_load(_model(), _batches, CFG, "torchrun reference")
    assert line.endswith("world 2") and abs(float(line.split()[1]) - r1.losses[-1]) < 1e-4


def test_the_documented_torchrun_script_runs(tmp_path):
    """docs/cluster.md's script, at a small size, under torchrun with 2 processes."""
    import re

    code = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "cluster.md").read_text(), flags=re.S)[0]
    for big, small in [("d_model=512, n_layers=8, n_heads=8", "d_model=32, n_layers=1, n_heads=2"),
                       ("256, 1024", "4, 32"), ("steps=5000, batch_size=256, seq_len=1024",
                                                 "steps=3, batch_size=4, seq_len=32, warmup=1"),
                       ("DataConfig()", "DataConfig(max_bytes=200000)")]:
        assert big in code
        code = code.replace(big, small)
    script = tmp_path / "my_training.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         timeout=300)
    assert out.returncode == 0, _rank_errors(out.stderr)
    assert len([ln for ln in out.stdout.splitlines() if ln.strip()]) == 1  # rank 0 prints, once
    float(out.stdout.strip())


def _ring_vs_full(causal, size):
    w = world()
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(2, 3, 12, 8, generator=g, dtype=torch.float64) for _ in range(4))
    n = 12 // w.size
    rows = slice(w.rank * n, (w.rank + 1) * n)
    ql, kl, vl = (t[:, :, rows].clone().requires_grad_() for t in (q, k, v))
    out = ring_attention(ql, kl, vl, causal=causal)
    out.backward(dout[:, :, rows])
    qf, kf, vf = (t.clone().requires_grad_() for t in (q, k, v))
    full = eager_attention(qf, kf, vf, causal=causal)
    full.backward(dout)
    pairs = [(out, full), (ql.grad, qf.grad), (kl.grad, kf.grad), (vl.grad, vf.grad)]
    return w.size, [float((a.detach() - b.detach()[:, :, rows]).abs().max()) for a, b in pairs]


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("size", [2, 3])
def test_ring_attention_equals_full_attention(causal, size):
    results = launch(_ring_vs_full, size, causal, size)
    assert sorted(results) == list(range(size))
    for rank, (got_size, diffs) in results.items():
        assert got_size == size
        assert max(diffs) < 1e-12, (rank, diffs)  # output, dq, dk, dv


def test_ring_attention_single_process_is_sdpa():
    q, k, v = torch.randn(3, 1, 2, 10, 8).unbind(0)
    torch.testing.assert_close(ring_attention(q, k, v, causal=True), eager_attention(q, k, v, causal=True))


def test_spawned_processes_take_closures():
    offset = torch.tensor(3.0)  # a closure over a tensor: cloudpickle carries it to a fresh interpreter

    def rank_plus_offset():
        return world().rank + offset.item()

    assert launch(rank_plus_offset, 2, start_method="spawn") == {0: 3.0, 1: 4.0}


def test_notebook_configs_take_nproc_and_keep_their_cache_key():
    from attnlab.experiments import load

    cfg = load("02", "smoke", {"train.nproc": 2})
    assert cfg.train.nproc == 2
    assert cache_key(cfg.train) == cache_key(cfg.train.model_copy(update={"nproc": 1}))


def test_launch_reports_a_raising_rank():
    with pytest.raises(DistributedRunFailed, match="rank 1: exit code 1"):
        launch(_raise_on_rank_1, 2)


def _raise_on_rank_1():
    if world().rank == 1:
        raise ValueError("bad shard")
