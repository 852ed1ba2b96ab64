"""``glyph`` (UNI_GLYPH): GNU Unifont bitmaps of the token strings -> PCA -> unit rows.

The published recipe (spec 2.1, ``_tokenizer-builder-bvv241-2-3.ipynb``), token by token:

1. Canvas mode "L", white, ``32 * len(token)`` x 32. Each character ``i`` is drawn black with
   ``ImageFont.truetype(unifont, 32)`` at ``x = 32 i + (32 - w) // 2``,
   ``y = (32 - h) // 2 - bbox[1]`` where ``bbox = font.getbbox(ch)``, ``w, h`` its size.
2. Augmentation, re-seeded with 42 on every call (so every token gets the same draws):
   "easy" tokens (every character in U+0000-024F, 0370-03FF, 0400-052F, 0530-058F: Latin, Greek,
   Cyrillic, Armenian) are rotated by ``random.uniform(-4, 4)`` degrees (nearest, white fill),
   shifted by ``random.randint(-2, 2)`` in x then y, get noise (pixels where
   ``np.random.rand(H, W) < 0.01`` turn black) and a Gaussian blur of radius 0.5; other tokens only
   get noise at 0.001. Then binarise (``p < 128`` is ink) to mode "1".
3. Multi-character canvases are resized to 32 x 32 (``BILINEAR`` is asked for, PIL uses nearest
   for mode "1").
4. Bits in "polar snake" order: pixels sorted by ``(r, theta, x, y)`` around ``(16, 16)``, ink = 1.
5. PCA to the width, rows L2-normalised (:mod:`.pca`).

How this module computes exactly that, fast (all 65,536 bvv241 rows + PCA in seconds):

* Each distinct character is rendered once, by the same PIL calls, into a cell with margins (some
  glyphs, e.g. combining marks, reach into the neighbouring cell); a token canvas is the
  concatenation of its characters' cells plus those spills. Unifont at 32 px renders crisp 0/255
  pixels, so overlaying cells with ``min`` equals drawing them one after another.
* The draws of step 2 are the same for every token, so the noise mask depends only on the canvas
  size: one mask per token length. Non-easy tokens (most of the vocabulary) are then pure array
  operations: ``ink = canvas < 128 | mask``, nearest resize, fixed bit permutation.
* Easy tokens (a few thousand) run the literal PIL augmentation (rotate, paste, blur, threshold),
  so rotation and blur are PIL's own.
* :func:`reference_glyph_bits` is the literal token-by-token recipe; tests check that both agree.

Fidelity choices (see also ``benchmarks/2026-11-28-substrates.md``):

* Font: the original used ``unifont-14.0.01.ttf``; Debian ships 15.0.01 (``fonts-unifont``:
  ``unifont.otf``). Rendering the OTF with PIL at 32 px is the published method and, at 32 px
  (2 px per Unifont pixel), gives crisp bitmaps; glyphs changed between 14 and 15 differ.
* Layout engine: PIL's BASIC layout by default. With RAQM, ``getbbox("\\n")`` raises, and the
  published loop renders token 10 (``"\\n"``) fine, so it ran without RAQM; RAQM also repositions
  combining marks. ``layout="raqm"`` is available.
* ``unifont.hex`` is accepted as a FreeType-free alternative: bitmaps scaled by ``cell / 16`` and
  placed with the same centring rule (PIL's bbox: advance width horizontally, ink plus baseline
  vertically). It matches the OTF for ordinary glyphs but not where the OTF differs from the hex
  source (combining marks with zero advance, zero-width and control characters, code points
  missing from the hex file, which render blank).
* An empty token string is drawn as one blank cell (the recipe would fail on a zero-width canvas).
"""

from __future__ import annotations

import gzip
import math
import os
import random
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import SubstrateError
from ..fsutil import sha256_file
from .pca import pca_unit_rows
from .registry import check_options

DEFAULT_CELL = 32
AUGMENT_SEED = 42  # the notebook's random.seed(42); np.random.seed(42), re-seeded per token

