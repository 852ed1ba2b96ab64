"""Substrate files (safetensors + metadata) and the published embeddings.txt dump."""

from __future__ import annotations

import ast
import json

import numpy as np
import pytest
import torch

from substrate_lm.errors import SubstrateError
from substrate_lm.substrates import (
    build_substrate,
    fingerprint,
    iter_embeddings_txt,
    load_substrate,
    read_embeddings_txt,
    save_substrate,
    write_embeddings_txt,
)


@pytest.mark.parametrize("kind,width,storage", [("bits", 256, "uint8"), ("float", 32, "float32"), ("token-id", 12, "uint8")])
def test_save_load_round_trip(tmp_path, kind, width, storage):
    from safetensors import safe_open

    sub = build_substrate(kind, 3000, width, seed=5)
    path = save_substrate(sub, tmp_path / "s.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        md = fh.metadata()
        assert fh.get_tensor("token_embeddings.weight").dtype == getattr(torch, storage)
    assert md["kind"] == kind and md["width"] == str(width) and md["vocab_size"] == "3000"
    assert md["fingerprint"] == sub.fingerprint and md["storage_dtype"] == storage
    assert md["package_version"] and json.loads(md["meta"])["seed"] == 5
    back = load_substrate(path)
    assert back.kind == kind and back.seed == 5 and back.width == width
    assert back.fingerprint == sub.fingerprint and torch.equal(back.table, sub.table)
    assert back.table.dtype == torch.float32
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_load_detects_a_tampered_table(tmp_path):
    from safetensors.torch import save_file

    sub = build_substrate("bits", 100, 16)
    path = save_substrate(sub, tmp_path / "s.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        md, t = fh.metadata(), fh.get_tensor("token_embeddings.weight").clone()
    t[3, 3] = 1 - t[3, 3]
    save_file({"token_embeddings.weight": t}, str(path), metadata=md)
    with pytest.raises(SubstrateError, match="does not match"):
        load_substrate(path)
    assert load_substrate(path, verify=False).fingerprint != sub.fingerprint
    with pytest.raises(SubstrateError, match="not found"):
        load_substrate(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SubstrateError, match="cannot read"):
        load_substrate(tmp_path / "junk.safetensors")


def test_fingerprint_is_sha256_of_float32_little_endian_bytes():
    import hashlib

    t = build_substrate("float", 64, 8).table
    expected = "sha256:" + hashlib.sha256(t.numpy().astype("<f4").tobytes()).hexdigest()
    assert fingerprint(t) == expected
    bits = build_substrate("bits", 64, 8).table
    assert fingerprint(bits.numpy().astype(np.uint8)) == fingerprint(bits)  # storage dtype does not matter
    assert fingerprint(bits.double()) == fingerprint(bits)


def test_embeddings_txt_published_format_and_round_trip(tmp_path):
    sub = build_substrate("bits", 300, 1024, seed=2, tile_period=512)
    path = write_embeddings_txt(sub, tmp_path / "embeddings.txt")
    lines = path.read_text().splitlines()
    assert len(lines) == 600
    # an id line, then the row as a Python list literal of ints
    assert lines[0] == "0" and lines[2] == "1"
    row65 = ast.literal_eval(lines[2 * 65 + 1])
    assert lines[2 * 65] == "65" and row65 == [int(v) for v in sub.table[65].tolist()]
    back = read_embeddings_txt(path)
    assert back.dtype == np.uint8 and np.array_equal(back, sub.table.numpy())
    ids = [i for i, _ in iter_embeddings_txt(path)]
    assert ids == list(range(300))


def test_embeddings_txt_full_vocab_16_bit_and_float_rows(tmp_path):
    tid = build_substrate("token-id", 65536, 16)
    back = read_embeddings_txt(write_embeddings_txt(tid, tmp_path / "ids.txt"))
    assert np.array_equal(back, tid.table.numpy())
    flt = build_substrate("float", 200, 24)
    back = read_embeddings_txt(write_embeddings_txt(flt, tmp_path / "float.txt"))
    assert back.dtype == np.float32 and np.array_equal(back, flt.table.numpy())  # exact reprs


def test_embeddings_txt_parser_accepts_hand_written_dumps_and_rejects_bad_ones(tmp_path):
    good = tmp_path / "g.txt"
    good.write_text("1\n[1,0,1]\n0\n[0, 0,  1]\n\n")  # any spacing, ids out of order
    assert read_embeddings_txt(good).tolist() == [[0, 0, 1], [1, 0, 1]]
    cases = {
        "1\n[0, 1]\n": "ids are not",
        "0\n[0, 1]\n1\n[0, 1, 1]\n": "has 3 values",
        "zero\n[0, 1]\n": "expected a token id",
        "0\n0, 1\n": "expected a row",
        "0\n[0, x]\n": "not a number",
        "0\n": "no row line",
        "": "no rows",
    }
    for k, (text, msg) in enumerate(cases.items()):
        bad = tmp_path / f"bad{k}.txt"
        bad.write_text(text)
        with pytest.raises(SubstrateError, match=msg):
            read_embeddings_txt(bad)
    with pytest.raises(SubstrateError, match="values other than 0 and 1"):
        write_embeddings_txt(np.full((2, 2), 0.5), tmp_path / "x.txt", binary=True)
