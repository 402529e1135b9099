"""ListOps generator on hand-made trees; benchmark helpers on constructed timings."""

import random

import numpy as np
import pandas as pd
import pytest
import torch

from attnlab.bench.attention import crossover_lengths, scaling_exponents
from attnlab.bench.memory import peak_memory_bytes
from attnlab.bench.train import train_flops_per_token
from attnlab.errors import ConfigError
from attnlab.tasks import listops as L


@pytest.mark.parametrize(("text", "value"), [
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[MIN 4 7 ]", 4),
    ("[MED 1 2 9 ]", 2),
    ("[MED 1 2 8 9 ]", 5),  # int(median(1, 2, 8, 9)) = int(5.0)
    ("[MED 1 4 ]", 2),  # int(2.5)
    ("[SM 5 6 [MED 1 2 9 ] ]", 3),
    ("( ( [SM 9 9 ) 9 ] )", 7),
    ("[MAX [SM 3 3 ] [MIN 8 [MAX 1 2 ] ] ]", 6),
])
def test_evaluate_hand_made_trees(text, value):
    assert L.evaluate(L.parse(text)) == value


def test_tokens_round_trip_and_length():
    rng = random.Random(3)
    for _ in range(200):
        tree, length = L.generate_tree(rng)
        toks = L.tokens(tree)
        assert len(toks) == length
        assert L.parse(" ".join(toks)) == tree


def test_generator_leaf_probability_and_arity():
    rng = random.Random(0)
    roots = [L.generate_tree(rng)[0] for _ in range(4000)]
    leaf_share = np.mean([isinstance(t, int) for t in roots])
    assert abs(leaf_share - 0.75) < 0.03
    arities = [len(t[1]) for t in roots if not isinstance(t, int)]
    assert min(arities) == 2 and max(arities) == 10


def test_generate_is_deterministic_filtered_and_distinct():
    a = L.generate(50, seed=4, min_length=20, max_length=60)
    b = L.generate(50, seed=4, min_length=20, max_length=60)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    assert bool(((a.lengths > 20) & (a.lengths < 60)).all())
    assert len({tuple(r.tolist()) for r in a.inputs}) == 50
    assert bool((a.inputs[:, 0] == L.CLS).all())
    for row, lab, n in zip(a.inputs, a.labels, a.lengths):
        toks = [L.VOCAB[i] for i in row[1: 1 + n].tolist()]
        assert L.evaluate(L.parse(" ".join(toks))) == int(lab)
        assert bool((row[1 + n:] == L.PAD).all())


def test_impossible_lengths_are_a_config_error():
    with pytest.raises(ConfigError, match="min_length"):
        L.generate(5, 0, min_length=50, max_length=40)
    with pytest.raises(ConfigError, match="found only"):
        L.generate(5, 0, min_length=5000, max_length=6000, max_depth=2, max_tries=2000)


def test_scaling_exponents_recover_known_powers():
    lengths = [256, 512, 1024, 2048]
    df = pd.DataFrame([{"variant": v, "mode": "fwd", "length": n, "status": "ok", "time_s": 1e-9 * n ** p,
                        "peak_bytes": 10.0 * n ** p} for v, p in (("quad", 2), ("lin", 1)) for n in lengths])
    ex = scaling_exponents(df).set_index("variant")
    assert ex.loc["quad", "time_exponent"] == pytest.approx(2.0) and ex.loc["lin", "memory_exponent"] == pytest.approx(1.0)


def test_crossover_length():
    df = pd.DataFrame([{"variant": "eager", "mode": "fwd", "length": n, "status": "ok", "time_s": n ** 2}
                       for n in (1, 2, 4, 8)] +
                      [{"variant": "lin", "mode": "fwd", "length": n, "status": "ok", "time_s": 5 * n}
                       for n in (1, 2, 4, 8)])
    assert crossover_lengths(df, "eager").iloc[0]["crossover_length"] == 8


def test_peak_memory_sees_a_large_allocation():
    m = peak_memory_bytes(lambda: torch.ones(64, 2**20).sum(), "cpu")  # 256 MiB
    if np.isnan(m):
        pytest.skip("no /proc/self/clear_refs here")
    assert m > 200 * 2**20


