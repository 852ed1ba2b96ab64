"""End-to-end ``analyze`` on tiny random models (in-memory and from folders), the word groups,
the CLI, and a generated world when the world package provides one."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from substrate_lm.analysis import analyze, word_group_items
from substrate_lm.analysis.items import normalize_items, subsample_items
from substrate_lm.analysis.wordgroups import WORD_GROUPS
from substrate_lm.cli import analyze as cli
from substrate_lm.errors import SubstrateError
from substrate_lm.modeling import SubstrateConfig, SubstrateForCausalLM
from substrate_lm.world import generate_world


def test_analyze_in_memory_with_compare(tmp_path, bpe_tokenizer, tiny_neox, neox_factory, items_factory):
    items = items_factory(n_entities=24, per_entity=4)
    other = neox_factory(len(bpe_tokenizer), n_layer=3, hidden=48, seed=1)
    import torch

    threads = torch.get_num_threads()
    msgs = []
    m = analyze(
        tiny_neox,
        bpe_tokenizer,
        items=items,
        compare=(other, bpe_tokenizer),
        out_dir=tmp_path,
        name="A",
        compare_name="B",
        maps=("pca", "tsne"),
        n_splits=3,
        num_threads=1,
        progress=msgs.append,
    )
    assert torch.get_num_threads() == threads  # restored after the analysis
    layers = ["substrate", "0", "1", "2"]
    assert m["layers"] == layers
    for key in ("accuracy", "std", "control_accuracy", "selectivity"):
        assert len(m["probe"][key]) == len(layers)
        assert all(0.0 <= v <= 1.0 for v in m["probe"][key] if key != "selectivity")
    assert m["probe"]["chance_majority"] == pytest.approx(0.25)
    assert m["probe"]["n_classes"] == 4 and m["items"]["n"] == 96 and m["items"]["n_entities"] == 24
    assert len(m["purity"]["purity"]) == len(layers)
    cka = np.asarray(m["cka_layers"])
    assert cka.shape == (4, 4) and np.allclose(np.diag(cka), 1.0, atol=1e-4)
    assert m["cka_substrate"][0] == pytest.approx(1.0, abs=1e-4)
    # GPT-NeoX adds no position embedding at the input: hidden state 0 is the pooled table rows
    assert m["cka_substrate"][1] == pytest.approx(1.0, abs=1e-4)
    cmp = m["compare"]
    assert cmp["layers"] == ["substrate", "0", "1", "2", "3"] and cmp["model"]["name"] == "B"
    assert np.asarray(cmp["cka"]).shape == (4, 5)
    assert m["model"]["n_layer"] == 2 and m["model"]["hidden_size"] == 32
    for rel in m["plots"].values():
        assert (tmp_path / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(m["plots"]) == {"probe", "purity", "cka_substrate", "map_pca", "map_tsne", "probe_compare", "cka_compare"}
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["layers"] == layers and on_disk["probe"]["accuracy"] == pytest.approx(m["probe"]["accuracy"])
    assert (tmp_path / "report.html").is_file() and msgs and "done" in msgs[-1]


def test_word_group_items_are_correct_spans():
    items = word_group_items()
    assert len({it["label"] for it in items}) == 7
    assert {w for it in items for w in [it["entity"]]} == {w for ws in WORD_GROUPS.values() for w in ws}
    for it in items:
        assert it["text"][it["start"] : it["end"]] == it["entity"]
    with pytest.raises(SubstrateError):
        word_group_items(lang="ru")


def test_cli_on_saved_model_with_word_groups(tmp_path, bpe_tokenizer, tiny_neox, capsys):
    model_dir = tmp_path / "model"
    tiny_neox.save_pretrained(model_dir)
    bpe_tokenizer.save_pretrained(model_dir)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(
        ["analyze", "--model", str(model_dir), "--out", str(out), "--maps", "pca", "--folds", "3", "--layers", "0,-1",
         "--max-items", "210", "--threads", "1"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed and "substrate" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["items"]["source"] == "wordgroups" and m["probe"]["n_classes"] == 7 and m["items"]["n"] == 210
    assert m["layers"] == ["substrate", "0", "2"]
    assert m["probe"]["chance_majority"] == pytest.approx(1 / 7)


def test_cli_items_file_and_errors(tmp_path, bpe_tokenizer, tiny_neox, items_factory):
    model_dir = tmp_path / "model"
    tiny_neox.save_pretrained(model_dir)
    bpe_tokenizer.save_pretrained(model_dir)
    items_file = tmp_path / "items.jsonl"
    items_file.write_text("".join(json.dumps(it) + "\n" for it in items_factory(n_entities=12, per_entity=2)))
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(
        ["analyze", "--model", str(model_dir), "--items", str(items_file), "--out", str(out), "--maps", "none", "--quiet"]
    )
    assert args.func(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["items"]["source"] == "items" and m["items"]["n"] == 24 and "map_pca" not in m["plots"]
    # user errors are SubstrateErrors (one line from the CLI, no traceback)
    with pytest.raises(SubstrateError, match="not a model folder"):
        args = parser.parse_args(["analyze", "--model", str(tmp_path / "nope"), "--out", str(out)])
        args.func(args)
    with pytest.raises(SubstrateError, match="not a semantic world"):
        args = parser.parse_args(["analyze", "--model", str(model_dir), "--world", str(tmp_path), "--out", str(out)])
        args.func(args)


def test_max_items_keeps_whole_entities(items_factory):
    items = [dict(it) for it in items_factory(n_entities=40, per_entity=4)]
    sub = subsample_items(items, 50, seed=0)
    assert len(sub) == 48  # 12 whole entities of 4 sentences
    ents = {it["entity"] for it in sub}
    assert all(sum(it["entity"] == e for it in sub) == 4 for e in ents)
    counts = {}
    for it in sub:
        counts[it["label"]] = counts.get(it["label"], 0) + 1
    assert sorted(counts.values()) == [12, 12, 12, 12]  # balanced over the 4 classes
    assert subsample_items(items, None) == items


def test_analyze_on_a_generated_world(tmp_path, bpe_tokenizer, tiny_neox):
    generate_world(tmp_path / "world", size="100KB", langs=("en",), seed=0)
    m = analyze(
        tiny_neox, bpe_tokenizer, world_dir=tmp_path / "world", out_dir=tmp_path / "out", max_items=200, maps=("pca",), n_splits=3,
        num_threads=1,
    )
    truth = json.loads((tmp_path / "world" / "world.json").read_text())
    assert set(m["probe"]["classes"]) <= {str(c) for c in truth["categories"]}
    assert m["items"]["source"] == "world" and m["items"]["n"] <= 200 and m["items"]["style"] == "neutral"
    assert m["items"]["n_entities"] * 4 == m["items"]["n"]  # whole entities, 4 sentences each


def _one_token_names_setup(n_entities=80, n_classes=4, seed=0):
    """Items whose entity names are single word-level tokens, and that tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(seed)
    names = [f"Name{i:03d}" for i in range(n_entities)]
    ent_label = rng.permutation(np.arange(n_entities) % n_classes)
    words = ["<pad>", "<unk>", "Yesterday", "was", "seen", "near", "the", "river", ".", "Everyone", "knows", "that", "is", "old"]
    vocab = {w: i for i, w in enumerate(words + names)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")
    items = []
    for e, name in enumerate(names):
        for template in ("Yesterday {n} was seen near the river .", "Everyone knows that {n} is old ."):
            start = template.index("{n}")
            items.append(
                {"text": template.replace("{n}", name), "start": start, "end": start + len(name), "label": f"c{ent_label[e]}", "entity": name}
            )
    return hf_tok, items, vocab, names, ent_label


@pytest.mark.parametrize("arch", ["neox", "substrate"])
def test_substrate_layer_random_codes_at_chance_planted_codes_found(tmp_path, neox_factory, arch):
    """End to end at layer 0: a random binary table probes at chance (held-out entities), a table
    whose name rows carry the category probes near 100%."""
    import torch

    tok, items, vocab, names, ent_label = _one_token_names_setup()
    rng = np.random.default_rng(1)
    V, width = len(vocab), 64
    random_table = torch.tensor(rng.integers(0, 2, size=(V, width)), dtype=torch.float32)
    planted_table = random_table.clone()
    centroids = rng.normal(size=(4, width)) * 3
    for name, lab in zip(names, ent_label):
        planted_table[vocab[name]] = torch.tensor(centroids[lab] + rng.normal(size=width), dtype=torch.float32)

    def build(table):
        if arch == "neox":
            model = neox_factory(V, n_layer=1, hidden=width)
            model.get_input_embeddings().weight.data.copy_(table)
            return model
        cfg = SubstrateConfig(vocab_size=V, n_embed=width, d_model=width, n_layer=1, n_head=4, block_size=32)
        model = SubstrateForCausalLM(cfg)
        model.set_substrate(table, kind="bits", frozen=True)
        return model.eval()

    res = {}
    for kind, table in (("random", random_table), ("planted", planted_table)):
        m = analyze(build(table), tok, items=items, out_dir=tmp_path / kind, report=False, n_splits=5, max_items=None, num_threads=1)
        assert m["layers"][0] == "substrate"
        res[kind] = m["probe"]["accuracy"][0]
        assert m["probe"]["chance_majority"] == pytest.approx(0.25)
        assert abs(m["probe"]["control_accuracy"][0] - 0.25) < 0.17
    assert abs(res["random"] - 0.25) < 0.17
    assert res["planted"] > 0.95


def test_compare_folder_uses_its_own_tokenizer(tmp_path, bpe_tokenizer, tiny_neox, neox_factory):
    """Model A (BPE, ~400 ids) in memory against a folder with a word-level tokenizer (~94 ids):
    each model must read the items with its own tokenizer (A's ids would overflow B's table)."""
    tok_b, items, vocab, _, _ = _one_token_names_setup(n_entities=40)
    model_b = neox_factory(len(vocab), n_layer=1, hidden=16)
    model_b.save_pretrained(tmp_path / "b")
    tok_b.save_pretrained(tmp_path / "b")
    assert len(bpe_tokenizer) > len(vocab)
    m = analyze(tiny_neox, bpe_tokenizer, items=items, compare=tmp_path / "b", out_dir=tmp_path / "out", report=False, n_splits=3,
                num_threads=1)
    assert m["compare"]["model"]["name"] == "b" and m["compare"]["layers"] == ["substrate", "0", "1"]
    assert m["compare"]["model"]["substrate_width"] == 16 and m["model"]["substrate_width"] == 32
    assert np.asarray(m["compare"]["cka"]).shape == (4, 3)


def test_item_validation():
    out = normalize_items([{"text": "I met Zor today", "start": 6, "end": 9, "label": 3}])
    assert out[0]["entity"] == "Zor" and out[0]["label"] == "3"  # surface form is the default group
    with pytest.raises(SubstrateError, match="outside its text"):
        normalize_items([{"text": "ab", "start": 1, "end": 5, "label": "x"}])
    with pytest.raises(SubstrateError, match="lacks"):
        normalize_items([{"text": "ab", "start": 0, "end": 1}])
    with pytest.raises(SubstrateError, match="no probe items"):
        normalize_items([])
