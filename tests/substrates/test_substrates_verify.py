"""Verification reports of tables, substrate files and model directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import substrate_lm.modeling as modeling
from substrate_lm.substrates import build_substrate, fingerprint, format_report, save_substrate, verify_substrate
from substrate_lm.substrates.verify import count_distinct_rows, verify_table


def test_report_flags_each_broken_property():
    t = build_substrate("bits", 500, 32).table.clone()
    assert verify_substrate(t, kind="bits")["ok"]
    t[7, 3] = 0.5
    t[9] = t[8]
    r = verify_substrate(t, kind="bits")
    assert not r["ok"] and r["non_binary_entries"] == 1 and not r["binary"]
    assert r["duplicate_rows"] == 1 and not r["all_rows_distinct"]
    assert len(r["problems"]) == 2
    f = build_substrate("float", 500, 16).table.clone()
    f[0] *= 2
    r = verify_substrate(f, kind="float")
    assert not r["ok"] and not r["unit_norm"] and r["norm_max"] == pytest.approx(2.0, rel=1e-5)
    f[1] = float("nan")
    assert not verify_substrate(f)["finite"]
    r = verify_substrate(build_substrate("bits", 50, 8), expected_fingerprint="sha256:" + "0" * 64)
    assert r["fingerprint_match"] is False and not r["ok"]
    text = format_report(r)
    assert text.splitlines()[-2] == "FAILED" and "fingerprint" in text.splitlines()[-1]


def test_count_distinct_rows_binary_and_float():
    a = np.array([[0, 1, 1], [0, 1, 1], [1, 0, 0]], dtype=np.float32)
    assert count_distinct_rows(a) == 2
    b = np.array([[0.5, 1.0], [0.5, 1.0 + 1e-7], [0.5, 1.0]], dtype=np.float32)
    assert count_distinct_rows(b) == 2


def _write_model_dir(path, table, kind, fp, sharded=False, meta=None):
    from safetensors.torch import save_file

    path.mkdir()
    cfg = {"model_type": "substrate", "vocab_size": table.shape[0], "n_embed": table.shape[1], "d_model": 32,
           "substrate_kind": kind, "substrate_frozen": True, "substrate_fingerprint": fp, "substrate_meta": meta}
    (path / "config.json").write_text(json.dumps(cfg))
    tensors = {"token_embeddings.weight": table, "lm_head.weight": torch.zeros(table.shape[0], 32)}
    if sharded:
        save_file({"token_embeddings.weight": table}, str(path / "model-00001-of-00002.safetensors"))
        save_file({"lm_head.weight": tensors["lm_head.weight"]}, str(path / "model-00002-of-00002.safetensors"))
        index = {"weight_map": {"token_embeddings.weight": "model-00001-of-00002.safetensors",
                                "lm_head.weight": "model-00002-of-00002.safetensors"}}
        (path / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        save_file(tensors, str(path / "model.safetensors"))


@pytest.mark.parametrize("sharded", [False, True])
def test_verify_model_directory(tmp_path, sharded):
    sub = build_substrate("bits", 1000, 64, seed=1)
    _write_model_dir(tmp_path / "m", sub.table, "bits", sub.fingerprint, sharded, meta=sub.meta)
    r = verify_substrate(tmp_path / "m")
    assert r["ok"], r["problems"]
    assert r["source_type"] == "model" and r["fingerprint_match"] and r["kind"] == "bits"
    other = build_substrate("bits", 1000, 64, seed=2)
    _write_model_dir(tmp_path / "bad", other.table, "bits", sub.fingerprint, sharded, meta=sub.meta)
    r = verify_substrate(tmp_path / "bad")
    assert not r["ok"] and r["fingerprint_match"] is False


def test_verify_substrate_file_and_shape_mismatch(tmp_path):
    sub = build_substrate("float", 400, 16)
    path = save_substrate(sub, tmp_path / "f.safetensors")
    r = verify_substrate(path)
    assert r["ok"] and r["kind"] == "float" and r["expected_shape"] == (400, 16)
    _write_model_dir(tmp_path / "m", sub.table, "float", sub.fingerprint)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["vocab_size"] = 401
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    r = verify_substrate(tmp_path / "m")
    assert not r["ok"] and "differs from the recorded" in r["problems"][0]


def test_fingerprint_agrees_with_the_model_and_a_saved_model_verifies(tmp_path):
    cfg = modeling.SubstrateConfig(vocab_size=512, n_embed=16, d_model=32, n_layer=1, n_head=2, block_size=32,
                                   substrate_kind="bits")
    model = modeling.SubstrateForCausalLM(cfg)
    sub = build_substrate("bits", 512, 16, seed=4)
    model.set_substrate(sub.table, kind="bits", meta=sub.meta)
    assert modeling.substrate_fingerprint(model.token_embeddings.weight) == sub.fingerprint
    assert model.config.substrate_fingerprint == sub.fingerprint
    model.save_pretrained(tmp_path / "m")
    r = verify_substrate(tmp_path / "m")
    assert r["ok"], r["problems"]
    assert r["kind"] == "bits" and r["fingerprint_match"] and r["shape"] == (512, 16)


def test_half_precision_model_table_keeps_unit_norm_within_its_rounding(tmp_path):
    sub = build_substrate("float", 300, 64)
    table = sub.table.to(torch.bfloat16)
    _write_model_dir(tmp_path / "m", table, "float", fingerprint(table), meta=sub.meta)
    r = verify_substrate(tmp_path / "m")
    assert r["storage_dtype"] == "bfloat16" and r["ok"], r["problems"]
    assert verify_table_norm_strict(table) is False


def verify_table_norm_strict(table):
    return verify_table(table, kind="float")["unit_norm"]
