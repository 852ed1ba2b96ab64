"""Linear probes per layer with entity-grouped cross-validation and a control task.

A probe is a multinomial logistic regression on standardised features (scikit-learn, imported
lazily). Accuracy is measured with stratified k-fold cross-validation **grouped by entity**: all
occurrences of one entity (one word) are in the same fold, so the probe is always tested on
entities it never saw. This matters for the substrate baseline. A random binary code gives every
invented name distinct, linearly independent rows, so a probe that saw "Zorblax" in training can
memorise Zorblax -> animal and score far above chance on other sentences about Zorblax without
the table encoding anything about animals. Holding entities out removes that shortcut: on a
random-code substrate, layer-0 accuracy is at chance, and anything above chance in later layers
is structure the blocks built.

The control task follows Hewitt & Liang (2019): the same items, but the entity -> label mapping is
randomly permuted (each entity keeps one consistent, meaningless label; class sizes are
preserved). Selectivity = accuracy - control accuracy. With entity-held-out folds the control
probe cannot memorise, so its accuracy sits near chance; a large control accuracy would flag a
leak in the evaluation.

Chance is reported next to every accuracy: the majority-class share (what a constant predictor
gets) and 1 / number of classes.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from ..errors import SubstrateError
from ._io import single_thread_blas


def chance_levels(labels: Sequence) -> dict:
    """Chance accuracy for a label vector: majority-class share and 1 / number of classes."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return {"majority": float(counts.max() / counts.sum()), "uniform": float(1.0 / len(counts))}


def prepare_labels(labels: Sequence, groups: Sequence | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Encode labels and drop classes that cannot be held out.

    A class represented by a single group (entity) would appear either only in training or only
    in testing, so it is dropped.

    Returns:
        ``(keep_mask [N] bool, y [N_kept] int, groups [N_kept], class_names)``.
    """
    labels = np.asarray([str(x) for x in labels])
    groups = np.asarray([str(g) for g in groups]) if groups is not None else np.arange(len(labels)).astype(str)
    keep = np.ones(len(labels), dtype=bool)
    for c in np.unique(labels):
        if len(np.unique(groups[labels == c])) < 2:
            keep &= labels != c
    classes = sorted(np.unique(labels[keep]).tolist())
    if len(classes) < 2:
        raise SubstrateError(
            "probing needs at least two classes with two or more entities each; give more probe items "
            "(raise --max-items or use a bigger world)"
        )
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in labels[keep]], dtype=np.int64)
    return keep, y, groups[keep], classes


def make_folds(y: np.ndarray, groups: np.ndarray | None, n_splits: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold splits, grouped by entity when ``groups`` is given.

    ``n_splits`` is lowered to the smallest per-class number of groups (at least 2) so that every
    class can appear in every test fold.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    if groups is None:
        per_class = np.bincount(y)[np.bincount(y) > 0]
        k = int(max(2, min(n_splits, per_class.min())))
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y))
    groups = np.asarray(groups)
    per_class = [len(np.unique(groups[y == c])) for c in np.unique(y)]
    k = int(max(2, min(n_splits, min(per_class))))
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def control_labels(y: np.ndarray, groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang control task: permute the entity -> label mapping.

    Every entity gets the label of another (random) entity, consistently across its occurrences;
    class sizes at entity level are unchanged.
    """
    y, groups = np.asarray(y), np.asarray(groups)
    ents, first = np.unique(groups, return_index=True)
    ent_labels = y[first]
    perm = np.random.default_rng(seed + 7919).permutation(len(ents))
    mapping = dict(zip(ents.tolist(), ent_labels[perm].tolist()))
    return np.array([mapping[g] for g in groups.tolist()], dtype=y.dtype)


def _fit_predict(X_train, y_train, X_test, C: float, max_iter: int, seed: int) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_train)) < 2:  # a degenerate fold: only a constant predictor is possible
        return np.full(len(X_test), y_train[0])
    scaler = StandardScaler().fit(X_train)
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        # a probe that has not fully converged after max_iter is still a fine probe
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(X_train), y_train)
    return clf.predict(scaler.transform(X_test))


