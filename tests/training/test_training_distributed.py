"""2 processes on gloo under DDP and FSDP2: ranks agree, match one process, checkpoints reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_helpers import DIST_OVERRIDES, digest, read_log, tiny_config

from substrate_lm.training import Trainer, load_checkpoint, model_from_checkpoint

WORKER = Path(__file__).with_name("dist_worker.py")


def launch(strategy: str, run_dir: Path, data_dir: Path, out: Path) -> list[dict]:
    out.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(run_dir), str(data_dir), strategy, str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def single(tmp_path_factory, prepared):
    """The single-process twin: batch 8 = 2 ranks x 4 (the loader slices one global batch)."""
    run = tmp_path_factory.mktemp("single") / "run"
    Trainer(tiny_config(run, prepared, **DIST_OVERRIDES, **{"train.batch_size": 8})).fit()
    return run


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_processes_agree_and_reload_in_one(tmp_path, prepared, single, strategy):
    run = tmp_path / "run"
    ranks = launch(strategy, run, prepared, tmp_path / "out")
    r0, r1 = ranks
    assert r0["world_size"] == 2 and r0["sharded"] == (strategy == "fsdp2")
    # ranks agree: the same logged (all-reduced) losses and the same parameters
    assert r0["losses"] == r1["losses"] and r0["val"] == r1["val"]
    assert r0["digest"] == r1["digest"]
    assert len(r0["losses"]) == DIST_OVERRIDES["train.steps"]
    # and they match the single process that sees the same global batches
    ref = [r["loss"] for r in read_log(single)]
    assert r0["losses"] == pytest.approx(ref, abs=2e-5)
    assert r0["val"] == pytest.approx([r["val_loss"] for r in read_log(single, "val")], abs=2e-5)

    # the final checkpoint holds the full (gathered) model and reloads in this single process
    model, ck = model_from_checkpoint(run)
    assert ck.step == DIST_OVERRIDES["train.steps"] and ck.state["world_size"] == 2
    assert digest(model.state_dict()) == r0["digest"]
    twin = load_checkpoint(single / "checkpoints" / ck.path.name).model_state
    for key, value in ck.model_state.items():
        torch.testing.assert_close(value, twin[key], atol=2e-5, rtol=1e-4)
    # optimizer state is keyed by parameter names, so a single process can resume the run
    cfg = tiny_config(run, prepared, **{**DIST_OVERRIDES, "train.steps": 5, "train.batch_size": 8})
    resumed = Trainer(cfg, resume=True).fit()
    assert resumed.step == 5 and torch.isfinite(torch.tensor(resumed.train_loss))