def test_palm_flops_formula():
    assert train_flops_per_token(1000, 2, 16, 8) == 6 * 1000 + 12 * 2 * 16 * 8


def _timings(powers: dict[str, float]) -> pd.DataFrame:
    grid = pd.DataFrame([{"variant": v, "mode": "fwd", "length": n, "status": "ok", "time_s": 1e-9 * n ** p,
                          "peak_bytes": 10.0 * n ** p} for v, p in powers.items() for n in (512, 1024, 2048, 4096)])
    return pd.concat([grid.assign(experiment="timing"), scaling_exponents(grid).assign(experiment="exponent")])


@pytest.mark.parametrize(("flex_power", "verdict"), [(1.0, True), (2.0, False)])
def test_fused_memory_claim_checks_sdpa_and_flex(flex_power, verdict):
    from attnlab.claims import CLAIMS, NOT_REPRODUCED, REPRODUCED, claims_for, verdict_of

    claims_for("04_efficient_attention_speed")  # registers the notebook's claims
    m = CLAIMS["fused_memory_linear"].check(_timings({"eager": 2.0, "sdpa": 1.0, "alibi/flex": flex_power}))
    assert verdict_of(m)[0] == (REPRODUCED if verdict else NOT_REPRODUCED) and "alibi/flex memory exponent" in m.value


def test_bench_train_smoke_reports_ratios_mfu_and_breakdown():
    from attnlab.bench.train import bench_train, format_train

    r = bench_train(size="smoke", batch=2, seq=16, rounds=1, steps_per_round=1, warmup=1)
    b = r["breakdown_attnlab_rope"]
    assert set(r["contenders"]) == {"attnlab/rope", "attnlab/none", "attnlab/alibi", "attnlab/t5", "transformers/llama"}
    assert 0 < r["mfu_attnlab_rope"] < 1 and r["ratio_attnlab_rope_vs_llama"] > 0
    assert r["matmul_peak_gflops"] > 0 and r["matmul_peak_n"] == 2048  # timed in the rounds, not a contender
    assert b["matmul_s_per_step"] > 0 and b["attention_s_per_step"] > 0 and b["other_s_per_step"] > 0
    assert abs(b["matmul_share"] + b["attention_share"] + b["other_share"] - 1) < 1e-9
    assert "operator time: matmul" in format_train(r)
    lo, hi = r["intervals"]["ratio_attnlab_rope_vs_llama"]  # one round: no interval, the point itself
    assert lo == hi == r["ratio_attnlab_rope_vs_llama"]


def test_step_ratio_intervals_resample_the_rounds_paired():
    import numpy as np

    from attnlab.bench.train import step_ratio_intervals

    rng = np.random.default_rng(0)
    drift = 1 + 0.3 * rng.random(12)  # the machine's speed per round, shared by both contenders
    times = {"a": [[1.5 * d * (1 + 0.01 * rng.standard_normal()) for _ in range(4)] for d in drift],
             "b": [[d * (1 + 0.01 * rng.standard_normal()) for _ in range(4)] for d in drift]}
    lo, hi = step_ratio_intervals(times, {"a/b": ("a", "b")})["a/b"]
    assert lo < 1.5 < hi and hi - lo < 0.3  # the drift cancels in the pairing
    assert step_ratio_intervals(times, {"b/a": ("b", "a")})["b/a"][1] < 1


def test_bench_ablation_smoke_reports_each_change_against_the_default_step(capsys):
    from attnlab.bench.train import ABLATIONS, bench_ablation, format_ablation
    from attnlab.cli import main

    r = bench_ablation(size="smoke", batch=2, seq=16, rounds=1, steps_per_round=1, warmup=1)
    assert set(r["changes"]) == set(ABLATIONS) and r["default_step_s"] > 0
    for v in r["changes"].values():
        assert v["step_s"] > 0
        assert v["delta_s"] == pytest.approx(v["step_s"] - r["default_step_s"])
    text = format_ablation(r)
    assert "without attention kernel" in text and "fused AdamW" in text and ", eager;" in text
    assert ", torch.compile;" in format_ablation({**r, "compiled": True})
    assert main(["bench", "ablate", "--compile", "--size", "huge"]) == 2
    assert "--size = 'huge': unknown; valid choices: smoke, cpu, gpu" in capsys.readouterr().err
    assert main(["bench", "train", "--batch", "0"]) == 2
    assert "--batch = 0: must be >= 1" in capsys.readouterr().err


