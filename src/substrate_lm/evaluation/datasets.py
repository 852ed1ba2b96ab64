"""Benchmark data: the published dataset ids (through ``datasets``) and local files in the same schemas.

Two paths, one result:

* **Hub** (``data_dir=None``): ``datasets.load_dataset`` on the ids the papers used (their current
  canonical names): ``lukaemon/mmlu`` (57 subject configs, ``test``; falls back to its parquet
  conversion and then to ``cais/mmlu`` when the script-based original cannot be loaded),
  ``allenai/ai2_arc`` (``ARC-Easy`` / ``ARC-Challenge``, ``validation``), ``tau/commonsense_qa``,
  ``rajpurkar/squad_v2``, ``google/boolq`` and ``Helsinki-NLP/opus-100`` (``en-ru`` / ``en-zh``),
  all ``validation``.
* **Local** (``data_dir=DIR``): JSONL, JSON or Parquet files with the same columns, at
  ``DIR/<bench path>/<split>.{jsonl,json,parquet}`` (see :data:`BENCHES` ``local``). A missing file
  raises :class:`SubstrateError` naming the file expected. The world question sets
  (``questions/mc.jsonl``, ``questions/short.jsonl`` from ``substrate-lm corpus world``) exist only
  locally.
* **File tasks**: a benchmark read from one local file, multiple choice or short answer. The world
  question sets are two of them; :func:`register_task_file` adds a user's own JSONL under a name
  (``--task-file FILE --task-name NAME``), which every runner (paper, log-likelihood, lm-eval) then
  takes like a built-in benchmark. Rows: ``{"question", "choices": [...], "answer": index or
  letter}`` (or the ARC schema) and ``{"question", "answer": text or [texts]}`` (or ``"answers"``);
  errors name the file and line (wrong field types and lone surrogate escapes included).

Rows become normalised :class:`Item` objects; then the published sampling is applied: filter (SQuAD
v2: answerable items whose first answer has at most 8 characters), shuffle, keep the first
``sample_size`` (the published sizes by default), then ``limit``. The published script shuffled
without a seed; here ``random.Random(seed)`` is used and the exact item ids are recorded.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import SubstrateError

# The 57 MMLU subjects, in the order of the published notebook (the concatenation order before
# shuffling, so it matters for which items a given seed picks).
MMLU_SUBJECTS = (
    "high_school_european_history", "business_ethics", "clinical_knowledge", "medical_genetics",
    "high_school_us_history", "high_school_physics", "high_school_world_history", "virology",
    "high_school_microeconomics", "econometrics", "college_computer_science", "high_school_biology",
    "abstract_algebra", "professional_accounting", "philosophy", "professional_medicine", "nutrition",
    "global_facts", "machine_learning", "security_studies", "public_relations",
    "professional_psychology", "prehistory", "anatomy", "human_sexuality", "college_medicine",
    "high_school_government_and_politics", "college_chemistry", "logical_fallacies",
    "high_school_geography", "elementary_mathematics", "human_aging", "college_mathematics",
    "high_school_psychology", "formal_logic", "high_school_statistics", "international_law",
    "high_school_mathematics", "high_school_computer_science", "conceptual_physics", "miscellaneous",
    "high_school_chemistry", "marketing", "professional_law", "management", "college_physics",
    "jurisprudence", "world_religions", "sociology", "us_foreign_policy",
    "high_school_macroeconomics", "computer_security", "moral_scenarios", "moral_disputes",
    "electrical_engineering", "astronomy", "college_biology",
)

EXTENSIONS = (".jsonl", ".json", ".parquet")


@dataclass
class Item:
    """One normalised benchmark item.

    Attributes:
        id: stable id (the dataset's own id, else ``<dataset>/<split>/<row index>``).
        task: prompt/scoring family: ``mmlu``, ``mc`` (ARC, CSQA, world-mc), ``boolq``, ``squad``,
            ``translate`` or ``short`` (world short answers).
        question: question text (the source sentence for ``translate``).
        answer: gold label for multiple choice, ``"T"``/``"F"`` for BoolQ, the first gold answer text
            for the generative tasks.
        choices, labels: option texts and their labels (multiple choice only).
        answers: every accepted answer text (generative tasks).
        context: passage (BoolQ, SQuAD, optional for short answers).
        meta: subject, lang, kind, entity, src_lang, tgt_lang where they apply.
    """

    id: str
    task: str
    question: str
    answer: str
    choices: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    context: str | None = None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BenchSpec:
    """Where a benchmark's data lives and how the published protocol treats it."""

    name: str  # our id, e.g. "arc-e"
    label: str  # the published label in output lines, e.g. "ARC-e"
    task: str  # Item.task
    hub_id: str | None
    hub_config: str | None
    split: str
    local: tuple[str, ...]  # candidate paths under data_dir, without extension
    schema: str  # one-line schema description for error messages
    paper_n: int | None  # published sample size (None: all items)
    max_new_tokens: int  # published max_new_tokens (a cap for squad/translate/short)
    src_lang: str | None = None
    tgt_lang: str | None = None
    file: str | None = None  # a file task's own file (None: found under data_dir / world_dir)

    @property
    def multiple_choice(self) -> bool:
        return self.task in ("mmlu", "mc", "boolq")


def _opus(src: str, tgt: str) -> BenchSpec:
    pair = "-".join(sorted((src, tgt)))  # opus-100 configs are named alphabetically: en-ru, en-zh
    return BenchSpec(
        name=f"bleu-{src}-{tgt}", label=f"BLEU [{src}-{tgt}]", task="translate",
        hub_id="Helsinki-NLP/opus-100", hub_config=pair, split="validation",
        local=(f"opus-100/{pair}/validation",),
        schema=f'{{"translation": {{"{pair[:2]}": ..., "{pair[3:]}": ...}}}}',
        paper_n=128, max_new_tokens=100, src_lang=src, tgt_lang=tgt,
    )


_ARC_SCHEMA = '{"id", "question", "choices": {"label": [...], "text": [...]}, "answerKey"}'

BENCHES: dict[str, BenchSpec] = {
    "mmlu": BenchSpec(
        "mmlu", "MMLU", "mmlu", "lukaemon/mmlu", None, "test", ("mmlu/test",),
        '{"input", "A", "B", "C", "D", "target", "subject"} (lukaemon/mmlu) or '
        '{"question", "choices", "answer", "subject"} (cais/mmlu); or one folder per subject',
        None, 1,
    ),
    "arc-e": BenchSpec("arc-e", "ARC-e", "mc", "allenai/ai2_arc", "ARC-Easy", "validation",
                       ("ai2_arc/ARC-Easy/validation",), _ARC_SCHEMA, 570, 2),
    "arc-c": BenchSpec("arc-c", "ARC-c", "mc", "allenai/ai2_arc", "ARC-Challenge", "validation",
                       ("ai2_arc/ARC-Challenge/validation",), _ARC_SCHEMA, 299, 2),
    "csqa": BenchSpec("csqa", "C-SENSE", "mc", "tau/commonsense_qa", None, "validation",
                      ("commonsense_qa/validation",), _ARC_SCHEMA, 1221, 2),
    "squad": BenchSpec("squad", "SQUAD", "squad", "rajpurkar/squad_v2", None, "validation",
                       ("squad_v2/validation",),
                       '{"id", "context", "question", "answers": {"text": [...]}}', 256, 100),
    "boolq": BenchSpec("boolq", "BOOLQ", "boolq", "google/boolq", None, "validation",
                       ("boolq/validation",), '{"question", "passage", "answer": bool}', 3270, 1),
    "bleu-en-ru": _opus("en", "ru"),
    "bleu-ru-en": _opus("ru", "en"),
    "bleu-en-zh": _opus("en", "zh"),
    "bleu-zh-en": _opus("zh", "en"),
    "world-mc": BenchSpec("world-mc", "WORLD-MC", "mc", None, None, "mc",
                          ("questions/mc", "world/questions/mc"),
                          _ARC_SCHEMA[:-1] + ', "lang", "kind", "entity"}', None, 2),
    "world-short": BenchSpec("world-short", "WORLD-SHORT", "short", None, None, "short",
                             ("questions/short", "world/questions/short"),
                             '{"id", "question", "answers": {"text": [...]}, "lang", "kind", "entity"}',
                             None, 100),
}

ALIASES = {
    "arc-easy": ["arc-e"], "arc_easy": ["arc-e"], "arc-challenge": ["arc-c"], "arc_challenge": ["arc-c"],
    "commonsense_qa": ["csqa"], "commonsenseqa": ["csqa"], "c-sense": ["csqa"],
    "squad_v2": ["squad"], "squad-v2": ["squad"], "squadv2": ["squad"],
    "bleu": ["bleu-en-ru", "bleu-ru-en", "bleu-en-zh", "bleu-zh-en"],
    "world": ["world-mc", "world-short"],
    # the benchmarks of the published tables (BoolQ was defined but not reported)
    "paper": ["mmlu", "arc-e", "arc-c", "csqa", "squad", "bleu-en-ru", "bleu-ru-en", "bleu-en-zh", "bleu-zh-en"],
    "all": list(BENCHES),
}


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
FILE_TASK_SCHEMAS = {
    "mc": '{"question", "choices": [...], "answer": index from 0 or letter A, B, ...} (or the ARC schema)',
    "short": '{"question", "answer": text or [accepted texts]} (or "answers"; optional "context")',
}
_TASK_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]*$")


