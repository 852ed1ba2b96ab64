"""Fine-tuning: masked loss, full and LoRA runs, the merged export, exact resume, the run record."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from training_helpers import make_char_tokenizer, read_log

from substrate_lm.data.instructions import IGNORE_INDEX, load_instructions
from substrate_lm.errors import SubstrateError
from substrate_lm.loading import load_model_dir
from substrate_lm.training.finetune import apply_finetune_lora, finetune
from substrate_lm.components.loss import causal_lm_loss

QUIET = {"log.progress": False, "log.tensorboard": False, "log.interval": 1}


class Stop(Exception):
    """Raised from a callback to simulate a crash mid-run."""


@pytest.fixture(scope="module")
def tok():
    return make_char_tokenizer()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tok):
    """An exported tiny model (2 blocks, frozen random-bits table) with its tokenizer."""
    from substrate_lm.export import export_model
    from substrate_lm.factory import build_model

    return export_model(build_model("tiny", tokenizer=tok, seed=0), tmp_path_factory.mktemp("base") / "m",
                        tokenizer=tok)


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    """A learnable instruction file: the answer is the number after the one asked about."""
    path = tmp_path_factory.mktemp("sft") / "sft.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(60):
            who = ("Ann", "Bob", "Cy", "Di", "Ed", "Flo")[i // 10]
            fh.write(json.dumps({"prompt": f"{who}: after {i % 10}?\nA:", "response": f" {(i + 1) % 10}."}) + "\n")
    return path


def run(base_dir, sft, out, steps=20, **kw):
    over = {**QUIET, "train.steps": steps, "train.seq_len": 24, "train.batch_size": 8, "train.lr": 3e-3,
            "train.warmup": 2, "eval.interval": 0, "checkpoint.interval": 5, "checkpoint.keep_last": 5,
            **kw.pop("overrides", {})}
    return finetune(base_dir, sft, out, overrides=over, warn=lambda m: None, **kw)


def val_loss(model, tok, sft) -> float:
    data = load_instructions(sft, tok, seq_len=24, val_fraction=0.05)
    x, y = data.val.get_batch(0, len(data.val), 24, mode="sequential")
    with torch.no_grad():
        return causal_lm_loss(model.eval(), x, y).item()


@pytest.mark.parametrize("chunked", [True, False])
def test_causal_lm_loss_ignores_masked_positions(base_dir, chunked):
    model = load_model_dir(base_dir)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(4, model.config.vocab_size, (3, 10), generator=g)
    y = torch.randint(4, model.config.vocab_size, (3, 10), generator=g)
    y[0, :6] = IGNORE_INDEX  # a prompt
    y[2, 4:] = IGNORE_INDEX  # padding
    with torch.no_grad():
        logits = model(input_ids=x).logits
        keep = y != IGNORE_INDEX
        manual = F.cross_entropy(logits[keep], y[keep])  # unmasked positions only
        assert torch.allclose(causal_lm_loss(model, x, y, chunked=chunked), manual, atol=1e-5)
        # a peft wrapper has no aligned ``targets``: the full-logits path must mask the same way
        peft_model = apply_finetune_lora(model, {"r": 2, "alpha": 4.0, "dropout": 0.0, "targets": ["qkv"]})
        assert torch.allclose(causal_lm_loss(peft_model, x, y, chunked=chunked), manual, atol=1e-5)


def test_full_finetune_learns_and_keeps_the_frozen_table(tmp_path, base_dir, sft, tok):
    res = run(base_dir, sft, tmp_path / "run", steps=30)
    table = res.train.model.token_embeddings.weight
    assert not table.requires_grad and table.grad is None
    base, tuned = load_model_dir(base_dir), load_model_dir(res.model_dir)
    assert torch.equal(base.token_embeddings.weight, tuned.token_embeddings.weight)
    before, after = val_loss(base, tok, sft), val_loss(tuned, tok, sft)
    assert after < 0.7 * before, (before, after)
    assert abs(res.record["val_loss"] - after) < 1e-4  # the trainer scored the same held-out examples
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert "lm_head.weight" in changed and "blocks.0.attn.qkv.weight" in changed

    rec = json.loads((res.run_dir / "finetune.json").read_text())
    cfg = json.loads((base_dir / "config.json").read_text())
    assert rec["method"] == "full" and rec["lora"] is None
    assert rec["base_model"] == str(base_dir) and rec["base_weights_sha256"] == cfg["weights_sha256"]
    assert rec["data_kind"] == "instructions" and rec["examples"]["val"] == 3 and rec["steps"] == 30
    assert rec["trainable_parameters"] == sum(p.numel() for n, p in base.named_parameters()
                                              if n != "token_embeddings.weight")


def test_lora_trains_only_adapters_and_the_merged_export_matches(tmp_path, base_dir, sft, tok):
    res = run(base_dir, sft, tmp_path / "run", steps=20, lora={"r": 4, "targets": "qkv,fc"})
    assert res.record["lora"] == {"r": 4, "alpha": 16.0, "dropout": 0.0, "targets": ["qkv", "fc"]}

    # the trained adapters, rebuilt from the final checkpoint on a fresh copy of the base
    from substrate_lm.training import load_checkpoint

    peft_model = apply_finetune_lora(load_model_dir(base_dir), res.record["lora"])
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert res.record["trainable_parameters"] == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    ck = load_checkpoint(res.train.checkpoint)
    peft_model.get_base_model().load_state_dict(ck.model_state)

    merged = load_model_dir(res.model_dir)
    x = torch.randint(4, merged.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = peft_model.eval()(input_ids=x).logits
        got = merged(input_ids=x).logits
    assert torch.allclose(got, want, atol=1e-5)

    base = load_model_dir(base_dir).state_dict()
    for k, v in merged.state_dict().items():
        targeted = k.endswith(("attn.qkv.weight", "mlp.fc.weight"))
        assert torch.equal(v, base[k]) != targeted, k  # exactly the LoRA targets moved
    assert val_loss(merged, tok, sft) < val_loss(load_model_dir(base_dir), tok, sft)

    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(res.model_dir), trust_remote_code=True)
    with torch.no_grad():
        assert torch.allclose(hf(input_ids=x).logits, got, atol=1e-6)


@pytest.mark.parametrize("lora", [None, {"r": 4}])
def test_resumed_finetune_equals_the_uninterrupted_one(tmp_path, base_dir, sft, lora):
    ref = run(base_dir, sft, tmp_path / "a", steps=12, lora=lora)

    def crash(record):
        if record["event"] == "train" and record["step"] == 7:
            raise Stop()

    with pytest.raises(Stop):
        run(base_dir, sft, tmp_path / "b", steps=12, lora=lora, callbacks=[crash])
    assert not (tmp_path / "b" / "model").exists()
    # resume from the record: model, data and LoRA settings as the run started
    resumed = finetune(None, None, tmp_path / "b", resume=True, warn=lambda m: None)
    assert [r["loss"] for r in read_log(tmp_path / "a")] == [r["loss"] for r in read_log(tmp_path / "b")]
    a, b = load_model_dir(ref.model_dir).state_dict(), load_model_dir(resumed.model_dir).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_prepared_data_folder(tmp_path, base_dir, prepared):
    res = run(base_dir, prepared, tmp_path / "run", steps=4)
    assert res.record["data_kind"] == "prepared" and load_model_dir(res.model_dir) is not None
    assert [r["step"] for r in read_log(tmp_path / "run")] == [1, 2, 3, 4]


def test_refusals(tmp_path, base_dir, sft):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SubstrateError, match="not empty"):
        run(base_dir, sft, out)
    with pytest.raises(SubstrateError, match="not a fine-tune run folder"):
        finetune(None, None, out, resume=True)
    with pytest.raises(SubstrateError, match="cannot be set for a fine-tune"):
        run(base_dir, sft, tmp_path / "x", overrides={"model.preset": "small"})
    with pytest.raises(SubstrateError, match="name no linear layer.*choose from fc, proj, qkv"):
        run(base_dir, sft, tmp_path / "x", lora={"targets": "q_proj"})
    with pytest.raises(SubstrateError, match="exceeds the model's context length 128"):
        run(base_dir, sft, tmp_path / "x", overrides={"train.seq_len": 512})
    assert not (tmp_path / "x").exists()  # refused before anything was written

    done = run(base_dir, sft, tmp_path / "done", steps=2)
    with pytest.raises(SubstrateError, match="started with LoRA settings None"):
        finetune(None, None, done.run_dir, resume=True, lora=True)


def test_resume_refuses_a_changed_base_model_or_data(tmp_path, base_dir, sft, tok):
    from substrate_lm.export import export_model
    from substrate_lm.factory import build_model

    data = tmp_path / "sft.jsonl"
    data.write_bytes(sft.read_bytes())
    done = run(base_dir, data, tmp_path / "run", steps=2)
    other = export_model(build_model("tiny", tokenizer=tok, seed=1), tmp_path / "other", tokenizer=tok)
    with pytest.raises(SubstrateError, match="differ from those .* started from"):
        finetune(other, None, done.run_dir, resume=True)
    with open(data, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"prompt": "new", "response": " one"}) + "\n")
    with pytest.raises(SubstrateError, match="changed since"):
        finetune(None, None, done.run_dir, resume=True)


def test_validation_scores_each_held_out_example_once(tmp_path, base_dir, sft, tok):
    # 10 held-out examples in batches of 8: the second batch has 2 real rows, not 6 repeats
    res = run(base_dir, sft, tmp_path / "run", steps=3, overrides={"data.val_fraction": 10 / 60,
                                                                    "eval.batch_size": 8})
    assert res.record["examples"]["val"] == 10
    data = load_instructions(sft, tok, seq_len=24, val_fraction=10 / 60)
    tuned = load_model_dir(res.model_dir).eval()
    total = count = 0
    with torch.no_grad():
        for i in range(len(data.val)):  # one example at a time, weighted by its scored tokens
            x, y = data.val.get_batch(i, 1, 24, mode="sequential")
            n = int((y != IGNORE_INDEX).sum())
            total += causal_lm_loss(tuned, x, y).item() * n
            count += n
    assert abs(res.record["val_loss"] - total / count) < 1e-5
    assert res.record["eval_all"] is True  # recorded: a resume recomputes the steps


def test_eval_steps_cover_the_split_once_over_ranks(monkeypatch):
    from substrate_lm.training.finetune import _plan_eval, finetune_config

    for world, n_val, bs in ((1, 10, 8), (2, 10, 4), (4, 5, 2)):
        monkeypatch.setenv("WORLD_SIZE", str(world))
        cfg = finetune_config({"train.batch_size": bs})
        assert _plan_eval(cfg, n_val, {}, True) is True
        assert cfg.eval.steps == -(-n_val // (cfg.eval.batch_size * world))
        cfg = finetune_config({"eval.steps": 50, "train.batch_size": bs})
        assert _plan_eval(cfg, n_val, {"eval.steps": 50}, True) is False  # the caller's, capped
        assert cfg.eval.steps == -(-n_val // (bs * world))


def test_resume_refuses_split_or_batch_changes_and_refreshes_the_record(tmp_path, base_dir, sft):
    done = run(base_dir, sft, tmp_path / "run", steps=2)
    for over, key in (({"train.seed": 5}, "train.seed 0 -> 5"), ({"data.val_fraction": 0.2}, "data.val_fraction"),
                      ({"train.batch_size": 4, "train.grad_accum": 2}, "train.batch_size 8 -> 4, train.grad_accum"),
                      ({"train.seq_len": 16}, "train.seq_len"), ({"data.mode": "sequential"}, "data.mode")):
        with pytest.raises(SubstrateError, match=f"--resume cannot change {key}") as exc:
            finetune(None, None, done.run_dir, resume=True, overrides=over)
        assert "\n" not in str(exc.value)
    moved = tmp_path / "moved.jsonl"  # the same data at another path: the record follows it
    moved.write_bytes(sft.read_bytes())
    res = finetune(None, moved, done.run_dir, resume=True, warn=lambda m: None,
                   overrides={"train.steps": 3, "log.interval": 2, "checkpoint.interval": 3, "eval.interval": 3,
                              "run.threads": 1})
    rec = json.loads((done.run_dir / "finetune.json").read_text())
    assert res.train.step == 3 and rec["steps"] == 3 and rec["data"] == str(moved)


def test_out_inside_the_model_and_val_fraction_of_prepared_data_are_refused(tmp_path, base_dir, sft, prepared):
    before = sorted(p.name for p in base_dir.iterdir())
    with pytest.raises(SubstrateError, match="lies inside --model"):
        run(base_dir, sft, base_dir / "run")
    assert sorted(p.name for p in base_dir.iterdir()) == before
    with pytest.raises(SubstrateError, match="prepared folder.*drop --val-fraction"):
        run(base_dir, prepared, tmp_path / "x", overrides={"data.val_fraction": 0.2})
    assert not (tmp_path / "x").exists()


def test_padding_to_the_longest_row_is_exact_and_not_counted(tmp_path, base_dir, sft, tok):
    """A batch as wide as its longest example scores every example as it scores alone (and as the
    earlier seq_len-wide batch did); the log's tok/s counts real tokens and step 0 is the base model."""
    data = load_instructions(sft, tok, seq_len=24, val_fraction=0.05)
    model = load_model_dir(base_dir).eval()
    x, y = data.train.get_batch(0, 8, 24, mode="sequential")
    assert x.shape[1] < 24  # the examples are 13-15 tokens: no row reaches seq_len
    data.train.pad_to = "seq_len"
    fx, fy = data.train.get_batch(0, 8, 24, mode="sequential")
    data.train.pad_to = "longest"
    with torch.no_grad():
        narrow, wide = causal_lm_loss(model, x, y), causal_lm_loss(model, fx, fy)
        assert torch.allclose(narrow, wide, rtol=1e-6, atol=1e-6)
        total = count = 0.0
        for i in range(8):  # each example alone, in a row of its own length
            xi, yi = data.train.get_batch(i, 1, 24, mode="sequential")
            n = int((yi != IGNORE_INDEX).sum())
            total += causal_lm_loss(model, xi, yi).item() * n
            count += n
        assert narrow.item() == pytest.approx(total / count, rel=1e-5)

    res = run(base_dir, sft, tmp_path / "run", steps=4, overrides={"train.grad_accum": 2, "eval.interval": 2})
    vals, trains = read_log(res.run_dir, "val"), read_log(res.run_dir)
    assert [r["step"] for r in vals] == [0, 2, 4] and vals[-1]["val_loss"] < vals[0]["val_loss"]
    assert res.record["base_val_loss"] == pytest.approx(vals[0]["val_loss"])
    assert res.record["val_loss"] == pytest.approx(vals[-1]["val_loss"])
    # tokens: each row up to its eos (its last learned target), 16 rows a step; never 16 x seq_len
    rows = [data.train.examples[i] for s in range(4) for i in data.train.rows(s, 16, seed=0)]
    assert trains[-1]["tokens"] == sum(len(e.ids) - 1 for e in rows) < 4 * 16 * 24
    assert all(0 < r["learned_tok_per_s"] < r["tok_per_s"] for r in trains)
