"""TokenShards: memory-mapped reads and batches that are a pure function of (seed, step, rank)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from data_helpers import random_docs, read_split, write_jsonl

from substrate_lm.data import TokenShards, prepare_data
from substrate_lm.errors import SubstrateError


@pytest.fixture(scope="module")
def prepared(tok, tmp_path_factory):
    """~9k train tokens over several small shards, plus a val split."""
    root = tmp_path_factory.mktemp("shards")
    write_jsonl(root / "d.jsonl", random_docs(150, seed=31))
    out = root / "out"
    prepare_data(str(root / "d.jsonl"), tok, out, val_fraction=0.15, seed=0, shard_tokens=1500,
                 progress=False)
    return out


def test_stream_and_reads_across_shard_boundaries(prepared):
    ds = TokenShards(prepared)
    stream = read_split(prepared, "train")
    assert len(ds) == stream.size and len(ds.offsets) > 3  # several shards
    np.testing.assert_array_equal(ds[:], stream)
    for start in (0, 1499, 1500, 2999, len(ds) - 10):
        np.testing.assert_array_equal(ds.read(start, 10), stream[start:start + 10])
    assert ds[-1] == int(stream[-1]) == ds.eos_id
    assert ds.vocab_size == 65536
    with pytest.raises(IndexError):
        ds.read(len(ds) - 5, 10)


@pytest.mark.parametrize("mode", ["random", "sequential"])
def test_batches_are_windows_of_the_stream(prepared, mode):
    ds = TokenShards(prepared)
    stream = read_split(prepared, "train").astype(np.int64)
    B, T = 6, 33
    for step in (0, 1, 7, 1000):
        x, y = ds.get_batch(step, B, T, seed=3, mode=mode)
        assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == torch.long
        assert torch.equal(x[:, 1:], y[:, :-1])
        starts = ds.window_starts(step, B, T, seed=3, mode=mode)
        for row, s in enumerate(starts):
            assert 0 <= s <= len(ds) - T - 1
            np.testing.assert_array_equal(x[row].numpy(), stream[s:s + T])
            np.testing.assert_array_equal(y[row].numpy(), stream[s + 1:s + T + 1])


def test_random_batches_are_a_pure_function_of_seed_and_step(prepared):
    a, b = TokenShards(prepared), TokenShards(prepared)  # b: a "resumed" process
    B, T = 4, 16
    run = [a.get_batch(s, B, T, seed=5) for s in range(12)]
    resumed = [b.get_batch(s, B, T, seed=5) for s in range(6, 12)]
    for (x1, y1), (x2, y2) in zip(run[6:], resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(run[0][0], run[1][0])  # steps differ
    assert not torch.equal(run[0][0], a.get_batch(0, B, T, seed=6)[0])  # seeds differ
    # starts cover the whole valid range over many steps
    starts = np.concatenate([a.window_starts(s, 64, T, seed=5) for s in range(50)])
    assert starts.min() < len(a) * 0.05 and starts.max() > len(a) * 0.95


@pytest.mark.parametrize("mode", ["random", "sequential"])
def test_ranks_are_disjoint_slices_of_one_global_batch(prepared, mode):
    ds = TokenShards(prepared)
    B, T, W = 3, 20, 4
    for step in (0, 5):
        whole, _ = ds.get_batch(step, B * W, T, seed=2, mode=mode)
        parts = [ds.get_batch(step, B, T, seed=2, mode=mode, rank=r, world_size=W)[0]
                 for r in range(W)]
        assert torch.equal(torch.cat(parts), whole)
        starts = [ds.window_starts(step, B, T, seed=2, mode=mode, rank=r, world_size=W)
                  for r in range(W)]
        for r in range(1, W):
            assert not torch.equal(parts[0], parts[r])
            if mode == "sequential":
                assert not set(starts[0].tolist()) & set(starts[r].tolist())


def test_sequential_walks_the_stream_in_order_and_wraps(prepared):
    ds = TokenShards(prepared)
    B, T, W = 4, 50, 2
    n_win = ds.num_windows(T)
    steps = ds.steps_per_epoch(B, T, world_size=W)
    seen = np.concatenate([
        ds.window_starts(s, B, T, mode="sequential", rank=r, world_size=W)
        for s in range(steps) for r in range(W)
    ])
    # one epoch visits every window once, in stream order, then starts over
    np.testing.assert_array_equal(seen[:n_win], np.arange(n_win) * T)
    np.testing.assert_array_equal(seen[n_win:], np.arange(seen.size - n_win) * T)
    x0, _ = ds.get_batch(0, 1, T, mode="sequential")
    np.testing.assert_array_equal(x0[0].numpy(), ds.read(0, T))


def test_val_split_and_eval_iteration(prepared):
    val = TokenShards(prepared, split="val")
    stats = json.loads((prepared / "stats.json").read_text(encoding="utf-8"))
    assert len(val) == stats["splits"]["val"]["tokens"] > 0
    np.testing.assert_array_equal(val[:], read_split(prepared, "val"))
    T = 16
    rows = torch.cat([x for x, _ in val.iter_batches(5, T)])
    assert rows.shape == (val.num_windows(T), T)
    np.testing.assert_array_equal(rows.reshape(-1).numpy(), val.read(0, rows.numel()))
    # two ranks split the evaluation windows between them
    r0 = torch.cat([x for x, _ in val.iter_batches(2, T, rank=0, world_size=2)])
    r1 = torch.cat([x for x, _ in val.iter_batches(2, T, rank=1, world_size=2)])
    assert r0.shape[0] + r1.shape[0] == val.num_windows(T)
    assert len(list(val.iter_batches(5, T, max_batches=2))) == 2


def test_batch_errors(prepared):
    ds = TokenShards(prepared)
    with pytest.raises(SubstrateError, match="unknown batch mode"):
        ds.get_batch(0, 2, 8, mode="shuffled")
    with pytest.raises(SubstrateError, match="rank 2 is outside world_size 2"):
        ds.get_batch(0, 2, 8, rank=2, world_size=2)
    with pytest.raises(SubstrateError, match="fewer than seq_len"):
        ds.get_batch(0, 1, len(ds))
    with pytest.raises(SubstrateError, match="non-negative"):
        ds.get_batch(-1, 1, 8)
    with pytest.raises(SubstrateError, match="unknown split"):
        TokenShards(prepared, split="test")


def test_missing_truncated_and_corrupt_shards(tok, tmp_path):
    write_jsonl(tmp_path / "d.jsonl", random_docs(40, seed=3))
    out = tmp_path / "out"
    prepare_data(str(tmp_path / "d.jsonl"), tok, out, val_fraction=0.0, shard_tokens=300,
                 progress=False)
    with pytest.raises(SubstrateError, match="not a prepared data directory"):
        TokenShards(tmp_path)
    with pytest.raises(SubstrateError, match="data directory not found"):
        TokenShards(tmp_path / "nowhere")
    shard = out / "train-00001.bin"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    TokenShards(out)  # sizes still fine: only verify reads the bytes
    with pytest.raises(SubstrateError, match="train-00001.bin is corrupt"):
        TokenShards(out, verify=True)
    shard.write_bytes(bytes(data[:-4]))
    with pytest.raises(SubstrateError, match="train-00001.bin is truncated"):
        TokenShards(out)
    shard.unlink()
    with pytest.raises(SubstrateError, match="train-00001.bin is missing"):
        TokenShards(out)


def test_check_compatible(prepared, tok):
    from data_helpers import fallback_tokenizer

    ds = TokenShards(prepared)
    ds.check_compatible(vocab_size=65536, tokenizer=tok)
    with pytest.raises(SubstrateError, match="vocab_size 32,000"):
        ds.check_compatible(vocab_size=32000)
    other = fallback_tokenizer()
    other.add_tokens(["<other>"])
    with pytest.raises(SubstrateError, match="prepared with another tokenizer"):
        ds.check_compatible(tokenizer=other)
