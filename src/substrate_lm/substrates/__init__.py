"""Frozen substrates: every token-embedding table of the model family, built, saved and verified.

```python
from substrate_lm.substrates import build_substrate, save_substrate, load_substrate, verify_substrate
sub = build_substrate("bits", 65536, 1024, seed=0, tile_period=512)   # the 1024-bit paper table
sub = build_substrate("glyph", vocab_strings, 1024)                     # UNI_GLYPH (needs Unifont)
save_substrate(sub, "bits1024.safetensors"); sub = load_substrate("bits1024.safetensors")
report = verify_substrate(sub)          # or a path: a substrate file or a model directory
```

Kinds: ``bits``, ``token-id``, ``float``, ``glyph``, ``trainable`` (see :mod:`.registry`).
"""

from .io import (
    iter_embeddings_txt,
    load_substrate,
    read_embeddings_txt,
    save_substrate,
    write_embeddings_txt,
)
from .registry import (
    BINARY_KINDS,
    KINDS,
    Substrate,
    build_substrate,
    check_vocab,
    fingerprint,
    normalize_kind,
    paper_options,
)
from .verify import format_report, verify_substrate

__all__ = [
    "KINDS",
    "BINARY_KINDS",
    "Substrate",
    "build_substrate",
    "check_vocab",
    "fingerprint",
    "normalize_kind",
    "paper_options",
    "save_substrate",
    "load_substrate",
    "write_embeddings_txt",
    "read_embeddings_txt",
    "iter_embeddings_txt",
    "verify_substrate",
    "format_report",
]
