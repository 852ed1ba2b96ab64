"""Evaluation on the user's own data: prepared folders per source, and named JSONL tasks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from eval_helpers import write_jsonl

from substrate_lm.data import TokenShards, prepare_data
from substrate_lm.errors import SubstrateError
from substrate_lm.evaluation import evaluate_models, load_bench, perplexity_shards, run_loglik
from substrate_lm.evaluation.datasets import BENCHES, register_task_file
from substrate_lm.evaluation.harness import write_lm_eval_tasks
from substrate_lm.evaluation.perplexity import _score_ids

BOOKS = {
    "genesis.txt": "".join(f"In the beginning {i} was the word. And the word was with the text.\n" for i in range(8)),
    "wiki.jsonl": None,  # written below: several documents
    "psalms.txt": "".join(f"Blessed is the one {i} who reads held-out text, and counts its bits.\n" for i in range(8)),
}


@pytest.fixture
def prepared(tmp_path, tiny_model_dir):
    srcs = []
    for name, text in BOOKS.items():
        p = tmp_path / name
        if text is None:
            write_jsonl(p, [{"text": f"Article {i}: the cat {i} sat on mat number {i * 7}."} for i in range(12)])
        else:
            p.write_text(text, encoding="utf-8")
        srcs.append(str(p))
    out = tmp_path / "data"
    # text_unit "line": many documents per book, so every source has some in val
    prepare_data(srcs, str(tiny_model_dir), out, val_fraction=0.4, seed=3, text_unit="line", progress=False)
    return out


def _direct_nll(model, ids):
    """nll of ids[1:] given the prefix, one forward pass (the range fits in the context)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(x).logits[0, :-1].float(), -1)
    return -float(logp.gather(-1, x[0, 1:, None]).sum())


def test_per_source_perplexity_equals_each_source_alone(prepared, tiny_model, char_tok):
    r = perplexity_shards(tiny_model, prepared, tokenizer=char_tok, window=64, stride=16)
    shards = TokenShards(prepared, "val")
    ranges = shards.source_ranges()
    assert [s["spec"] for s in r["sources"]] == [x["spec"] for x in ranges]
    assert all(x["tokens"] > 0 for x in ranges)
    # windows wider than every range: each source's nll is one plain forward pass over its tokens
    wide = perplexity_shards(tiny_model, prepared, tokenizer=char_tok, window=512, stride=256)
    for s, w, x in zip(r["sources"], wide["sources"], ranges):
        ids = [shards.eos_id] + shards[x["start"]:x["end"]].tolist()
        assert len(ids) <= 512
        assert w["nll"] == pytest.approx(_direct_nll(tiny_model, ids), rel=1e-4)
        # narrow windows: the same as sliding them over this source's tokens alone (no context
        # from the source before it)
        assert s["nll"] == pytest.approx(_score_ids(tiny_model, ids, 64, 16, 8)[0], rel=1e-6)
        assert s["tokens_scored"] == x["tokens"] and s["characters"] == x["characters"]
        assert s["perplexity"] == pytest.approx(math.exp(s["nll"] / s["tokens_scored"]))
        assert s["bpc"] == pytest.approx(s["nll"] / math.log(2) / x["characters"])
    # the whole: token-weighted mean of the sources' nll, every val token scored once
    n = sum(s["tokens_scored"] for s in r["sources"])
    assert r["tokens_scored"] == n == len(shards)
    per_token = [s["nll"] / s["tokens_scored"] for s in r["sources"]]  # each source's mean nll
    weighted = sum(m * s["tokens_scored"] for m, s in zip(per_token, r["sources"])) / n
    assert r["perplexity"] == pytest.approx(math.exp(weighted))
    with pytest.raises(SubstrateError, match="val split only"):
        TokenShards(prepared, "train").source_ranges()
    assert r["characters"] == json.loads((prepared / "stats.json").read_text())["splits"]["val"]["characters"]


