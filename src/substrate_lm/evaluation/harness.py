"""lm-evaluation-harness integration: task YAMLs for local-file benchmarks, and running models under it.

:func:`write_lm_eval_tasks` loads benchmarks through :mod:`.datasets` (hub or local files, the same
sampling, seed and items as ``evaluate_models``), writes each as a normalised JSONL file and renders
the shipped templates (``tasks/substrate_mc.yaml``, ``tasks/substrate_gen.yaml``) with the task name
and the file's *absolute* path, so the YAMLs work from any working directory:

* ``substrate_<bench>`` (multiple choice: MMLU, ARC, CSQA, BoolQ, world-mc): log-likelihood, metrics
  ``acc``/``acc_norm``, the same contexts and options as our log-likelihood protocol;
* ``substrate_<bench>_gen`` (multiple choice) and ``substrate_<bench>`` (SQuAD, BLEU, world-short):
  the papers' prompts with greedy generation and the published scoring (metric ``score``: accuracy
  as a fraction, BLEU raw).

A user's own file task (:func:`~.datasets.register_task_file`) is rendered the same way and keeps
its own name: ``<name>`` and ``<name>_gen``, refused when lm-eval already ships a task of that name. :func:`run_lm_eval` can also run tasks from any
other lm-eval task folder (``include_path``, lm-eval's own mechanism) next to these.

:func:`run_lm_eval` evaluates a model directory (or an in-memory model + tokenizer) with
``lm_eval.simple_evaluate``. A directory is loaded by :func:`~.models.load_model` (our folders with
our classes and their files checked against the export manifest, a foreign folder's own code only
with ``trust_remote_code=True``) and handed to ``HFLM`` as a model object; its tokenizer encodes
with ``split_special_tokens`` on, so a literal ``</s>`` in an item stays text as in our protocols.
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from pathlib import Path

from ..errors import SubstrateError
from ..fsutil import atomic_write_text
from ..logutil import drop_log_records
from .datasets import BENCHES, BenchData, Item, find_local_file, load_bench, parse_benches, task_name
from .models import check_vocab, load_model
from .paper import max_new_tokens_for, score_item
from .prompts import loglik_request, paper_prompt

_UTILS = '''"""lm-eval process_results hook for substrate-lm generation tasks (written by write_lm_eval_tasks)."""
from substrate_lm.evaluation.harness import process_gen_results as process_results  # noqa: F401
'''


@functools.lru_cache(maxsize=1)
def lm_eval_task_names() -> frozenset[str]:
    """Every task, group and tag name lm-eval ships (empty without lm-eval). Indexing its task
    folder takes seconds, so it is done once per process, and only where YAMLs are written."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        return frozenset()
    return frozenset(TaskManager().all_tasks)


def _check_not_lm_eval_task(bench: str) -> None:
    """A file task must not take a name lm-eval already has: under ``lm_eval --include_path`` one of
    the two would silently replace the other."""
    if BENCHES[bench].file is None:
        return
    clash = sorted({task_name(bench), task_name(bench, True)} & lm_eval_task_names())
    if clash:
        raise SubstrateError(f"task name {bench!r}: {clash[0]!r} is already an lm-eval task; pass another --task-name")


def _template(name: str) -> str:
    return resources.files("substrate_lm.evaluation").joinpath("tasks").joinpath(name).read_text(encoding="utf-8")


def _render(template: str, task: str, data_file: Path, max_gen_toks: int = 0) -> str:
    # json.dumps gives a double-quoted scalar that YAML reads back verbatim (paths with spaces, ':')
    # (a task name like "yes" or "1.5" stays a string too)
    return (template.replace("@TASK@", json.dumps(task)).replace("@DATA_FILE@", json.dumps(str(data_file)))
            .replace("@MAX_GEN_TOKS@", str(int(max_gen_toks))))


def _doc(item, bench: str, mc_mode: str) -> dict:
    context, choices, gold = loglik_request(item, mc_mode=mc_mode)
    spec = BENCHES[bench]
    return {
        "id": item.id, "bench": bench, "task": item.task, "prompt": paper_prompt(item),
        "answer": item.answer, "answers": item.answers or [item.answer],
        "context": context, "choices": choices, "gold": gold,
        "max_new_tokens": max_new_tokens_for(spec, item), "meta": json.dumps(item.meta, ensure_ascii=False),
    }