def register_task_file(path: str | os.PathLike, name: str | None = None, kind: str = "auto") -> str:
    """Register a local JSONL (or JSON / Parquet) file as a named benchmark; returns the name.

    The file is read and checked at once (one-line errors naming file and line), so a bad file
    fails before any model is loaded. The task then runs everywhere a built-in benchmark does
    (``evaluate_models``, ``run_lm_eval``, ``write_lm_eval_tasks``) and is named as given in
    lm-eval (``<name>`` and, for multiple choice, ``<name>_gen``).

    Args:
        path: the file (rows: see :data:`FILE_TASK_SCHEMAS`).
        name: benchmark name (default: the file name without extension, lower-cased): a letter,
            then letters, digits, ``-``, ``_``, ``.``; not a built-in benchmark or group, not
            ``substrate_*``, and its lm-eval task names not another benchmark's (lm-eval's own
            tasks are checked where YAMLs are written, :func:`~.harness.write_lm_eval_tasks`).
        kind: ``"mc"`` (multiple choice), ``"short"`` (short answer) or ``"auto"`` (``mc`` when the
            first row has ``choices``).
    """
    p = Path(path)
    if not p.is_file():
        raise SubstrateError(f"--task-file {p} {'is a folder' if p.is_dir() else 'not found'}; pass a JSONL file "
                             f"with rows {FILE_TASK_SCHEMAS['mc']} or {FILE_TASK_SCHEMAS['short']}")
    if p.suffix not in EXTENSIONS:
        raise SubstrateError(f"--task-file {p}: use a .jsonl, .json or .parquet file")
    raw = p.stem if name is None else name
    name = raw.strip().lower()
    if not _TASK_NAME_RE.match(name):
        raise SubstrateError(f"task name {raw!r} must start with a letter and hold only letters, digits, '-', '_' "
                             "or '.' (pass --task-name NAME)")
    old = BENCHES.get(name)
    if name in ALIASES or (old is not None and old.file is None):
        raise SubstrateError(f"task name {name!r} is a built-in benchmark or group; pass another --task-name")
    if name.startswith("substrate_"):
        raise SubstrateError(f"task name {name!r}: names starting with 'substrate_' are kept for the built-in "
                             "benchmarks' lm-eval tasks; pass another --task-name")
    rows = read_records(p)
    if not rows:
        raise SubstrateError(f"--task-file {p} holds no items; add rows {FILE_TASK_SCHEMAS['mc']}")
    if kind == "auto":
        kind = "mc" if isinstance(rows[0], dict) and "choices" in rows[0] else "short"
    if kind not in FILE_TASK_SCHEMAS:
        raise SubstrateError(f"task kind must be 'mc', 'short' or 'auto'; got {kind!r}")
    _check_task_name_free(name, kind)
    spec = BenchSpec(name=name, label=name.upper(), task=kind, hub_id=None, hub_config=None, split="test",
                     local=(), schema=FILE_TASK_SCHEMAS[kind], paper_n=None,
                     max_new_tokens=2 if kind == "mc" else 100, file=str(p.resolve()))
    file_items(spec, p)  # every row checked now
    BENCHES[name] = spec
    return name


