"""The docking port: compose experts that share a frozen substrate, and grow models layer by layer.

After A. Bochkov, *Growing Transformers* (arXiv 2507.07129). A frozen, shared token-embedding
substrate is a common interface: experts trained separately merge by averaging their logits, and
a deep model can be grown one block (or three) at a time on top of frozen lower blocks.

```python
from substrate_lm.docking import compose, save_composed, train_fusion, run_growth, load_grow_config

moe = compose(["runs/ru/model", "runs/zh/model"], weights=[0.5, 0.5])   # ComposedForCausalLM
save_composed(moe, "runs/moe")       # AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)

result = run_growth(load_grow_config("grow-tiny", ["--data.path", "data/tiny"]))
print(result["table"])
```

Growth stages, the baseline and fusion-adapter training are ordinary
:class:`~substrate_lm.training.Trainer` runs (see :mod:`.grow_run` and :mod:`.fusion`);
``evaluate`` is :func:`substrate_lm.training.evaluate_loss`, and ``apply_lora`` / ``merge_lora``
are :mod:`substrate_lm.components.lora`'s, re-exported here.

Heavy dependencies (peft for LoRA, matplotlib for the plot) are imported only when used.
"""

from ..components.lora import apply_lora
from ..components.lora import merge as merge_lora
from ..training.evaluate import evaluate_loss as evaluate
from .compose import (
    Expert,
    check_experts,
    compose,
    expert_model,
    load_expert,
    save_composed,
    tokenizer_fingerprint,
    with_adapter,
)
from .fusion import fusion_run_config, mixing_weights, set_fusion_trainable, train_fusion
from .grow import Stage, block_fingerprints, grow_model, plan_stages, set_stage_trainable
from .grow_config import GrowConfig, apply_overrides, load_grow_config, phase_run_config
from .grow_run import run_growth


__all__ = [
    "Expert",
    "GrowConfig",
    "Stage",
    "apply_lora",
    "apply_overrides",
    "block_fingerprints",
    "check_experts",
    "compose",
    "evaluate",
    "expert_model",
    "fusion_run_config",
    "grow_model",
    "load_expert",
    "load_grow_config",
    "merge_lora",
    "mixing_weights",
    "phase_run_config",
    "plan_stages",
    "run_growth",
    "save_composed",
    "set_fusion_trainable",
    "set_stage_trainable",
    "tokenizer_fingerprint",
    "train_fusion",
    "with_adapter",
]
