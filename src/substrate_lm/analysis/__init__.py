"""Layer-wise analysis of emergent semantics for any HF causal LM that exposes hidden states.

Per-layer representations of words and entities (mean-pooled over their tokens in context, the
substrate's own rows as the first layer), linear probes with entity-grouped cross-validation and
a control task, nearest-neighbour purity, CKA between layers and models, 2-D maps, the papers'
seven word groups, and one self-contained HTML report. Entry point: :func:`analyze`.

scikit-learn and matplotlib are imported lazily, inside the functions that need them.
"""

from .analyze import analyze, load_model_and_tokenizer
from .cka import cka_matrix, linear_cka, rbf_cka
from .extract import SUBSTRATE, Representations, extract_representations, span_token_mask
from .items import load_items_jsonl, normalize_items, subsample_items, world_items
from .neighbors import neighbor_purity, purity_layers
from .plots import plot_cka_heatmap, plot_layer_curves, plot_probe_curves
from .probes import chance_levels, control_labels, probe_accuracy, probe_layers
from .report import CSS as REPORT_CSS, render_fragment, write_report
from .wordgroups import TEMPLATES, WORD_GROUPS, word_group_items

__all__ = [
    "analyze",
    "load_model_and_tokenizer",
    "cka_matrix",
    "linear_cka",
    "rbf_cka",
    "SUBSTRATE",
    "Representations",
    "extract_representations",
    "span_token_mask",
    "load_items_jsonl",
    "normalize_items",
    "subsample_items",
    "world_items",
    "neighbor_purity",
    "purity_layers",
    "chance_levels",
    "control_labels",
    "probe_accuracy",
    "probe_layers",
    "plot_cka_heatmap",
    "plot_layer_curves",
    "plot_probe_curves",
    "REPORT_CSS",
    "render_fragment",
    "write_report",
    "TEMPLATES",
    "WORD_GROUPS",
    "word_group_items",
]
