"""Worker of the 2-process growth test, launched by torchrun: grows a model, writes what its rank got.

Usage: torchrun --standalone --nproc_per_node 2 grow_dist_worker.py DATA_DIR RUN_DIR OUT_DIR STRATEGY [BATCH ACCUM]

BATCH x ACCUM (default 2 x 1) rows per rank and step: 2 ranks make the global batch 4 of the
single-process twin either way.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_docking_grow import small_config  # noqa: E402

from substrate_lm.docking import load_grow_config, run_growth  # noqa: E402


def main() -> None:
    data_dir, run_dir, out_dir, strategy = sys.argv[1:5]
    batch, accum = (int(v) for v in (sys.argv[5:7] or ["2", "1"]))
    # 2 ranks x 2 rows (or x 1 row x 2 micro-batches): the global batch of the single-process twin (batch 4)
    cfg = load_grow_config(small_config(data_dir, run_dir, baseline={"enabled": False},
                                        train={"batch_size": batch, "grad_accum": accum},
                                        eval={"batch_size": 4}, dist={"strategy": strategy, "backend": "gloo"}))
    result = run_growth(cfg, log=lambda m: None)
    rank = os.environ["RANK"]
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump({"stages": result["stages"], "info": result["info"]}, fh)


if __name__ == "__main__":
    main()
