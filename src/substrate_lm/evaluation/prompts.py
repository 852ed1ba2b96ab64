"""The published prompt formats, byte for byte.

Source: the papers' evaluation script ``_models_benchmarking.py`` (GitHub AVBochkov/Embeddings and
AVBochkov/PGT). Every function here reproduces one ``format_prompt_*`` of that script exactly,
including its quirks (MMLU options on one line, ARC/CommonsenseQA options one per line with the
dataset's own labels, BoolQ gold as the letter 'T'/'F', language names made by chained
``str.replace``). The tests compare these strings with literals written from spec section 5.

Prompts take normalised :class:`~substrate_lm.evaluation.datasets.Item` objects (or anything with the
same attributes), so the same formats serve the hub datasets, local files and the world questions.

The log-likelihood protocol uses its own contexts (:func:`loglik_request`), documented there.
"""

from __future__ import annotations

MMLU_LETTERS = ("A", "B", "C", "D")


def lang_name(code: str) -> str:
    """Language name as the published script spells it: chained replace of en/ru/zh.

    The chain is kept (rather than a dict) so that codes outside en/ru/zh behave as published.
    """
    return code.replace("en", "English").replace("ru", "Russian").replace("zh", "Chinese")


def mmlu_prompt(question: str, choices: list[str]) -> str:
    """``Question: {q}\\nOptions: A) a B) b C) c D) d\\nAnswer:`` (options space-joined)."""
    options = " ".join(f"{letter}) {text}" for letter, text in zip(MMLU_LETTERS, choices))
    return f"Question: {question}\nOptions: {options}\nAnswer:"


def mc_lines_prompt(question: str, labels: list[str], choices: list[str]) -> str:
    """ARC / CommonsenseQA (and world-mc): one ``{label}) {text}`` option per line."""
    options = "\n".join(f"{label}) {text}" for label, text in zip(labels, choices))
    return f"Question: {question}\nOptions:\n{options}\nAnswer:"


def boolq_prompt(passage: str, question: str) -> str:
    """``Context: {passage}\\nQuestion: {q}\\nAnswer (True/False):``."""
    return f"Context: {passage}\nQuestion: {question}\nAnswer (True/False):"


def squad_prompt(context: str, question: str) -> str:
    """``Context: {ctx}\\nQuestion: {q}\\nAnswer:``."""
    return f"Context: {context}\nQuestion: {question}\nAnswer:"


def translation_prompt(text: str, src_lang: str, tgt_lang: str) -> str:
    """``Translate from English to Russian:\\n{src}\\nAnswer:``."""
    return f"Translate from {lang_name(src_lang)} to {lang_name(tgt_lang)}:\n{text}\nAnswer:"


def short_answer_prompt(question: str, context: str | None = None) -> str:
    """World short-answer questions: the SQuAD format when a context is given, else the same
    format without its ``Context:`` line (``Question: {q}\\nAnswer:``)."""
    if context:
        return squad_prompt(context, question)
    return f"Question: {question}\nAnswer:"


def paper_prompt(item) -> str:
    """The published prompt for one normalised item (dispatch on ``item.task``)."""
    task = item.task
    if task == "mmlu":
        return mmlu_prompt(item.question, item.choices)
    if task == "mc":
        return mc_lines_prompt(item.question, item.labels, item.choices)
    if task == "boolq":
        return boolq_prompt(item.context, item.question)
    if task == "squad":
        return squad_prompt(item.context, item.question)
    if task == "translate":
        return translation_prompt(item.question, item.meta["src_lang"], item.meta["tgt_lang"])
    if task == "short":
        return short_answer_prompt(item.question, item.context)
    raise ValueError(f"no published prompt for task {task!r}")


def loglik_request(item, mc_mode: str = "text") -> tuple[str, list[str], int]:
    """Context, continuations (without the leading space) and gold index for log-likelihood scoring.

    Multiple choice, ``mc_mode="text"`` (default; lm-eval's ARC convention): context
    ``Question: {q}\\nAnswer:`` and each option's *text* as continuation. ``mc_mode="letter"``:
    the published prompt (options listed) as context and the option *labels* (``A``, ``B``, ...)
    as continuations. BoolQ in both modes: the published prompt and ``True``/``False``.
    Generative benchmarks (SQuAD, translation, short answers): the published prompt and the first
    gold answer (scored as bits per character, not accuracy), gold index 0.

    The caller joins context and continuation with one space (lm-eval's ``target_delimiter``).
    """
    task = item.task
    if task in ("mmlu", "mc"):
        gold = item.labels.index(item.answer)
        if mc_mode == "text":
            return f"Question: {item.question}\nAnswer:", list(item.choices), gold
        if mc_mode == "letter":
            return paper_prompt(item), list(item.labels), gold
        raise ValueError(f"mc_mode must be 'text' or 'letter', got {mc_mode!r}")
    if task == "boolq":
        return paper_prompt(item), ["True", "False"], 0 if item.answer == "T" else 1
    if task in ("squad", "translate", "short"):
        return paper_prompt(item), [item.answers[0]], 0
    raise ValueError(f"no log-likelihood request for task {task!r}")
