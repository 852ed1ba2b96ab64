"""Shared fixtures: tiny model configs and the shared-data locator."""

from __future__ import annotations

import os
from pathlib import Path

# OpenMP threads that spin-wait steal the other core from subprocess tests and data workers
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SUBSTRATE_LM_SHARED", REPO.parent / "shared"))

# tiny models are overhead-bound: one thread is faster (and steadier) than two on the 2-core CI machine
torch.set_num_threads(1)


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test with the reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data {p} is absent (it ships only beside the repository, not with the package)")
    return p


@pytest.fixture
def shared_file():
    """``shared_file("data", "bvv241", "ngrams-2-3.txt")``: a path under ../shared or a skip."""
    return shared_path
