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

# tiny models are overhead-bound: one thread is faster (and steadier) than two on the 2-core CI machine.
# Every subprocess a test starts must run with the same thread count (see ``pinned_env``): a matmul's
# reduction order depends on it, so logits compared bit for bit across processes would differ otherwise.
TEST_THREADS = 1
torch.set_num_threads(TEST_THREADS)


def _pinned_env(**extra: str) -> dict[str, str]:
    """The environment for a test's subprocess: this process's, with the thread count pinned to ours."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(TEST_THREADS)
    env.update(extra)
    return env


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test with the reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data {p} is absent (it ships only beside the repository, not with the package)")
    return p


@pytest.fixture
def pinned_env():
    """``pinned_env(HF_HUB_OFFLINE="1")``: an environment for a subprocess with the test's thread count."""
    return _pinned_env


@pytest.fixture
def shared_file():
    """``shared_file("data", "bvv241", "ngrams-2-3.txt")``: a path under ../shared or a skip."""
    return shared_path


@pytest.fixture(autouse=True)
def _restore_bench_registry():
    """Task files a test registers (``register_task_file``, the ablation's ``task_files``) stay
    registered in the process: restore the bench registry after every test, so that a later test
    does not see them (``eval tasks --data-dir MISSING`` passed after the real-text ablation test)."""
    from substrate_lm.evaluation.datasets import BENCHES

    saved = dict(BENCHES)
    yield
    BENCHES.clear()
    BENCHES.update(saved)
