"""Statistics of a multi-seed demo and the finding sentences computed from them.

Every figure the demo reports is a mean over seeds with a 95% confidence interval from Student's
t distribution (``mean +- t_{0.975, n-1} * sd / sqrt(n)``; with 3 seeds t = 4.30, so the interval
is honest about how few runs there are). A verdict ("above chance", "within 10%") is read off the
interval, never written in advance: a claim holds when the whole interval is on its side of the
threshold, is "not shown" when the interval straddles it, and fails when the interval lies on the
wrong side. Each finding is a dict with the numbers, the verdict and a sentence built from both,
so the report and ``results.json`` state the same thing.

Claim 3 (the docking experiment, :mod:`~substrate_lm.experiments.docking`) is aggregated here too:
per-seed rows -> mean, sd and CI95 (:func:`summarize`), its verdicts (:func:`aggregate_composition`,
:func:`aggregate_growth`) and its sentences (:func:`docking_sentences`); :func:`docking_findings`
turns its verdicts into the demo's findings.
"""

from __future__ import annotations

import math
from typing import Sequence

# two-sided 95% quantiles of Student's t by degrees of freedom (beyond 30: the normal 1.96)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
         26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}

HOLDS, NOT_SHOWN, FAILS = "holds", "not shown", "fails"


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("a confidence interval needs at least two values")
    return _T975.get(df, 1.96)


