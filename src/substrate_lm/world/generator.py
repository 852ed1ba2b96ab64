"""Write a semantic world: training text, validation text, ground truth and held-out questions.

Speed comes from doing the string work once: every (fact, template) sentence of a language is
rendered up front into a small pool (a few thousand strings, already JSON-escaped), documents are
drawn as integer index arrays with numpy in bulk, and the JSON-lines files are assembled by one
``str.join`` over pool strings and separators. Nothing is formatted per document.

A document is one of
* a *profile*: every fact of one entity, once, in random order (one per entity and language, always
  in the training split, so every fact is stated in training text at least once);
* *prose*: 2-5 distinct facts of one entity, then, half of the time, 1-2 facts of an entity related
  to it (its city, its maker, its friend...), so related facts co-occur;
* *question-answer* (``qa_fraction`` of the documents): 2-4 questions on random facts in the
  papers' formats (``Question: ...\\nAnswer: ...``, multiple choice with ``Options:`` and the
  answer letter), phrased with the training question templates only. This mirrors the papers'
  instruction infusion; the held-out phrasings of ``questions/`` never occur. Each training
  question has ``mc_variants`` multiple-choice renderings with freshly drawn distractors and
  option order (so the letter must be read off the options, not memorised per question); with
  ``mc_share`` set, that share of the items is multiple choice and the rest short answers
  (default: every rendering equally likely).

``size`` counts the UTF-8 bytes of document text (the JSON-lines files are a few percent larger),
split evenly between languages.
"""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SubstrateError
from ..fsutil import atomic_write_bytes, atomic_write_json, clean_debris, disk_error, read_json, sha256_file
from .languages import get_lang, parse_langs
from .questions import DEFAULT_QUESTIONS, AnswerBook, format_mc, format_short, make_questions
from .render import fact_templates, fill, value_kwargs
from .truth import MIN_PER_CATEGORY, build_world, entities_per_category, is_relation, rng_for, subject_facts

MIN_SIZE = 10_000
MAX_SIZE = 2_000_000_000
_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "K": 1000, "M": 1000**2, "G": 1000**3,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
_PREFIX = '{"text": "'
MC_VARIANTS = 2  # default distinct option orders per training MC question
MAX_MC_VARIANTS = 4096  # enough that no rendering repeats in a multi-megabyte world
_PERMS = 8  # fact orders precomputed per entity


#: Every file ``generate_world`` writes (relative to ``out_dir``), the manifest last.
WORLD_FILES = ("train.jsonl", "val.jsonl", "questions/mc.jsonl", "questions/short.jsonl", "world.json",
               "corpus.json")
#: The manifest listing the files a world holds (name -> sha256); written last.
CORPUS_MANIFEST = "substrate_corpus.json"
MANIFEST_FORMAT = "substrate-lm/corpus"


def check_world_out(out_dir, overwrite: bool) -> None:
    """Refuse an ``--out`` that ``generate_world`` must not write into, as ``export`` does.

    A missing or empty folder is fine. A non-empty one needs ``overwrite`` and must be a world this
    tool wrote: its :data:`CORPUS_MANIFEST` lists every file in it (a user's own ``train.jsonl``
    is never replaced). Debris of a killed run (``.tmp-*`` files of ours) does not count.

    Raises:
        SubstrateError: one line naming the folder, the file and what to do.
    """
    out = Path(out_dir)
    if not out.is_dir():
        return
    present = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                     if not (p.is_dir() and not p.is_symlink()) and not p.name.startswith(".tmp-"))
    if not present:
        return
    if not overwrite:
        raise SubstrateError(f"--out {out_dir} is not empty ({present[0]}); choose a new or empty folder, "
                             "or pass --overwrite to replace a world written there before")
    manifest = read_json(out / CORPUS_MANIFEST, missing=None, corrupt=None, kind=dict)
    listed = manifest.get("files") if manifest and manifest.get("format") == MANIFEST_FORMAT else None
    if not isinstance(listed, dict):
        raise SubstrateError(f"--out {out_dir} is not a world written by substrate-lm (no valid {CORPUS_MANIFEST}); "
                             "--overwrite replaces only what the tool wrote: choose another --out")
    foreign = [n for n in present if n not in listed and n != CORPUS_MANIFEST]
    if foreign:
        raise SubstrateError(f"--out {out_dir} holds files substrate-lm did not write ({', '.join(foreign[:3])}); "
                             "move them out or choose another --out")
    edited = [n for n in present if n in listed and ((out / n).is_symlink() or not (out / n).is_file()
                                                      or "sha256:" + sha256_file(out / n) != listed[n])]
    if edited:
        raise SubstrateError(f"--out {out_dir}: {edited[0]} changed since substrate-lm wrote it (its sha256 differs "
                             f"from {CORPUS_MANIFEST}); move it out or choose another --out")