def test_prepared_folder_checks(prepared, tiny_model, char_tok, tmp_path):
    from eval_helpers import make_char_tokenizer, make_tiny_neox

    other = make_char_tokenizer(extra_chars="ψ")
    with pytest.raises(SubstrateError, match="another tokenizer"):
        perplexity_shards(make_tiny_neox(len(other)), prepared, tokenizer=other)
    with pytest.raises(SubstrateError, match="vocab_size"):
        perplexity_shards(make_tiny_neox(10), prepared)
    with pytest.raises(SubstrateError, match="not a prepared data directory"):
        perplexity_shards(tiny_model, tmp_path)
    m = json.loads((prepared / "manifest.json").read_text())
    del m["splits"]["val"]["sources"]
    (prepared / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SubstrateError, match="older substrate-lm"):
        perplexity_shards(tiny_model, prepared, per_source=True)
    whole = perplexity_shards(tiny_model, prepared, window=64)
    assert whole["sources"] is None and whole["bpc"] is not None


# -- named JSONL tasks ------------------------------------------------------------------------


@pytest.fixture
def own_tasks(tmp_path):
    names = []
    mc = write_jsonl(tmp_path / "my_mc.jsonl", [
        {"question": f"Which colour is thing {i}?", "choices": [f"red {i}", f"blue {i}", f"green {i}"],
         "answer": [0, "B", 2, "1"][i % 4]} for i in range(6)
    ])
    qa = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": f"Who is {i}?", "answer": f"Al{i}"} for i in range(3)
    ] + [{"question": "Two names?", "answer": ["Bo", "Bob"], "context": "Bo is Bob."}])
    names.append(register_task_file(mc, "my-mc"))
    names.append(register_task_file(qa))
    yield names
    for n in names:
        BENCHES.pop(n, None)


def test_named_tasks_load_like_builtin_benches(own_tasks):
    assert own_tasks == ["my-mc", "qa"]
    mc = load_bench("my-mc")
    assert mc.spec.task == "mc" and mc.spec.multiple_choice and len(mc.items) == 6
    by_q = {it.question: it for it in mc.items}
    assert [by_q[f"Which colour is thing {i}?"].answer for i in range(4)] == ["A", "B", "C", "B"]
    assert by_q["Which colour is thing 0?"].labels == ["A", "B", "C"]
    qa = load_bench("qa")
    assert qa.spec.task == "short" and not qa.spec.multiple_choice
    two = next(it for it in qa.items if it.question == "Two names?")
    assert two.answers == ["Bo", "Bob"] and two.context == "Bo is Bob."


def test_world_mc_is_a_file_task_of_the_same_schema(bench_dir, tmp_path):
    # the world question file registered under a name gives the same items as world-mc
    world = load_bench("world-mc", data_dir=bench_dir, sample_size="all")
    name = register_task_file(bench_dir / "questions/mc.jsonl", "world-copy")
    try:
        copy = load_bench(name, sample_size="all")
    finally:
        BENCHES.pop(name)
    assert [(i.question, i.choices, i.answer) for i in copy.items] == \
        [(i.question, i.choices, i.answer) for i in world.items]