def ci(values: Sequence[float]) -> dict:
    """``{"mean", "sd", "n", "ci95", "lo", "hi", "values"}``; with one value the interval is
    undefined (``ci95`` None, ``lo``/``hi`` equal to the value)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0, "ci95": None, "lo": None, "hi": None, "values": []}
    mean = sum(vals) / n
    if n == 1:
        return {"mean": mean, "sd": None, "n": 1, "ci95": None, "lo": mean, "hi": mean, "values": vals}
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "ci95": half, "lo": mean - half, "hi": mean + half, "values": vals}


def summarize(values: Sequence[float]) -> dict:
    """``{"mean", "sd", "ci95", "n"}`` of per-seed values for tables (the ablation's, the docking
    experiment's): the interval of :func:`ci`, non-finite values dropped, and with one value sd and
    CI95 0 (no interval) so that a one-seed table still prints."""
    s = ci([float(v) for v in values if v is not None and math.isfinite(float(v))])
    if s["n"] == 0:
        return {"mean": None, "sd": None, "ci95": None, "n": 0}
    if s["n"] == 1:
        return {"mean": s["mean"], "sd": 0.0, "ci95": 0.0, "n": 1}
    return {"mean": s["mean"], "sd": s["sd"], "ci95": s["ci95"], "n": s["n"]}


def verdict_above(stat: dict, threshold: float) -> str:
    """``holds`` when the interval lies above ``threshold``, ``fails`` when it lies at or below,
    ``not shown`` when it straddles it or has fewer than two seeds."""
    if stat["n"] < 2 or stat["ci95"] is None:
        return NOT_SHOWN
    if stat["lo"] > threshold:
        return HOLDS
    if stat["hi"] <= threshold:
        return FAILS
    return NOT_SHOWN


def verdict_below(stat: dict, threshold: float) -> str:
    """The mirror of :func:`verdict_above`: ``holds`` when the interval lies below ``threshold``."""
    if stat["n"] < 2 or stat["ci95"] is None:
        return NOT_SHOWN
    if stat["hi"] < threshold:
        return HOLDS
    if stat["lo"] >= threshold:
        return FAILS
    return NOT_SHOWN


def fmt_ci(stat: dict, pct: bool = False, digits: int = 3) -> str:
    """``61.2% (CI95 55.0-67.4, 3 seeds)`` / ``2.314 (1 seed, no CI)``."""
    if stat["mean"] is None:
        return "n/a"
    f = (lambda x: f"{x:.1f}%") if pct else (lambda x: f"{x:.{digits}f}")
    if stat["ci95"] is None:
        return f"{f(stat['mean'])} ({stat['n']} seed, no CI)"
    return f"{f(stat['mean'])} (CI95 {f(stat['lo'])}-{f(stat['hi'])}, {stat['n']} seeds)"


def _finding(claim: str, key: str, verdict: str, sentence: str, **numbers) -> dict:
    return {"claim": claim, "key": key, "verdict": verdict, "sentence": sentence, **numbers}


_WORDS = {HOLDS: "shown", NOT_SHOWN: "not shown at this size", FAILS: "contradicted"}


def question_findings(per_model: dict[str, dict], frozen: list[str], chance: float = 25.0) -> list[dict]:
    """Claim 1a: held-out question accuracy of each frozen model under the log-likelihood protocol,
    against chance.

    ``per_model[name]["mc_loglik"]`` is a :func:`ci` dict (percent, 4-way multiple choice). The
    generation protocol is judged against the trainable table, as the papers do
    (:func:`generation_findings`), not against chance.
    """
    out = []
    for name in frozen:
        stat = per_model.get(name, {}).get("mc_loglik")
        if not stat or stat["mean"] is None:
            continue
        v = verdict_above(stat, chance)
        rel = {HOLDS: "above chance", FAILS: "not above chance", NOT_SHOWN: "not distinguishable from chance"}[v]
        out.append(_finding(
            "1", f"questions/{name}/mc_loglik", v,
            f"{name} answers the held-out-phrasing multiple-choice questions at {fmt_ci(stat, pct=True)} under "
            f"the log-likelihood protocol; chance is {chance:.0f}%: {rel}.",
            stat=stat, chance=chance,
        ))
    return out


#: the papers' frozen vs architecturally identical trainable models under the generation protocol
#: (MMLU %, spec section 5.1): (frozen, trainable) pairs
PAPER_GENERATION_PAIRS = ((23.68, 14.00), (22.29, 11.37), (19.42, 14.03))


def generation_findings(paper: dict[str, dict[int, float]], valid: dict[str, dict[int, float]],
                        frozen: list[str], baseline: str) -> list[dict]:
    """Claim 1c, the papers' own generation-protocol claim: the frozen model against the
    architecturally identical trainable one (same seed = same backbone init and data order), not
    against chance. The papers' 0.2B-0.5B models score 19-24% on MMLU under this protocol, the
    trainable ones 11-14%, because the trainable model often does not write a valid option letter.

    ``paper[name][seed]``: accuracy (percent) under the generation protocol; ``valid[name][seed]``:
    share of its generations that are a valid option letter (percent). The verdict is read off the
    Student-t CI95 of the per-seed differences ``frozen - trainable``: holds above zero,
    contradicted at or below zero, otherwise not shown.
    """
    out = []
    base = paper.get(baseline) or {}
    base_valid = valid.get(baseline) or {}
    for name in frozen:
        mine = paper.get(name) or {}
        seeds = sorted(set(mine) & set(base))
        if not seeds:
            continue
        diff = ci([mine[s] - base[s] for s in seeds])
        acc, acc_base = ci([mine[s] for s in seeds]), ci([base[s] for s in seeds])
        v_mine = ci([(valid.get(name) or {}).get(s) for s in seeds])
        v_base = ci([base_valid.get(s) for s in seeds])
        v = verdict_above(diff, 0.0)
        rel = {HOLDS: "the frozen table answers better, as the papers report",
               FAILS: "the frozen table does not answer better (contrary to the papers)",
               NOT_SHOWN: "no difference established"}[v]
        wins = sum(1 for s in seeds if mine[s] > base[s])
        valid_txt = (f"; valid option letters: {fmt_ci(v_mine, pct=True)} of {name}'s generations, "
                     f"{fmt_ci(v_base, pct=True)} of the trainable table's"
                     if v_mine["mean"] is not None and v_base["mean"] is not None else "")
        out.append(_finding(
            "1", f"generation/{name}_vs_trainable", v,
            f"Under the papers' generation protocol (the answer letter is generated) {name} answers "
            f"{fmt_ci(acc, pct=True)} against the architecturally identical trainable table's "
            f"{fmt_ci(acc_base, pct=True)}; paired by seed the difference is {fmt_ci(diff, digits=1)} points "
            f"(frozen higher in {wins}/{len(seeds)} seeds){valid_txt}: {rel} (papers: 23.68% vs 14.00%, "
            f"22.29% vs 11.37%, 19.42% vs 14.03%).",
            stat=diff, accuracy=acc, accuracy_trainable=acc_base, valid_share=v_mine,
            valid_share_trainable=v_base, seeds=seeds, frozen_higher_seeds=wins,
        ))
    return out


def loss_findings(val_loss: dict[str, dict[int, float]], frozen: list[str], baseline: str, tolerance: float = 0.10) -> list[dict]:
    """Claim 1b: validation loss of each frozen model relative to the trainable baseline's, seed by
    seed (same seed = same data order and backbone init), ``ratio = frozen / trainable``."""
    out = []
    base = val_loss.get(baseline) or {}
    for name in frozen:
        mine = val_loss.get(name) or {}
        seeds = sorted(set(mine) & set(base))
        if not seeds:
            continue
        stat = ci([mine[s] / base[s] for s in seeds])
        v = verdict_below(stat, 1.0 + tolerance)
        pct = (stat["mean"] - 1.0) * 100
        word = "higher" if pct >= 0 else "lower"
        rel = {HOLDS: f"within {tolerance:.0%}", FAILS: f"not within {tolerance:.0%}",
               NOT_SHOWN: f"within {tolerance:.0%} not established"}[v]
        out.append(_finding(
            "1", f"val_loss/{name}", v,
            f"{name}'s validation loss is {abs(pct):.1f}% {word} than the trainable table's at equal steps "
            f"(ratio {fmt_ci(stat)}): {rel}.",
            stat=stat, tolerance=tolerance,
        ))
    return out


def probe_stats(per_seed: dict[int, dict]) -> dict:
    """Per-layer statistics of one model's probe over seeds.

    ``per_seed[seed]`` is the ``metrics.json`` of :func:`~substrate_lm.analysis.analyze`.
    Returns ``{"layers", "accuracy": [ci...], "control": [ci...], "selectivity": [ci...], "chance"}``
    where selectivity is accuracy minus control accuracy, paired by seed.
    """
    runs = [m for _, m in sorted(per_seed.items())]
    layers = runs[0]["layers"]
    acc = [[r["probe"]["accuracy"][i] for r in runs] for i in range(len(layers))]
    ctl = [[r["probe"].get("control_accuracy", [None] * len(layers))[i] for r in runs] for i in range(len(layers))]
    sel = [[a - c for a, c in zip(acc[i], ctl[i]) if c is not None] for i in range(len(layers))]
    return {
        "layers": list(layers),
        "accuracy": [ci(v) for v in acc],
        "control": [ci([x for x in v if x is not None]) for v in ctl],
        "selectivity": [ci(v) for v in sel],
        "chance": runs[0]["probe"]["chance_majority"],
        "per_seed": {int(s): {"accuracy": m["probe"]["accuracy"], "control": m["probe"].get("control_accuracy")}
                     for s, m in per_seed.items()},
    }


INPUT_LAYERS = ("substrate", "0")  # the table's rows and the blocks' input (hidden state 0)


def best_block_layer(stats: dict) -> int:
    """Index of the block output (a layer after block 1 or later) with the highest mean accuracy."""
    acc = stats["accuracy"]
    blocks = [i for i, name in enumerate(stats["layers"]) if str(name) not in INPUT_LAYERS]
    return max(blocks, key=lambda i: acc[i]["mean"])


def probe_findings(probes: dict[str, dict], frozen: list[str]) -> list[dict]:
    """Claim 2: for each frozen model, the substrate probe at chance, the best block layer above
    chance and above the control task (paired by seed)."""
    out = []
    for name in frozen:
        st = probes.get(name)
        if not st or not any(str(n) not in INPUT_LAYERS for n in st["layers"]):
            continue
        chance = st["chance"]
        sub = st["accuracy"][0]
        v0 = verdict_above(sub, chance)
        # layer 0 "at chance" holds when its interval does not exclude chance from above
        v_at = {HOLDS: FAILS, FAILS: HOLDS, NOT_SHOWN: HOLDS if sub["n"] >= 2 else NOT_SHOWN}[v0]
        out.append(_finding(
            "2", f"probe/{name}/substrate", v_at,
            f"{name}: the probe reads the category from the substrate rows of held-out entities at "
            f"{fmt_ci(sub)}; chance is {chance:.3f}: "
            + ("at chance, as a meaningless table must be." if v_at == HOLDS else
               "above chance." if v_at == FAILS else "too few seeds to tell."),
            stat=sub, chance=chance,
        ))
        b = best_block_layer(st)
        best, sel = st["accuracy"][b], st["selectivity"][b]
        v_best = verdict_above(best, chance)
        v_sel = verdict_above(sel, 0.0)
        v = HOLDS if v_best == HOLDS and v_sel == HOLDS else (FAILS if FAILS in (v_best, v_sel) else NOT_SHOWN)
        out.append(_finding(
            "2", f"probe/{name}/best_block", v,
            f"{name}: at the best block layer ({st['layers'][b]}) the probe reaches {fmt_ci(best)} against chance "
            f"{chance:.3f} ({'CI excludes chance' if v_best == HOLDS else 'CI does not exclude chance'}); "
            f"its margin over the control task is {fmt_ci(sel)} "
            f"({'above the control' if v_sel == HOLDS else 'not above the control'}): meaning emerging in the "
            f"blocks is {_WORDS[v]}.",
            layer=st["layers"][b], layer_index=b, stat=best, selectivity=sel, chance=chance,
        ))
    return out


def summary_line(findings: list[dict]) -> str:
    """``7 of 9 findings hold, 2 not shown, 0 contradicted``."""
    n = {k: sum(f["verdict"] == k for f in findings) for k in (HOLDS, NOT_SHOWN, FAILS)}
    return f"{n[HOLDS]} of {len(findings)} findings hold, {n[NOT_SHOWN]} not shown, {n[FAILS]} contradicted"


_DOCKING_PARTS = {  # verdict key -> (the sentence of the docking experiment that states it, fallback)
    "composition": ("Composition:", "composing two frozen-table experts by logit averaging"),
    "composition_val_loss": ("On the validation text", "the composed model's validation loss against each expert's"),
    "refusal": ("Two trainable-table experts", "compose refusing two trainable-table experts"),
    "growth": ("Growth:", "growing a model block by block to the monolithic model's loss"),
}


def docking_findings(docking: dict | None) -> list[dict]:
    """Claim 3 as findings: one per verdict of the docking experiment (``verdicts``: booleans it
    computed from its own numbers), with that experiment's sentence for it."""
    if not docking:
        return []
    sentences = [s for s in docking.get("findings") or [] if isinstance(s, str)]
    out = []
    for key, ok in (docking.get("verdicts") or {}).items():
        prefix, fallback = _DOCKING_PARTS.get(key, (None, key))
        sentence = next((s for s in sentences if prefix and s.startswith(prefix)), None)
        verdict = HOLDS if ok else (FAILS if key == "refusal" else NOT_SHOWN)
        out.append(_finding("3", f"docking/{key}", verdict,
                            sentence or f"The docking experiment reports {fallback} as {'shown' if ok else 'not shown'}."))
    return out


# ------------------------------------------------------------------------------------------------
# claim 3: the docking experiment's aggregation, verdicts and sentences

CHANCE = 25.0
"""Chance accuracy of the world's four-option multiple-choice questions (percent)."""
GROWTH_TOLERANCE = 0.10
"""Growth holds when the grown model's validation loss is at most 1 + this times the monolithic one's."""


def _fmt_mean(s: dict, digits: int = 1) -> str:
    """``41.0 ± 12.7`` of a :func:`summarize` dict (the mean alone with one seed)."""
    if s.get("mean") is None:
        return "n/a"
    if s["n"] > 1:
        return f"{s['mean']:.{digits}f} ± {s['ci95']:.{digits}f}"
    return f"{s['mean']:.{digits}f}"


def _parts_of(rows: list[dict]) -> list[str]:
    return [name[len("expert-"):] for name in rows[0]["models"] if name.startswith("expert-")] if rows else []


def aggregate_composition(rows: list[dict]) -> dict:
    agg: dict[str, dict] = {}
    parts = _parts_of(rows)
    for name in [f"expert-{p}" for p in parts] + ["composed"]:
        for part in (*parts, "union"):
            agg[f"{name}/acc/{part}"] = summarize([r["models"][name]["acc"][part] for r in rows])
            agg[f"{name}/val_loss/{part}"] = summarize([r["models"][name]["val_loss"][part] for r in rows])
    agg["margin_acc"] = summarize([r["margin_acc"] for r in rows])
    agg["margin_val_loss"] = summarize([r["margin_val_loss"] for r in rows])
    beats = sum(1 for r in rows if r["beats_both"])
    m = agg["margin_acc"]
    verdict = bool(rows) and beats == len(rows) and m["mean"] is not None and m["mean"] - m["ci95"] > 0
    lower = sum(1 for r in rows if r["margin_val_loss"] > 0)
    lv = agg["margin_val_loss"]
    verdict_loss = bool(rows) and lower == len(rows) and lv["mean"] is not None and lv["mean"] - lv["ci95"] > 0
    return {"aggregate": agg, "beats_both_seeds": beats, "verdict": verdict,
            "lower_val_loss_seeds": lower, "verdict_val_loss": verdict_loss}


def aggregate_growth(rows: list[dict]) -> dict:
    agg = {k: summarize([r[k] for r in rows]) for k in ("grown_val_loss", "monolithic_val_loss", "ratio")}
    within = sum(1 for r in rows if r["within_10pct"])
    m = agg["ratio"]
    verdict = bool(rows) and within == len(rows) and m["mean"] is not None and \
        m["mean"] + m["ci95"] <= 1.0 + GROWTH_TOLERANCE
    return {"aggregate": agg, "within_seeds": within, "verdict": verdict}


def docking_sentences(result: dict) -> list[str]:
    """The docking experiment's sentences, computed from the numbers of its ``result`` (composition,
    refusal, growth); the halves are named by ``result["world"]["labels"]``."""
    out: list[str] = []
    comp = result.get("composition")
    if comp and comp.get("rows"):
        rows, agg = comp["rows"], comp["aggregate"]
        n = len(rows)
        parts = _parts_of(rows)
        p0, p1 = parts
        labels = {p0: p0, p1: p1, **((result.get("world") or {}).get("labels") or {})}
        e0, e1 = f"expert-{p0}", f"expert-{p1}"
        x0, x1 = f"the {labels[p0]} expert", f"the {labels[p1]} expert"
        a = {name: agg[f"{name}/acc/union"] for name in (e0, e1, "composed")}
        m = agg["margin_acc"]
        sig = m["mean"] is not None and n > 1 and m["mean"] - m["ci95"] > 0
        cross = rows[0]["n_items"].get("cross_excluded", 0)
        out.append(
            f"Composition: the logit average of {x0} and {x1} beats both experts on the union of "
            f"{rows[0]['n_items']['union']} held-out-phrasing questions"
            + (f" ({cross} questions whose facts cross the halves left out)" if cross else "")
            + f" in {comp['beats_both_seeds']}/{n} seeds (log-likelihood accuracy, mean ± CI95 over seeds: composed "
            f"{_fmt_mean(a['composed'])}%, {labels[p0]} expert {_fmt_mean(a[e0])}%, {labels[p1]} expert "
            f"{_fmt_mean(a[e1])}%, chance {CHANCE:.0f}%); its margin over the better expert is {_fmt_mean(m)} points"
            + (f", a CI95 above zero (lower end {m['mean'] - m['ci95']:+.2f})." if sig else
               (f", a CI95 that includes zero (lower end {m['mean'] - m['ci95']:+.2f})." if n > 1
                else " (one seed, no CI)."))
        )
        own_higher = sum(1 for r in rows if all(
            r["models"][f"expert-{p}"]["acc"][p] > r["models"][f"expert-{p}"]["acc"][q]
            for p, q in ((p0, p1), (p1, p0))))
        out.append(
            f"Per half (chance {CHANCE:.0f}%): {x0} scores {_fmt_mean(agg[f'{e0}/acc/{p0}'])}% on its own half's "
            f"questions and {_fmt_mean(agg[f'{e0}/acc/{p1}'])}% on the other's, {x1} "
            f"{_fmt_mean(agg[f'{e1}/acc/{p1}'])}% and {_fmt_mean(agg[f'{e1}/acc/{p0}'])}% (both experts higher on their "
            f"own half in {own_higher}/{n} seeds); the composed model scores {_fmt_mean(agg[f'composed/acc/{p0}'])}% "
            f"on the questions of {labels[p0]} and {_fmt_mean(agg[f'composed/acc/{p1}'])}% on those of {labels[p1]}."
        )
        lv = agg["margin_val_loss"]
        lower = comp.get("lower_val_loss_seeds", sum(1 for r in rows if r["margin_val_loss"] > 0))
        out.append(
            f"On the validation text of both halves the composed model's loss is "
            f"{_fmt_mean(agg['composed/val_loss/union'], 3)} nats/token against {_fmt_mean(agg[f'{e0}/val_loss/union'], 3)} "
            f"({labels[p0]} expert) and {_fmt_mean(agg[f'{e1}/val_loss/union'], 3)} ({labels[p1]} expert): lower than "
            f"the better expert's in {lower}/{n} seeds (by {_fmt_mean(lv, 3)}; verdict on validation loss: "
            f"{'shown' if comp.get('verdict_val_loss') else 'not shown'})."
        )
        same = all(r.get("same_substrate") for r in rows)
        out.append(
            f"Composition verdict: {'shown' if comp['verdict'] else 'not shown'} (criterion: composed beats both "
            f"experts in every seed and the CI95 of its margin is above zero); the experts of every seed "
            f"{'share one table fingerprint' if same else 'do NOT share one table fingerprint'}."
        )
    ref = result.get("refusal")
    if ref:
        if ref["refused"]:
            out.append(
                f"Two trainable-table experts ({ref['steps']} steps each, seed {ref['seed']}) are refused by compose "
                f"({'names the trainable table' if ref['reason'] == 'trainable' else 'via ' + str(ref['reason'])}): "
                f"\"{ref['message']}\""
            )
        else:
            out.append(
                f"Two trainable-table experts ({ref['steps']} steps each, seed {ref['seed']}) were ACCEPTED by compose: "
                f"nothing checks that the shared table is frozen."
            )
    grow = result.get("growth")
    if grow and grow.get("rows"):
        rows, agg = grow["rows"], grow["aggregate"]
        n = len(rows)
        r = agg["ratio"]
        tokens = rows[0]["tokens_grown"]
        equal = all(x["tokens_grown"] == x["tokens_monolithic"] for x in rows)
        first = summarize([x["stages"][0]["val_loss"] for x in rows])
        mono = (rows[0].get("monolithic") or {}).get("label")
        out.append(
            f"Growth: grown block by block to {rows[0]['stages'][-1]['depth']} blocks "
            f"({len(rows[0]['stages'])} stages, the first of {rows[0]['stages'][0]['depth']}, at "
            f"{_fmt_mean(first, 3)} after it), the model's validation loss is "
            f"{_fmt_mean(agg['grown_val_loss'], 3)} against {_fmt_mean(agg['monolithic_val_loss'], 3)} for the monolithic "
            f"model{f' ({mono} of each seed)' if mono else ''} at {'equal' if equal else 'UNEQUAL'} tokens ({tokens:,}); "
            f"ratio {_fmt_mean(r, 3)}, within "
            f"{100 * GROWTH_TOLERANCE:.0f}% in {grow['within_seeds']}/{n} seeds; verdict: "
            f"{'shown' if grow['verdict'] else 'not shown'} (criterion: every seed and the CI95's upper end "
            f"<= {1 + GROWTH_TOLERANCE:.2f})."
        )
        pinned = [x["lower_blocks_unchanged"] for x in rows if x["lower_blocks_unchanged"] is not None]
        if pinned:
            out.append(f"The frozen lower blocks stayed bit-identical through every later stage in "
                       f"{sum(pinned)}/{len(pinned)} seeds.")
    return out
