"""Corpus preparation and loading: sources -> uint16 token shards -> deterministic batches.

```python
from substrate_lm.data import prepare_data, TokenShards, DataSource
stats = prepare_data(["corpus/", "hf:wikitext:wikitext-2-raw-v1"], "tok_dir", "data/run1",
                     val_fraction=0.01, seed=0)
ds = TokenShards("data/run1", split="train")
x, y = ds.get_batch(step, batch_size=8, seq_len=1024, seed=0, mode="random")
```

See :mod:`.sources` (source specs), :mod:`.prepare` (directory layout, split rule, resume) and
:mod:`.shards` (batch sampling).
"""

from .folder import is_prepared, load_meta, load_stats
from .prepare import DEFAULT_SHARD_TOKENS, document_split, prepare_data
from .shards import TokenShards
from .sources import DataSource, parse_sources

__all__ = [
    "DEFAULT_SHARD_TOKENS",
    "DataSource",
    "TokenShards",
    "document_split",
    "is_prepared",
    "load_meta",
    "load_stats",
    "parse_sources",
    "prepare_data",
]
