"""Fixtures for the world tests: one small generated world shared by the session (~0.3 s)."""

from __future__ import annotations

import json

import pytest

from substrate_lm.world import generate_world


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory):
    """A 100 KB world in en, ru and zh (seed 0, default settings)."""
    out = tmp_path_factory.mktemp("world") / "w"
    generate_world(out, size="100KB", langs=("en", "ru", "zh"), seed=0)
    return out


@pytest.fixture(scope="session")
def world(world_dir):
    return json.loads((world_dir / "world.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def train_docs(world_dir):
    with open(world_dir / "train.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]
