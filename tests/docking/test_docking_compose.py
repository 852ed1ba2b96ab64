"""Composition: logits are the weighted mean of the experts', generate matches a manual loop over
averaged logits with and without the per-expert cache, export reloads in a fresh offline process,
and experts that do not share the substrate are refused with one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from substrate_lm.docking import compose, expert_model, save_composed
from substrate_lm.errors import SubstrateError
from substrate_lm.modeling.modeling_composed import ComposedForCausalLM

V = 96


@pytest.fixture(scope="module")
def experts(expert_factory):
    # different depths and widths: composition only needs the substrate to be shared
    return [expert_factory(0, n_layer=2, d_model=32), expert_factory(1, n_layer=1, d_model=64, n_head=8),
            expert_factory(2, n_layer=3, d_model=32)]


def test_logits_are_the_weighted_mean_of_the_experts(experts):
    model = compose(experts, weights=[1, 3, 4])
    assert isinstance(model, ComposedForCausalLM)
    assert model.config.weights == [0.125, 0.375, 0.5]
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 32
    assert model.config.vocab_size == V and model.config.max_position_embeddings == 64
    x = torch.randint(0, V, (3, 17))
    mask = torch.ones_like(x)
    mask[0, :5] = 0  # left padding goes to every expert
    with torch.no_grad():
        got = model(x).logits
        want = 0.125 * experts[0](x).logits + 0.375 * experts[1](x).logits + 0.5 * experts[2](x).logits
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
        got_m = model(x, attention_mask=mask).logits
        want_m = sum(w * e(x, attention_mask=mask).logits for w, e in zip([0.125, 0.375, 0.5], experts))
        torch.testing.assert_close(got_m[mask.bool()], want_m[mask.bool()], atol=1e-6, rtol=1e-6)
        # non-vacuous: the mean differs from every single expert
        assert all((got - e(x).logits).abs().max() > 1e-2 for e in experts)
        # logits_to_keep keeps the last positions of the same mixture
        torch.testing.assert_close(model(x, logits_to_keep=2).logits, got[:, -2:], atol=1e-6, rtol=1e-6)


def test_equal_weights_by_default_and_table_stored_once(experts):
    model = compose(experts[:2])
    assert model.config.weights == [0.5, 0.5]
    names = [n for n, _ in model.named_parameters()]
    assert names.count("token_embeddings.weight") == 1
    assert not any(n.startswith("experts.") and "token_embeddings" in n for n in names)
    assert model.token_embeddings.weight.requires_grad is False
    assert torch.equal(model.token_embeddings.weight, experts[0].token_embeddings.weight)
    # the composed model owns copies: changing it leaves the experts alone
    with torch.no_grad():
        model.experts[0].lm_head.weight.add_(1.0)
    assert not torch.equal(model.experts[0].lm_head.weight, experts[0].lm_head.weight)


def test_losses_match_the_mixture_logits(experts):
    model = compose(experts, weights=[0.2, 0.3, 0.5])
    x = torch.randint(0, V, (2, 12))
    y = torch.randint(0, V, (2, 12))
    logits = model(x).logits.detach()
    want_t = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    want_l = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1))
    torch.testing.assert_close(model(x, targets=y).loss, want_t, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x, labels=x).loss, want_l, atol=1e-5, rtol=1e-5)
    chunked = model(x, targets=y, return_logits=False)
    assert chunked.logits is None
    torch.testing.assert_close(chunked.loss, want_t, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x, labels=x, return_logits=False).loss, want_l, atol=1e-5, rtol=1e-5)


def test_greedy_generate_equals_manual_loop_over_averaged_logits(experts):
    model = compose(experts, weights=[0.5, 0.25, 0.25])
    ids = torch.randint(0, V, (2, 6))
    seq = ids.clone()
    with torch.no_grad():
        for _ in range(12):
            avg = sum(w * e(seq).logits[:, -1] for w, e in zip([0.5, 0.25, 0.25], experts))
            seq = torch.cat([seq, avg.argmax(-1, keepdim=True)], dim=1)
    cached = model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=True)
    plain = model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=False)
    assert torch.equal(cached, seq)
    assert torch.equal(plain, seq)
    # the published positional form; sampling by default like the base family
    assert model.generate(ids, 5).shape == (2, 11)
    assert model.generation_config.do_sample is True


def test_batched_left_padded_generation_equals_one_by_one(experts):
    model = compose(experts, weights=[0.2, 0.5, 0.3])
    pad = 0
    prompts = [torch.randint(1, V, (n,)) for n in (4, 9, 6)]
    width = max(len(p) for p in prompts)
    ids = torch.full((3, width), pad)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    batch = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=pad)
    for i, p in enumerate(prompts):
        one = model.generate(p[None], max_new_tokens=6, do_sample=False, pad_token_id=pad)
        assert torch.equal(batch[i, width:], one[0, len(p):])


def test_kv_cache_keeps_one_slice_per_expert(experts):
    model = compose(experts)
    x = torch.randint(0, V, (2, 20))
    with torch.no_grad():
        full = model(x).logits
        out = model(x[:, :9], use_cache=True)
        cache, steps = out.cache, [out.logits]
        for t in range(9, 20):
            o = model(x[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = o.cache
            steps.append(o.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert len(cache.layers) == 6  # 2 + 1 + 3 blocks, each with its own layer
    assert all(cache.get_seq_length(i) == 20 for i in range(6))


def test_hidden_states_cover_every_expert_block(experts):
    model = compose(experts)
    x = torch.randint(0, V, (1, 7))
    with torch.no_grad():
        hs = model(x, output_hidden_states=True).hidden_states
        e1 = experts[1](x, output_hidden_states=True).hidden_states
    assert len(hs) == 1 + 6
    assert hs[3].shape[-1] == 64  # expert 2 (d_model 64) sits at entries 3..3
    torch.testing.assert_close(hs[3], e1[-1], atol=1e-6, rtol=1e-6)


def test_expert_model_recovers_each_expert(experts):
    model = compose(experts)
    x = torch.randint(0, V, (2, 9))
    for i, e in enumerate(experts):
        back = expert_model(model, i)
        with torch.no_grad():
            assert torch.equal(back(x).logits, e(x).logits)
        assert back.token_embeddings.weight.requires_grad is False


RELOAD = r"""
import sys, torch
assert torch.get_num_threads() == 1, f"subprocess runs {torch.get_num_threads()} threads, the test 1"
from transformers import AutoModelForCausalLM
path, x_path, out_path = sys.argv[1:4]
m = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
assert type(m).__name__ == "ComposedForCausalLM", type(m)
assert type(m.experts[0]).__name__ == "SubstrateForCausalLM"
assert m.token_embeddings.weight.requires_grad is False
x = torch.load(x_path)
with torch.no_grad():
    logits = m(x).logits
