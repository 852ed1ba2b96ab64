"""The docking experiment's experts: two frozen-bits experts per seed, one per half, composed by
logit averaging and scored on the union of the questions; two trainable-table experts handed to
``compose`` for its refusal.

Every expert is trained by the project trainer (:class:`substrate_lm.training.Trainer`) from a run
config built as typed objects: the ``tiny`` recipe with the experiment's [model] and [train]
sections in place (:func:`expert_run_config`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import torch

from ...docking import Expert, compose, evaluate
from ...errors import SubstrateError
from ...evaluation.loglik import run_loglik
from ...export import export_model
from ...fsutil import atomic_write_json
from ...loading import load_model_and_tokenizer
from ...modeling import substrate_fingerprint
from ...training import RunConfig, Trainer, load_config
from ..findings import CHANCE
from .records import read_done
from .settings import DockingSettings, expert_sections


def expert_run_config(s: DockingSettings, run_dir: Path, data_dir: Path, tok_dir: Path, seed: int, substrate: str,
                      steps: int) -> RunConfig:
    """The run config of one expert: the ``tiny`` recipe's run sections with the experts' [model]
    and [train] (:func:`~.settings.expert_sections`) in place, then this expert's substrate, data,
    seed and ``steps`` (warmup capped at ``steps - 1``)."""
    model, train = expert_sections(s)
    base = load_config("tiny")
    replace = dataclasses.replace
    return replace(
        base,
        run=replace(base.run, name=run_dir.parent.name + "-" + run_dir.name, dir=str(run_dir), device="cpu"),
        model=replace(model, substrate=substrate, tokenizer=str(tok_dir), overrides=dict(model.overrides)),
        data=replace(base.data, path=str(data_dir), world="", sources=[]),
        train=replace(train, steps=steps, warmup=min(train.warmup, max(0, steps - 1)), seed=seed,
                      betas=list(train.betas)),
        eval=replace(base.eval, interval=0, steps=s.docking.eval_batches),
        log=replace(base.log, interval=max(1, steps // 4), sample_interval=0, sample_prompts=[], tensorboard=False,
                    progress=False),
        checkpoint=replace(base.checkpoint, interval=max(1, steps // 2), keep_last=1, keep_best=False),
    )


def train_expert(out: Path, s: DockingSettings, prep: dict, seed: int, lang: str, substrate: str = "bits",
                 steps: int | None = None, log: Callable[[str], None] = print):
    """Train (or reload) one expert on the half ``lang`` (``a``/``b`` or ``en``/``ru``) for ``steps``
    (default: the experts' steps); returns ``(model, tokenizer, info)``."""
    name = f"expert-{lang}" if substrate == "bits" else f"trainable-{lang}"
    d = out / f"seed{seed}" / name
    done = read_done(d / "result.json")
    if done is not None and (d / "model" / "config.json").is_file():
        model, tok = load_model_and_tokenizer(d / "model")
        return model.eval(), tok, done
    steps = steps or expert_sections(s)[1].steps
    w0, c0 = time.perf_counter(), time.process_time()
    log(f"docking: seed {seed}: training {name} ({substrate} table) for {steps} steps on the {lang} half")
    cfg = expert_run_config(s, d / "run", prep["data"][lang], prep["tokenizer"], seed, substrate, steps)
    res = Trainer(cfg, resume=True).fit()
    model, tok = res.model.eval(), res.tokenizer
    if model.config.substrate_frozen:
        model.verify_substrate()
    export_model(model, d / "model", tokenizer=tok, name=name)
    info = {
        "half": lang, "substrate_kind": model.config.substrate_kind,
        "substrate_frozen": bool(model.config.substrate_frozen),
        "fingerprint": table_fingerprint(model), "steps": res.step,
        "train_loss": res.train_loss, "val_loss": (res.val or {}).get("val_loss"),
        "timing": {"wall_s": round(time.perf_counter() - w0, 2), "cpu_s": round(time.process_time() - c0, 2)},
    }
    atomic_write_json(d / "result.json", info)
    return model, tok, info


def table_fingerprint(model) -> str:
    """The fingerprint of a model's token table (equal for experts that share one frozen substrate)."""
    return substrate_fingerprint(model.token_embeddings.weight)


def score_model(model, tok, questions: dict, val: dict, s: DockingSettings) -> dict:
    """Log-likelihood accuracy per half and on the union, and validation loss per half."""
    acc, acc_norm = {}, {}
    correct = []
    correct_norm = []
    with torch.no_grad():
        for lang, bd in questions.items():
            r = run_loglik(model, tok, bd)
            acc[lang], acc_norm[lang] = r["acc"], r["acc_norm"]
            correct += [p == g for p, g in zip(r["item_pred"], r["item_gold"])]
            correct_norm += [p == g for p, g in zip(r["item_pred_norm"], r["item_gold"])]
    acc["union"] = 100.0 * sum(correct) / len(correct)
    acc_norm["union"] = 100.0 * sum(correct_norm) / len(correct_norm)
    losses, tokens = {}, {}
    for lang, shards in val.items():
        ev = evaluate(model, shards, s.train.batch_size, s.train.seq_len, s.docking.eval_batches, s.train.precision)
        losses[lang], tokens[lang] = ev["loss"], ev["tokens"]
    losses["union"] = sum(losses[k] * tokens[k] for k in val) / sum(tokens.values())
    return {"acc": acc, "acc_norm": acc_norm, "val_loss": losses, "items": correct}


def run_composition(out: Path, s: DockingSettings, prep: dict, seed: int, questions: dict, val: dict,
                    log: Callable[[str], None], n_cross: int = 0) -> dict:
    """Two frozen-bits experts on the two halves, composed; every model scored on the union."""
    path = out / f"seed{seed}" / "composition.json"
    done = read_done(path)
    if done is not None:
        return done
    w0, c0 = time.perf_counter(), time.process_time()
    parts = prep["parts"]
    experts = {part: train_expert(out, s, prep, seed, part, "bits", log=log) for part in parts}
    fp = {part: e[2]["fingerprint"] for part, e in experts.items()}
    composed, tok = compose([Expert(experts[part][0], f"expert-{part}", experts[part][1]) for part in parts],
                            return_tokenizer=True)
    log(f"docking: seed {seed}: scoring both experts and the composed model on the union of the questions")
    models = {f"expert-{part}": experts[part][:2] for part in parts}
    models["composed"] = (composed, tok or experts[parts[0]][1])
    scores = {name: score_model(m, t, questions, val, s) for name, (m, t) in models.items()}
    row = composition_row(seed, scores, {part: len(bd.items) for part, bd in questions.items()})
    row["n_items"]["cross_excluded"] = int(n_cross)
    row["fingerprint"] = fp[parts[0]]
    row["same_substrate"] = len(set(fp.values())) == 1
    row["experts"] = {f"expert-{part}": experts[part][2] for part in parts}
    row["timing"] = {"wall_s": round(time.perf_counter() - w0, 2), "cpu_s": round(time.process_time() - c0, 2)}
    atomic_write_json(path, row)
    return row


def composition_row(seed: int, scores: dict, n_items: dict) -> dict:
    """One seed's composition numbers from the per-model scores (see the module docstring)."""
    models = {name: {k: v for k, v in sc.items() if k != "items"} for name, sc in scores.items()}
    experts = [name for name in models if name != "composed"]
    best = max(experts, key=lambda e: models[e]["acc"]["union"])
    comp = models["composed"]
    return {
        "seed": seed,
        "n_items": {**n_items, "union": sum(n_items.values())},
        "chance": CHANCE,
        "models": models,
        "best_expert": best,
        "margin_acc": comp["acc"]["union"] - models[best]["acc"]["union"],
        "beats_both": all(comp["acc"]["union"] > models[e]["acc"]["union"] for e in experts),
        "margin_val_loss": min(models[e]["val_loss"]["union"] for e in experts) - comp["val_loss"]["union"],
    }


def run_refusal(out: Path, s: DockingSettings, prep: dict, seed: int, log: Callable[[str], None]) -> dict:
    """Two trainable-table experts on the two halves, handed to ``compose``: record its refusal."""
    path = out / "refusal.json"
    done = read_done(path)
    if done is not None:
        return done
    w0, c0 = time.perf_counter(), time.process_time()
    parts = prep["parts"]
    experts = {part: train_expert(out, s, prep, seed, part, "unfrozen", steps=s.docking.trainable_steps, log=log)
               for part in parts}
    message, refused = None, False
    try:
        compose([Expert(experts[part][0], f"trainable-{part}", experts[part][1]) for part in parts])
    except SubstrateError as exc:
        refused, message = True, str(exc)
    result = {
        "seed": seed,
        "steps": s.docking.trainable_steps,
        "refused": refused,
        "message": message,
        "reason": refusal_reason(message),
        "experts": [experts[part][2] for part in parts],
        "timing": {"wall_s": round(time.perf_counter() - w0, 2), "cpu_s": round(time.process_time() - c0, 2)},
    }
    log("docking: compose on two trainable-table experts: "
        + (f"refused ({message})" if refused else "ACCEPTED (no check refuses trainable tables)"))
    atomic_write_json(path, result)
    return result


def refusal_reason(message: str | None) -> str | None:
    """``trainable`` when the message names the trainable/unfrozen table, ``fingerprint`` when it
    names differing table fingerprints, ``other`` for any other refusal, None when not refused."""
    if message is None:
        return None
    low = message.lower()
    if "trainable" in low or "unfrozen" in low or "not frozen" in low:
        return "trainable"
    if "fingerprint" in low:
        return "fingerprint"
    return "other"
