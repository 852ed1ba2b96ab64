"""The training loop on CPU: learning, exact resume, NaN stop, frozen table, clear errors."""

from __future__ import annotations

import pytest
import torch
from training_helpers import make_char_tokenizer, read_log, tiny_config

from substrate_lm.errors import SubstrateError
from substrate_lm.modeling import substrate_fingerprint
from substrate_lm.training import Trainer, load_checkpoint


class Stop(Exception):
    """Raised from a callback to simulate a crash mid-run."""


def test_tiny_run_learns_logs_and_keeps_the_table_frozen(tmp_path, prepared):
    cfg = tiny_config(tmp_path / "run", prepared, **{"train.steps": 12, "eval.interval": 6,
                                                      "checkpoint.interval": 6})
    result = Trainer(cfg).fit()
    model = result.model
    table = model.token_embeddings.weight
    assert not table.requires_grad and table.grad is None
    # the frozen table is bit-identical to the substrate that was installed
    assert substrate_fingerprint(table) == model.config.substrate_fingerprint
    assert torch.all((table == 0) | (table == 1))

    train = read_log(tmp_path / "run")
    assert [r["step"] for r in train] == list(range(1, 13))
    assert train[-1]["loss"] < train[0]["loss"] - 0.5  # ln(80) = 4.4 -> clearly lower
    assert all(r["lr"] > 0 and r["tok_per_s"] > 0 for r in train)
    val = read_log(tmp_path / "run", "val")
    assert [r["step"] for r in val] == [6, 12]
    v = val[-1]
    assert v["val_ppl"] == pytest.approx(torch.tensor(v["val_loss"]).exp().item(), rel=1e-6)
    assert 0 < v["val_bpc"] < v["val_loss"] / 0.693  # chars/token >= 1

    ck = load_checkpoint(result.checkpoint)
    assert ck.step == 12 and ck.state["tokens"] == 12 * 4 * 32
    # the frozen table is stored with the weights but has no optimizer state
    assert "token_embeddings.weight" in ck.model_state
    assert torch.equal(ck.model_state["token_embeddings.weight"], table.detach().cpu())
    assert "token_embeddings.weight" not in ck.optimizer_state["state"]
    assert "lm_head.weight" in ck.optimizer_state["state"]
    assert (tmp_path / "run" / "config.toml").is_file()
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.json").is_file()


def test_interrupted_and_resumed_run_logs_the_same_losses(tmp_path, prepared):
    over = {"train.steps": 10, "checkpoint.interval": 4, "eval.interval": 4}
    ref = Trainer(tiny_config(tmp_path / "a", prepared, **over)).fit()

    def crash(record):
        if record["event"] == "train" and record["step"] == 6:
            raise Stop()

    with pytest.raises(Stop):
        Trainer(tiny_config(tmp_path / "b", prepared, **over), callbacks=[crash]).fit()
    assert [r["step"] for r in read_log(tmp_path / "b")] == list(range(1, 7))
    resumed = Trainer(tiny_config(tmp_path / "b", prepared, **over), resume=True).fit()

    a, b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 11))  # steps 5-6 re-logged once, not twice
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bit-identical on CPU
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    assert [r["grad_norm"] for r in a] == [r["grad_norm"] for r in b]
    assert [r["val_loss"] for r in read_log(tmp_path / "a", "val")] == \
        [r["val_loss"] for r in read_log(tmp_path / "b", "val")]
    for (k, p), (_, q) in zip(ref.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(p, q), k


def test_resume_skips_a_truncated_latest_checkpoint(tmp_path, prepared, capsys):
    over = {"train.steps": 6, "checkpoint.interval": 2, "eval.interval": 0}
    Trainer(tiny_config(tmp_path / "a", prepared, **over)).fit()

    def crash(record):
        if record["event"] == "train" and record["step"] == 5:
            raise Stop()

    with pytest.raises(Stop):
        Trainer(tiny_config(tmp_path / "b", prepared, **over), callbacks=[crash]).fit()
    latest = tmp_path / "b" / "checkpoints" / "step-00000004" / "model.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])  # a torn write
    capsys.readouterr()
    Trainer(tiny_config(tmp_path / "b", prepared, **over), resume=True).fit()
    err = capsys.readouterr().err
    warn = [line for line in err.splitlines() if "unusable" in line]
    assert len(warn) == 1 and "step-00000004" in warn[0] and "using step-00000002" in warn[0]
    assert "resumed from" in err and "(step 2)" in err
    assert [r["loss"] for r in read_log(tmp_path / "a")] == [r["loss"] for r in read_log(tmp_path / "b")]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, prepared):
    cfg = tiny_config(tmp_path / "run", prepared, **{
        "train.steps": 6, "train.lr": 1e30, "train.min_lr": 1e29, "train.warmup": 0,
        "train.clip": 0.0, "checkpoint.interval": 1, "eval.interval": 0})
    with pytest.raises(SubstrateError) as exc:
        Trainer(cfg).fit()
    msg = str(exc.value)
    assert "\n" not in msg and ("nan" in msg or "inf" in msg) and "at step 2" in msg
    assert "last good checkpoint: step-00000001" in msg
    dirs = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.is_dir())
    assert dirs == ["step-00000001"]
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000001")
    assert all(torch.isfinite(v).all() for v in ck.model_state.values())


