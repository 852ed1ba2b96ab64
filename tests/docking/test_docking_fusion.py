"""Adapter fusion: it starts as the weighted mean, learns to route a toy two-language task to the
right expert (loss falls), keeps experts and substrate bit-identical, exports and reloads; brief
fine-tuning of the merged model trains the experts but never the substrate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from substrate_lm.docking import (compose, fusion_run_config, mixing_weights, save_composed, train_fusion,
                                  with_adapter)
from substrate_lm.docking.fusion import set_fusion_trainable
from substrate_lm.errors import SubstrateError

V = 96
HALF = V // 2


def language(kind: str, n: int, rng) -> np.ndarray:
    """Two toy 'languages' on disjoint halves of the vocabulary with different successor rules."""
    start = rng.integers(0, HALF)
    step = 1 if kind == "a" else 5
    seq = (start + step * np.arange(n)) % HALF
    return seq + (0 if kind == "a" else HALF)


def stream(kinds: str, n_docs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([language(kinds[i % len(kinds)], int(rng.integers(20, 40)), rng) for i in range(n_docs)])


def spec(run_dir, **kw):
    """A CPU fusion run config in ``run_dir``."""
    return fusion_run_config(run_dir, device="cpu", **kw)


@pytest.fixture(scope="module")
def toy(expert_factory, array_tokens, fit, tmp_path_factory):
    """Expert A knows language a, expert B language b; the mixed stream needs both."""
    experts = []
    for seed, kind in ((0, "a"), (1, "b")):
        e = expert_factory(seed, n_layer=1, d_model=32, jitter=0.0)
        fit(e.train(), array_tokens(stream(kind, 200, seed)), tmp_path_factory.mktemp(f"expert{kind}"),
            steps=40, batch_size=8, seq_len=24, lr=1e-2, min_lr=1e-3, warmup=2, seed=0)
        experts.append(e.eval())
    mixed = array_tokens(stream("ab", 400, 7))
    return experts, mixed


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_untrained_adapter_is_the_weighted_mean(toy):
    experts, _ = toy
    mean = compose(experts, weights=[0.3, 0.7])
    gated = compose(experts, weights=[0.3, 0.7], fusion="adapter", adapter_hidden=16)
    x = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(gated(x).logits, mean(x).logits, atol=1e-6, rtol=1e-6)
    w = mixing_weights(gated, x)
    assert w.shape == (2, 10, 2)
    torch.testing.assert_close(w, torch.tensor([0.3, 0.7]).expand(2, 10, 2), atol=1e-6, rtol=1e-6)


def test_a_fresh_composed_model_starts_its_adapter_at_zero(toy):
    from substrate_lm.modeling.modeling_composed import ComposedForCausalLM

    experts, _ = toy
    cfg = compose(experts, fusion="adapter", adapter_hidden=8).config
    fresh = ComposedForCausalLM(cfg)  # built from the config alone, as from_pretrained builds it
    assert torch.count_nonzero(fresh.adapter.out.weight) == 0 and torch.count_nonzero(fresh.adapter.out.bias) == 0
    assert fresh.adapter.net[0].weight.std() > 0.01


def test_adapter_training_lowers_loss_and_keeps_experts_bit_identical(toy, tmp_path):
    experts, mixed = toy
    torch.manual_seed(0)
    model = compose(experts, fusion="adapter")
    before = snapshot(model)
    cfg = spec(tmp_path / "fuse", steps=40, batch_size=8, seq_len=24, lr=2e-2, min_lr=2e-3, warmup=2, seed=3,
               eval_batches=6)
    result = train_fusion(model, mixed, cfg, train="adapter", val=mixed)
    after = snapshot(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("adapter.") for k in changed), changed
    assert result["trainable"] == sum(p.numel() for p in model.adapter.parameters())
    assert result["val_after"]["loss"] < result["val_before"]["loss"] - 0.3, result
    assert np.mean(result["losses"][-5:]) < result["losses"][0] - 0.3
    # the gate learned to route: on language a it prefers expert A, on b expert B
    rng = np.random.default_rng(1)
    xa = torch.from_numpy(language("a", 20, rng))[None]
    xb = torch.from_numpy(language("b", 20, rng))[None]
    assert mixing_weights(model, xa)[0, 5:, 0].mean() > 0.6
    assert mixing_weights(model, xb)[0, 5:, 1].mean() > 0.6
    # a loaded model's default: trainable except the frozen substrate
    assert model.token_embeddings.weight.requires_grad is False
    assert model.experts[0].lm_head.weight.requires_grad is True


def test_trained_adapter_exports_and_reloads(toy, tmp_path):
    from transformers import AutoModelForCausalLM

    experts, mixed = toy
    model = compose(experts, fusion="adapter")
    train_fusion(model, mixed, spec(tmp_path / "fuse", steps=5, batch_size=4, seq_len=16, lr=1e-2, warmup=1),
                 train="adapter")
    out = save_composed(model, tmp_path / "fused")
    again = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert again.config.fusion == "adapter"
    x = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        assert torch.equal(again(x).logits, model(x).logits)
    g1 = model.generate(x, max_new_tokens=5, do_sample=False)
    assert torch.equal(g1, model.generate(x, max_new_tokens=5, do_sample=False, use_cache=False))


def test_an_adapter_that_makes_validation_worse_is_not_kept(toy, array_tokens, tmp_path):
    """Trained on language a only and validated on language b, the gate learns to prefer expert A,
    which is wrong for b: validation gets worse, so the plain average (the model before) is kept."""
    experts, _ = toy
    only_a = array_tokens(stream("a", 60, seed=11))
    only_b = array_tokens(stream("b", 60, seed=12))
    model = compose(experts, fusion="adapter")
    before = snapshot(model)
    kw = dict(steps=30, batch_size=8, seq_len=24, lr=5e-2, min_lr=5e-3, warmup=2, seed=3, eval_batches=4)
    result = train_fusion(model, only_a, spec(tmp_path / "a", **kw), train="adapter", val=only_b)
    assert result["val_trained"]["loss"] > result["val_before"]["loss"], result
    assert result["kept"] == "before" and result["val_after"] == result["val_before"]
    after = snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the adapter is back at its start
    # without keep_best the trained (worse) adapter stays
    model2 = compose(experts, fusion="adapter")
    r2 = train_fusion(model2, only_a, spec(tmp_path / "b", **kw), train="adapter", val=only_b, keep_best=False)
    assert r2["kept"] == "trained" and r2["val_after"] == r2["val_trained"]


def test_finetuning_the_merged_model_never_moves_the_substrate(toy, tmp_path):
    experts, mixed = toy
    model = with_adapter(compose(experts))
    assert model.config.fusion == "adapter"
    table = model.token_embeddings.weight.detach().clone()
    head = model.experts[1].lm_head.weight.detach().clone()
    result = train_fusion(model, mixed, spec(tmp_path / "ft", steps=4, batch_size=4, seq_len=16, lr=1e-3, warmup=1),
                          train="experts")
    assert torch.equal(model.token_embeddings.weight, table)
    assert not torch.equal(model.experts[1].lm_head.weight, head)
    assert result["trainable"] == sum(p.numel() for n, p in model.named_parameters() if not n.startswith("token_emb"))
    model.verify_substrate()


def test_adapter_training_needs_an_adapter(toy):
    from substrate_lm.errors import SubstrateError

    experts, _ = toy
    with pytest.raises(SubstrateError, match="no adapter"):
        set_fusion_trainable(compose(experts), "adapter")
    with pytest.raises(SubstrateError, match="unknown fusion training target"):
        set_fusion_trainable(compose(experts), "everything")


def test_fusion_is_a_trainer_run_that_resumes_bit_identically(toy, tmp_path):
    """The adapter run has the trainer's folder (config, log, verified checkpoints); killed after
    step 5 and resumed from its step-4 checkpoint, it ends with the uninterrupted run's adapter."""
    from substrate_lm.training import CheckpointManager

    experts, mixed = toy
    kw = dict(steps=8, batch_size=4, seq_len=16, lr=1e-2, warmup=1, seed=2, checkpoint_interval=4, eval_batches=2)
    ref = compose(experts, fusion="adapter")
    r_ref = train_fusion(ref, mixed, spec(tmp_path / "ref", **kw), train="adapter", val=mixed)
    run = tmp_path / "run"
    assert (Path(r_ref["run_dir"]) / "config.toml").is_file() and len(r_ref["losses"]) == 8

    class Stop(Exception):
        pass

    def stop(r):
        if r["step"] == 5:
            raise Stop

    model = compose(experts, fusion="adapter")
    with pytest.raises(Stop):
        train_fusion(model, mixed, spec(run, **kw), train="adapter", val=mixed, log=stop)
    assert [p.name for p in CheckpointManager(run / "checkpoints").step_dirs()] == ["step-00000004"]
    model = compose(experts, fusion="adapter")  # the same start, as a resumed process would build it
    got = train_fusion(model, mixed, spec(run, **kw), train="adapter", val=mixed, resume=True)
    assert got["losses"] == r_ref["losses"][4:] and got["kept"] == r_ref["kept"]
    assert got["val_after"] == r_ref["val_after"]
    a, b = snapshot(ref), snapshot(model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SubstrateError, match=r"already holds checkpoints .*; pass --resume"):
        train_fusion(compose(experts, fusion="adapter"), mixed, spec(run, **kw), train="adapter")