g = m.generate(x, max_new_tokens=4, do_sample=False)
assert g.shape == (x.shape[0], x.shape[1] + 4)
assert m.generate(x, 3).shape == (x.shape[0], x.shape[1] + 3)
torch.save({"logits": logits, "greedy": g}, out_path)
"""


def test_export_then_reload_in_fresh_offline_process(experts, tmp_path, pinned_env):
    model = compose(experts, weights=[2, 1, 1])
    out = save_composed(model, tmp_path / "moe")
    names = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "generation_config.json", "README.md", "configuration_composed.py",
            "modeling_composed.py", "configuration_substrate.py", "modeling_substrate.py"} <= names
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "substrate_lm_composed"
    assert cfg["auto_map"]["AutoModelForCausalLM"] == "modeling_composed.ComposedForCausalLM"
    assert cfg["n_layer"] == 6 and cfg["weights"] == [0.5, 0.25, 0.25]
    for f in ("configuration_composed.py", "modeling_composed.py"):
        src = (out / f).read_text()
        imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", src, re.M)
        assert {i.split(".")[0] for i in imports} <= {"__future__", "inspect", "math", "torch", "transformers", ""}, imports
    assert "fingerprint" in (out / "README.md").read_text()

    x = torch.randint(0, V, (2, 11))
    torch.save(x, tmp_path / "x.pt")
    env = pinned_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH="")
    subprocess.run([sys.executable, "-c", RELOAD, str(out), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, env=env, cwd=tmp_path)
    got = torch.load(tmp_path / "y.pt")
    with torch.no_grad():
        assert torch.equal(got["logits"], model(x).logits)
    assert torch.equal(got["greedy"], model.generate(x, max_new_tokens=4, do_sample=False))


def test_tampered_shared_table_is_refused(experts, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    out = save_composed(compose(experts[:2]), tmp_path / "moe")
    tensors = load_file(out / "model.safetensors")
    tensors["token_embeddings.weight"][5, 0] = 1.0 - tensors["token_embeddings.weight"][5, 0]
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="does not match the sha256"):  # the weight file's hash
        AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    from substrate_lm.modeling import record_weight_hashes

    record_weight_hashes(out)  # hashes made consistent again: the shared table's fingerprint still refuses it
    with pytest.raises(ValueError, match="fingerprint"):
        AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_mismatched_substrate_is_refused_with_one_line(expert_factory, table_factory):
    a = expert_factory(0)
    other = table_factory(V, 16).flip(1)  # same shape, different codes
    b = expert_factory(1, table=other)
    with pytest.raises(SubstrateError) as exc:
        compose([a, b])
    msg = _one_line(exc)
    assert re.fullmatch(r"expert 2 substrate fingerprint sha256:[0-9a-f]{12}\.\. differs from expert 1 "
                        r"sha256:[0-9a-f]{12}\.\.; experts must share the frozen substrate", msg), msg
    assert b.config.substrate_fingerprint[:19] in msg and a.config.substrate_fingerprint[:19] in msg


def test_mismatched_vocabulary_and_width_are_refused(expert_factory):
    a = expert_factory(0)
    with pytest.raises(SubstrateError) as exc:
        compose([a, expert_factory(1), expert_factory(2, vocab=V + 4)])
    assert _one_line(exc) == (f"expert 3 vocab_size {V + 4} differs from expert 1 vocab_size {V}; "
                              "experts must share the vocabulary")
    with pytest.raises(SubstrateError) as exc:
        compose([a, expert_factory(1, n_embed=8, d_model=32)])
    assert "expert 2 substrate width n_embed 8 differs from expert 1 n_embed 16" in _one_line(exc)


def test_mismatched_tokenizers_and_bad_inputs_are_refused(expert_factory, tokenizer_dir):
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

    from substrate_lm.docking import Expert

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    other = AutoTokenizer.from_pretrained(tokenizer_dir)
    other.backend_tokenizer.add_tokens(["zzzq"])  # a different tokenizer of another size
    vocab = len(tok)
    a, b = expert_factory(0, vocab=vocab, n_embed=16), expert_factory(1, vocab=vocab, n_embed=16)
    with pytest.raises(SubstrateError) as exc:
        compose([Expert(a, "a", tok), Expert(b, "b", other)])
    assert re.fullmatch(r"expert 2 tokenizer sha256:[0-9a-f]{12}\.\. differs from expert 1 tokenizer "
                        r"sha256:[0-9a-f]{12}\.\.; experts must share the tokenizer", _one_line(exc))
    model, shared = compose([Expert(a, "a", tok), Expert(b, "b", None)], return_tokenizer=True)
    assert shared is tok and model.config.eos_token_id == tok.eos_token_id

    with pytest.raises(SubstrateError, match="at least two experts"):
        compose([a])
    with pytest.raises(SubstrateError, match="non-negative"):
        compose([a, b], weights=[1, -1])
    with pytest.raises(SubstrateError, match="2 weights given for 3 experts"):
        compose([a, b, b], weights=[1, 1])
    with pytest.raises(SubstrateError, match="at least one weight must be positive"):
        compose([a, b], weights=[0, 0])
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1,
                                            num_attention_heads=4, intermediate_size=64))
    with pytest.raises(SubstrateError, match="expert 2 is a GPTNeoXForCausalLM"):
        compose([a, neox])


def test_load_expert_refuses_foreign_and_composed_dirs(experts, tmp_path):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from substrate_lm.docking import load_expert
    from substrate_lm.export import export_model

    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=64)).save_pretrained(tmp_path / "neox")
    with pytest.raises(SubstrateError, match=r"expert 1 \(.*neox\) is a 'gpt_neox' model"):
        load_expert(tmp_path / "neox")
    save_composed(compose(experts[:2]), tmp_path / "moe")
    with pytest.raises(SubstrateError, match="already a composed model"):
        load_expert(tmp_path / "moe", index=2)
    with pytest.raises(SubstrateError, match="not a model directory"):
        load_expert(tmp_path / "nothing")
    export_model(experts[0], tmp_path / "e0")
    loaded = load_expert(tmp_path / "e0")
    assert loaded.tokenizer is None and loaded.model.config.n_layer == 2


def test_experts_without_recorded_fingerprint_get_one_at_composition(tmp_path):
    from transformers import AutoModelForCausalLM

    from substrate_lm.modeling import SubstrateConfig, SubstrateForCausalLM, substrate_fingerprint

    torch.manual_seed(0)
    cfg = dict(vocab_size=V, n_embed=16, d_model=32, n_layer=1, n_head=4, block_size=32, substrate_kind="float")
    a, b = SubstrateForCausalLM(SubstrateConfig(**cfg)), SubstrateForCausalLM(SubstrateConfig(**cfg))
    with torch.no_grad():
        b.token_embeddings.weight.copy_(a.token_embeddings.weight)
    assert a.config.substrate_fingerprint is None
    model = compose([a, b])
    fp = substrate_fingerprint(a.token_embeddings.weight)
    assert model.config.substrate_fingerprint == fp
    again = AutoModelForCausalLM.from_pretrained(save_composed(model, tmp_path / "m"), trust_remote_code=True)
    assert again.config.substrate_fingerprint == fp


def test_trainable_table_experts_are_refused_with_the_reason(tmp_path):
    from substrate_lm.export import export_model
    from substrate_lm.modeling import SubstrateConfig, SubstrateForCausalLM

    dirs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cfg = SubstrateConfig(vocab_size=V, n_embed=16, d_model=32, n_layer=1, n_head=4, block_size=32,
                              substrate_kind="trainable")
        dirs.append(export_model(SubstrateForCausalLM(cfg), tmp_path / f"e{seed}"))
    with pytest.raises(SubstrateError, match="trainable") as exc:
        compose(dirs)
    msg = _one_line(exc)
    assert "expert 1" in msg and "frozen substrate" in msg and "re-export" not in msg


def test_composed_export_checks_its_files_and_carries_the_context(expert_factory, tokenizer_dir, tmp_path):
    from substrate_lm.loading import load_model_dir, load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    pair = [expert_factory(seed, vocab=len(tok), n_layer=1) for seed in (0, 1)]
    out = save_composed(compose(pair), tmp_path / "moe", tokenizer=tok)
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 64
    assert isinstance(load_model_dir(out), ComposedForCausalLM)
    data = bytearray((out / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 4
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(SubstrateError, match="does not match the sha256"):
        load_model_dir(out)