def test_existing_run_is_never_overwritten_without_resume(tmp_path, prepared):
    cfg = tiny_config(tmp_path / "run", prepared, **{"train.steps": 2, "eval.interval": 0})
    Trainer(cfg).fit()
    before = (tmp_path / "run" / "checkpoints" / "step-00000002" / "model.safetensors").read_bytes()
    with pytest.raises(SubstrateError, match="already holds checkpoints.*--resume"):
        Trainer(cfg).fit()
    after = (tmp_path / "run" / "checkpoints" / "step-00000002" / "model.safetensors").read_bytes()
    assert before == after


def test_missing_corpus_and_mismatches_are_one_line(tmp_path, prepared):
    with pytest.raises(SubstrateError, match="missing corpus: .*nowhere.*data prepare"):
        Trainer(tiny_config(tmp_path / "r1", tmp_path / "nowhere")).fit()
    other = tmp_path / "other_tok"
    tok = make_char_tokenizer()
    tok.add_tokens(["<extra>"])
    tok.save_pretrained(str(other))
    with pytest.raises(SubstrateError, match="tokenizer mismatch: .* was tokenised with"):
        Trainer(tiny_config(tmp_path / "r2", prepared, **{"model.tokenizer": str(other)})).fit()
    from substrate_lm.factory import build_model

    wrong = build_model("tiny", overrides={"vocab_size": 512})
    with pytest.raises(SubstrateError, match="tokenizer/substrate mismatch: .*512 rows"):
        Trainer(tiny_config(tmp_path / "r3", prepared), model=wrong).fit()
    assert not (tmp_path / "r3" / "checkpoints").exists()


def test_chunked_loss_bf16_and_activation_checkpointing(tmp_path, prepared):
    def losses(name, **over):
        Trainer(tiny_config(tmp_path / name, prepared, **{"train.steps": 3, "eval.interval": 0,
                                                           **over})).fit()
        return [r["loss"] for r in read_log(tmp_path / name)]

    base = losses("base")
    full = losses("full", **{"train.chunked_loss": False})
    assert full == pytest.approx(base, abs=1e-5)  # the chunked loss is the same loss
    ac = losses("ac", **{"train.activation_checkpointing": True})
    assert ac == pytest.approx(base, abs=1e-6)  # recomputation changes memory, not math
    bf16 = losses("bf16", **{"train.precision": "bf16"})
    assert bf16[0] == pytest.approx(base[0], abs=0.05) and all(map(torch.isfinite, torch.tensor(bf16)))


def test_grad_accumulation_samples_and_tensorboard(tmp_path, prepared):
    pytest.importorskip("tensorboard")
    cfg = tiny_config(tmp_path / "run", prepared, **{
        "train.steps": 2, "train.grad_accum": 3, "eval.interval": 0, "log.tensorboard": True,
        "log.sample_interval": 1, "log.sample_prompts": ["the "], "log.sample_tokens": 8})
    result = Trainer(cfg).fit()
    assert read_log(tmp_path / "run")[-1]["tokens"] == 2 * 3 * 4 * 32
    samples = read_log(tmp_path / "run", "sample")
    assert [s["step"] for s in samples] == [1, 2] and all(s["prompt"] == "the " for s in samples)
    assert all(isinstance(s["text"], str) and s["text"] for s in samples)
    assert result.step == 2
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_tiny_recipe_bootstraps_the_world_corpus(tmp_path):
    """`train --config tiny` on a fresh machine: world corpus -> bvv241 tokenizer -> shards -> run."""
    data = tmp_path / "world-data"
    over = {"data.world": "300KB", "train.steps": 2, "train.seq_len": 64, "eval.interval": 0,
            "log.sample_prompts": ["The "], "log.sample_tokens": 4}
    cfg = tiny_config(tmp_path / "run", data, **over)
    result = Trainer(cfg).fit()
    assert (data / "corpus" / "world.json").is_file()
    assert (data / "tokenizer" / "tokenizer.json").is_file()
    assert result.model.config.vocab_size == 65536 and result.val is not None
    assert read_log(tmp_path / "run", "sample")
    stamp = (data / "meta.json").stat().st_mtime_ns
    Trainer(tiny_config(tmp_path / "run2", data, **over)).fit()  # reuses the prepared data
    assert (data / "meta.json").stat().st_mtime_ns == stamp