def task_name(bench: str, gen: bool = False) -> str:
    """lm-eval task name of a benchmark: ``substrate_arc_e``, ``substrate_arc_e_gen``; a user's file
    task keeps its name (``my-mc``, ``my-mc_gen``)."""
    name = bench if BENCHES[bench].file else "substrate_" + bench.replace("-", "_")
    return name + "_gen" if gen and BENCHES[bench].multiple_choice else name


def _check_task_name_free(name: str, kind: str) -> None:
    """Refuse a file task whose lm-eval task names (``name``, ``name_gen`` for multiple choice) are
    already another benchmark's (built-in or registered), so no YAML silently replaces another."""
    own = {name, name + "_gen"} if kind == "mc" else {name}
    for b, spec in BENCHES.items():
        if b == name and spec.file is not None:
            continue  # the same name registered again: the caller tells
        clash = own & {task_name(b), task_name(b, True)}
        if clash:
            raise SubstrateError(f"task name {name!r}: lm-eval task {sorted(clash)[0]!r} already belongs to "
                                 f"benchmark {b!r}; pass another --task-name")


def parse_benches(spec: str | list[str]) -> list[str]:
    """``"mmlu,arc-e,bleu"`` -> canonical names, aliases expanded, order kept, duplicates dropped."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        expanded = [name] if name in BENCHES else ALIASES.get(name)
        if expanded is None:
            raise SubstrateError(
                f"unknown benchmark {raw.strip()!r}; choose from {', '.join(BENCHES)} "
                f"(or the groups {', '.join(k for k in ALIASES if k in ('bleu', 'world', 'paper', 'all'))})"
            )
        out.extend(b for b in expanded if b not in out)
    if not out:
        raise SubstrateError("no benchmark given; pass e.g. --bench mmlu,arc-e")
    return out


# ---------------------------------------------------------------------------------------------
# reading files


def read_records(path: str | os.PathLike, numbered: bool = False):
    """Rows of a ``.jsonl``, ``.json`` (a list, ``{"data": [...]}`` or JSON lines) or ``.parquet`` file.

    With ``numbered``, returns ``(rows, wheres)``: ``wheres[i]`` names row ``i`` for error messages
    (``FILE:LINE`` for JSON lines, ``FILE row I`` otherwise).
    """
    path = Path(path)
    rows, lines = _read_rows(path)
    wheres = [f"{path}:{n}" if lines else f"{path} row {i}" for i, n in enumerate(lines or range(len(rows)))]
    for row, where in zip(rows, wheres):
        _check_no_surrogates(row, where, "")
    return (rows, wheres) if numbered else rows


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_no_surrogates(value, where: str, key: str) -> None:
    """Refuse lone UTF-16 surrogates (``"\\ud800"`` escapes in JSON): they cannot be encoded or tokenized."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            field = f"field {key!r}" if key else "the row"
            raise SubstrateError(f"{where}: {field} holds a lone surrogate escape (\\ud800-\\udfff), which is not "
                                 "text; fix the escape in the file (a pair like \\ud83d\\ude00 is fine)")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_no_surrogates(k, where, key)
            _check_no_surrogates(v, where, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_no_surrogates(v, where, f"{key}[{i}]")


def _read_rows(path: Path) -> tuple[list, list[int] | None]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # lazy: optional dependency

        return pq.read_table(path).to_pylist(), None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SubstrateError(f"{path} is not UTF-8 text (bad byte at offset {exc.start}); convert it to UTF-8") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # JSON lines under a .json name (what datasets' to_json writes)
        if isinstance(data, list):
            return data, None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            return data["data"], None
        if isinstance(data, dict):
            return [data], None
    rows, lines = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SubstrateError(f"{path}:{n}: not valid JSON ({exc.msg}); fix or regenerate the file") from None
            lines.append(n)
    return rows, lines


def find_local_file(data_dir: str | os.PathLike, rel_paths: tuple[str, ...]) -> Path | None:
    """First existing ``data_dir/<rel>.<ext>`` over the candidates and extensions, else None."""
    base = Path(data_dir)
    for rel in rel_paths:
        for ext in EXTENSIONS:
            p = base / f"{rel}{ext}"
            if p.is_file():
                return p
    return None


def _missing(spec: BenchSpec, data_dir) -> SubstrateError:
    expected = Path(data_dir) / f"{spec.local[0]}.jsonl"
    return SubstrateError(
        f"benchmark {spec.name}: no local data found; expected {expected} (or .json/.parquet) with rows "
        f"{spec.schema}"
    )


def _hub_rows(hub_id: str, config: str | None, split: str, **kwargs) -> list[dict]:
    import datasets  # lazy: optional dependency

    ds = datasets.load_dataset(hub_id, config, split=split, **kwargs)
    return [dict(r) for r in ds]


def _hub_error(spec: BenchSpec, exc: Exception) -> SubstrateError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    where = f"{spec.hub_id}" + (f" ({spec.hub_config})" if spec.hub_config else "")
    return SubstrateError(
        f"benchmark {spec.name}: could not load {where} [{spec.split}] from the hub ({msg[:200]}); "
        f"pass --data-dir DIR holding {spec.local[0]}.jsonl"
    )


# ---------------------------------------------------------------------------------------------
# row -> Item converters (one per schema)


def _need(row: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise SubstrateError(f"{where}: row lacks {', '.join(repr(k) for k in missing)}; has {sorted(row)}")


def _text(row: dict, key: str, where: str, optional: bool = False) -> str | None:
    """``row[key]`` as a text; a null, list or object there is refused (not turned into ``"None"``)."""
    value = row.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SubstrateError(f"{where}: {key!r} must be a text; got {type(value).__name__} {str(value)[:60]}")
    return str(value)


def _row_id(row: dict, default: str, where: str) -> str:
    return _text(row, "id", where, optional=True) or default


def _mmlu_item(row: dict, subject: str, index: int, where: str) -> Item:
    if "input" in row:  # lukaemon/mmlu
        _need(row, ("input", "A", "B", "C", "D", "target"), where)
        question, choices, target = row["input"], [row[k] for k in "ABCD"], str(row["target"]).strip()
    else:  # cais/mmlu
        _need(row, ("question", "choices", "answer"), where)
        question, choices, answer = row["question"], list(row["choices"]), row["answer"]
        target = "ABCD"[int(answer)] if not isinstance(answer, str) or answer.isdigit() else answer.strip()
    if len(choices) != 4 or target not in "ABCD" or not target:
        raise SubstrateError(f"{where}: MMLU rows need 4 options and a target letter A-D (got {target!r})")
    return Item(
        id=str(row.get("id") or f"mmlu/{subject}/{index}"), task="mmlu", question=str(question),
        answer=target, choices=[str(c) for c in choices], labels=list("ABCD"), meta={"subject": subject},
    )


def _mc_item(row: dict, index: int, prefix: str, where: str) -> Item:
    """ARC schema (``choices: {label, text}``, ``answerKey``) or a plain list of options with
    ``answer``: an index from 0 or a letter (labels ``A``, ``B``, ...)."""
    arc = "answerKey" in row or isinstance(row.get("choices"), dict)
    _need(row, ("question", "choices", "answerKey" if arc else "answer"), where)
    ch = row["choices"]
    if isinstance(ch, list):
        if not 2 <= len(ch) <= len(LETTERS) or not all(isinstance(x, (str, int, float)) for x in ch):
            raise SubstrateError(f'{where}: "choices" must list 2 to {len(LETTERS)} option texts; got {str(ch)[:80]}')
        ch = {"label": list(LETTERS[:len(ch)]), "text": ch}
    if not isinstance(ch, dict) or "label" not in ch or "text" not in ch:
        raise SubstrateError(f'{where}: "choices" must be a list of option texts or {{"label": [...], "text": [...]}}')
    for part in ("label", "text"):
        if not isinstance(ch[part], list) or not all(
                isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in ch[part]):
            raise SubstrateError(f'{where}: "choices" {part!r} must be a list of texts; got {str(ch[part])[:80]}')
    labels, texts = [str(x) for x in ch["label"]], [str(x) for x in ch["text"]]
    if len(labels) != len(texts):
        raise SubstrateError(f'{where}: "choices" has {len(labels)} labels for {len(texts)} texts')
    if arc:
        answer = _text(row, "answerKey", where).strip()
        if answer not in labels:
            raise SubstrateError(f"{where}: answerKey {answer!r} is not one of the labels {labels}")
    else:
        answer = _mc_answer(row["answer"], labels, where)
    if isinstance(row["question"], dict):  # the original ARC json nests {"stem": ..., "choices": ...}
        question = _text(row["question"], "stem", where)
    else:
        question = _text(row, "question", where)
    meta = {k: row[k] for k in ("lang", "kind", "entity", "question_concept") if k in row}
    return Item(
        id=_row_id(row, f"{prefix}/{index}", where), task="mc", question=question, answer=answer,
        choices=texts, labels=labels, meta=meta,
    )


def _mc_answer(answer, labels: list[str], where: str) -> str:
    """The gold label of ``answer``: an option index from 0 (int or digits) or one of the labels."""
    if isinstance(answer, str) and answer.strip() in labels:
        return answer.strip()
    if isinstance(answer, str) and answer.strip().isdigit():
        answer = int(answer.strip())
    if isinstance(answer, int) and not isinstance(answer, bool):
        if 0 <= answer < len(labels):
            return labels[answer]
        raise SubstrateError(f"{where}: answer index {answer} is out of range for {len(labels)} choices "
                             f"(0..{len(labels) - 1})")
    raise SubstrateError(f"{where}: answer {answer!r} is neither an option index (0..{len(labels) - 1}) "
                         f"nor a label ({', '.join(labels)})")


def _boolq_item(row: dict, index: int, where: str) -> Item:
    _need(row, ("question", "passage", "answer"), where)
    ans = row["answer"]
    if isinstance(ans, str):
        ans = ans.strip().lower() in ("true", "t", "yes", "1")
    return Item(
        id=str(row.get("id") or row.get("idx") or f"boolq/validation/{index}"), task="boolq",
        question=str(row["question"]), answer="T" if ans else "F", context=str(row["passage"]),
    )


def _squad_item(row: dict, index: int, where: str) -> Item | None:
    _need(row, ("question", "context", "answers"), where)
    texts = list((row["answers"] or {}).get("text") or [])
    # published filter: answerable items whose FIRST answer has at most 8 characters
    if not texts or texts[0] == "" or len(texts[0]) > 8:
        return None
    return Item(
        id=str(row.get("id") or f"squad_v2/validation/{index}"), task="squad", question=str(row["question"]),
        answer=str(texts[0]), answers=[str(texts[0])], context=str(row["context"]),
    )


def _opus_item(row: dict, index: int, spec: BenchSpec, where: str) -> Item:
    _need(row, ("translation",), where)
    tr = row["translation"]
    if spec.src_lang not in tr or spec.tgt_lang not in tr:
        raise SubstrateError(f"{where}: translation lacks {spec.src_lang!r} or {spec.tgt_lang!r}; has {sorted(tr)}")
    return Item(
        id=str(row.get("id") or f"opus-100/{spec.hub_config}/validation/{index}"), task="translate",
        question=str(tr[spec.src_lang]), answer=str(tr[spec.tgt_lang]), answers=[str(tr[spec.tgt_lang])],
        meta={"src_lang": spec.src_lang, "tgt_lang": spec.tgt_lang},
    )


def _short_item(row: dict, index: int, where: str) -> Item:
    """``answers`` (``{"text": [...]}`` or a list) or ``answer`` (a text or a list of texts)."""
    _need(row, ("question", "answers" if "answers" in row else "answer"), where)
    ans = row["answers"] if "answers" in row else row["answer"]
    if isinstance(ans, dict):
        ans = ans.get("text") or []
    texts = [ans] if isinstance(ans, str) else list(ans) if isinstance(ans, list) else []
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise SubstrateError(f"{where}: short-answer rows need at least one non-empty answer text; got {str(ans)[:80]}")
    meta = {k: row[k] for k in ("lang", "kind", "entity") if k in row}
    return Item(
        id=_row_id(row, f"short/{index}", where), task="short", question=_text(row, "question", where),
        answer=texts[0], answers=list(texts), context=_text(row, "context", where, optional=True), meta=meta,
    )


def rows_to_items(spec: BenchSpec, rows: list[dict], where: str, subject: str | None = None,
                  wheres: list[str] | None = None) -> list[Item]:
    """Convert dataset rows to items (dropping rows the published filter excludes).

    ``wheres``: a name per row for error messages (:func:`read_records` ``numbered``).
    """
    items: list[Item] = []
    for i, row in enumerate(rows):
        w = wheres[i] if wheres is not None else f"{where} row {i}"
        if not isinstance(row, dict):
            raise SubstrateError(f"{w}: not a JSON object; rows look like {spec.schema}")
        if spec.task == "mmlu":
            item = _mmlu_item(row, str(row.get("subject") or subject or "unknown"), i, w)
        elif spec.task == "mc":
            item = _mc_item(row, i, where, w)
        elif spec.task == "boolq":
            item = _boolq_item(row, i, w)
        elif spec.task == "squad":
            item = _squad_item(row, i, w)
        elif spec.task == "translate":
            item = _opus_item(row, i, spec, w)
        else:
            item = _short_item(row, i, w)
        if item is not None:
            items.append(item)
    return items


# ---------------------------------------------------------------------------------------------
# loading a benchmark


def file_items(spec: BenchSpec, path: str | os.PathLike, subject: str | None = None) -> list[Item]:
    """Items of one local file, errors naming ``FILE:LINE``."""
    rows, wheres = read_records(path, numbered=True)
    return rows_to_items(spec, rows, str(path), subject=subject, wheres=wheres)


@dataclass
class BenchData:
    """A benchmark's sampled items plus everything needed to reproduce the sample."""

    spec: BenchSpec
    items: list[Item]
    source: str  # "hub:<id>/<config>[split]" or the local file path(s)
    n_available: int  # items after the published filter, before sampling
    sample_size: int | None  # requested size (None: all)
    seed: int
    limit: int | None

    @property
    def name(self) -> str:
        return self.spec.name

    def describe(self) -> dict:
        """JSON-ready record: source, sizes, seed and the exact item ids, in evaluation order."""
        return {
            "label": self.spec.label, "task": self.spec.task, "source": self.source,
            "split": self.spec.split, "n_available": self.n_available, "sample_size": self.sample_size,
            "limit": self.limit, "n_items": len(self.items), "shuffle_seed": self.seed,
            "item_ids": [it.id for it in self.items],
        }


def _load_mmlu(spec: BenchSpec, data_dir) -> tuple[list[Item], str]:
    if data_dir is not None:
        f = find_local_file(data_dir, spec.local)
        if f is not None:
            return file_items(spec, f), str(f)
        # one folder per subject: mmlu/<subject>/test.jsonl (the hub's config-per-subject layout)
        items, files = [], []
        subjects = list(MMLU_SUBJECTS) + sorted(
            p.name for p in (Path(data_dir) / "mmlu").glob("*") if p.is_dir() and p.name not in MMLU_SUBJECTS
        )
        for subject in subjects:
            sf = find_local_file(data_dir, (f"mmlu/{subject}/test",))
            if sf is not None:
                items += file_items(spec, sf, subject=subject)
                files.append(str(sf))
        if not files:
            raise _missing(spec, data_dir)
        return items, str(Path(data_dir) / "mmlu") + f" ({len(files)} subject files)"
    # hub: the published id first (script-based), then its parquet conversion, then cais/mmlu
    errors = []
    for kwargs in ({}, {"revision": "refs/convert/parquet"}):
        try:
            items = []
            for subject in MMLU_SUBJECTS:
                items += rows_to_items(spec, _hub_rows("lukaemon/mmlu", subject, "test", **kwargs),
                                       f"lukaemon/mmlu/{subject}", subject=subject)
            return items, "hub:lukaemon/mmlu[test]" + (" (parquet conversion)" if kwargs else "")
        except SubstrateError:
            raise
        except Exception as exc:  # noqa: BLE001 - any hub failure: try the next source
            errors.append(exc)
    try:
        rows = _hub_rows("cais/mmlu", "all", "test")
    except Exception as exc:  # noqa: BLE001
        raise _hub_error(spec, errors[0] if errors else exc) from None
    by_subject: dict[str, list[dict]] = {}
    for r in rows:
        by_subject.setdefault(r.get("subject", "unknown"), []).append(r)
    items = []
    for subject in list(MMLU_SUBJECTS) + sorted(set(by_subject) - set(MMLU_SUBJECTS)):
        items += rows_to_items(spec, by_subject.get(subject, []), f"cais/mmlu/{subject}", subject=subject)
    return items, "hub:cais/mmlu/all[test] (lukaemon/mmlu unavailable)"


def load_bench(
    bench: str,
    data_dir: str | os.PathLike | None = None,
    sample_size: int | str | None = "paper",
    seed: int = 0,
    limit: int | None = None,
    world_dir: str | os.PathLike | None = None,
) -> BenchData:
    """Load, filter, shuffle and sample one benchmark.

    Args:
        bench: a name from :data:`BENCHES` (aliases accepted when they name one benchmark).
        data_dir: folder of local files (the offline path); None loads from the hub.
        sample_size: ``"paper"`` (published sizes), ``None``/``"all"`` (every item) or an int.
        seed: shuffle seed (the published script used an unseeded shuffle).
        limit: keep at most this many items after sampling (quick runs).
        world_dir: folder of a generated world (``questions/*.jsonl``); defaults to ``data_dir``.

    Raises:
        SubstrateError: unknown benchmark, missing local file (named), bad rows, hub failure.
    """
    names = parse_benches(bench)
    if len(names) != 1:
        raise SubstrateError(f"{bench!r} names several benchmarks; load them one by one")
    spec = BENCHES[names[0]]
    if spec.hub_id is None:  # a file task: a registered --task-file, or a world's question set
        f = Path(spec.file) if spec.file is not None else None
        if f is None:
            base = world_dir if world_dir is not None else data_dir
            if base is None:
                raise SubstrateError(
                    f"benchmark {spec.name} has no hub copy; pass --data-dir (or --world) with a world from "
                    f"`substrate-lm corpus world`, holding {spec.local[0]}.jsonl"
                )
            f = find_local_file(base, spec.local)
            if f is None:
                raise _missing(spec, base)
        if not f.is_file():
            raise SubstrateError(f"benchmark {spec.name}: its file {f} is gone; check the path")
        items, source = file_items(spec, f), str(f)
    elif spec.task == "mmlu":
        items, source = _load_mmlu(spec, data_dir)
    elif data_dir is not None:
        f = find_local_file(data_dir, spec.local)
        if f is None:
            raise _missing(spec, data_dir)
        items, source = file_items(spec, f), str(f)
    else:
        try:
            rows = _hub_rows(spec.hub_id, spec.hub_config, spec.split)
        except Exception as exc:  # noqa: BLE001 - offline, missing dataset, version trouble
            raise _hub_error(spec, exc) from None
        where = f"{spec.hub_id}" + (f"/{spec.hub_config}" if spec.hub_config else "")
        items, source = rows_to_items(spec, rows, where), f"hub:{where}[{spec.split}]"

    if not items:
        raise SubstrateError(f"benchmark {spec.name}: {source} holds no usable items")
    n_available = len(items)
    if sample_size == "paper":
        n = spec.paper_n
    elif sample_size in (None, "all"):
        n = None
    else:
        n = int(sample_size)
    random.Random(seed).shuffle(items)
    if n is not None:
        items = items[:n]
    if limit is not None:
        items = items[: int(limit)]
    return BenchData(spec, items, source, n_available, n, seed, limit)