def cv_accuracy(
    X: np.ndarray,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    C: float = 1.0,
    max_iter: int = 300,
    seed: int = 0,
) -> tuple[float, float]:
    """Cross-validated accuracy over the given folds.

    Returns:
        ``(accuracy over all held-out predictions, standard deviation across folds)``.
    """
    X = np.asarray(X, dtype=np.float64)
    correct, per_fold = 0, []
    with single_thread_blas():
        for train, test in folds:
            pred = _fit_predict(X[train], y[train], X[test], C, max_iter, seed)
            hits = int((pred == y[test]).sum())
            correct += hits
            per_fold.append(hits / max(1, len(test)))
    total = sum(len(t) for _, t in folds)
    return correct / max(1, total), float(np.std(per_fold))


def probe_accuracy(
    X: np.ndarray,
    labels: Sequence,
    groups: Sequence | None = None,
    n_splits: int = 5,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 300,
    control: bool = True,
) -> dict:
    """Linear-probe accuracy of one representation, with chance and (optionally) the control task.

    Args:
        X: features ``[N, d]``.
        labels: class of each row.
        groups: entity of each row; folds hold whole entities out. ``None`` splits rows freely
            (only for comparison: with repeated entities that lets a probe memorise identities).
        n_splits: folds (lowered when a class has fewer entities).
        seed: fold shuffling and control permutation seed.
        C: inverse L2 strength of the logistic regression.
        max_iter: solver iterations.
        control: also run the control task.

    Returns:
        dict with ``accuracy``, ``std``, ``chance_majority``, ``chance_uniform``, ``n_splits``,
        ``n``, ``n_classes``, ``classes`` and, with ``control``, ``control_accuracy`` and
        ``selectivity``.
    """
    keep, y, g, classes = prepare_labels(labels, groups)
    Xk = np.asarray(X)[keep]
    folds = make_folds(y, g if groups is not None else None, n_splits, seed)
    acc, std = cv_accuracy(Xk, y, folds, C, max_iter, seed)
    chance = chance_levels(y)
    out = {
        "accuracy": acc,
        "std": std,
        "chance_majority": chance["majority"],
        "chance_uniform": chance["uniform"],
        "n_splits": len(folds),
        "n": int(len(y)),
        "n_classes": len(classes),
        "classes": classes,
    }
    if control:
        yc = control_labels(y, g, seed)
        cacc, _ = cv_accuracy(Xk, yc, folds, C, max_iter, seed)
        out["control_accuracy"] = cacc
        out["selectivity"] = acc - cacc
    return out


def probe_layers(
    arrays: Sequence[np.ndarray],
    labels: Sequence,
    groups: Sequence | None,
    n_splits: int = 5,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 300,
    control: bool = True,
    progress=None,
) -> dict:
    """Probe every layer with the same folds; per-layer lists aligned with ``arrays``.

    Returns:
        dict with lists ``accuracy``, ``std`` (and ``control_accuracy``, ``selectivity``), plus the
        shared ``chance_majority``, ``chance_uniform``, ``n_splits``, ``n``, ``n_classes``,
        ``classes``, ``grouped`` and ``cv`` (a one-line description).
    """
    keep, y, g, classes = prepare_labels(labels, groups)
    folds = make_folds(y, g if groups is not None else None, n_splits, seed)
    yc = control_labels(y, g, seed) if control else None
    chance = chance_levels(y)
    res = {"accuracy": [], "std": []}
    if control:
        res["control_accuracy"], res["selectivity"] = [], []
    for i, X in enumerate(arrays):
        Xk = np.asarray(X)[keep]
        acc, std = cv_accuracy(Xk, y, folds, C, max_iter, seed)
        res["accuracy"].append(acc)
        res["std"].append(std)
        if control:
            cacc, _ = cv_accuracy(Xk, yc, folds, C, max_iter, seed)
            res["control_accuracy"].append(cacc)
            res["selectivity"].append(acc - cacc)
        if progress is not None:
            progress(i + 1, len(arrays))
    res.update(
        chance_majority=chance["majority"],
        chance_uniform=chance["uniform"],
        n_splits=len(folds),
        n=int(len(y)),
        n_classes=len(classes),
        classes=classes,
        grouped=groups is not None,
        cv=(
            f"{len(folds)}-fold stratified CV grouped by entity (test entities never seen in training); "
            "logistic regression on standardised features"
            if groups is not None
            else f"{len(folds)}-fold stratified CV over items (not grouped)"
        ),
    )
    return res
