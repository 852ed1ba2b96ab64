"""Worker for the 2-process tests, launched by torchrun: trains, then reports what its rank sees.

Usage: torchrun --standalone --nproc_per_node 2 dist_worker.py RUN_DIR DATA_DIR STRATEGY OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch.distributed as dist  # noqa: E402
from training_helpers import DIST_OVERRIDES, digest, tiny_config  # noqa: E402

from substrate_lm.training import Trainer  # noqa: E402


def main() -> None:
    run_dir, data_dir, strategy, out_dir = sys.argv[1:5]
    # the worker owns the group so it can still gather after the trainer is done
    dist.init_process_group("gloo")
    cfg = tiny_config(run_dir, data_dir, **DIST_OVERRIDES, **{"dist.strategy": strategy})
    result = Trainer(cfg).fit()
    report = {
        "rank": dist.get_rank(),
        "world_size": dist.get_world_size(),
        "digest": digest(result.model.state_dict()),
        "losses": [r["loss"] for r in result.history if r["event"] == "train"],
        "val": [r["val_loss"] for r in result.history if r["event"] == "val"],
        "sharded": any(hasattr(p, "full_tensor") for p in result.model.parameters()),
    }
    with open(os.path.join(out_dir, f"rank{dist.get_rank()}.json"), "w") as fh:
        json.dump(report, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
