"""``substrate-lm finetune``: an end-to-end LoRA run, resume, and one-line errors on bad input."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from test_bad_inputs import check_rejected, run_case  # noqa: E402
from training_helpers import make_char_tokenizer, read_log  # noqa: E402

from substrate_lm.cli.main import main
from substrate_lm.export import export_model
from substrate_lm.factory import build_model

QUICK = ["--seq-len", "24", "--batch-size", "4", "--threads", "1", "--log.progress", "false",
         "--log.tensorboard", "false", "--log.interval", "1"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A tiny exported model, a good instruction file and bad ones."""
    root = tmp_path_factory.mktemp("ft_cli")
    tok = make_char_tokenizer()
    p = {"model": export_model(build_model("tiny", tokenizer=tok, seed=0), root / "m", tokenizer=tok)}

    def jsonl(name, lines):
        p[name] = root / f"{name}.jsonl"
        p[name].write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    good = [json.dumps({"prompt": f"after {i % 10}?\nA:", "response": f" {(i + 1) % 10}"}) for i in range(20)]
    jsonl("sft", good)
    jsonl("badjson", good[:2] + ['{"prompt": "cut'])
    jsonl("empty", ["", ""])
    jsonl("nokeys", good[:2] + [json.dumps({"question": "a", "answer": "b"})])
    p["emptydir"] = root / "emptydir"
    p["emptydir"].mkdir()
    p["nonempty"] = root / "nonempty"
    p["nonempty"].mkdir()
    (p["nonempty"] / "notes.txt").write_text("mine")
    return {k: str(v) for k, v in p.items()}


def test_lora_finetune_exports_a_model_generate_loads_and_resume_extends(ws, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["finetune", "--model", ws["model"], "--data", ws["sft"], "--out", str(out), "--lora",
               "--lora-r", "4", "--lora.targets", "qkv,fc", "--steps", "6", *QUICK])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert stdout.strip() == str(out / "model") and "done: 6 steps (lora)" in err
    rec = json.loads((out / "finetune.json").read_text())
    # one run shows base -> tuned: validation at step 0 and at the end, in the log and the last line
    assert "val step 0 (before training): loss " in err
    assert f"val loss {rec['base_val_loss']:.4f} (base model) -> {rec['val_loss']:.4f}" in err
    assert rec["lora"]["r"] == 4 and rec["lora"]["targets"] == ["qkv", "fc"] and rec["base_model"] == ws["model"]

    assert main(["generate", str(out / "model"), "--prompt", "after 3?\nA:", "--max-new-tokens", "3"]) == 0
    capsys.readouterr()

    # --resume takes model, data and LoRA from the record; --steps extends the schedule
    assert main(["finetune", "--out", str(out), "--resume", "--steps", "8", "--threads", "1",
                 "--log.progress", "false"]) == 0
    assert [r["step"] for r in read_log(out)] == list(range(1, 9))
    assert json.loads((out / "finetune.json").read_text())["steps"] == 8
    # ... but a change of the split or the batches is refused in one line naming the keys
    capsys.readouterr()
    check_rejected(*run_case(["finetune", "--out", str(out), "--resume", "--steps", "9", "--seed", "3",
                              "--batch-size", "2", "--threads", "1"], capsys))
    assert [r["step"] for r in read_log(out)] == list(range(1, 9))


def test_help_config_lists_the_finetune_defaults(capsys):
    assert main(["finetune", "--help-config", "--lora", "--steps", "7"]) == 0
    text = capsys.readouterr().out
    assert "--train.steps = 7" in text and "--train.lr = 0.001" in text and "--train.weight_decay = 0.0" in text
    assert "[lora]" in text and "--lora.r = 8" in text and '--lora.targets = ["qkv", "proj", "fc"]' in text
    assert "--lora.alpha = 16.0" in text and "--lora.dropout = 0.0" in text
    assert main(["finetune", "--help-config", "--lora", "--lora.r", "16", "--lora-targets", "fc"]) == 0
    text = capsys.readouterr().out
    assert "--lora.r = 16" in text and '--lora.targets = ["fc"]' in text


BAD = [
    ("missing-data", ["--data", "{root}/nope.jsonl"], "does not exist"),
    ("malformed-line", ["--data", "{badjson}"], r"badjson\.jsonl:3: invalid JSON"),
    ("empty-jsonl", ["--data", "{empty}"], "holds no records"),
    ("missing-keys", ["--data", "{nokeys}"], r"nokeys\.jsonl:3: expected a 'prompt' and 'response'"),
    ("data-dir-unprepared", ["--data", "{emptydir}"], "holds no prepared data"),
    ("model-empty-dir", ["--model", "{emptydir}"], "not a model folder"),
    ("model-is-file", ["--model", "{sft}"], "not a model folder"),
    ("model-missing", ["--model", "{root}/nope"], "not a model folder"),
    ("out-nonempty", ["--out", "{nonempty}"], "is not empty"),
    ("out-is-file", ["--out", "{sft}"], "is a file"),
    ("resume-not-a-run", ["--out", "{nonempty}", "--resume"], "not a fine-tune run folder"),
    ("lora-r-without-lora", ["--lora-r", "4"], "needs --lora"),
    ("lora-bad-target", ["--lora", "--lora-targets", "q_proj"], "name no linear layer"),
    ("lora-dropout-one", ["--lora", "--lora-dropout", "1"], None),
    ("seq-len-too-long", ["--seq-len", "4096"], "exceeds the model's context length"),
    ("model-setting", ["--model.preset", "small"], "cannot be set for a fine-tune"),
    ("unknown-setting", ["--train.nope", "1"], "train.nope"),
    ("no-model", ["--model", ""], "pass --model DIR and --data SRC"),
    ("no-out", ["--out", ""], "pass --out RUN_DIR"),
    ("shortcut-and-key", ["--lr", "1e-3", "--train.lr", "5e-3"], r"--lr and --train\.lr both set train\.lr"),
    ("lora-flag-and-key", ["--lora", "--lora-r", "4", "--lora.r", "8"], r"--lora-r and --lora\.r"),
    ("lora-key-without-lora", ["--lora.r", "4"], "needs --lora"),
    ("lora-unknown-key", ["--lora", "--lora.rank", "4"], r"unknown config key lora\.rank"),
    ("lora-bad-key-value", ["--lora", "--lora.r", "0"], r"lora\.r must be >= 1"),
    ("out-inside-model", ["--out", "{model}/run"], "lies inside --model"),
]


@pytest.mark.parametrize("extra, match", [pytest.param(a, m, id=i) for i, a, m in BAD])
def test_bad_input_is_one_line_error(ws, tmp_path, capsys, extra, match):
    values = {**ws, "root": str(Path(ws["model"]).parent)}
    base = {"--model": ws["model"], "--data": ws["sft"], "--out": str(tmp_path / "new")}
    argv, i = [], 0
    while i < len(extra):  # an option given in ``extra`` replaces the default one
        key = extra[i]
        has_value = i + 1 < len(extra) and not extra[i + 1].startswith("--")
        value = extra[i + 1].format(**values) if has_value else None
        if key in base:
            base[key] = value
        else:
            argv += [key] + ([value] if has_value else [])
        i += 2 if has_value else 1
    for key, value in base.items():
        if value:
            argv += [key, value]
    rc, out, err, usage = run_case(["finetune", "--steps", "2", *QUICK, *argv], capsys)
    check_rejected(rc, out, err, usage)
    if match and not usage:
        assert re.search(match, err), err
    assert not (tmp_path / "new").exists()  # nothing written on refusal
