"""The compact bvv241-style tokenizer of the experiments (demo, ablations, docking).

The published bvv241 layout spends 65,536 ids (and a 65,536-wide output head) on every character
of the BMP; a world in Latin and Cyrillic script needs about 1,300 monograms. The compact layout
keeps ``id == code point`` for the monograms ``0 .. top``, puts the 32 special ids right after
them and then just enough n-gram ids. Token strings (so glyph tables) and the tokenisation itself
stay those of the bvv241 construction: the same n-gram selection and merges, only the id space is
smaller, so the head no longer dominates the compute of a tiny model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..errors import SubstrateError
from ..tokenizer import build_from_corpus, save_tokenizer
from ..tokenizer.layout import BVV241_2_3, VocabLayout

N_SPECIAL = 32
#: files of a world folder whose characters the tokenizer must cover
WORLD_FILES = ("train.jsonl", "val.jsonl", "questions/mc.jsonl", "questions/short.jsonl")


def top_code_point(world_dir: Path) -> int:
    """The highest code point in a world folder's text and question files.

    Raises:
        SubstrateError: when it is at or above the surrogate block (CJK text): there the compact
            layout would save little; use the bvv241 layout.
    """
    top = 0
    for name in WORLD_FILES:
        path = Path(world_dir) / name
        if path.is_file():
            # the world writes its JSON lines with ensure_ascii=False: the file's characters are the text's
            top = max(top, max(map(ord, path.read_text(encoding="utf-8")), default=0))
    if top >= 0xD800:
        raise SubstrateError(
            f"the corpus uses code point U+{top:04X}; the compact tokenizer covers scripts below U+D800 "
            "without CJK (drop zh from the languages or use tokenizer = \"bvv241\")"
        )
    return top


def compact_layout(top: int, n_langs: int = 1, top_k: int | None = None, *, ngram_ids: int | None = None,
                   name: str | None = None):
    """A bvv241-style :class:`~substrate_lm.tokenizer.layout.VocabLayout` for monograms ``0 .. top``.

    Args:
        top: highest monogram code point (:func:`top_code_point` of a corpus, or a script's end).
        n_langs: languages whose n-grams get ids (``top_k`` per n-gram length and language).
        top_k: n-grams per length and language (default: the published layout's).
        ngram_ids: n-gram ids to reserve instead of ``top_k x lengths x n_langs``.
        name: layout name (default ``compact-<n_langs>x<top_k>``).
    """
    k = BVV241_2_3.top_k if top_k is None else int(top_k)
    capacity = k * len(BVV241_2_3.ns) * max(1, n_langs) if ngram_ids is None else int(ngram_ids)
    first_special = top + 1
    first_ngram = first_special + N_SPECIAL
    return VocabLayout(
        name=name or f"compact-{n_langs}x{k}",
        vocab_size=first_ngram + capacity,
        monogram_ranges=((0, top),),
        special_range=(first_special, first_ngram - 1),
        ngram_ranges=((first_ngram, first_ngram + capacity - 1),),
        ns=BVV241_2_3.ns,
        top_k=k,
    )


def corpus_layout(world_dir: Path, langs: list[str], top_k: int | None = None):
    """:func:`compact_layout` sized to a world folder's characters and languages."""
    return compact_layout(top_code_point(world_dir), len(langs), top_k)


def build_tokenizer(train_files: Iterable[Path], langs: list[str], out_dir: Path, layout=None) -> None:
    """Build the bvv241 construction from a corpus's n-grams (``layout``: None for the published
    65,536-id layout, else e.g. :func:`compact_layout`) and save it into ``out_dir``."""
    kw = {} if layout is None else {"layout": layout}
    save_tokenizer(build_from_corpus([Path(f) for f in train_files], langs=list(langs), **kw), out_dir,
                   overwrite=True)


__all__ = ["build_tokenizer", "compact_layout", "corpus_layout", "top_code_point"]
