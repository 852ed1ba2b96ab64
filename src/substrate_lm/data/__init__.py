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

from .prepare import DEFAULT_SHARD_TOKENS, document_split, prepare_data
from .shards import TokenShards
from .sources import DataSource, parse_sources

__all__ = [
    "DEFAULT_SHARD_TOKENS",
    "DataSource",
    "TokenShards",
    "document_split",
    "load_stats",
    "parse_sources",
    "prepare_data",
]


def load_stats(data_dir) -> dict:
    """``stats.json`` of a prepared directory (see :func:`prepare_data`)."""
    import json
    from pathlib import Path

    from ..errors import SubstrateError

    path = Path(data_dir) / "stats.json"
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        manifest = Path(data_dir) / "manifest.json"
        try:
            m = json.loads(manifest.read_text(encoding="utf-8"))
            shards = [sh for sp in m["splits"].values() for sh in sp["shards"]]
            tokens = sum(sh["tokens"] for sh in shards)
        except (OSError, ValueError, KeyError, TypeError):
            m = None
        if m is not None and not m.get("complete"):
            raise SubstrateError(
                f"{data_dir} is not finished ({len(shards)} shards, {tokens:,} tokens so far); "
                "re-run the same substrate-lm data prepare command to finish it"
            ) from None
        raise SubstrateError(
            f"{path} not found: {data_dir} is not a finished prepared directory; run "
            "substrate-lm data prepare --out DIR"
        ) from None
    except (OSError, ValueError) as exc:
        raise SubstrateError(f"{path} is unreadable ({exc})") from None
