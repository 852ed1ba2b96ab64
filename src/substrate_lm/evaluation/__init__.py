"""Evaluation: the papers' generation protocol, a log-likelihood protocol, lm-eval, perplexity.

Public API::

    from substrate_lm.evaluation import (evaluate_models, write_report, load_bench, load_model,
        run_paper, run_loglik, perplexity, perplexity_shards, write_lm_eval_tasks, run_lm_eval, BENCHES)

Heavy optional dependencies (datasets, sacrebleu, matplotlib, lm_eval, pyarrow) are imported inside
the functions that need them.
"""

from .datasets import BENCHES, BenchData, Item, load_bench, parse_benches
from .harness import run_lm_eval, write_lm_eval_tasks
from .loglik import run_loglik, score_continuations
from .models import check_vocab, generate_continuations, load_model
from .paper import HFGenerator, format_line, run_paper, run_stats
from .perplexity import perplexity, perplexity_shards
from .report import markdown_report, write_report
from .runner import evaluate_models

__all__ = [
    "BENCHES", "BenchData", "Item", "load_bench", "parse_benches",
    "run_lm_eval", "write_lm_eval_tasks",
    "run_loglik", "score_continuations",
    "check_vocab", "generate_continuations", "load_model",
    "HFGenerator", "format_line", "run_paper", "run_stats",
    "perplexity", "perplexity_shards", "markdown_report", "write_report", "evaluate_models",
]
