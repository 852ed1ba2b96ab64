"""Experiments built from the other modules: ablation grids, the one-command demo and its docking
experiment (:mod:`.docking`)."""

from .ablate import AblationConfig, aggregate, load_ablation_config, markdown_table, run_ablation
from .demo import DemoSection, DemoSettings, run_demo
from .docking import DockingSection, DockingSettings, run_docking_experiment

__all__ = ["AblationConfig", "DemoSection", "DemoSettings", "DockingSection", "DockingSettings", "aggregate",
           "load_ablation_config", "markdown_table", "run_ablation", "run_demo", "run_docking_experiment"]
