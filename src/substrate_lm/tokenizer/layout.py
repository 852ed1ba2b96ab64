"""Vocabulary layouts of the bvv241 tokenizer family: which id ranges hold what.

A bvv241 vocabulary keeps ``id == code point`` for every single character it can hold (monograms),
puts the special tokens in a block of the Private Use Area, and fills the id ranges that no
character can use (the UTF-16 surrogate block, the rest of the Private Use Area and, for the
``max`` variant, plane 1) with frequent n-grams. All of this is data in a :class:`VocabLayout`; the
builder, the inspector and the unknown-character report read it from there instead of carrying
their own constants.

Ranges are inclusive ``(first, last)`` id pairs. Ids covered by no range become
``<unused_{id}>`` placeholders (0xFFFF in the published layout).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator

from ..errors import SubstrateError

Range = tuple[int, int]

#: The 23 special tokens of bvv241, in their published order starting at 0xE000.
PUBLISHED_SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<s>", "</s>", "<unk>", "<think>", "</think>", "<emotions>", "</emotions>",
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "[INST]", "[/INST]",
    "[EOT]", "[USER]", "[ASSISTANT]", "[FIM_PREFIX]", "[FIM_MIDDLE]", "[FIM_SUFFIX]", "[FIM_PAD]",
    "[REPO_NAME]", "[FILE_SEP]",
)

# Kinds of ids, as reported by VocabLayout.kind_of and the inspector.
MONOGRAM, SPECIAL, RESERVED, NGRAM, UNUSED = "monogram", "special", "reserved", "ngram", "unused"


@dataclass(frozen=True)
class VocabLayout:
    """Where monograms, special tokens and n-grams live in a bvv241-style vocabulary.

    Attributes:
        name: Short name, e.g. ``"bvv241-2-3"``.
        vocab_size: Number of ids; every id in ``[0, vocab_size)`` gets exactly one string.
        monogram_ranges: Id ranges whose id is the code point of the single character it holds.
            Must lie in ``[0, 0x10FFFF]`` and avoid the surrogate block (no valid text holds one).
        special_range: Ids of the special block; ``special_tokens`` fill it from its start and the
            rest become ``special_placeholder`` strings.
        ngram_ranges: Id ranges filled, in this order, with the selected n-grams.
        special_tokens: Special token strings in id order from ``special_range[0]``.
        ns: N-gram lengths taken from the statistics.
        top_k: N-grams taken per length and language.
        pad_token, bos_token, eos_token, unk_token: Roles; each must be in ``special_tokens``.
        special_placeholder: Format of unnamed special ids (``{id}`` is the decimal id).
        unused_placeholder: Format of ids that hold nothing (``{id}`` is the decimal id).
    """

    name: str
    vocab_size: int
    monogram_ranges: tuple[Range, ...]
    special_range: Range
    ngram_ranges: tuple[Range, ...]
    special_tokens: tuple[str, ...] = PUBLISHED_SPECIAL_TOKENS
    ns: tuple[int, ...] = (2, 3)
    top_k: int = 338
    pad_token: str = "<pad>"
    bos_token: str = "<s>"
    eos_token: str = "</s>"
    unk_token: str = "<unk>"
    special_placeholder: str = "<special_token_{id}>"
    unused_placeholder: str = "<unused_{id}>"

    def __post_init__(self) -> None:
        ranges = [*self.monogram_ranges, self.special_range, *self.ngram_ranges]
        for lo, hi in ranges:
            if not (0 <= lo <= hi < self.vocab_size):
                raise SubstrateError(
                    f"layout {self.name}: range {lo:#x}-{hi:#x} is empty or outside 0..{self.vocab_size - 1}"
                )
        ordered = sorted(ranges)
        for (_, hi), (lo, _) in zip(ordered, ordered[1:]):
            if lo <= hi:
                raise SubstrateError(f"layout {self.name}: id ranges overlap at {lo:#x}; make them disjoint")
        for lo, hi in self.monogram_ranges:
            if hi > 0x10FFFF or (lo <= 0xDFFF and hi >= 0xD800):
                raise SubstrateError(
                    f"layout {self.name}: monogram range {lo:#x}-{hi:#x} must avoid surrogates and stay <= 0x10FFFF"
                )
        size = self.special_range[1] - self.special_range[0] + 1
        if len(self.special_tokens) > size or len(set(self.special_tokens)) != len(self.special_tokens):
            raise SubstrateError(
                f"layout {self.name}: need at most {size} distinct special tokens, got {len(self.special_tokens)}"
            )
        for role in (self.pad_token, self.bos_token, self.eos_token, self.unk_token):
            if role not in self.special_tokens:
                raise SubstrateError(f"layout {self.name}: role token {role!r} is not among the special tokens")
        if not self.ns or min(self.ns) < 2 or self.top_k < 1:
            raise SubstrateError(f"layout {self.name}: n-gram lengths must be >= 2 and top_k >= 1")

    # --- id ranges -------------------------------------------------------------------------------

    def monogram_ids(self) -> Iterator[int]:
        """Ids (= code points) of all single characters the vocabulary holds, ascending."""
        for lo, hi in self.monogram_ranges:
            yield from range(lo, hi + 1)

    def ngram_slots(self) -> list[int]:
        """Ids available to n-grams, in assignment order."""
        return [i for lo, hi in self.ngram_ranges for i in range(lo, hi + 1)]

    @property
    def ngram_capacity(self) -> int:
        """How many n-grams fit."""
        return sum(hi - lo + 1 for lo, hi in self.ngram_ranges)

    def holds_char(self, ch: str) -> bool:
        """Whether the single character ``ch`` has its own id (its code point)."""
        cp = ord(ch)
        return any(lo <= cp <= hi for lo, hi in self.monogram_ranges)

    def special_id(self, token: str) -> int:
        """Id of a named special token."""
        return self.special_range[0] + self.special_tokens.index(token)

    @property
    def pad_id(self) -> int:
        return self.special_id(self.pad_token)

    @property
    def bos_id(self) -> int:
        return self.special_id(self.bos_token)

    @property
    def eos_id(self) -> int:
        return self.special_id(self.eos_token)

    @property
    def unk_id(self) -> int:
        return self.special_id(self.unk_token)

    def kind_of(self, token_id: int, token: str | None = None) -> str:
        """Classify an id: monogram, special (named), reserved (special placeholder), ngram or unused.

        Args:
            token_id: The id.
            token: Its vocabulary string, if known; an n-gram slot whose string is the unused
                placeholder is reported as unused.
        """
        if any(lo <= token_id <= hi for lo, hi in self.monogram_ranges):
            return MONOGRAM
        lo, hi = self.special_range
        if lo <= token_id <= hi:
            return SPECIAL if token_id - lo < len(self.special_tokens) else RESERVED
        if any(lo <= token_id <= hi for lo, hi in self.ngram_ranges):
            if token is not None and token == self.unused_placeholder.format(id=token_id):
                return UNUSED
            return NGRAM
        return UNUSED

    def with_options(self, **changes) -> "VocabLayout":
        """A copy with some fields changed (validated again), e.g. ``layout.with_options(top_k=500)``."""
        return dataclasses.replace(self, **changes)


#: The published bvv241-2-3 layout: 65,536 ids; bigrams and trigrams, top 338 per language.
BVV241_2_3 = VocabLayout(
    name="bvv241-2-3",
    vocab_size=0x10000,
    monogram_ranges=((0x0000, 0xD7FF), (0xF900, 0xFFFE)),
    special_range=(0xE000, 0xE0FF),
    ngram_ranges=((0xD800, 0xDFFF), (0xE100, 0xF8FF)),
    ns=(2, 3),
    top_k=338,
)

#: The published bvv241-max layout: the vocabulary doubled into plane 1 (131,072 ids), whose ids
#: 0x10000-0x1FFFE hold more n-grams (lengths 2-5, top 906); 0x1FFFF stays unused.
BVV241_MAX = VocabLayout(
    name="bvv241-max",
    vocab_size=0x20000,
    monogram_ranges=((0x0000, 0xD7FF), (0xF900, 0xFFFE)),
    special_range=(0xE000, 0xE0FF),
    ngram_ranges=((0xD800, 0xDFFF), (0xE100, 0xF8FF), (0x10000, 0x1FFFE)),
    ns=(2, 3, 4, 5),
    top_k=906,
)

LAYOUTS: dict[str, VocabLayout] = {layout.name: layout for layout in (BVV241_2_3, BVV241_MAX)}


def get_layout(name: str) -> VocabLayout:
    """A published layout by name (``bvv241-2-3`` or ``bvv241-max``)."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise SubstrateError(f"unknown tokenizer layout {name!r}; choose one of {', '.join(LAYOUTS)}") from None
