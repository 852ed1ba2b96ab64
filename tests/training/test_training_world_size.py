"""World-size invariance and sharded checkpoints (gloo, CPU).

One global batch split any way (ranks x micro-batches x rows) trains the same model: 4 DDP or FSDP2
processes follow the single-process loss curve, a 4-rank FSDP2 run resumed on 2 ranks with
``grad_accum`` doubled continues it, FSDP2 checkpoints are written as shards by every rank and
still reload, verify and export in one process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_helpers import read_log, tiny_config

from substrate_lm.training import (Trainer, export_checkpoint, load_checkpoint, model_from_checkpoint,
                                   verify_checkpoint)
from substrate_lm.training.checkpoint import CheckpointCorrupt

WORKER = Path(__file__).with_name("mp_worker.py")
#: 20 steps of a global batch of 8 sequences: 4 ranks x 2, or one process x 8
CURVE = {"train.steps": 20, "train.batch_size": 2, "checkpoint.interval": 10, "eval.interval": 10,
         "eval.steps": 1, "train.lr": 3e-3, "train.warmup": 2}
TOL = dict(rel=1e-5, abs=1e-5)  # measured: 5e-7 over 20 steps


def launch(n: int, spec: dict, out: Path) -> list[dict]:
    """Run ``mp_worker.py`` on ``n`` gloo processes; every rank's report."""
    out.mkdir(parents=True, exist_ok=True)
    spec = dict(spec, out=str(out))
    (out / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
           str(WORKER), str(out / "spec.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(n)]


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_log(run)]


@pytest.fixture(scope="module")
def single(tmp_path_factory, prepared):
    """The single-process twin: one process, batch 8 (the same stream as before this change)."""
    run = tmp_path_factory.mktemp("single") / "run"
    Trainer(tiny_config(run, prepared, **{**CURVE, "train.batch_size": 8})).fit()
    return run


@pytest.fixture(scope="module")
def fsdp4(tmp_path_factory, prepared):
    """A 4-rank FSDP2 run of the same 20 steps (sharded checkpoints at steps 10 and 20)."""
    root = tmp_path_factory.mktemp("fsdp4")
    ranks = launch(4, {"kind": "train", "run_dir": str(root / "run"), "data_dir": str(prepared),
                       "overrides": {**CURVE, "dist.strategy": "fsdp2"}}, root / "out")
    return root / "run", ranks


# ----------------------------------------------------------------------------------------------
# one process: any split of the global batch is the same run


def test_micro_batches_and_rows_split_one_global_batch(tmp_path, prepared, single):
    """batch 8 x accum 1 (the old stream), 2 x 4 and 4 x 2 train on the same 8 sequences per step."""
    ref, ref_val = losses(single), [r["val_loss"] for r in read_log(single, "val")]
    for bs, accum in ((2, 4), (4, 2)):
        run = tmp_path / f"b{bs}"
        Trainer(tiny_config(run, prepared, **{**CURVE, "train.batch_size": bs,
                                              "train.grad_accum": accum, "eval.batch_size": bs})).fit()
        assert losses(run) == pytest.approx(ref, rel=1e-5, abs=1e-5)
        # validation reads the same windows too: eval.batch_size x accum x ranks rows per batch
        assert [r["val_loss"] for r in read_log(run, "val")] == pytest.approx(ref_val, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# 4 processes


@pytest.mark.slow
def test_four_fsdp2_ranks_follow_one_process_and_write_shards(fsdp4, single, tmp_path):
    run, ranks = fsdp4
    assert all(r["world_size"] == 4 and r["sharded"] for r in ranks)
    assert all(r["losses"] == ranks[0]["losses"] and r["digest"] == ranks[0]["digest"] for r in ranks)
    assert ranks[0]["losses"] == pytest.approx(losses(single), **TOL)
    assert ranks[0]["val"] == pytest.approx([r["val_loss"] for r in read_log(single, "val")], **TOL)

    # every rank wrote its own shard; no model.safetensors gathered on rank 0
    ck = run / "checkpoints" / "step-00000020"
    manifest = verify_checkpoint(ck)
    assert manifest["layout"] == "sharded" and manifest["world_size"] == 4
    shards = sorted(p.name for p in (ck / "shards").iterdir())
    assert len(shards) == 4 and all(f"shards/{n}" in manifest["files"] for n in shards)
    assert not (ck / "model.safetensors").exists() and all(n.endswith(".safetensors") for n in shards)
    assert not list((run / "checkpoints").glob(".tmp-*"))

    # one process assembles the full model from the shards: the weights the ranks trained
    model, loaded = model_from_checkpoint(run)
    assert loaded.sharded and loaded.step == 20 and loaded.state["world_size"] == 4
    twin = load_checkpoint(single / "checkpoints" / "step-00000020")
    for key, value in loaded.model_state.items():
        torch.testing.assert_close(value, twin.model_state[key], atol=2e-4, rtol=1e-3)
    full = load_checkpoint(ck)
    assert set(full.optimizer_state["state"]) == set(twin.optimizer_state["state"])
    for fqn, st in full.optimizer_state["state"].items():
        torch.testing.assert_close(st["exp_avg"], twin.optimizer_state["state"][fqn]["exp_avg"],
                                   atol=1e-4, rtol=1e-2)
    # ... and export still writes one Hugging Face folder
    out = export_checkpoint(run, tmp_path / "export")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


@pytest.mark.slow
def test_damaged_shard_is_refused_and_the_previous_checkpoint_used(fsdp4, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fsdp4[0], run)
    ck = run / "checkpoints" / "step-00000020"
    shard = sorted((ck / "shards").iterdir())[1]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(CheckpointCorrupt, match="sha256 mismatch"):
        verify_checkpoint(ck)
    warnings: list[str] = []
    _, loaded = model_from_checkpoint(run, warn=warnings.append)
    assert loaded.step == 10 and "step-00000020 is unusable" in warnings[0]
    assert "\n" not in warnings[0]
    # a shard file nobody listed (DCP would read it) makes the checkpoint unusable too
    ck10 = run / "checkpoints" / "step-00000010"
    shutil.copy(shard, ck10 / "shards" / "shard-00009-model-00001-of-00001.safetensors")
    with pytest.raises(CheckpointCorrupt, match="not in manifest.json"):
        verify_checkpoint(ck10)


@pytest.mark.slow
def test_four_rank_fsdp2_run_resumes_on_two_ranks_with_grad_accum_doubled(fsdp4, tmp_path, prepared):
    """Interrupted after step 10 of 4 ranks, continued on 2 ranks x accum 2: the same curve."""
    run = tmp_path / "run"
    shutil.copytree(fsdp4[0], run)
    shutil.rmtree(run / "checkpoints" / "step-00000020")  # as if killed after step 10's save
    ranks = launch(2, {"kind": "train", "run_dir": str(run), "data_dir": str(prepared), "resume": True,
                       "overrides": {**CURVE, "dist.strategy": "fsdp2", "train.grad_accum": 2}},
                   tmp_path / "out")
    ref = fsdp4[1][0]
    assert ranks[0]["steps"] == list(range(11, 21))
    assert ranks[0]["losses"] == pytest.approx(ref["losses"][10:], **TOL)
    assert ranks[0]["val"] == pytest.approx(ref["val"][1:], **TOL)
    assert ranks[0]["losses"] == ranks[1]["losses"]
    # the log continues the interrupted one, and the 2-rank save is sharded in 2
    assert [r["step"] for r in read_log(run)] == list(range(1, 21))
    ck = run / "checkpoints" / "step-00000020"
    assert verify_checkpoint(ck)["world_size"] == 2 and len(list((ck / "shards").iterdir())) == 2


@pytest.mark.slow
def test_four_ddp_ranks_follow_one_process(single, tmp_path, prepared):
    ranks = launch(4, {"kind": "train", "run_dir": str(tmp_path / "run"), "data_dir": str(prepared),
                       "overrides": {**CURVE, "dist.strategy": "ddp"}}, tmp_path / "out")
    assert all(r["losses"] == ranks[0]["losses"] and r["digest"] == ranks[0]["digest"] for r in ranks)
    assert ranks[0]["losses"] == pytest.approx(losses(single), **TOL)
    assert ranks[0]["val"] == pytest.approx([r["val_loss"] for r in read_log(single, "val")], **TOL)
    # DDP checkpoints stay one full file
    ck = tmp_path / "run" / "checkpoints" / "step-00000020"
    assert (ck / "model.safetensors").is_file() and not (ck / "shards").exists()


# ----------------------------------------------------------------------------------------------
# a LoRA fine-tune under torchrun


@pytest.fixture(scope="module")
def lora_inputs(tmp_path_factory):
    """An exported tiny model and an instruction file whose responses differ in length, so the
    micro-batches score different numbers of targets (the loss must weight them)."""
    from training_helpers import make_char_tokenizer

    from substrate_lm.export import export_model
    from substrate_lm.factory import build_model

    root = tmp_path_factory.mktemp("lora")
    tok = make_char_tokenizer()
    base = export_model(build_model("tiny", tokenizer=tok, seed=0), root / "base", tokenizer=tok)
    sft = root / "sft.jsonl"
    with open(sft, "w", encoding="utf-8") as fh:
        for i in range(60):
            fh.write(json.dumps({"prompt": f"count {i % 7}:", "response": " " + "ab" * (1 + i % 5) + "."})
                     + "\n")
    return base, sft


LORA_RUN = {"train.steps": 6, "train.seq_len": 24, "train.lr": 3e-3, "train.warmup": 1,
            "eval.interval": 3, "checkpoint.interval": 3, "log.interval": 1, "log.progress": False,
            "log.tensorboard": False}


@pytest.mark.slow
def test_lora_finetune_on_two_ranks_follows_one_process(lora_inputs, tmp_path):
    from substrate_lm.training.finetune import finetune

    base, sft = lora_inputs
    one = finetune(base, sft, tmp_path / "one", lora={"r": 4}, warn=lambda m: None,
                   overrides={**LORA_RUN, "train.batch_size": 8})
    ranks = launch(2, {"kind": "finetune", "base": str(base), "data": str(sft), "run_dir": str(tmp_path / "two"),
                       "lora": {"r": 4}, "overrides": {**LORA_RUN, "train.batch_size": 2, "train.grad_accum": 2}},
                   tmp_path / "out")
    ref = [r["loss"] for r in one.train.history if r["event"] == "train"]
    ref_val = [r["val_loss"] for r in one.train.history if r["event"] == "val"]
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(ref) == 6
    assert ranks[0]["losses"] == pytest.approx(ref, **TOL)
    assert ranks[0]["val"] == pytest.approx(ref_val, **TOL)
