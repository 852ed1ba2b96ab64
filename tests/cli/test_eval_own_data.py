"""`substrate-lm eval` on the user's own data: `eval ppl --data DIR` per source, and --task-file tasks."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPTNeoXForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from eval_helpers import make_char_tokenizer, make_tiny_neox, write_jsonl  # noqa: E402

from substrate_lm.cli.main import main  # noqa: E402
from substrate_lm.data import TokenShards  # noqa: E402
from substrate_lm.evaluation.datasets import BENCHES  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread_and_clean_registry():
    before, names = torch.get_num_threads(), set(BENCHES)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    for n in set(BENCHES) - names:  # tasks registered by a command
        del BENCHES[n]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = make_char_tokenizer()
    d = tmp_path_factory.mktemp("model")
    make_tiny_neox(len(tok)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture
def data_dir(tmp_path, model_dir):
    a, b = tmp_path / "bible.txt", tmp_path / "wiki.jsonl"
    a.write_text("".join(f"Verse {i}: and the light was good, said line {i}.\n" for i in range(10)), encoding="utf-8")
    write_jsonl(b, [{"text": f"Article {i} is about the number {i * 3}."} for i in range(10)])
    out = tmp_path / "data"
    assert main(["data", "prepare", "--source", str(a), "--source", str(b), "--tokenizer", str(model_dir),
                 "--out", str(out), "--val-fraction", "0.4", "--text-unit", "line", "--no-progress"]) == 0
    return out


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "internal error" not in err[0], err
    return err[0]


def test_ppl_on_a_prepared_folder_per_source(model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "ppl.json"
    assert main(["eval", "ppl", "--model", str(model_dir), "--data", str(data_dir), "--window", "32",
                 "--no-progress", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "val of" in lines[0] and "bpc" in lines[0]
    assert any("bible.txt:" in ln for ln in lines) and any("wiki.jsonl:" in ln for ln in lines)
    r = json.loads(out.read_text())[str(model_dir)]
    assert [Path(s["spec"]).name for s in r["sources"]] == ["bible.txt", "wiki.jsonl"]
    # against an independent forward pass: a window wider than each source scores every one of its
    # val tokens after an end-of-text, with no context from the other source
    wide = tmp_path / "wide.json"
    assert main(["eval", "ppl", "--model", str(model_dir), "--data", str(data_dir), "--window", "512",
                 "--no-progress", "--out", str(wide)]) == 0
    w = json.loads(wide.read_text())[str(model_dir)]
    model = GPTNeoXForCausalLM.from_pretrained(model_dir).eval()
    shards = TokenShards(data_dir, "val")
    direct = []
    for s, x in zip(w["sources"], shards.source_ranges()):
        ids = torch.tensor([[shards.eos_id] + shards[x["start"]:x["end"]].tolist()])
        assert 2 < ids.shape[1] <= 512
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        direct.append(-float(logp.gather(-1, ids[0, 1:, None]).sum()))
        assert s["tokens_scored"] == x["tokens"] == ids.shape[1] - 1
        assert s["nll"] == pytest.approx(direct[-1], rel=1e-4)
        assert s["perplexity"] == pytest.approx(math.exp(direct[-1] / x["tokens"]), rel=1e-4)
    assert w["tokens_scored"] == len(shards) and w["nll"] == pytest.approx(sum(direct), rel=1e-4)
    # the narrow windows score the same tokens
    assert [s["tokens_scored"] for s in r["sources"]] == [s["tokens_scored"] for s in w["sources"]]


@pytest.mark.parametrize("extra, match", [
    (["--data", "{missing}"], "does not exist"),
    (["--data", "{model}"], "not a prepared data directory"),
    (["--data", "{data}", "--no-bos"], "--text only"),
])
def test_ppl_data_bad_inputs(model_dir, data_dir, tmp_path, capsys, extra, match):
    subst = {"{missing}": str(tmp_path / "nope"), "{model}": str(model_dir), "{data}": str(data_dir)}
    argv = ["eval", "ppl", "--model", str(model_dir)] + [subst.get(a, a) for a in extra]
    assert main(argv) != 0
    assert match in _one_error(capsys)


@pytest.mark.parametrize("content, match", [
    ('{"question": "q", "choices": ["a", "b"], "answer": 1}\nnot json\n', "my.jsonl:2: not valid JSON"),
    ('{"question": "q", "choices": ["a", "b"]}\n', "my.jsonl:1: row lacks 'answer'"),
    ('{"question": "q", "choices": ["a", "b"], "answer": 5}\n', "my.jsonl:1: answer index 5 is out of range"),
    ("", "holds no items"),
    ('{"question": "a\\ud800", "choices": ["a", "b"], "answer": 0}\n', "my.jsonl:1: field 'question' holds a lone surrogate"),
    ('{"question": null, "choices": ["a", "b"], "answer": 0}\n', "my.jsonl:1: 'question' must be a text"),
    ('{"question": ["x"], "answer": "y"}\n', "my.jsonl:1: 'question' must be a text; got list"),
])
@pytest.mark.parametrize("cmd", ["harness", "eval", "tasks"])
def test_bad_task_file_is_one_line(model_dir, tmp_path, capsys, content, match, cmd):
    f = tmp_path / "my.jsonl"
    f.write_text(content, encoding="utf-8")
    argv = {"harness": ["eval", "harness", "--model", str(model_dir)],
            "eval": ["eval", "--model", str(model_dir), "--protocol", "loglik"],
            "tasks": ["eval", "tasks"]}[cmd]
    assert main(argv + ["--task-file", str(f), "--task-name", "my-mc", "--out", str(tmp_path / "o")]) != 0
    assert match in _one_error(capsys)


@pytest.mark.parametrize("name, match", [
    ("substrate_arc_e", "names starting with 'substrate_' are kept"),  # used to replace arc-e's YAML
    ("hellaswag", "'hellaswag' is already an lm-eval task"),
])
@pytest.mark.parametrize("cmd", ["harness", "tasks"])
def test_task_name_of_another_task_is_refused(model_dir, tmp_path, capsys, name, match, cmd):
    pytest.importorskip("lm_eval", reason="lm-eval (the optional eval extra) is not installed")
    mc = write_jsonl(tmp_path / "mc.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 0}])
    argv = {"harness": ["eval", "harness", "--model", str(model_dir)], "tasks": ["eval", "tasks"]}[cmd]
    assert main(argv + ["--task-file", str(mc), "--task-name", name, "--out", str(tmp_path / "o")]) != 0
    err = _one_error(capsys)
    assert match in err and "pass another --task-name" in err
    assert not list((tmp_path / "o").glob("**/*.yaml"))


def test_own_tasks_through_eval_and_tasks(model_dir, tmp_path, capsys):
    mc = write_jsonl(tmp_path / "mc.jsonl", [
        {"question": f"Pick {i}", "choices": [f"x{i}", f"y{i}"], "answer": i % 2} for i in range(4)])
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": f"Name {i}?", "answer": f"N{i}"} for i in range(3)])
    out = tmp_path / "res"
    assert main(["eval", "--model", str(model_dir), "--task-file", str(mc), "--task-name", "my-mc",
                 "--task-file", str(qa), "--protocol", "loglik", "--no-charts", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    got = next(iter(res["models"].values()))["results"]
    assert set(got) == {"my-mc", "qa"} and got["my-mc"]["loglik"]["n_items"] == 4
    assert main(["eval", "tasks", "--task-file", str(mc), "--task-name", "my-mc", "--out", str(tmp_path / "y")]) == 0
    assert "--include-path" in capsys.readouterr().out and (tmp_path / "y" / "my-mc.yaml").is_file()
    assert main(["eval", "--model", str(model_dir), "--task-file", str(mc), "--task-file", str(mc),
                 "--out", str(tmp_path / "o2")]) != 0
    assert "given twice" in _one_error(capsys)


@pytest.mark.slow
def test_harness_runs_a_named_task_file(model_dir, tmp_path, capsys):
    mc = write_jsonl(tmp_path / "mc.jsonl", [
        {"question": f"Pick {i}", "choices": [f"x{i}", f"y{i}", f"z{i}"], "answer": "ABC"[i % 3]} for i in range(5)])
    assert main(["eval", "harness", "--model", str(model_dir), "--task-file", str(mc), "--task-name", "my-mc",
                 "--out", str(tmp_path / "h")]) == 0
    assert capsys.readouterr().out.startswith("my-mc: acc ")
    res = json.loads((tmp_path / "h" / "lm_eval_results.json").read_text())
    assert set(res["tasks"]) == {"my-mc"}
