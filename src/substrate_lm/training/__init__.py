"""Training: typed run configs, the loop, optimizer and schedule, checkpoints, DDP/FSDP2.

    from substrate_lm.training import load_config, Trainer
    cfg = load_config("tiny", ["--train.steps", "100"])    # a recipe name or a TOML path
    result = Trainer(cfg).fit()                           # or Trainer(cfg, resume=True)

Command line: ``substrate-lm train --config tiny [--resume] [--section.key VALUE ...]`` and
``substrate-lm export RUN_OR_CHECKPOINT --out DIR``; multi-process runs through ``torchrun``.
"""

from ..components.loss import causal_lm_loss
from .build import RunData, build_model_meta, build_run_model, load_run_data, load_run_tokenizer
from .checkpoint import (CheckpointCorrupt, CheckpointManager, load_checkpoint, load_plain_file,
                         resolve_checkpoint, save_plain_file, verify_checkpoint)
from .config import (RunConfig, apply_overrides, describe_config, load_config, recipe_names,
                     recipe_path)
from .evaluate import evaluate_loss, mean_loss
from .export import export_checkpoint, model_from_checkpoint
from .metrics import flops_per_token, matmul_params, peak_flops
from .optim import WarmupCosine, build_optimizer, build_scheduler, param_groups
from .trainer import TrainResult, Trainer, seed_everything, train

__all__ = [
    "RunConfig", "load_config", "apply_overrides", "describe_config", "recipe_names", "recipe_path",
    "Trainer", "TrainResult", "train", "seed_everything", "causal_lm_loss", "evaluate_loss", "mean_loss",
    "RunData", "build_run_model", "build_model_meta", "load_run_data", "load_run_tokenizer",
    "CheckpointManager", "CheckpointCorrupt", "load_checkpoint", "resolve_checkpoint",
    "verify_checkpoint", "export_checkpoint", "model_from_checkpoint", "save_plain_file",
    "load_plain_file",
    "flops_per_token", "matmul_params", "peak_flops",
    "build_optimizer", "build_scheduler", "param_groups", "WarmupCosine",
]