# (max rotation in degrees, max shift in px, noise level, blur radius) for easy / other scripts
AUGMENT_PRESETS: dict[str, dict[str, tuple[float, int, float, float]]] = {
    "bvv241-2-3": {"easy": (4.0, 2, 0.01, 0.5), "other": (0.0, 0, 0.001, 0.0)},
    # bvv241-max / -nemo notebooks: stronger augmentation of easy scripts
    "bvv241-max": {"easy": (7.0, 3, 0.03, 0.5), "other": (0.0, 0, 0.001, 0.0)},
    "none": {"easy": (0.0, 0, 0.0, 0.0), "other": (0.0, 0, 0.0, 0.0)},
}
EASY_RANGES = ((0x0000, 0x024F), (0x0370, 0x03FF), (0x0400, 0x052F), (0x0530, 0x058F))

FONT_ENV = "SUBSTRATE_LM_UNIFONT"
DEFAULT_FONT_PATHS = (
    "/usr/share/fonts/opentype/unifont/unifont.otf",
    "/usr/share/fonts/truetype/unifont/unifont.ttf",
    "/usr/share/unifont/unifont.hex",
)
INSTALL_HINT = "install it with `apt-get install -y fonts-unifont unifont` or pass --font PATH (unifont .otf/.ttf/.hex)"


# --------------------------------------------------------------------------------------- font


@dataclass(frozen=True)
class FontInfo:
    """A resolved Unifont file: path, format ("otf", "ttf" or "hex"), version and sha256."""

    path: str
    format: str
    version: str | None
    sha256: str


