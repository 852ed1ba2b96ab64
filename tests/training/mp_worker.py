"""Worker of the world-size tests, launched by torchrun: runs what a JSON spec says, reports its rank.

Usage: torchrun --standalone --nproc_per_node N mp_worker.py SPEC.json

Spec: ``{"kind": "train", "run_dir", "data_dir", "overrides": {...}, "resume": false, "out"}`` trains
the shrunk ``tiny`` recipe (:func:`training_helpers.tiny_config`); ``{"kind": "finetune", "base",
"data", "run_dir", "overrides", "lora", "out"}`` fine-tunes. Each rank writes ``out/rank<R>.json``:
its logged train losses, validation losses and (train) a digest of the full trained weights.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch.distributed as dist  # noqa: E402
from training_helpers import digest, tiny_config  # noqa: E402

from substrate_lm.training import Trainer  # noqa: E402
from substrate_lm.training.finetune import finetune  # noqa: E402


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    # the worker owns the group so it can still gather after the trainer is done
    dist.init_process_group("gloo")
    report: dict = {"rank": dist.get_rank(), "world_size": dist.get_world_size()}
    if spec["kind"] == "train":
        cfg = tiny_config(spec["run_dir"], spec["data_dir"], **spec["overrides"])
        result = Trainer(cfg, resume=spec.get("resume", False)).fit()
        history = result.history
        report["digest"] = digest(result.model.state_dict())
        report["sharded"] = any(hasattr(p, "full_tensor") for p in result.model.parameters())
    else:
        res = finetune(spec["base"], spec["data"], spec["run_dir"], lora=spec.get("lora"),
                       overrides=spec["overrides"], warn=lambda m: None)
        history = res.train.history
    report["losses"] = [r["loss"] for r in history if r["event"] == "train"]
    report["steps"] = [r["step"] for r in history if r["event"] == "train"]
    report["val"] = [r["val_loss"] for r in history if r["event"] == "val"]
    with open(os.path.join(spec["out"], f"rank{dist.get_rank()}.json"), "w") as fh:
        json.dump(report, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