def parse_size(size) -> int:
    """``"20MB"`` -> 20_000_000 (SI units; KiB/MiB/GiB are binary); an int passes through.

    Raises:
        SubstrateError: for an unreadable size or one outside 10 KB .. 2 GB.
    """
    if isinstance(size, (int, np.integer)):
        n = int(size)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(size))
        unit = m.group(2).upper() if m else None
        if not m or unit not in _UNITS:
            raise SubstrateError(f"cannot read size {size!r}; write e.g. 100KB, 20MB or 1.5MB")
        n = int(float(m.group(1)) * _UNITS[unit])
    if not MIN_SIZE <= n <= MAX_SIZE:
        raise SubstrateError(f"size {n} bytes is outside {MIN_SIZE} .. {MAX_SIZE}; pick e.g. 100KB .. 100MB")
    return n


def _esc(text: str) -> str:
    """JSON string body of ``text`` (without the quotes), as ``json.dumps(ensure_ascii=False)``."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


@dataclass
class _Pool:
    """Everything pre-rendered for one language (indices into the global text list)."""

    lang: str
    fact_start: np.ndarray  # [F] first sentence of fact f
    fact_count: np.ndarray  # [F] its number of templates
    qa_start: np.ndarray  # [F] first question-answer item of fact f
    qa_count: np.ndarray  # [F] per template: one short answer, then mc_variants multiple choice
    ent_perm: np.ndarray  # [E, _PERMS, maxF] fact ids of entity e in random orders (cyclic beyond nf)
    ent_nfacts: np.ndarray  # [E]
    nbrs: np.ndarray  # [E, maxN] related entities (either direction), padded by repetition
    n_nbrs: np.ndarray  # [E]
    sep: str  # raw sentence separator
    sep_bytes: int


def _build_pool(world: dict, lang: str, texts: list[str], nbytes: list[int], seed: int,
                mc_variants: int = MC_VARIANTS) -> _Pool:
    """Render every (fact, sentence template) and (fact, training question) of ``lang`` once.

    Appends JSON-escaped texts to ``texts`` and their raw UTF-8 sizes to ``nbytes`` (shared by all
    languages, so a document is a list of global indices) and returns the index tables.
    """
    mod = get_lang(lang)
    rng = rng_for(seed, "pool", lang)
    ents = world["entities"]
    idx_of = {e["id"]: i for i, e in enumerate(ents)}
    fact_start, fact_count, qa_start, qa_count, ent_facts = [], [], [], [], []
    book = AnswerBook(world, lang)

    def add(text: str) -> None:
        texts.append(_esc(text))
        nbytes.append(len(text.encode("utf-8")))

    for e in ents:
        name, cat = e["names"][lang], e["category"]
        mine = []
        for key, value in subject_facts(e):
            if is_relation(key):
                kw = {"obj": ents[idx_of[value]]["names"][lang]}
            else:
                kw = value_kwargs(mod, key, value)
            mine.append(len(fact_start))
            fact_start.append(len(texts))
            templates = fact_templates(mod.SENTENCES, key, cat)
            for t in templates:
                add(fill(t, name, **kw)[0])
            fact_count.append(len(templates))
            qa_start.append(len(texts))
            answer = book.main(key, value)
            n_qa = 0
            for t in fact_templates(mod.QA_TRAIN, key, cat):
                q = t.format(name=name)
                add(format_short(q, answer))
                n_qa += 1
                for _ in range(mc_variants):
                    options, letter = book.mc_options(key, value, rng, subject=e["id"])
                    add(format_mc(q, options, letter))
                    n_qa += 1
            qa_count.append(n_qa)
        ent_facts.append(mine)

    n_ent = len(ents)
    max_f = max(len(f) for f in ent_facts)
    ent_perm = np.zeros((n_ent, _PERMS, max_f), dtype=np.int64)
    for i, facts in enumerate(ent_facts):
        for p in range(_PERMS):
            order = rng.permutation(len(facts))
            ent_perm[i, p] = [facts[order[j % len(facts)]] for j in range(max_f)]

    nbr_lists: list[list[int]] = [[] for _ in ents]
    for i, e in enumerate(ents):
        for _, oid in e["relations"].items():
            j = idx_of[oid]
            if j not in nbr_lists[i]:
                nbr_lists[i].append(j)
            if i not in nbr_lists[j]:
                nbr_lists[j].append(i)
    max_n = max(1, max(len(n) for n in nbr_lists))
    nbrs = np.zeros((n_ent, max_n), dtype=np.int64)
    for i, lst in enumerate(nbr_lists):
        lst = lst or [i]
        nbrs[i] = [lst[j % len(lst)] for j in range(max_n)]
    return _Pool(
        lang=lang,
        fact_start=np.asarray(fact_start, dtype=np.int64),
        fact_count=np.asarray(fact_count, dtype=np.int64),
        qa_start=np.asarray(qa_start, dtype=np.int64),
        qa_count=np.asarray(qa_count, dtype=np.int64),
        ent_perm=ent_perm,
        ent_nfacts=np.asarray([len(f) for f in ent_facts], dtype=np.int64),
        nbrs=nbrs,
        n_nbrs=np.asarray([max(1, len(n)) for n in nbr_lists], dtype=np.int64),
        sep=mod.SENT_SEP,
        sep_bytes=len(mod.SENT_SEP.encode("utf-8")),
    )


@dataclass
class _Docs:
    """Documents as index arrays: ``k[d]`` texts of document ``d`` at ``idx[off[d]:off[d]+k[d]]``."""

    idx: np.ndarray
    k: np.ndarray
    qa: np.ndarray  # bool per document
    nbytes: np.ndarray  # text bytes per document

    @property
    def off(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.k)[:-1]]).astype(np.int64)


def _doc_bytes(idx, k, qa, sent_bytes, sep_bytes) -> np.ndarray:
    off = np.concatenate([[0], np.cumsum(k)[:-1]]).astype(np.int64)
    per = np.add.reduceat(sent_bytes[idx], off) if len(idx) else np.zeros(0, np.int64)
    return per + (k - 1) * np.where(qa, 2, sep_bytes)  # "\n\n" between question-answer items


def _profiles(pool: _Pool, sent_bytes: np.ndarray, rng: np.random.Generator) -> _Docs:
    """One document per entity stating each of its facts once."""
    n_ent = len(pool.ent_nfacts)
    k = pool.ent_nfacts.copy()
    ent = np.repeat(np.arange(n_ent), k)
    pos = np.arange(k.sum()) - np.repeat(np.concatenate([[0], np.cumsum(k)[:-1]]), k)
    p = rng.integers(_PERMS, size=n_ent)
    fact = pool.ent_perm[ent, np.repeat(p, k), pos]
    idx = pool.fact_start[fact] + (rng.random(len(fact)) * pool.fact_count[fact]).astype(np.int64)
    qa = np.zeros(n_ent, dtype=bool)
    return _Docs(idx, k, qa, _doc_bytes(idx, k, qa, sent_bytes, pool.sep_bytes))


def _random_docs(pool: _Pool, n: int, qa_fraction: float, sent_bytes: np.ndarray,
                 rng: np.random.Generator, mc: tuple[int, float] | None = None) -> _Docs:
    """``n`` prose / question-answer documents, drawn in bulk; ``mc = (mc_variants, mc_share)``
    draws a question-answer item as multiple choice with probability ``mc_share`` (else a
    uniformly drawn rendering)."""
    n_ent, n_fact = len(pool.ent_nfacts), len(pool.fact_start)
    qa = rng.random(n) < qa_fraction
    a = rng.integers(n_ent, size=n)
    ka = rng.integers(2, 6, size=n)
    b = pool.nbrs[a, (rng.random(n) * pool.n_nbrs[a]).astype(np.int64)]
    kb = np.where(rng.random(n) < 0.5, rng.integers(1, 3, size=n), 0)
    kq = rng.integers(2, 5, size=n)
    k = np.where(qa, kq, ka + kb)
    pa, pb = rng.integers(_PERMS, size=n), rng.integers(_PERMS, size=n)
    # start B's facts at a random place of its order so its first fact varies
    sb = rng.integers(0, pool.ent_perm.shape[2], size=n)

    total = int(k.sum())
    doc = np.repeat(np.arange(n), k)
    pos = np.arange(total) - np.repeat(np.concatenate([[0], np.cumsum(k)[:-1]]), k)
    in_a = pos < ka[doc]
    ent = np.where(in_a, a[doc], b[doc])
    nf = pool.ent_nfacts[ent]
    j = np.where(in_a, pos % nf, (sb[doc] + pos - ka[doc]) % nf)
    fact = pool.ent_perm[ent, np.where(in_a, pa[doc], pb[doc]), j]
    u = rng.random(total)
    prose_idx = pool.fact_start[fact] + (u * pool.fact_count[fact]).astype(np.int64)
    qfact = rng.integers(n_fact, size=total)
    if mc is None:
        qa_idx = pool.qa_start[qfact] + (u * pool.qa_count[qfact]).astype(np.int64)
    else:
        variants, share = mc
        per = variants + 1  # one short answer, then the multiple-choice renderings, per template
        n_tpl = pool.qa_count[qfact] // per
        is_mc = rng.random(total) < share
        m = (u * n_tpl * variants).astype(np.int64)  # (template, variant) of a multiple-choice item
        offset = np.where(is_mc, (m // variants) * per + 1 + m % variants, (u * n_tpl).astype(np.int64) * per)
        qa_idx = pool.qa_start[qfact] + offset
    idx = np.where(qa[doc], qa_idx, prose_idx)
    return _Docs(idx, k, qa, _doc_bytes(idx, k, qa, sent_bytes, pool.sep_bytes))


def _take(docs: _Docs, n: int) -> _Docs:
    end = int(docs.k[:n].sum())
    return _Docs(docs.idx[:end], docs.k[:n], docs.qa[:n], docs.nbytes[:n])


def _concat(parts: list[_Docs]) -> _Docs:
    return _Docs(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("idx", "k", "qa", "nbytes")))


def _lang_docs(pool: _Pool, target: int, qa_fraction: float, sent_bytes: np.ndarray,
               rng: np.random.Generator, mc: tuple[int, float] | None = None) -> tuple[_Docs, int]:
    """Profiles plus random documents until ``target`` text bytes; returns (docs, n_profiles)."""
    prof = _profiles(pool, sent_bytes, rng)
    parts, have = [prof], int(prof.nbytes.sum())
    prose_mean = float(sent_bytes[pool.fact_start[0]:pool.qa_start[-1] + pool.qa_count[-1]].mean())
    while have < target:
        need = target - have
        n = int(need / (prose_mean * 4.0) * 1.1) + 16
        batch = _random_docs(pool, n, qa_fraction, sent_bytes, rng, mc)
        csum = np.cumsum(batch.nbytes)
        cut = int(np.searchsorted(csum, need)) + 1  # first prefix reaching the target
        batch = _take(batch, min(cut, n))
        parts.append(batch)
        have += int(batch.nbytes.sum())
    return _concat(parts), len(prof.k)


def _assemble(texts: np.ndarray, docs: _Docs, order: np.ndarray, lang_of: np.ndarray,
              seps: dict[str, str], langs: tuple[str, ...]) -> str:
    """JSON lines of documents ``order`` (one ``{"text", "lang"}`` object per line)."""
    if len(order) == 0:
        return ""
    k = docs.k[order]
    starts = docs.off[order]
    total = int(k.sum())
    new_off = np.concatenate([[0], np.cumsum(k)[:-1]])
    gather = np.repeat(starts - new_off, k) + np.arange(total)
    doc = np.repeat(np.arange(len(order)), k)
    last = np.zeros(total, dtype=bool)
    last[np.cumsum(k) - 1] = True
    lang_ids = lang_of[order][doc]
    qa = docs.qa[order][doc]
    # separator after each text: end-of-line (+ next prefix) after a document's last text,
    # else "\n\n" between question-answer items, else the language's sentence separator
    ends = np.array([f'", "lang": "{code}"}}\n{_PREFIX}' for code in langs], dtype=object)
    sent_seps = np.array([_esc(seps[code]) for code in langs], dtype=object)
    sep = np.where(last, ends[lang_ids], np.where(qa, "\\n\\n", sent_seps[lang_ids]))
    out = np.empty(2 * total, dtype=object)
    out[0::2] = texts[docs.idx[gather]]
    out[1::2] = sep
    body = "".join(out.tolist())
    return _PREFIX + body[: -len(_PREFIX)]


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _generate_world(out_dir, size="20MB", langs=("en", "ru", "zh"), seed: int = 0, *,
                   n_questions: int = DEFAULT_QUESTIONS, val_fraction: float = 0.03, qa_fraction: float = 0.1,
                   entities_per_cat: int | None = None, mc_variants: int = MC_VARIANTS,
                   mc_share: float | None = None, balanced_halves: bool = False) -> dict:
    """Generate a semantic world into ``out_dir``.

    Writes ``train.jsonl``, ``val.jsonl`` (one ``{"text", "lang"}`` document a line),
    ``world.json`` (ground truth), ``questions/mc.jsonl``, ``questions/short.jsonl`` and
    ``corpus.json`` (generation settings and counts). Output is a pure function of
    ``(size, langs, seed)`` and the keyword settings: the same arguments give the same bytes.

    Args:
        out_dir: output folder (created; files in it are replaced atomically).
        size: text size, e.g. ``"20MB"`` or bytes (see :func:`parse_size`), over all languages.
        langs: language codes (``"en,ru,zh"`` or a sequence) with templates.
        seed: world seed.
        n_questions: held-out questions per language and file.
        val_fraction: share of non-profile documents put into ``val.jsonl``.
        qa_fraction: share of documents that are training question-answer documents.
        entities_per_cat: override :func:`~substrate_lm.world.truth.entities_per_category`.
        mc_variants: multiple-choice renderings (distractors and option order drawn afresh) per
            training question template (1..4096).
        mc_share: share of question-answer items that are multiple choice (the rest are short
            answers); None draws every rendering with equal probability, as older worlds did.
        balanced_halves: the two alternating entity halves of each category carry the same
            attribute values (see :func:`~substrate_lm.world.truth.build_world`); for experts
            trained on one half each (the docking experiment's entity split).

    Returns:
        A summary dict (files and sizes, counts, seconds, MB/s).

    Raises:
        SubstrateError: for a bad size, language or fraction.
    """
    t0 = time.perf_counter()
    size_b = parse_size(size)
    langs = parse_langs(langs)
    if not 0.0 <= val_fraction < 0.5:
        raise SubstrateError(f"val_fraction {val_fraction} must be in [0, 0.5); the default is 0.03")
    if not 0.0 <= qa_fraction <= 0.5:
        raise SubstrateError(f"qa_fraction {qa_fraction} must be in [0, 0.5]; the default is 0.1")
    if n_questions < 0:
        raise SubstrateError(f"n_questions {n_questions} must be >= 0")
    if isinstance(mc_variants, bool) or not isinstance(mc_variants, (int, np.integer)) or not 1 <= mc_variants <= MAX_MC_VARIANTS:
        raise SubstrateError(f"mc_variants {mc_variants!r} must be an integer in 1..{MAX_MC_VARIANTS}; the default is {MC_VARIANTS}")
    if mc_share is not None and not 0.0 <= mc_share <= 1.0:
        raise SubstrateError(f"mc_share {mc_share} must be in [0, 1] (or None: every rendering equally likely)")
    mc_mix = None if mc_share is None else (int(mc_variants), float(mc_share))
    per_cat = entities_per_cat or entities_per_category(size_b, len(langs))
    if per_cat < MIN_PER_CATEGORY or per_cat % 2 or per_cat > 500:
        raise SubstrateError(f"entities per category {per_cat} must be even and in {MIN_PER_CATEGORY}..500")
    world = build_world(seed, langs, per_cat, balanced_halves=bool(balanced_halves))

    texts: list[str] = []
    nbytes: list[int] = []
    pools = [_build_pool(world, lang, texts, nbytes, seed, int(mc_variants)) for lang in langs]
    text_arr = np.array(texts, dtype=object)
    sent_bytes = np.asarray(nbytes, dtype=np.int64)

    per_lang = size_b // len(langs)
    all_docs, lang_of, is_val, is_profile = [], [], [], []
    for li, pool in enumerate(pools):
        rng = rng_for(seed, "docs", pool.lang, size_b)
        docs, n_prof = _lang_docs(pool, per_lang, qa_fraction, sent_bytes, rng, mc_mix)
        n = len(docs.k)
        val = np.zeros(n, dtype=bool)
        if val_fraction > 0 and n - n_prof >= 2:
            val[n_prof:] = rng.random(n - n_prof) < val_fraction
            if not val.any():
                val[n_prof + int(rng.integers(n - n_prof))] = True
        all_docs.append(docs)
        lang_of.append(np.full(n, li))
        is_val.append(val)
        is_profile.append(np.arange(n) < n_prof)
    docs = _concat(all_docs)
    lang_of_a, val_a = np.concatenate(lang_of), np.concatenate(is_val)
    seps = {p.lang: p.sep for p in pools}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / "questions"):  # temp files of a killed run
        clean_debris(folder, names=[n.rsplit("/", 1)[-1] for n in WORLD_FILES])
    order_rng = rng_for(seed, "order", size_b)
    files = {}
    for split, mask in (("train", ~val_a), ("val", val_a)):
        order = np.flatnonzero(mask)
        order = order[order_rng.permutation(len(order))]
        text = _assemble(text_arr, docs, order, lang_of_a, seps, langs)
        data = text.encode("utf-8")
        atomic_write_bytes(out / f"{split}.jsonl", data)
        files[f"{split}.jsonl"] = len(data)
    t_text = time.perf_counter() - t0

    mc, short = make_questions(world, langs, n_questions, seed)
    for name, rows in (("questions/mc.jsonl", mc), ("questions/short.jsonl", short)):
        data = _jsonl(rows)
        atomic_write_bytes(out / name, data)
        files[name] = len(data)
    data = (json.dumps(world, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    atomic_write_bytes(out / "world.json", data)
    files["world.json"] = len(data)

    seconds = time.perf_counter() - t0
    text_bytes = int(docs.nbytes.sum())
    stats = {
        "seed": int(seed), "size": size_b, "langs": list(langs), "entities_per_category": per_cat,
        "entities": len(world["entities"]), "val_fraction": val_fraction, "qa_fraction": qa_fraction,
        "n_questions": n_questions,
        "documents": {"train": int((~val_a).sum()), "val": int(val_a.sum()),
                      "profiles": int(np.concatenate(is_profile).sum()), "qa": int(docs.qa.sum())},
        "text_bytes": {lang: {"train": int(docs.nbytes[(lang_of_a == li) & ~val_a].sum()),
                              "val": int(docs.nbytes[(lang_of_a == li) & val_a].sum())}
                       for li, lang in enumerate(langs)},
        "questions": {"mc": len(mc), "short": len(short),
                      "two_hop": sum(1 for r in mc if r["kind"] == "two_hop")},
    }
    if mc_mix is not None or mc_variants != MC_VARIANTS:  # recorded when set (older corpus.json files stay identical)
        stats.update(mc_variants=int(mc_variants), mc_share=mc_share)
    if balanced_halves:
        stats["balanced_halves"] = True
    data = (json.dumps(stats, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    atomic_write_bytes(out / "corpus.json", data)
    files["corpus.json"] = len(data)
    atomic_write_json(out / CORPUS_MANIFEST, {"format": MANIFEST_FORMAT, "version": 1,
                                              "files": {n: "sha256:" + sha256_file(out / n) for n in sorted(files)}})
    return {
        **stats, "out_dir": str(out), "files": files, "text_bytes_total": text_bytes,
        "seconds": seconds, "seconds_text": t_text,
        "mb_per_s": text_bytes / 1e6 / max(seconds, 1e-9),
        "mb_per_s_text": text_bytes / 1e6 / max(t_text, 1e-9),
    }


@functools.wraps(_generate_world)
def generate_world(*args, **kwargs) -> dict:
    """Generate a semantic world into ``out_dir`` (arguments: :func:`_generate_world`).

    Raises:
        SubstrateError: a bad argument, or a failed write (``disk full while writing ...``); the
            files of an earlier world stay whole (each is replaced atomically).
    """
    try:
        return _generate_world(*args, **kwargs)
    except OSError as exc:
        out = kwargs.get("out_dir", args[0] if args else "?")
        raise disk_error(exc, f"the world corpus in {out}", fix="run the command again") from None


__all__ = ["generate_world", "parse_size", "check_world_out", "WORLD_FILES", "CORPUS_MANIFEST"]
