"""Growth and fusion run through the one Trainer: every phase is a sub-run with the trainer's
config, logs and verified checkpoints; interrupted phases resume bit-identically; a damaged
checkpoint is detected; two gloo processes grow the same model as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_docking_grow import small_config

from substrate_lm.docking import load_grow_config, phase_run_config, run_growth
from substrate_lm.errors import SubstrateError
from substrate_lm.training import CheckpointManager, evaluate_loss, load_config

WORKER = Path(__file__).with_name("grow_dist_worker.py")


class Interrupt(Exception):
    pass


def killer(phase: str, step: int):
    def hook(r):
        if r["phase"] == phase and r["step"] == step:
            raise Interrupt
    return hook


def exports(run_dir: Path) -> dict[str, dict]:
    """Every exported phase model of a growth run: {phase folder: state dict}."""
    return {p.parent.relative_to(run_dir).as_posix(): load_file(p)
            for p in sorted(run_dir.glob("**/model/model.safetensors"))}


def flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_phase_run_config_carries_the_growth_settings(tmp_path):
    cfg = load_grow_config({"train": {"steps": 5, "warmup": 10, "lr": 2e-3, "min_lr": 5e-3, "compile": True},
                            "dist": {"strategy": "ddp", "backend": "gloo"}, "eval": {"steps": 3},
                            "checkpoint": {"interval": 2, "keep_last": 3}})
    rc = phase_run_config(cfg, "stage2", tmp_path / "s2", depth=2, steps=5, lr=2e-3)
    assert rc.run_dir() == tmp_path / "s2" and rc.run.name == "grow-stage2"
    assert (rc.train.steps, rc.train.lr, rc.train.min_lr, rc.train.warmup) == (5, 2e-3, 2e-3, 4)
    assert rc.train.compile and rc.dist.strategy == "ddp" and rc.dist.backend == "gloo"
    assert (rc.eval.steps, rc.eval.interval, rc.checkpoint.interval, rc.checkpoint.keep_last) == (3, 0, 2, 3)
    assert rc.model.overrides["n_layer"] == 2 and rc.log.sample_prompts == []
    assert load_config(rc.to_dict()) == rc  # a valid training config, written as the phase's config.toml
    with pytest.raises(SubstrateError, match="dist.strategy must be"):
        load_grow_config({"dist": {"strategy": "horovod"}})


def test_interrupted_phases_resume_bit_identically_and_a_damaged_checkpoint_is_detected(data_dir, tmp_path, capfd):
    """Stage 2 is killed after step 5 (checkpoints at 2 and 4); the step-4 checkpoint gets a flipped
    byte, so the resume must detect it and restart from step 2. The baseline is then killed after
    step 9. The finished run's exports equal an uninterrupted run's bit for bit."""
    ref_dir, run_dir = tmp_path / "a", tmp_path / "b"
    ref = run_growth(load_grow_config(small_config(data_dir, ref_dir)), log=lambda m: None)
    cfg = load_grow_config(small_config(data_dir, run_dir))
    with pytest.raises(Interrupt):
        run_growth(cfg, log=lambda m: None, on_record=killer("stage2", 5))
    stage2 = run_dir / "stages" / "02-depth2"
    ckpts = CheckpointManager(stage2 / "checkpoints").step_dirs()
    assert [p.name for p in ckpts] == ["step-00000004", "step-00000002"]
    flip_byte(ckpts[0] / "model.safetensors")
    capfd.readouterr()
    seen = []
    with pytest.raises(Interrupt):
        run_growth(cfg, resume=True, log=lambda m: None,
                   on_record=lambda r: (seen.append((r["phase"], r["step"])), killer("baseline", 9)(r)))
    err = capfd.readouterr().err
    assert "checkpoint step-00000004 is unusable" in err and "using step-00000002" in err
    assert seen[:4] == [("stage2", s) for s in (3, 4, 5, 6)] and seen[-1] == ("baseline", 9)
    got = run_growth(cfg, resume=True, log=lambda m: None)
    a, b = exports(ref_dir), exports(run_dir)
    assert sorted(a) == ["baseline-depth2/model", "stages/01-depth1/model", "stages/02-depth2/model"] == sorted(b)
    for phase in a:
        assert a[phase].keys() == b[phase].keys()
        assert all(torch.equal(a[phase][k], b[phase][k]) for k in a[phase]), phase
    for x, y in zip(ref["stages"] + [ref["baseline"]], got["stages"] + [got["baseline"]]):
        assert x["val_loss"] == y["val_loss"] and x["train_loss"] == y["train_loss"]
    assert got["stages"][1]["lower_blocks_unchanged"] is True
    # each phase logged every step once, in order, despite the restarts
    for phase in ("stages/02-depth2", "baseline-depth2"):
        records = [json.loads(x) for x in (run_dir / phase / "log.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in records if r["event"] == "train"]
        assert steps == list(range(1, len(steps) + 1)) and steps[-1] in (6, 12)


def test_a_stage_without_an_intact_checkpoint_is_refused_on_resume(data_dir, tmp_path):
    cfg = load_grow_config(small_config(data_dir, tmp_path / "r", baseline={"enabled": False}))
    with pytest.raises(Interrupt):
        run_growth(cfg, log=lambda m: None, on_record=killer("stage1", 3))
    (only,) = CheckpointManager(tmp_path / "r" / "stages" / "01-depth1" / "checkpoints").step_dirs()
    flip_byte(only / "model.safetensors")
    with pytest.raises(SubstrateError, match="no usable checkpoint in .*01-depth1"):
        run_growth(cfg, resume=True, log=lambda m: None)


def test_evaluate_loss_is_the_trainers_validation(data_dir, tmp_path):
    """The stage's reported val loss is evaluate_loss on its exported model (the function the trainer's
    validation also sums with), and docking re-exports it."""
    import substrate_lm.docking as docking
    from transformers import AutoModelForCausalLM

    from substrate_lm.data import TokenShards

    assert docking.evaluate is evaluate_loss
    result = run_growth(load_grow_config(small_config(data_dir, tmp_path / "r", baseline={"enabled": False})),
                        log=lambda m: None)
    stage = result["stages"][-1]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "r" / stage["model_dir"], trust_remote_code=True)
    ev = evaluate_loss(model, TokenShards(data_dir, split="val"), 4, 32, 2)
    assert ev["loss"] == stage["val_loss"] and ev["tokens"] == stage["eval_tokens"] == 2 * 4 * 32


@pytest.mark.slow
@pytest.mark.parametrize("strategy, micro, tol", [
    ("ddp", (), 2e-5),
    ("fsdp2", (), 2e-5),
    # 1 row x grad_accum 2 per rank: every stage continues the data stream at the right global step
    ("ddp", ("1", "2"), 1e-4),
], ids=["ddp", "fsdp2", "ddp-accum2"])
def test_two_gloo_processes_grow_like_one(data_dir, tmp_path, strategy, micro, tol):
    """2 ranks x batch 2 (DDP or FSDP2; or 1 row x grad_accum 2) see the global batch of one process
    with batch 4: same losses."""
    single = run_growth(load_grow_config(small_config(data_dir, tmp_path / "one", baseline={"enabled": False},
                                                      eval={"batch_size": 4})), log=lambda m: None)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(data_dir), str(tmp_path / "two"), str(out), strategy, *micro]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in range(2))
    assert r0 == r1  # every rank returns rank 0's results
    assert len(r0["stages"]) == len(single["stages"]) == 2
    for one, two in zip(single["stages"], r0["stages"]):
        assert two["world_size"] == 2 and two["tokens_total"] == one["tokens_total"]
        assert two["val_loss"] == pytest.approx(one["val_loss"], abs=tol)
        assert two["train_loss"] == pytest.approx(one["train_loss"], abs=tol)
    assert r0["stages"][1]["lower_blocks_unchanged"] is True
    assert (tmp_path / "two" / "results.md").is_file()
