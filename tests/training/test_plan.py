"""`substrate-lm plan`: the fake-tensor memory plan, its consistency, the micro-batch search, the CLI."""

from __future__ import annotations

import pytest

from substrate_lm.cli.main import main
from substrate_lm.errors import SubstrateError
from substrate_lm.factory import build_model
from substrate_lm.training.config import load_config
from substrate_lm.training.distributed import DistContext
from substrate_lm.training.plan import (fake_step_memory, format_plan, make_plan, max_micro_batch,
                                        measure_step, parse_memory, resolve_strategy)

# a tiny model with a small vocabulary: fake steps take a fraction of a second
SMALL = ["--model.overrides.vocab_size", "512", "--train.batch_size", "4", "--train.seq_len", "64"]


def tiny(*extra: str):
    return load_config("tiny", [*SMALL, *extra])


def _sizes(cfg):
    model = build_model(cfg.model.preset, cfg.model.substrate or None,
                        overrides=dict(cfg.model.overrides))
    total = sum(p.numel() * 4 for p in model.parameters())
    trainable = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    return model, total, trainable


def test_fsdp2_plan_at_two_ranks_is_consistent():
    cfg = tiny()
    _, total, trainable = _sizes(cfg)
    mem = fake_step_memory(cfg, 2, strategy="fsdp2")
    # FSDP2 shards every parameter over the ranks (dim-0 padding at most one row per tensor)
    assert total / 2 <= mem.params <= total / 2 * 1.05
    assert trainable / 2 <= mem.grads <= trainable / 2 * 1.05
    # AdamW: exp_avg and exp_avg_sq in fp32 per trainable element, plus tiny step counters
    assert 2 * mem.grads <= mem.optimizer <= 2 * mem.grads * 1.02
    assert mem.peak >= mem.params + mem.optimizer + mem.activations
    assert mem.at_peak["Sharded Param"] == mem.params and mem.activations > 0
    assert mem.at_peak["OptState"] == mem.optimizer
    assert not mem.analytic


def test_one_rank_plan_equals_the_real_step():
    cfg = tiny()
    model, total, trainable = _sizes(cfg)
    fake = fake_step_memory(cfg, 1)
    assert fake.params == total and fake.grads == trainable
    real = measure_step(cfg, model, DistContext())
    assert real.peak == fake.peak and real.at_peak == fake.at_peak
    assert fake.at_peak["Optstate"] == fake.optimizer  # steady state: AdamW's moments are held


def test_ddp_adds_analytic_buckets():
    cfg = tiny()
    plain = fake_step_memory(cfg, 1)
    ddp = fake_step_memory(cfg, 2, strategy="ddp")
    assert ddp.analytic == {"DDP buckets": plain.grads}
    assert ddp.peak == plain.peak + plain.grads


def test_memory_grows_with_the_batch_and_shrinks_with_checkpointing():
    small = fake_step_memory(tiny(), 2, batch_size=2, strategy="fsdp2")
    big = fake_step_memory(tiny(), 2, batch_size=8, strategy="fsdp2")
    ac = fake_step_memory(tiny("--train.activation_checkpointing", "true"), 2, batch_size=8,
                          strategy="fsdp2")
    assert small.params == big.params and big.activations > small.activations
    assert ac.peak < big.peak


@pytest.mark.parametrize("fixed,per,usable", [(100, 7, 1000), (5, 1, 4), (5, 1, 5), (0, 3, 10**6),
                                              (50, 10, 49)])
def test_micro_batch_search_matches_brute_force(fixed, per, usable):
    calls = []

    def peak(b):
        calls.append(b)
        return fixed + per * b + (b * b) // 40  # slightly super-linear: the fit must be corrected

    want = max((b for b in range(1, 5000) if peak(b) <= usable), default=0)
    calls.clear()
    assert max_micro_batch(peak, usable, start=4, limit=4096) == min(want, 4096)
    assert len(calls) <= 30


def test_make_plan_finds_the_largest_fitting_batch():
    cfg = tiny("--dist.strategy", "fsdp2")
    probe = fake_step_memory(cfg, 2, batch_size=1)
    budget = int(probe.peak * 2.5)  # a GPU a few micro-batches big
    plan = make_plan(cfg, 2, budget, headroom=0.0)
    assert plan.max_batch >= 1 and plan.max_batch_memory.peak <= budget
    assert fake_step_memory(cfg, 2, batch_size=plan.max_batch + 1).peak > budget
    assert plan.tokens_per_step == 4 * 64 * 1 * 2
    # step time = tokens * FLOPs/token / (GPUs * peak * MFU)
    assert plan.step_time == pytest.approx(plan.tokens_per_step * plan.flops_per_token
                                           / (2 * plan.peak_flops * 0.4))
    text = format_plan(plan)
    assert "largest micro-batch that fits" in text and "fsdp2" in text


def test_parse_memory_and_strategy():
    assert parse_memory("80GB") == 80 * 10**9
    assert parse_memory("80GiB") == 80 * 2**30
    assert parse_memory("24000 MB") == 24 * 10**9
    for bad in ("80XB", "GB", "-1GB", "0.5KB", ""):
        with pytest.raises(SubstrateError):
            parse_memory(bad)
    assert resolve_strategy("auto", 1) == "none"
    assert resolve_strategy("auto", 8) == "ddp"
    assert resolve_strategy("fsdp2", 8) == "fsdp2"
    with pytest.raises(SubstrateError):
        resolve_strategy("none", 2)


@pytest.mark.parametrize("argv,needle", [
    (["--gpu-memory", "80XB"], "cannot read the memory size"),
    (["--gpu", "Z80"], "no bf16 peak for GPU"),
    (["--mfu", "1.5"], "--mfu must be in"),
    (["--train.seq_len", "4096"], "exceeds the model's context length"),
])
def test_cli_errors_are_one_line(capsys, argv, needle):
    rc = main(["plan", "--config", "tiny", *SMALL, "--train.precision", "bf16", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and "\n" not in err


def test_cli_prints_the_plan(capsys):
    assert main(["plan", "--config", "tiny", *SMALL, "--gpus", "2", "--dist.strategy", "fsdp2",
                 "--gpu-memory", "1GiB", "--no-search"]) == 0
    out = capsys.readouterr().out
    for word in ("params", "grads", "optimizer", "activations", "peak", "tokens per step",
                 "FLOPs per token", "step time"):
        assert word in out
