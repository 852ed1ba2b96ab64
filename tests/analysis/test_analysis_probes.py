"""Linear probes: planted signal -> ~100%, shuffled labels and random codes -> chance."""

from __future__ import annotations

import numpy as np
import pytest

from substrate_lm.analysis.probes import (
    chance_levels,
    control_labels,
    make_folds,
    prepare_labels,
    probe_accuracy,
    probe_layers,
)
from substrate_lm.errors import SubstrateError


def _entities(n_entities=120, per_entity=4, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    ent_label = rng.permutation(np.arange(n_entities) % n_classes)
    groups = np.repeat(np.arange(n_entities), per_entity)
    labels = ent_label[groups]
    return rng, groups, labels


def _planted(rng, groups, labels, d=64, n_classes=4):
    centroids = rng.normal(size=(n_classes, d)) * 2.0
    ent_noise = rng.normal(size=(groups.max() + 1, d))
    return centroids[labels] + ent_noise[groups] + 0.5 * rng.normal(size=(len(groups), d))


def test_planted_signal_is_found_and_shuffled_labels_are_at_chance():
    rng, groups, labels = _entities()
    X = _planted(rng, groups, labels)
    res = probe_accuracy(X, labels, groups, n_splits=5, seed=0)
    assert res["accuracy"] > 0.97
    assert res["chance_majority"] == pytest.approx(0.25)
    assert res["selectivity"] > 0.6
    # control task: per-entity permuted labels, entity-held-out folds -> chance
    assert abs(res["control_accuracy"] - 0.25) < 0.15
    # labels shuffled over items: nothing to learn
    shuffled = rng.permutation(labels)
    res_s = probe_accuracy(X, shuffled, groups, n_splits=5, seed=0, control=False)
    assert abs(res_s["accuracy"] - 0.25) < 0.12


def test_random_codes_are_at_chance_only_when_folds_hold_entities_out():
    """A random binary code per entity: memorisable identity, no category information."""
    rng, groups, labels = _entities(n_entities=120, per_entity=4)
    codes = rng.integers(0, 2, size=(120, 256)).astype(np.float32)
    X = codes[groups]  # every occurrence of an entity has the same substrate row
    grouped = probe_accuracy(X, labels, groups, n_splits=5, seed=0, control=False)
    assert abs(grouped["accuracy"] - 0.25) < 0.13
    # splitting occurrences freely lets the probe memorise entity -> label: far above chance
    free = probe_accuracy(X, labels, None, n_splits=5, seed=0, control=False)
    assert free["accuracy"] > 0.9


def test_folds_never_share_an_entity_and_are_stratified():
    _, groups, labels = _entities(n_entities=40, per_entity=3)
    folds = make_folds(labels, groups, n_splits=5, seed=1)
    assert len(folds) == 5
    seen = np.zeros(len(labels), dtype=int)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert set(labels[test]) == set(labels)  # every class in every test fold
        seen[test] += 1
    assert (seen == 1).all()


def test_control_labels_are_per_entity_and_keep_class_sizes():
    _, groups, labels = _entities(n_entities=50, per_entity=3)
    yc = control_labels(labels, groups, seed=3)
    for g in np.unique(groups):
        assert len(set(yc[groups == g])) == 1
    assert sorted(np.bincount(yc)) == sorted(np.bincount(labels))
    assert (yc != labels).any()


def test_chance_levels_and_class_dropping():
    assert chance_levels(["a", "a", "a", "b"]) == {"majority": 0.75, "uniform": 0.5}
    keep, y, g, classes = prepare_labels(["a", "a", "b", "b", "c"], ["1", "2", "3", "4", "5"])
    assert classes == ["a", "b"] and keep.tolist() == [True, True, True, True, False]
    # class "c" has a single entity (two occurrences): it cannot be held out, so it is dropped
    keep, _, _, classes = prepare_labels(["a", "a", "b", "b", "c", "c"], ["1", "2", "3", "4", "5", "5"])
    assert classes == ["a", "b"]
    with pytest.raises(SubstrateError):
        prepare_labels(["a", "a"], ["1", "2"])


def test_probe_layers_uses_shared_folds_per_layer():
    rng, groups, labels = _entities(n_entities=60, per_entity=3)
    noise = rng.normal(size=(len(labels), 32))
    signal = _planted(rng, groups, labels, d=32)
    res = probe_layers([noise, signal], labels, groups, n_splits=4, seed=0)
    assert len(res["accuracy"]) == 2 and len(res["control_accuracy"]) == 2
    assert res["accuracy"][1] > 0.95 > res["accuracy"][0] + 0.4
    assert res["grouped"] and "grouped by entity" in res["cv"]
    assert res["selectivity"][1] == pytest.approx(res["accuracy"][1] - res["control_accuracy"][1])
