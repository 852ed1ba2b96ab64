"""A growth run on 2 DDP processes with micro-batches (1 row x grad_accum 2 per rank) equals one process
(batch 4): every stage continues the data stream at the right global step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_docking_grow import small_config

from substrate_lm.docking import load_grow_config, run_growth

WORKER = Path(__file__).with_name("grow_dist_worker.py")


@pytest.mark.slow
def test_two_ranks_with_grad_accum_grow_like_one_process(data_dir, tmp_path):
    single = run_growth(load_grow_config(small_config(data_dir, tmp_path / "one", baseline={"enabled": False},
                                                      eval={"batch_size": 4})), log=lambda m: None)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(data_dir), str(tmp_path / "two"), str(out), "ddp", "1", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in range(2))
    assert r0 == r1
    assert len(r0["stages"]) == len(single["stages"]) == 2
    for one, two in zip(single["stages"], r0["stages"]):
        assert two["world_size"] == 2 and two["tokens_total"] == one["tokens_total"]
        assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
        assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)