def _sfnt_version(path: str) -> str | None:
    """The version string of an OTF/TTF (name table, nameID 5), e.g. ``"15.0.01"``."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        num_tables = struct.unpack(">H", data[4:6])[0]
        for i in range(num_tables):
            tag, _, offset, _ = struct.unpack(">4sIII", data[12 + 16 * i : 28 + 16 * i])
            if tag != b"name":
                continue
            _, count, string_offset = struct.unpack(">HHH", data[offset : offset + 6])
            for j in range(count):
                rec = data[offset + 6 + 12 * j : offset + 18 + 12 * j]
                platform, encoding, _, name_id, length, str_off = struct.unpack(">HHHHHH", rec)
                if name_id != 5:
                    continue
                raw = data[offset + string_offset + str_off : offset + string_offset + str_off + length]
                text = raw.decode("utf-16-be" if platform in (0, 3) else "latin-1", "replace")
                m = re.search(r"\d+(\.\d+)+", text)
                return m.group(0) if m else text.strip()
    except (OSError, struct.error):
        return None
    return None


def _hex_version(path: str) -> str | None:
    """Unifont .hex files carry no version; read it from the Debian package changelog if present."""
    changelog = Path("/usr/share/doc/unifont/changelog.Debian.gz")
    if not str(Path(path).resolve()).startswith("/usr/share/unifont/") or not changelog.exists():
        return None
    try:
        with gzip.open(changelog, "rt", encoding="utf-8", errors="replace") as fh:
            m = re.search(r"\((?:\d+:)?([\d.]+)", fh.readline())
        return m.group(1) if m else None
    except OSError:
        return None


def resolve_font(font: str | os.PathLike | None = None) -> FontInfo:
    """Find the Unifont file: ``font``, else ``$SUBSTRATE_LM_UNIFONT``, else the Debian paths.

    Raises:
        SubstrateError: no font found or an unsupported file type (one line, with the install hint).
    """
    if font is not None:
        candidates = [str(font)]
    elif os.environ.get(FONT_ENV):
        candidates = [os.environ[FONT_ENV]]
    else:
        candidates = list(DEFAULT_FONT_PATHS)
    for cand in candidates:
        if os.path.isfile(cand):
            break
    else:
        where = candidates[0] if font is not None or len(candidates) == 1 else ", ".join(candidates)
        raise SubstrateError(f"GNU Unifont not found at {where}; {INSTALL_HINT}")
    ext = Path(cand).suffix.lower().lstrip(".")
    if ext not in ("otf", "ttf", "hex"):
        raise SubstrateError(f"font {cand} is not a .otf, .ttf or .hex Unifont file; {INSTALL_HINT}")
    version = _hex_version(cand) if ext == "hex" else _sfnt_version(cand)
    return FontInfo(path=str(cand), format=ext, version=version, sha256=sha256_file(cand))


# ------------------------------------------------------------------------------ cell rendering


@dataclass
class Cells:
    """Rendered characters: grey cells plus the ink some glyphs put outside their own cell.

    Attributes:
        index: char -> row of ``core``.
        core: uint8 ``[n_chars, cell, cell]``, 255 = white, the pixels inside the char's own cell.
        spill: row -> uint8 ``[cell, cell + 2 * margin]`` strip (cell at ``margin``) for the few
            glyphs with ink outside their cell.
        margin: strip margin in pixels.
    """

    index: dict[str, int]
    core: np.ndarray
    spill: dict[int, np.ndarray]
    margin: int


def _pil_font(info: FontInfo, cell: int, layout: str):
    from PIL import ImageFont

    engine = ImageFont.Layout.RAQM if layout == "raqm" else ImageFont.Layout.BASIC
    try:
        return ImageFont.truetype(info.path, cell, layout_engine=engine)
    except OSError as exc:
        raise SubstrateError(f"cannot open font {info.path}: {exc}; {INSTALL_HINT}") from None


def _draw_char(draw, font, ch: str, x0: int, cell: int, fill: int = 0) -> None:
    """Draw one character as the notebook does: centred by ``font.getbbox`` in a cell at ``x0``."""
    try:
        bbox = font.getbbox(ch)
    except (RuntimeError, ValueError):
        return  # RAQM cannot lay out e.g. line separators; such a cell stays blank
    w, h = bbox[2] - bbox[0], bbox[3] - bbox[1]
    x = x0 + (cell - w) // 2
    y = (cell - h) // 2 - bbox[1]
    draw.text((x, y), ch, font=font, fill=fill)


def _render_pil(chars: Sequence[str], info: FontInfo, cell: int, layout: str) -> Cells:
    from PIL import Image, ImageDraw

    font = _pil_font(info, cell, layout)
    margin = 2 * cell
    # Drawn as light-on-black (fill 255 on 0): PIL's own ``getbbox`` then finds the ink in C and
    # only the cell is copied out; grey = 255 - level equals black-on-white drawing (fill 0 on 255).
    strip = Image.new("L", (cell + 2 * margin, cell), 0)
    draw = ImageDraw.Draw(strip)
    core = np.full((len(chars), cell, cell), 255, dtype=np.uint8)
    spill: dict[int, np.ndarray] = {}
    box = (margin, 0, margin + cell, cell)
    for i, ch in enumerate(chars):
        _draw_char(draw, font, ch, margin, cell, fill=255)
        ink = strip.getbbox()
        if ink is None:
            continue  # blank glyph (space, "\n", ...): nothing to clear either
        if ink[0] < margin or ink[2] > margin + cell:
            spill[i] = 255 - np.asarray(strip)
        core[i] = 255 - np.asarray(strip.crop(box))
        draw.rectangle((ink[0], 0, ink[2] - 1, cell - 1), fill=0)
    return Cells({ch: i for i, ch in enumerate(chars)}, core, spill, margin)


@lru_cache(maxsize=2)
def _hex_table(path: str, sha256: str) -> dict[int, str]:
    table: dict[int, str] = {}
    with open(path, encoding="ascii", errors="replace") as fh:
        for line in fh:
            cp, sep, bits = line.strip().partition(":")
            if sep and bits:
                table[int(cp, 16)] = bits
    return table


def _render_hex(chars: Sequence[str], info: FontInfo, cell: int) -> Cells:
    """Cells from ``unifont.hex``: 16-row bitmaps scaled by ``cell // 16``, placed like PIL does.

    PIL's BASIC ``getbbox`` spans the advance width horizontally and the ink plus the baseline
    vertically (ascender line at y = 0, baseline 14 Unifont rows below it), so the notebook's
    centring becomes: ``x = (cell - advance) // 2``, ``y = (cell - h) // 2 - top``.
    """
    if cell % 16:
        raise SubstrateError(f"a .hex font needs a cell size that is a multiple of 16, got {cell}")
    scale = cell // 16
    baseline = 14 * scale
    glyphs = _hex_table(info.path, info.sha256)
    core = np.full((len(chars), cell, cell), 255, dtype=np.uint8)
    spill: dict[int, np.ndarray] = {}
    margin = 2 * cell
    for i, ch in enumerate(chars):
        code = glyphs.get(ord(ch)) if len(ch) == 1 else None
        if not code:
            continue  # not in the hex file: blank cell
        width = len(code) // 4  # 32 hex digits -> 8 px wide, 64 -> 16 px wide
        rows = np.array([int(code[r * width // 4 : (r + 1) * width // 4], 16) for r in range(16)], dtype=np.int64)
        bitmap = ((rows[:, None] >> np.arange(width - 1, -1, -1)[None, :]) & 1).astype(bool)  # [16, width]
        bitmap = np.repeat(np.repeat(bitmap, scale, axis=0), scale, axis=1)  # [cell, width*scale]
        advance = bitmap.shape[1]
        ink_rows = np.flatnonzero(bitmap.any(axis=1))
        top = min(int(ink_rows[0]), baseline) if ink_rows.size else baseline
        bottom = max(int(ink_rows[-1]) + 1, baseline) if ink_rows.size else baseline
        x = (cell - advance) // 2
        y = (cell - (bottom - top)) // 2 - top
        canvas = np.full((cell, cell + 2 * margin), 255, dtype=np.uint8)
        ys, xs = np.nonzero(bitmap)
        ys, xs = ys + y, xs + x + margin
        keep = (ys >= 0) & (ys < cell) & (xs >= 0) & (xs < canvas.shape[1])
        canvas[ys[keep], xs[keep]] = 0
        core[i] = canvas[:, margin : margin + cell]
        if canvas[:, :margin].min() < 255 or canvas[:, margin + cell :].min() < 255:
            spill[i] = canvas
    return Cells({ch: i for i, ch in enumerate(chars)}, core, spill, margin)


def render_cells(chars: Sequence[str], info: FontInfo, cell: int = DEFAULT_CELL, layout: str = "basic") -> Cells:
    """Render each character once (PIL for .otf/.ttf, bitmaps for .hex)."""
    if info.format == "hex":
        return _render_hex(chars, info, cell)
    return _render_pil(chars, info, cell, layout)


# -------------------------------------------------------------------------------- the recipe


def is_easy(text: str) -> bool:
    """True when every character is Latin, Greek, Cyrillic or Armenian (the stronger augmentation)."""
    return all(any(lo <= ord(c) <= hi for lo, hi in EASY_RANGES) for c in text)


@lru_cache(maxsize=8)
def polar_order(cell: int = DEFAULT_CELL) -> np.ndarray:
    """Flat pixel indices (``y * cell + x``) in polar-snake order: sorted by (r, theta, x, y)."""
    c = cell / 2
    keys = []
    for y in range(cell):
        for x in range(cell):
            dx, dy = x - c, y - c
            keys.append((math.hypot(dx, dy), math.atan2(dy, dx), x, y))
    keys.sort()
    return np.array([y * cell + x for _, _, x, y in keys], dtype=np.int64)


@lru_cache(maxsize=64)
def _noise_mask(height: int, width: int, level: float, seed: int) -> np.ndarray:
    # np.random.seed(42); np.random.rand(H, W) < level: the same mask for every canvas of this size
    if level <= 0:
        return np.zeros((height, width), dtype=bool)
    return np.random.RandomState(seed).rand(height, width) < level


@lru_cache(maxsize=16)
def _draws(max_rotation: float, max_shift: int, seed: int) -> tuple[float, int, int]:
    # random.seed(42); angle = uniform(-r, r); dx = randint(-s, s); dy = randint(-s, s)
    rnd = random.Random(seed)
    angle = rnd.uniform(-max_rotation, max_rotation)
    dx = rnd.randint(-max_shift, max_shift)
    dy = rnd.randint(-max_shift, max_shift)
    return angle, dx, dy


@lru_cache(maxsize=64)
def _nearest_columns(width: int, cell: int) -> np.ndarray:
    """Source column of each output column when PIL resizes ``width`` -> ``cell`` with NEAREST."""
    from PIL import Image

    index = Image.fromarray(np.arange(width, dtype=np.int32)[None, :].repeat(cell, axis=0))  # mode "I"
    return np.asarray(index.resize((cell, cell), Image.NEAREST))[0].astype(np.int64)


@lru_cache(maxsize=64)
def _rotate_shift_map(height: int, width: int, angle: float, dx: int, dy: int) -> np.ndarray:
    """Flat source index of every pixel after ``rotate(angle)`` + ``paste(at=(dx, dy))``; -1 = white.

    Computed by applying PIL's own nearest-neighbour rotate and paste to an image of pixel indices
    (mode "I"), so the geometry is PIL's exactly; the same map then serves every canvas of this size.
    """
    from PIL import Image

    index = Image.fromarray(np.arange(1, height * width + 1, dtype=np.int32).reshape(height, width))  # mode "I"
    rotated = index.rotate(angle, expand=0, fillcolor=0)
    shifted = Image.new("I", (width, height), 0)
    shifted.paste(rotated, (dx, dy))
    return np.asarray(shifted).astype(np.int64).reshape(-1) - 1  # [height * width]


def _canvas(text: str, cells: Cells, cell: int) -> np.ndarray:
    """uint8 ``[cell, cell * n]`` grey canvas of a token (255 white), spills included."""
    chars = text or " "
    out = cells.core[[cells.index[c] for c in chars]]  # [n, cell, cell]
    out = out.transpose(1, 0, 2).reshape(cell, cell * len(chars))  # [cell, n*cell]
    m = cells.margin
    for i, ch in enumerate(chars):
        strip = cells.spill.get(cells.index[ch])
        if strip is None:
            continue
        lo, hi = i * cell - m, i * cell + cell + m  # strip position on the canvas
        a, b = max(lo, 0), min(hi, out.shape[1])
        np.minimum(out[:, a:b], strip[:, a - lo : b - lo], out=out[:, a:b])
    return out


def _augment(canv: np.ndarray, params: tuple[float, int, float, float], seed: int) -> np.ndarray:
    """The notebook's ``augment_image`` on a batch of same-size canvases: bool ink ``[T, H, W]``.

    Rotation + shift use one PIL-derived index map, the noise one mask (the draws are identical for
    every token); the Gaussian blur, when there is one, is PIL's own filter, token by token.
    """
    max_rot, max_shift, noise, blur = params
    T, H, W = canv.shape
    angle, dx, dy = _draws(max_rot, max_shift, seed)
    if angle or dx or dy:
        src = _rotate_shift_map(H, W, angle, dx, dy)  # [H*W]
        flat = canv.reshape(T, H * W)
        canv = np.where(src >= 0, flat[:, np.maximum(src, 0)], np.uint8(255)).reshape(T, H, W)
    mask = _noise_mask(H, W, noise, seed)  # [H, W]
    if blur <= 0:
        return (canv < 128) | mask[None]
    from PIL import Image, ImageFilter

    canv = canv.copy()
    canv[:, mask] = 0
    gauss = ImageFilter.GaussianBlur(radius=blur)
    out = np.empty((T, H, W), dtype=bool)
    for j in range(T):
        out[j] = np.asarray(Image.fromarray(canv[j]).filter(gauss)) < 128
    return out


def glyph_images(
    vocab: Sequence[str],
    font: str | os.PathLike | None = None,
    cell: int = DEFAULT_CELL,
    augment: str = "bvv241-2-3",
    layout: str = "basic",
    augment_seed: int = AUGMENT_SEED,
    info: FontInfo | None = None,
) -> np.ndarray:
    """The augmented, binarised ``cell x cell`` bitmap of every token: bool ``[V, cell, cell]``.

    Args:
        vocab: id-ordered token strings.
        font: Unifont path (see :func:`resolve_font`).
        cell: glyph cell and font size in pixels (32 in the papers, 64 for bvv241-abs).
        augment: a key of :data:`AUGMENT_PRESETS`.
        layout: PIL layout engine for .otf/.ttf fonts, ``"basic"`` (default) or ``"raqm"``.
        augment_seed: the re-seed value of every augmentation call (42 in the papers).
        info: an already resolved font (skips resolving and hashing again).
    """
    if augment not in AUGMENT_PRESETS:
        raise SubstrateError(f"unknown glyph augmentation {augment!r}; choose one of {', '.join(AUGMENT_PRESETS)}")
    if layout not in ("basic", "raqm"):
        raise SubstrateError(f"unknown layout engine {layout!r}; use 'basic' or 'raqm'")
    if isinstance(cell, bool) or not isinstance(cell, int) or cell < 4:
        raise SubstrateError(f"glyph cell size must be an integer >= 4, got {cell!r}")
    info = info or resolve_font(font)
    vocab = list(vocab)
    chars = sorted({c for t in vocab for c in (t or " ")})
    cells = render_cells(chars, info, cell, layout)
    spilling = {c for c in chars if cells.index[c] in cells.spill}
    preset = AUGMENT_PRESETS[augment]
    out = np.empty((len(vocab), cell, cell), dtype=bool)

    # tokens grouped by (length, script class): a group shares its draws, noise mask and resize map
    groups: dict[tuple[int, str], list[int]] = {}
    for i, t in enumerate(vocab):
        groups.setdefault((max(1, len(t)), "easy" if is_easy(t) else "other"), []).append(i)
    for (n, klass), ids in groups.items():
        cols = _nearest_columns(n * cell, cell) if n > 1 else None
        for s in range(0, len(ids), 4096):
            chunk = ids[s : s + 4096]
            idx = np.array([[cells.index[c] for c in (vocab[i] or " ")] for i in chunk], dtype=np.int64)  # [T, n]
            canv = cells.core[idx].transpose(0, 2, 1, 3).reshape(len(chunk), cell, n * cell)  # [T, cell, n*cell]
            if n > 1 and spilling:
                for j, i in enumerate(chunk):
                    if spilling.intersection(vocab[i]):
                        canv[j] = _canvas(vocab[i], cells, cell)
            ink = _augment(canv, preset[klass], augment_seed)  # [T, cell, n*cell]
            out[chunk] = ink if cols is None else ink[:, :, cols]
    return out


def glyph_bits(vocab: Sequence[str], font: str | os.PathLike | None = None, **kwargs: Any) -> np.ndarray:
    """The published pre-PCA bits: uint8 ``[V, cell*cell]`` in polar-snake order (ink = 1).

    Keyword arguments are those of :func:`glyph_images`.
    """
    images = glyph_images(vocab, font, **kwargs)  # [V, cell, cell]
    cell = images.shape[1]
    flat = images.reshape(len(images), cell * cell).view(np.uint8)  # [V, cell*cell]
    order = polar_order(cell)
    out = np.empty_like(flat)
    for s in range(0, len(flat), 8192):  # row blocks keep the gather in cache
        np.take(flat[s : s + 8192], order, axis=1, out=out[s : s + 8192])
    return out


def reference_glyph_bits(
    text: str,
    font: str | os.PathLike | None = None,
    cell: int = DEFAULT_CELL,
    augment: str = "bvv241-2-3",
    layout: str = "basic",
    augment_seed: int = AUGMENT_SEED,
    _cache: dict = {},  # noqa: B006 - font objects per (path, cell, layout), on purpose
) -> np.ndarray:
    """The published token-by-token recipe, literally (slow): uint8 ``[cell*cell]`` bits of one token.

    Only for checking :func:`glyph_bits` and for the benchmark; .otf/.ttf fonts only.
    """
    from PIL import Image, ImageDraw, ImageFilter

    key = (str(font), cell, layout)
    if key not in _cache:
        info = resolve_font(font)
        if info.format == "hex":
            raise SubstrateError("the reference renderer draws with PIL: pass an .otf/.ttf font")
        _cache[key] = _pil_font(info, cell, layout)
    pil_font = _cache[key]
    text = text or " "
    img = Image.new("L", (cell * len(text), cell), 255)
    draw = ImageDraw.Draw(img)
    for i, ch in enumerate(text):
        _draw_char(draw, pil_font, ch, i * cell, cell)
    # augment_image(img, text): random.seed(42); np.random.seed(42) on every call (local
    # generators with the same seed give the same draws without touching global state)
    py_rng, np_rng = random.Random(augment_seed), np.random.RandomState(augment_seed)
    max_rot, max_shift, noise, blur = AUGMENT_PRESETS[augment]["easy" if is_easy(text) else "other"]
    angle = py_rng.uniform(-max_rot, max_rot)
    img = img.rotate(angle, expand=0, fillcolor=255)
    dx, dy = py_rng.randint(-max_shift, max_shift), py_rng.randint(-max_shift, max_shift)
    shifted = Image.new("L", img.size, 255)
    shifted.paste(img, (dx, dy))
    arr = np.array(shifted)
    arr[np_rng.rand(*arr.shape) < noise] = 0
    img = Image.fromarray(arr)
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(radius=blur))
    img = img.point(lambda p: 0 if p < 128 else 255, "1")
    if img.width != cell:
        img = img.resize((cell, cell), Image.BILINEAR)  # mode "1": PIL uses NEAREST
    c = cell / 2
    order = sorted(
        (math.hypot(x - c, y - c), math.atan2(y - c, x - c), x, y) for y in range(cell) for x in range(cell)
    )
    return np.array([0 if img.getpixel((x, y)) else 1 for _, _, x, y in order], dtype=np.uint8)


def build(
    vocab_size: int,
    vocab: list[str] | None,
    width: int,
    seed: int,
    font: str | None = None,
    cell: int = DEFAULT_CELL,
    augment: str = "bvv241-2-3",
    layout: str = "basic",
    augment_seed: int = AUGMENT_SEED,
    **options: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Build the ``glyph`` table: float32 unit rows ``[V, width]`` and its meta."""
    check_options("glyph", options, ["cell", "augment", "layout", "augment_seed"])
    if vocab is None:
        raise SubstrateError("glyph substrates need the token strings, not just a size; pass --tokenizer DIR")
    if width > cell * cell:
        raise SubstrateError(f"glyph width {width} exceeds the {cell}x{cell} = {cell * cell} glyph bits")
    info = resolve_font(font)
    bits = glyph_bits(vocab, cell=cell, augment=augment, layout=layout, augment_seed=augment_seed, info=info)
    table, pca_info = pca_unit_rows(bits, width)
    meta = {
        "font_file": os.path.basename(info.path),
        "font_format": info.format,
        "font_version": info.version,
        "font_sha256": "sha256:" + info.sha256,
        "renderer": "bitmap-hex" if info.format == "hex" else f"pil-freetype-{layout}",
        "cell": cell,
        "augment": augment,
        "augment_params": {k: list(v) for k, v in AUGMENT_PRESETS[augment].items()},
        "augment_seed": augment_seed,
        "bit_order": "polar-snake",
        "seed_used": False,
        **pca_info,
    }
    return table, meta
