"""Growth: stage plans, stacking blocks, what trains in a stage (lower blocks bit-identical unless
LoRA), LoRA merge equivalence, and resumable growth runs with exports, evaluation and a table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from substrate_lm.docking.grow_config import ENGINE
from substrate_lm.docking import (
    apply_lora,
    block_fingerprints,
    grow_model,
    load_grow_config,
    merge_lora,
    plan_stages,
    run_growth,
    set_stage_trainable,
)
from substrate_lm.errors import SubstrateError

V = 96


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def stream(array_tokens):
    rng = np.random.default_rng(0)
    return array_tokens(np.concatenate([(rng.integers(0, V) + 3 * np.arange(30)) % V for _ in range(200)]))


def test_plan_stages():
    assert [s.depth for s in plan_stages(3)] == [1, 2, 3]
    plan = plan_stages(9, 3, 3)
    assert [(s.depth, s.n_lower, s.n_new) for s in plan] == [(3, 0, 3), (6, 3, 3), (9, 6, 3)]
    assert [s.depth for s in plan_stages(10, 3, 3)] == [3, 6, 9, 10]
    assert plan[1].name == "02-depth6"
    with pytest.raises(SubstrateError, match="first_layers <= n_layer"):
        plan_stages(2, 3, 1)


def test_grow_model_copies_the_old_and_initialises_the_new(expert_factory):
    base = expert_factory(0, n_layer=2, jitter=0.05)
    before = snapshot(base)
    grown = grow_model(base, 2, seed=5)
    assert grown.config.n_layer == 4 and len(grown.blocks) == 4
    assert same(snapshot(base), before)  # the source is untouched
    g = grown.state_dict()
    for k, v in before.items():
        assert torch.equal(g[k], v), k  # table, blocks 0-1, ln_f, lm_head copied bit for bit
    assert grown.config.substrate_fingerprint == base.config.substrate_fingerprint
    assert grown.token_embeddings.weight.requires_grad is False
    # the new blocks are initialised by the model's own _init_weights at the new depth: exactly
    # the blocks of a fresh 4-block model under the same seed
    from substrate_lm.modeling import SubstrateForCausalLM

    torch.manual_seed(5)
    fresh = SubstrateForCausalLM(grown.config.__class__(**{**grown.config.to_dict(), "n_layer": 4}))
    for i in (2, 3):
        assert same(snapshot(grown.blocks[i]), snapshot(fresh.blocks[i]))
    new = grown.blocks[3]
    assert abs(new.attn.qkv.weight.std().item() - 0.02) < 0.003
    assert torch.equal(new.ln_1.weight, torch.ones(32))
    # deterministic under a seed
    assert same(snapshot(grow_model(base, 2, seed=5)), snapshot(grown))
    assert not torch.equal(grow_model(base, 2, seed=6).blocks[3].attn.qkv.weight, new.attn.qkv.weight)


@pytest.mark.parametrize("train_head", [True, False])
def test_growth_stage_leaves_lower_blocks_bit_identical(expert_factory, stream, train_head, fit, tmp_path):
    base = expert_factory(0, n_layer=2)
    grown = grow_model(base, 1, seed=1)
    set_stage_trainable(grown, n_lower=2, train_head=train_head)
    trainable = {n for n, p in grown.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("blocks.2.") or (train_head and n.startswith(("ln_f", "lm_head")))
                             for n in trainable)
    lower = [snapshot(b) for b in grown.blocks[:2]]
    head = snapshot(grown.lm_head)
    table = grown.token_embeddings.weight.detach().clone()
    new = snapshot(grown.blocks[2])
    prints = block_fingerprints(grown)
    losses = fit(grown, stream, tmp_path / "run", steps=8, batch_size=4, seq_len=16, lr=5e-3, warmup=1)
    after = block_fingerprints(grown)
    assert after[:2] == prints[:2] and after[2] != prints[2]
    assert all(same(snapshot(b), s) for b, s in zip(grown.blocks[:2], lower))
    assert torch.equal(grown.token_embeddings.weight, table)
    assert not same(snapshot(grown.blocks[2]), new)
    assert same(snapshot(grown.lm_head), head) is (not train_head)
    assert losses[-1] < losses[0]


def test_lora_moves_lower_blocks_and_merge_equals_unmerged(expert_factory, stream, fit, tmp_path):
    base = expert_factory(0, n_layer=2)
    grown = grow_model(base, 1, seed=1)
    lower = [snapshot(b) for b in grown.blocks[:2]]
    torch.manual_seed(0)
    peft_model = apply_lora(grown, n_lower=2, r=4, alpha=8)
    set_stage_trainable(peft_model, n_lower=2)
    names = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("blocks.0.attn.qkv.lora_A" in n for n in names) and any("blocks.1.mlp.fc.lora_B" in n for n in names)
    assert not any("blocks.2" in n and "lora_" in n for n in names)  # no LoRA on the new block
    assert not any(n.endswith("base_layer.weight") for n in names)  # the lower weights themselves stay frozen
    fit(peft_model, stream, tmp_path / "run", steps=6, batch_size=4, seq_len=16, lr=1e-2, warmup=1)
    x = torch.randint(0, V, (3, 14))
    peft_model.eval()
    with torch.no_grad():
        unmerged = peft_model(x).logits
    merged = merge_lora(peft_model)
    assert type(merged).__name__ == "SubstrateForCausalLM"
    assert not any("lora" in n for n in merged.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(x).logits, unmerged, atol=1e-5, rtol=1e-5)
    # LoRA is on: the lower blocks moved (by the merged low-rank updates), and only their linears
    moved = [not same(snapshot(b), s) for b, s in zip(merged.blocks[:2], lower)]
    assert all(moved)
    assert torch.equal(merged.blocks[0].ln_1.weight, lower[0]["ln_1.weight"])
    merged.verify_substrate()


def test_a_diverging_loss_stops_with_one_line(expert_factory, stream, fit, tmp_path):
    model = expert_factory(0, n_layer=1)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(SubstrateError, match="loss is nan at step 1 .*stopped before the update"):
        fit(model.train(), stream, tmp_path / "run", steps=3, batch_size=2, seq_len=8)


def test_stage1_of_a_trainable_substrate_trains_the_table_then_freezes_it(expert_factory):
    from substrate_lm.modeling import SubstrateConfig, SubstrateForCausalLM

    model = SubstrateForCausalLM(SubstrateConfig(vocab_size=V, n_embed=32, d_model=32, n_layer=1, n_head=4,
                                                 block_size=32, substrate_kind="trainable"))
    set_stage_trainable(model, 0, train_substrate=True)
    assert model.token_embeddings.weight.requires_grad
    grown = grow_model(model, 1, seed=0)
    set_stage_trainable(grown, 1)
    assert not grown.token_embeddings.weight.requires_grad


# ---------------------------------------------------------------------------------------------
# growth runs


def small_config(data_dir, run_dir, **sections) -> dict:
    cfg = {
        "run": {"name": "t", "dir": str(run_dir), "device": "cpu"},
        "model": {"preset": "tiny", "substrate": "bits", "overrides": {"d_model": 32, "n_head": 4, "block_size": 64}},
        "data": {"path": str(data_dir)},
        "grow": {"n_layer": 2, "first_layers": 1, "layers_per_stage": 1},
        "train": {"steps": 6, "batch_size": 4, "seq_len": 32, "lr": 3e-3, "min_lr": 3e-4, "warmup": 1},
        "eval": {"steps": 2},
        "checkpoint": {"interval": 2},
        "log": {"interval": 1},
    }
    for sec, values in sections.items():
        cfg.setdefault(sec, {}).update(values)
    return cfg


def test_growth_run_exports_evaluates_and_resume_skips_finished_stages(data_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "run"
    cfg = load_grow_config(small_config(data_dir, run_dir))
    records = []
    result = run_growth(cfg, log=lambda m: None, on_record=records.append)
    stages, base = result["stages"], result["baseline"]
    assert [s["depth"] for s in stages] == [1, 2] and base["depth"] == 2
    assert {r["phase"] for r in records} == {"stage1", "stage2", "baseline"}
    # stage 2 trains on the batches after stage 1's; the baseline on the same 12 from the start
    assert [r["global_step"] for r in records if r["phase"] == "stage2"] == list(range(7, 13))
    assert base["steps"] == 12 and base["tokens_total"] == stages[-1]["tokens_total"] == 12 * 4 * 32
    assert result["info"]["same_substrate"]
    assert stages[1]["lower_blocks_unchanged"] is True and stages[0]["lower_blocks_unchanged"] is None
    for m in stages + [base]:
        assert math.isfinite(m["val_loss"]) and m["val_bpc"] > 0 and m["eval_split"] == "val"
        phase_dir = (run_dir / m["model_dir"]).parent
        assert not (phase_dir / "checkpoints").exists()  # removed once the phase is exported
        assert (phase_dir / "config.toml").is_file()  # each phase is one Trainer run
    # the lower block of stage 2's export is stage 1's, bit for bit
    w1 = load_file(run_dir / stages[0]["model_dir"] / "model.safetensors")
    w2 = load_file(run_dir / stages[1]["model_dir"] / "model.safetensors")
    assert all(torch.equal(w1[k], w2[k]) for k in w1 if k.startswith(("blocks.0.", "token_embeddings")))
    assert not torch.equal(w1["lm_head.weight"], w2["lm_head.weight"])
    # every stage is an HF model directory with the tokenizer of the data
    m2 = AutoModelForCausalLM.from_pretrained(run_dir / stages[1]["model_dir"], trust_remote_code=True)
    assert m2.config.n_layer == 2 and (run_dir / stages[1]["model_dir"] / "tokenizer.json").is_file()
    # the table and the plot
    saved = json.loads((run_dir / "results.json").read_text())
    assert [s["val_loss"] for s in saved["stages"]] == [s["val_loss"] for s in stages]
    md = (run_dir / "results.md").read_text()
    assert md.count("\n| stage") == 2 and "| baseline |" in md and "monolithic" in md
    assert (run_dir / "depth.png").stat().st_size > 1000

    # resume: nothing is redone
    again = []
    result2 = run_growth(load_grow_config(small_config(data_dir, run_dir)), resume=True, log=lambda m: None,
                         on_record=again.append)
    assert again == []
    assert result2["stages"] == stages and result2["baseline"] == base
    with pytest.raises(SubstrateError, match="already holds a growth run; pass --resume"):
        run_growth(load_grow_config(small_config(data_dir, run_dir)), log=lambda m: None)
    with pytest.raises(SubstrateError, match=r"config differs .*train\.steps"):
        run_growth(load_grow_config(small_config(data_dir, run_dir, train={"steps": 7})), resume=True,
                   log=lambda m: None)


class Interrupt(Exception):
    pass


def test_interrupted_stage_resumes_from_its_checkpoint_to_the_same_result(data_dir, tmp_path):
    """Stage 2 (with LoRA) is killed after step 3; the checkpoint of step 2 is resumed and the
    run ends exactly where an uninterrupted run ends."""
    extra = dict(lora={"enabled": True, "r": 2, "alpha": 4.0}, baseline={"enabled": False})
    ref = run_growth(load_grow_config(small_config(data_dir, tmp_path / "a", **extra)), log=lambda m: None)

    def killer(r):
        if r["phase"] == "stage2" and r["step"] == 3:
            raise Interrupt

    cfg = load_grow_config(small_config(data_dir, tmp_path / "b", **extra))
    with pytest.raises(Interrupt):
        run_growth(cfg, log=lambda m: None, on_record=killer)
    stage2 = tmp_path / "b" / "stages" / "02-depth2"
    from substrate_lm.training import CheckpointManager

    assert [p.name for p in CheckpointManager(stage2 / "checkpoints").step_dirs()] == ["step-00000002"]
    assert not (stage2 / "metrics.json").exists()
    assert (tmp_path / "b" / "stages" / "01-depth1" / "metrics.json").is_file()
    seen = []
    got = run_growth(cfg, resume=True, log=lambda m: None, on_record=seen.append)
    assert [(r["phase"], r["step"]) for r in seen] == [("stage2", s) for s in range(3, 7)]
    steps = [r["step"] for r in map(json.loads, (stage2 / "log.jsonl").read_text().splitlines())
             if r["event"] == "train"]
    assert steps == list(range(1, 7))  # the records after the checkpoint were rewritten, not duplicated
    for a, b in zip(ref["stages"], got["stages"]):
        assert a["val_loss"] == b["val_loss"] and a["train_loss"] == b["train_loss"]
    from safetensors.torch import load_file

    wa = load_file(tmp_path / "a" / "stages" / "02-depth2" / "model" / "model.safetensors")
    wb = load_file(stage2 / "model" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    w1 = load_file(tmp_path / "b" / "stages" / "01-depth1" / "model" / "model.safetensors")
    assert not torch.equal(w1["blocks.0.attn.qkv.weight"], wb["blocks.0.attn.qkv.weight"])  # LoRA merged in
    assert got["stages"][1]["lower_blocks_unchanged"] is None  # LoRA on: the lower blocks are meant to move
    assert "LoRA r2 on blocks 1-1" in got["stages"][1]["trained"]


def test_growth_config_errors_and_recipes(tmp_path):
    from substrate_lm.docking.grow_config import apply_overrides
    from substrate_lm.presets import get_preset

    with pytest.raises(SubstrateError, match=r"unknown config key train\.stepz"):
        load_grow_config({"train": {"stepz": 1}})
    with pytest.raises(SubstrateError, match=r"unknown config section \[growth\]"):
        load_grow_config({"growth": {}})
    with pytest.raises(SubstrateError, match=r"train\.steps must be an integer"):
        load_grow_config({"train": {"steps": "many"}})
    with pytest.raises(SubstrateError, match="lora.from_stage must be >= 2"):
        load_grow_config({"lora": {"from_stage": 1}})
    cfg = apply_overrides(load_grow_config(None), ["--train.lr=1e-2", "--lora.enabled=true", "--model.overrides.d_model=32",
                                                   "--lora.targets=[\"qkv\"]"])
    assert cfg.train.lr == 0.01 and cfg.lora.enabled and cfg.model.overrides == {"d_model": 32}
    assert cfg.lora.targets == ["qkv"]
    with pytest.raises(SubstrateError, match="unexpected argument 'train.lr'; settings look like --run.name"):
        apply_overrides(cfg, ["train.lr"])
    with pytest.raises(SubstrateError, match=r"train\.precision must be one of fp32, bf16"):
        apply_overrides(cfg, ["--train.precision", "fp16"])
    assert "--grow.n_layer = 3" in ENGINE.describe() and "Final depth." in ENGINE.describe()

    tiny = load_grow_config("grow-tiny")
    assert [s.depth for s in plan_stages(tiny.grow.n_layer, tiny.grow.first_layers, tiny.grow.layers_per_stage)] == [1, 2, 3]
    paper = load_grow_config("grow-paper-9x3")
    plan = plan_stages(paper.grow.n_layer, paper.grow.first_layers, paper.grow.layers_per_stage)
    assert [s.depth for s in plan] == [3, 6, 9]
    from substrate_lm.modeling import SubstrateForCausalLM

    with torch.device("meta"):
        model = SubstrateForCausalLM(get_preset(paper.model.preset, substrate=paper.model.substrate or None,
                                                n_layer=paper.grow.n_layer))
    total = sum(p.numel() for p in model.parameters())
    assert abs(total / 181.6e6 - 1) < 0.01, total  # the study's 16-bit 9-layer model: 181.6M
    with pytest.raises(SubstrateError, match="not found"):
        load_grow_config(tmp_path / "nope.toml")


def test_growth_needs_prepared_data(tmp_path):
    cfg = load_grow_config({"run": {"dir": str(tmp_path / "r")}, "data": {"path": str(tmp_path / "empty")}})
    with pytest.raises(SubstrateError, match="data"):
        run_growth(cfg, log=lambda m: None)


def test_grow_tiny_recipe_end_to_end(data_dir, tmp_path):
    cfg = load_grow_config("grow-tiny", [f"--data.path={data_dir}", f"--run.dir={tmp_path / 'run'}", "--run.device=cpu"])
    result = run_growth(cfg, log=lambda m: None)
    stages = result["stages"]
    assert [s["depth"] for s in stages] == [1, 2, 3]
    assert stages[0]["lower_blocks_unchanged"] is None
    assert all(s["lower_blocks_unchanged"] is True for s in stages[1:])
    # growing helps: each stage's model is better than the previous one on the same tokens
    assert stages[0]["val_loss"] > stages[1]["val_loss"] > stages[2]["val_loss"]
    assert result["baseline"]["tokens_total"] == stages[-1]["tokens_total"]
    assert (tmp_path / "run" / "depth.png").is_file() and "| stage3 |" in result["table"]
    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(result["info"]["final_model"], trust_remote_code=True)
    ids = torch.tensor([[5, 6, 7]])
    assert final.generate(ids, 4, do_sample=False, min_new_tokens=4).shape == (1, 7)