@pytest.mark.parametrize("rows, match", [
    ('{"question": "q", "choices": ["a", "b"], "answer": 1}\n{"question": "q2", "choices": ["a"\n',
     r"bad\.jsonl:2: not valid JSON"),
    ('{"question": "q", "choices": ["a", "b"], "answer": 1}\n\n{"question": "q", "choices": ["a", "b"]}\n',
     r"bad\.jsonl:3: row lacks 'answer'"),
    ('{"question": "q", "choices": ["a", "b"], "answer": 2}\n', r"bad\.jsonl:1: answer index 2 is out of range"),
    ('{"question": "q", "choices": ["a", "b"], "answer": "C"}\n', r"bad\.jsonl:1: answer 'C' is neither"),
    ('{"question": "q", "choices": "a, b", "answer": 0}\n', r'bad\.jsonl:1: "choices" must'),
    ('{"question": "q", "answer": ""}\n', r"bad\.jsonl:1: short-answer rows need"),
    ('[1, 2]\n', r"bad\.jsonl:1: not a JSON object"),
    # a lone surrogate escape is not text (it used to end in a UnicodeEncodeError traceback)
    ('{"question": "a\\ud800", "choices": ["a", "b"], "answer": 0}\n',
     r"bad\.jsonl:1: field 'question' holds a lone surrogate"),
    ('{"question": "q", "choices": ["a", "b"], "answer": 0}\n{"question": "q", "choices": ["a", "\\udfff"], "answer": 0}\n',
     r"bad\.jsonl:2: field 'choices\[1\]' holds a lone surrogate"),
    ('{"question": "q", "answer": "x", "context": {"c": "\\ud83d"}}\n', r"bad\.jsonl:1: field 'context\.c' holds"),
    # fields of the wrong type are refused, not turned into the text "None" or "['x']"
    ('{"question": null, "choices": ["a", "b"], "answer": 0}\n', r"bad\.jsonl:1: 'question' must be a text; got NoneType"),
    ('{"question": ["x"], "choices": ["a", "b"], "answer": 0}\n', r"bad\.jsonl:1: 'question' must be a text; got list"),
    ('{"question": null, "answer": "x"}\n', r"bad\.jsonl:1: 'question' must be a text"),
    ('{"question": {"q": 1}, "answer": ["x"]}\n', r"bad\.jsonl:1: 'question' must be a text; got dict"),
    ('{"question": "q", "answer": "x", "context": ["c"]}\n', r"bad\.jsonl:1: 'context' must be a text"),
    ('{"question": "q", "answer": "x", "id": ["i"]}\n', r"bad\.jsonl:1: 'id' must be a text"),
    ('{"question": "q", "answer": ["x", null]}\n', r"bad\.jsonl:1: short-answer rows need"),
    ('{"question": "q", "choices": ["a", null], "answer": 0}\n', r'bad\.jsonl:1: "choices" must list'),
    ('{"question": "q", "choices": {"label": ["A", "B"], "text": "ab"}, "answerKey": "A"}\n',
     r"""bad\.jsonl:1: "choices" 'text' must be a list of texts"""),
    ('{"question": "q", "choices": {"label": ["A", "B"], "text": ["a"]}, "answerKey": "A"}\n',
     r'bad\.jsonl:1: "choices" has 2 labels for 1 texts'),
    ('{"question": "q", "choices": {"label": ["A", "B"], "text": ["a", "b"]}, "answerKey": ["A"]}\n',
     r"bad\.jsonl:1: 'answerKey' must be a text"),
    ('{"question": {"stem": null}, "choices": ["a", "b"], "answer": 0}\n', r"bad\.jsonl:1: 'stem' must be a text"),
    ('{"question": "q", "choices": ["a", "b"], "answer": null}\n', r"bad\.jsonl:1: answer None is neither"),
    ("\n\n", r"bad\.jsonl holds no items"),
])
def test_bad_task_files_name_file_and_line(tmp_path, rows, match):
    p = tmp_path / "bad.jsonl"
    p.write_text(rows, encoding="utf-8")
    with pytest.raises(SubstrateError, match=match) as exc:
        register_task_file(p, "bad")
    assert "\n" not in str(exc.value) and "bad" not in BENCHES


