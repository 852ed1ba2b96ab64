"""Export: a fresh offline process reloads the directory with identical logits; tampering is refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from substrate_lm.export import export_model
from substrate_lm.modeling import HF_FILES, SubstrateConfig, SubstrateForCausalLM, record_weight_hashes

V = 260


def token_id_model(seed=0):
    torch.manual_seed(seed)
    cfg = SubstrateConfig(vocab_size=V, n_embed=16, d_model=64, n_layer=2, n_head=4, block_size=64, substrate_kind="token-id")
    model = SubstrateForCausalLM(cfg).eval()
    bits = torch.tensor([[(i >> (15 - b)) & 1 for b in range(16)] for i in range(V)], dtype=torch.float32)
    model.set_substrate(bits, kind="token-id", meta={"bit_order": "msb-first"})
    return model


RELOAD = r"""
import sys, torch
assert torch.get_num_threads() == 1, f"subprocess runs {torch.get_num_threads()} threads, the test 1"
from transformers import AutoModelForCausalLM
path, x_path, out_path = sys.argv[1:4]
m = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
assert type(m).__name__ == "SubstrateForCausalLM"
assert m.token_embeddings.weight.requires_grad is False
x = torch.load(x_path)
with torch.no_grad():
    logits = m(x).logits
g = m.generate(x, 4)  # published positional form; samples by default
assert g.shape == (x.shape[0], x.shape[1] + 4)
torch.save(logits, out_path)
"""


def test_export_then_reload_in_fresh_offline_process(tmp_path, pinned_env):
    model = token_id_model()
    out = export_model(model, tmp_path / "m")
    names = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "generation_config.json", "configuration_substrate.py",
            "modeling_substrate.py", "README.md"} <= names
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["auto_map"]["AutoModelForCausalLM"] == "modeling_substrate.SubstrateForCausalLM"
    assert cfg["substrate_fingerprint"] == model.config.substrate_fingerprint
    assert json.loads((out / "generation_config.json").read_text())["do_sample"] is True
    # the exported code must not depend on the substrate_lm package
    for f in HF_FILES[cfg["model_type"]]:
        src = (out / f).read_text()
        assert not re.search(r"^\s*(from|import)\s+substrate_lm", src, re.M), f
        imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", src, re.M)
        assert {i.split(".")[0] for i in imports} <= {"__future__", "hashlib", "json", "math", "os", "tempfile", "torch", "transformers", ""}, imports
    card = (out / "README.md").read_text()
    assert "fingerprint" in card and "trust_remote_code=True" in card and "token-id" in card

    x = torch.randint(0, V, (2, 11))
    torch.save(x, tmp_path / "x.pt")
    env = pinned_env(HF_HUB_OFFLINE="1", PYTHONPATH="")
    # run outside the repo so only the exported files can provide the model code
    subprocess.run([sys.executable, "-c", RELOAD, str(out), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, env=env, cwd=tmp_path)
    with torch.no_grad():
        expect = model(x).logits
    assert torch.equal(torch.load(tmp_path / "y.pt"), expect)


ISOLATED = r"""
import os, shutil, sys
# only the exported files may provide the model code: drop every path entry that holds substrate_lm
sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "substrate_lm"))]
try:
    import substrate_lm  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("substrate_lm is importable in the isolated process")
import torch
from transformers import AutoModelForCausalLM
path, x_path, out_path = sys.argv[1:4]
m = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
assert type(m).__module__.startswith("transformers_modules."), type(m).__module__
x = torch.load(x_path)
with torch.no_grad():
    out = m(x, labels=x)
    chunked = m(x, labels=x, return_logits=False).loss
m.screen_min_head = 0  # the int8 head screen too, on this tiny head
greedy = m.generate(x, 5, do_sample=False)
assert not any(k == "substrate_lm" or k.startswith("substrate_lm.") for k in sys.modules)
torch.save({"logits": out.logits, "loss": out.loss, "chunked": chunked, "greedy": greedy}, out_path)
# a folder that lacks one sibling file must not load
for name in sorted(os.listdir(path)):
    if name.endswith(".py") and name != type(m).__module__.rsplit(".", 1)[-1] + ".py":
        broken = path + "-without-" + name[:-3]
        shutil.copytree(path, broken)
        os.remove(os.path.join(broken, name))
        try:
            AutoModelForCausalLM.from_pretrained(broken, trust_remote_code=True)
        except Exception:
            continue
        raise SystemExit(f"a folder without {name} loaded")