def test_ablations_change_what_they_name():
    """Each changed model still trains (finite loss and gradients) and differs from the default in its part only."""
    from attnlab.bench.train import ABLATIONS, SIZES, train_step_timer
    from attnlab.model import build_model

    x = torch.randint(0, 256, (2, 16))
    for name, a in ABLATIONS.items():
        m = build_model(SIZES["smoke"], a.pe)
        if a.edit is not None:
            a.edit(m)
        loss = m.loss(x, x)
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
        blk = m.blocks[0]
        assert (m.pe.kind == "none") == (name == "without rotation")
        assert isinstance(blk.mlp, torch.nn.Identity) == (name == "without feed-forward")
        if name == "without attention kernel":
            q, k, v = (torch.full((1, 1, 2, 2), float(i)) for i in range(3))
            assert blk.attn.attn(q, k, v, causal=True).eq(2).all()
        assert train_step_timer(m, m.loss, x, x, fused_adamw=a.fused_adamw)() > 0


def _ice_results(transformer_acc, kept, n=400, seeds=3, majority=0.2):
    import numpy as np
    import pandas as pd

    from attnlab.experiments import listops_accuracy as lo

    rng = np.random.default_rng(0)
    rows = [{"experiment": "baseline", "variant": "majority class", "accuracy": majority,
             "correct": [int(i < majority * n) for i in range(n)]}]
    for s in range(seeds):
        base = (rng.random(n) < transformer_acc).astype(int)
        ice = np.where(rng.random(n) < kept, base, 0)  # loses a share of the right answers
        rows += [{"experiment": "accuracy", "variant": "Transformer", "seed": s, "accuracy": base.mean(),
                  "correct": base.tolist()},
                 {"experiment": "accuracy", "variant": lo.ICEFORMER, "seed": s, "accuracy": ice.mean(),
                  "correct": ice.tolist()}]
    return pd.DataFrame(rows)


def test_iceformer_claim_reads_retained_accuracy():
    from attnlab.claims import check_claims

    def verdict(df):
        (row,) = [r for r in check_claims("05_efficient_attention_listops", df, "cpu")
                  if r["id"] == "iceformer_retains_accuracy"]
        return row

    assert verdict(_ice_results(0.6, 1.0))["verdict"] == "reproduced"
    assert verdict(_ice_results(0.6, 0.8))["verdict"] == "not reproduced"
    row = verdict(_ice_results(0.21, 1.0))
    assert row["verdict"] == "inconclusive" and "does not learn ListOps" in row["note"]


def test_variants_sharing_an_attention_are_labelled_by_their_changed_parameters():
    from attnlab.experiments import listops_accuracy as lo

    cfg = lo.ListOpsConfig(variants=["sdpa", "key_value", {"name": "key_value", "pos_dim": 10}, "linformer"])
    labels = [lo.label(cfg, v) for v in cfg.variants]
    assert labels[1] == lo.LABELS.get("key_value", "key_value")
    assert labels[2] == labels[1] + " (pos_dim=10)"
    assert "(" not in labels[0] + labels[3]  # a name of its own keeps its plain label
    assert cfg.variants[2].changed_params() == {"pos_dim": 10} and not cfg.variants[1].changed_params()


def test_frozen_heap_still_collects_what_the_sweep_made_and_unfreezes():
    import gc
    import weakref

    from attnlab.bench.memory import frozen_heap

    class Node:
        pass

    before = gc.get_freeze_count()
    with frozen_heap():
        assert gc.get_freeze_count() > before
        a, b = Node(), Node()
        a.other, b.other = b, a  # a reference cycle made inside the block
        ref = weakref.ref(a)
        del a, b
        gc.collect()
        assert ref() is None
    assert gc.get_freeze_count() == before
