"""substrate-lm: GPT-like language models on a frozen, non-semantic token-embedding substrate.

The model family lives in :mod:`substrate_lm.modeling` (self-contained Hugging Face files); every
other sub-package (tokenizer, substrates, data, training, evaluation, analysis, docking) builds on it.
"""

__version__ = "0.1.0"

from .errors import SubstrateError  # noqa: F401