"""


def _composed(tmp_path):
    from substrate_lm.docking import compose, save_composed

    model = compose([token_id_model(3), token_id_model(4)], weights=[2, 1])
    return model, save_composed(model, tmp_path / "composed")


@pytest.mark.parametrize("kind", ["substrate", "composed"])
def test_exported_folder_loads_without_substrate_lm(kind, tmp_path, pinned_env):
    """Every sibling file is exported, and the folder runs (forward, both losses, greedy) with only them."""
    if kind == "substrate":
        model = token_id_model(2)
        out = export_model(model, tmp_path / "m")
    else:
        model, out = _composed(tmp_path)
    model_type = json.loads((out / "config.json").read_text())["model_type"]
    assert sorted(p.name for p in out.glob("*.py")) == sorted(HF_FILES[model_type])
    x = torch.randint(0, V, (2, 9))
    torch.save(x, tmp_path / "x.pt")
    env = pinned_env(HF_HUB_OFFLINE="1", PYTHONPATH="", HF_MODULES_CACHE=str(tmp_path / "hf-modules"))
    subprocess.run([sys.executable, "-c", ISOLATED, str(out), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, env=env, cwd=tmp_path)
    got = torch.load(tmp_path / "y.pt")
    with torch.no_grad():
        want = model(x, labels=x)
        torch.testing.assert_close(got["logits"], want.logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["loss"], want.loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["chunked"], want.loss, rtol=1e-4, atol=1e-5)
    assert torch.equal(got["greedy"], model.generate(x, 5, do_sample=False))


def test_reload_bit_for_bit_in_process(tmp_path):
    from transformers import AutoModelForCausalLM

    model = token_id_model(1)
    export_model(model, tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m", trust_remote_code=True)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1


def test_tampered_table_is_refused(tmp_path):
    from transformers import AutoModelForCausalLM

    out = export_model(token_id_model(), tmp_path / "m")
    tensors = load_file(out / "model.safetensors")
    tensors["token_embeddings.weight"][65, 3] = 1.0 - tensors["token_embeddings.weight"][65, 3]
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="does not match the sha256"):  # the weight file's hash
        AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    record_weight_hashes(out)  # a consistent re-hash of the altered file: the table's fingerprint still refuses it
    with pytest.raises(ValueError, match="fingerprint"):
        AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)


def test_export_refuses_mismatched_tokenizer_and_keeps_existing_dir(tmp_path):
    from substrate_lm.errors import SubstrateError

    class FakeTok:
        def __len__(self):
            return V + 5

    model = token_id_model()
    out = export_model(model, tmp_path / "m")
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(SubstrateError, match="vocab_size"):
        export_model(model, out, tokenizer=FakeTok())
    with pytest.raises(SubstrateError, match="not empty"):
        export_model(model, out, overwrite=False)
    assert (out / "model.safetensors").read_bytes() == before


def test_sharded_save_hashes_every_shard(tmp_path):
    model = token_id_model(2)
    model.save_pretrained(tmp_path / "m", max_shard_size="20KB")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    shards = sorted(p.name for p in (tmp_path / "m").glob("model-*.safetensors"))
    assert len(shards) > 1 and set(shards) | {"model.safetensors.index.json"} == set(cfg["weights_sha256"])
    SubstrateForCausalLM.from_pretrained(tmp_path / "m")
    last = tmp_path / "m" / shards[-1]
    data = bytearray(last.read_bytes())
    data[-3] ^= 0x10
    last.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{shards[-1]} does not match the sha256"):
        SubstrateForCausalLM.from_pretrained(tmp_path / "m")
    last.unlink()
    with pytest.raises(ValueError, match=f"weight file {shards[-1]} is missing"):
        SubstrateForCausalLM.from_pretrained(tmp_path / "m")


def test_save_refuses_a_frozen_kind_without_its_substrate(tmp_path):
    torch.manual_seed(0)
    cfg = SubstrateConfig(vocab_size=V, n_embed=16, d_model=64, n_layer=1, n_head=4, substrate_kind="bits")
    model = SubstrateForCausalLM(cfg)  # random float stand-in, never set_substrate: not a bits table
    with pytest.raises(ValueError, match="0/1"):
        model.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="push_to_hub"):
        token_id_model().save_pretrained(tmp_path / "n", push_to_hub=True)


def test_trainable_table_saves_its_trained_fingerprint(tmp_path):
    from substrate_lm.modeling import substrate_fingerprint

    torch.manual_seed(0)
    cfg = SubstrateConfig(vocab_size=V, n_embed=16, d_model=64, n_layer=1, n_head=4, substrate_kind="trainable")
    model = SubstrateForCausalLM(cfg)
    model.config.substrate_fingerprint = substrate_fingerprint(model.token_embeddings.weight)
    with torch.no_grad():
        model.token_embeddings.weight.mul_(1.5)
    model.save_pretrained(tmp_path / "m")
    again = SubstrateForCausalLM.from_pretrained(tmp_path / "m")
    assert again.config.substrate_fingerprint == substrate_fingerprint(model.token_embeddings.weight)
    assert again.token_embeddings.weight.requires_grad