def test_task_names_are_checked(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(SubstrateError, match="built-in"):
        register_task_file(p, "arc-e")
    with pytest.raises(SubstrateError, match="built-in"):
        register_task_file(p, "world")
    for bad in ("my task", "1.5", "-x"):
        with pytest.raises(SubstrateError, match="start with a letter"):
            register_task_file(p, bad)
    try:  # a YAML keyword as a name stays a string in the rendered task YAML
        assert register_task_file(p, "Yes") == "yes"
        write_lm_eval_tasks(None, tmp_path / "y", ["yes"])
        assert 'task: "yes"' in (tmp_path / "y" / "yes.yaml").read_text()
    finally:
        BENCHES.pop("yes", None)
    with pytest.raises(SubstrateError, match="not found"):
        register_task_file(tmp_path / "none.jsonl", "x")


def test_task_names_cannot_replace_another_task(tmp_path):
    """A file task's lm-eval names (NAME, NAME_gen) must not be a built-in's or another file task's:
    the YAML of one would silently replace the other's (``substrate_arc_e`` ran the user's file)."""
    mc = write_jsonl(tmp_path / "mc.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 0}])
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    for bad in ("substrate_arc_e", "substrate_arc_e_gen", "substrate_mine"):
        with pytest.raises(SubstrateError, match="names starting with 'substrate_' are kept") as exc:
            register_task_file(mc, bad)
        assert "--task-name" in str(exc.value) and bad not in BENCHES
    names = [register_task_file(mc, "foo"), register_task_file(qa, "bar_gen")]
    try:
        with pytest.raises(SubstrateError, match="lm-eval task 'foo_gen' already belongs to benchmark 'foo'"):
            register_task_file(qa, "foo_gen")
        with pytest.raises(SubstrateError, match="lm-eval task 'bar_gen' already belongs to benchmark 'bar_gen'"):
            register_task_file(mc, "bar")  # multiple choice: its generation task would be bar_gen
        assert register_task_file(qa, "bar") == "bar"  # short answer: one task, bar
        names.append("bar")
    finally:
        for n in names:
            BENCHES.pop(n, None)
    assert "foo_gen" not in BENCHES


def test_task_names_lm_eval_already_has_are_refused(tmp_path):
    pytest.importorskip("lm_eval", reason="lm-eval (the optional eval extra) is not installed")
    from substrate_lm.evaluation.harness import lm_eval_task_names

    assert "hellaswag" in lm_eval_task_names() and "piqa" in lm_eval_task_names()
    mc = write_jsonl(tmp_path / "mc.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 0}])
    for name in ("hellaswag", "piqa"):
        register_task_file(mc, name)  # our own runners never see lm-eval's tasks: only the YAMLs clash
        try:
            with pytest.raises(SubstrateError, match=f"'{name}' is already an lm-eval task; pass another --task-name"):
                write_lm_eval_tasks(None, tmp_path / "y", [name])
        finally:
            BENCHES.pop(name)
        assert not (tmp_path / "y").exists()


def test_named_tasks_through_our_runners_and_yamls(own_tasks, tiny_model, char_tok, tmp_path):
    res = evaluate_models({"tiny": (tiny_model, char_tok)}, own_tasks, protocol="both", n_runs=1, greedy=True)
    mc = res["models"]["tiny"]["results"]["my-mc"]
    assert mc["loglik"]["n_items"] == 6 and 0 <= mc["loglik"]["acc"] <= 100
    assert "paper" in mc and res["models"]["tiny"]["results"]["qa"]["loglik"]["metric"] == "bpc"
    tasks = write_lm_eval_tasks(None, tmp_path / "yaml", own_tasks)
    assert tasks == {"my-mc": ["my-mc", "my-mc_gen"], "qa": ["qa"]}
    assert (tmp_path / "yaml" / "my-mc.yaml").read_text().startswith("# Log-likelihood")


@pytest.mark.slow
def test_named_mc_task_under_lm_eval_matches_our_loglik(own_tasks, tiny_model_dir, tiny_model, char_tok, tmp_path):
    from substrate_lm.evaluation import run_lm_eval

    ours = run_loglik(tiny_model, char_tok, load_bench("my-mc"))
    res = run_lm_eval(str(tiny_model_dir), "my-mc", None, tmp_path / "h", batch_size=4)
    got = res["tasks"]["my-mc"]
    assert got["acc"] * 100 == pytest.approx(ours["acc"]) and got["acc_norm"] * 100 == pytest.approx(ours["acc_norm"])
    # the same task again, from the YAML folder by lm-eval's own include_path mechanism
    again = run_lm_eval(str(tiny_model_dir), [], None, tmp_path / "h2", include_path=res["config"]["task_dir"],
                        extra_tasks="my-mc")
    assert again["tasks"]["my-mc"]["acc"] == got["acc"]