def process_gen_results(doc: dict, results: list[str]) -> dict:
    """Score one lm-eval generation with the published rule for the row's task."""
    item = Item(id=doc["id"], task=doc["task"], question="", answer=doc["answer"], answers=list(doc["answers"]))
    return {"score": score_item(item, results[0])}


def available_benches(data_dir: str | os.PathLike | None, world_dir: str | os.PathLike | None = None) -> list[str]:
    """Benchmarks whose local files exist under ``data_dir`` (world ones under ``world_dir`` too)."""
    out = []
    for name, spec in BENCHES.items():
        if spec.file is not None:  # a registered file task: always available
            out.append(name)
            continue
        base = (world_dir or data_dir) if spec.hub_id is None else data_dir
        if base is None:
            continue
        if find_local_file(base, spec.local) or (spec.task == "mmlu" and any((Path(base) / "mmlu").glob("*/test.*"))):
            out.append(name)
    return out


def write_lm_eval_tasks(
    data_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    benches: str | list[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    sample_size: int | str | None = "paper",
    world_dir: str | os.PathLike | None = None,
    mc_mode: str = "text",
    bench_data: dict[str, BenchData] | None = None,
) -> dict[str, list[str]]:
    """Write lm-eval task YAMLs (absolute data paths) and their normalised data into ``out_dir``.

    Args:
        data_dir: local benchmark files (None: the hub).
        out_dir: folder to pass to ``lm_eval --include_path``.
        benches: which benchmarks (default: every one with local files in ``data_dir``/``world_dir``).
        limit, seed, sample_size, world_dir: as for ``load_bench``.
        mc_mode: options as texts (default) or letters in the log-likelihood tasks.
        bench_data: pre-loaded benchmarks.

    Returns:
        ``{bench: [task names]}``.
    """
    if benches is None:
        names = available_benches(data_dir, world_dir)
        if not names:
            raise SubstrateError(f"no benchmark files found under {data_dir}; see `substrate-lm eval --help` for the layout")
    else:
        names = parse_benches(benches)
    for b in names:
        _check_not_lm_eval_task(b)
    out = Path(out_dir).resolve()
    (out / "data").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "substrate_utils.py", _UTILS)
    mc_t, gen_t = _template("substrate_mc.yaml"), _template("substrate_gen.yaml")
    tasks: dict[str, list[str]] = {}
    manifest = {}
    for b in names:
        d = (bench_data or {}).get(b) or load_bench(
            b, data_dir=data_dir, sample_size=sample_size, seed=seed, limit=limit, world_dir=world_dir
        )
        data_file = out / "data" / f"{b}.jsonl"
        atomic_write_text(data_file, "".join(json.dumps(_doc(it, b, mc_mode), ensure_ascii=False) + "\n" for it in d.items))
        spec = BENCHES[b]
        max_gen = max(max_new_tokens_for(spec, it) for it in d.items)
        names_b = []
        if spec.multiple_choice:
            t = task_name(b)
            atomic_write_text(out / f"{t}.yaml", _render(mc_t, t, data_file))
            names_b.append(t)
        t = task_name(b, gen=True)
        atomic_write_text(out / f"{t}.yaml", _render(gen_t, t, data_file, max_gen))
        names_b.append(t)
        tasks[b] = names_b
        manifest[b] = {"tasks": names_b, "data_file": str(data_file), **d.describe()}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return tasks


