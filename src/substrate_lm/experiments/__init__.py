"""Experiments built from the other modules: ablation grids and the one-command demo."""

from .ablate import AblationConfig, aggregate, load_ablation_config, markdown_table, run_ablation
from .demo import DemoSettings, run_demo

__all__ = ["AblationConfig", "DemoSettings", "aggregate", "load_ablation_config", "markdown_table", "run_ablation", "run_demo"]