def run_lm_eval(
    model,
    benches: str | list[str],
    data_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    tokenizer=None,
    generation: bool = False,
    batch_size: int = 8,
    device: str = "cpu",
    limit: int | None = None,
    seed: int = 0,
    sample_size: int | str | None = "paper",
    world_dir: str | os.PathLike | None = None,
    mc_mode: str = "text",
    log_samples: bool = False,
    trust_remote_code: bool = False,
    include_path: str | os.PathLike | list | None = None,
    extra_tasks: str | list[str] | None = None,
) -> dict:
    """Run benchmarks under ``lm_eval`` with our task YAMLs.

    Args:
        model: model directory / hub id (loaded by :func:`~.models.load_model`, then given to ``HFLM``)
            or an in-memory ``PreTrainedModel`` (then ``tokenizer`` is required).
        benches: benchmark names.
        data_dir: local benchmark files (None: hub).
        out_dir: where the task YAMLs, data and ``lm_eval_results.json`` go.
        generation: also run the ``*_gen`` (paper prompt, greedy generation) tasks of multiple-choice
            benchmarks.
        log_samples: keep lm-eval's per-sample records in the returned dict (``"samples"``).
        trust_remote_code: let a foreign model or tokenizer folder run its own ``.py`` files
            (``--trust-remote-code``); our own folders never need it.
        include_path: lm-eval task folder(s) of the user's (YAMLs, e.g. from ``eval tasks``);
            their ``!function`` hooks run as code, so only folders the user passed.
        extra_tasks: names of tasks (or groups) in ``include_path`` to run besides ``benches``.

    Returns:
        ``{"tasks": {task: {metric: value}}, "config": {...}, "samples": ... (optional)}``.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    out = Path(out_dir)
    task_dir = out / "lm_eval_tasks"
    extra = [t.strip() for t in (extra_tasks.split(",") if isinstance(extra_tasks, str) else extra_tasks or [])
             if t.strip()]
    names = parse_benches(benches) if (benches or not extra) else []
    written = write_lm_eval_tasks(data_dir, task_dir, names, limit=limit, seed=seed, sample_size=sample_size,
                                  world_dir=world_dir, mc_mode=mc_mode) if names else {}
    tasks = []
    for b in names:
        ts = written[b]
        tasks.extend(ts if (generation or not BENCHES[b].multiple_choice) else ts[:1])
    own = [] if include_path is None else include_path if isinstance(include_path, (list, tuple)) else [include_path]
    for p in own:
        if not Path(p).is_dir():
            raise SubstrateError(f"--include-path {p} is not a folder; pass a folder of lm-eval task YAMLs")
    if extra and not own:
        raise SubstrateError("--tasks needs --include-path DIR, the folder holding their YAMLs")
    paths = ([str(task_dir)] if names else []) + [str(Path(p).resolve()) for p in own]
    manager = TaskManager(include_path=paths, include_defaults=False)
    missing = [t for t in extra if t not in manager.all_tasks]
    if missing:
        raise SubstrateError(f"task {missing[0]!r} is not defined in {', '.join(paths)}; "
                             f"defined: {', '.join(sorted(manager.all_tasks)[:20]) or 'none'}")
    tasks.extend(t for t in extra if t not in tasks)
    if isinstance(model, (str, os.PathLike)):
        model, tok = load_model(model, device=device, trust_remote_code=trust_remote_code)
        if tokenizer is None:
            tokenizer = tok
    elif tokenizer is None:
        raise SubstrateError("run_lm_eval with an in-memory model needs its tokenizer")
    check_vocab(model, tokenizer)
    # HFLM encodes with tokenizer.encode / tokenizer(...): their split_special_tokens default
    split = getattr(tokenizer, "split_special_tokens", None)
    tokenizer.split_special_tokens = True
    try:
        # HFLM warns that a model object (not a path) was passed: we pass one on purpose
        with drop_log_records("lm_eval.models.huggingface", "kwarg is not of type `str`"):
            lm = HFLM(pretrained=model, tokenizer=tokenizer, trust_remote_code=trust_remote_code,
                      batch_size=batch_size, device=device)
        res = simple_evaluate(
            model=lm, tasks=tasks, task_manager=manager,
            log_samples=log_samples, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed, bootstrap_iters=0,
        )
    finally:
        tokenizer.split_special_tokens = split if split is not None else False
    summary = {
        "tasks": {t: {k.split(",")[0]: v for k, v in m.items() if k != "alias" and "stderr" not in k}
                  for t, m in res["results"].items()},
        "config": {"batch_size": batch_size, "device": device, "limit": limit, "seed": seed,
                   "sample_size": sample_size, "mc_mode": mc_mode, "task_dir": str(task_dir.resolve()),
                   "include_path": paths},
    }
    atomic_write_text(out / "lm_eval_results.json", json.dumps(summary, indent=1, default=str) + "\n")
    if log_samples:
        summary["samples"] = res.get("samples", {})
    return summary
