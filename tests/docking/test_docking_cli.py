"""``substrate-lm compose`` and ``substrate-lm grow`` through the CLI entry point."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from substrate_lm.cli import docking as docking_cli
from substrate_lm.cli.main import main as cli_main
from substrate_lm.errors import SubstrateError
from substrate_lm.substrates import build_substrate


def run_cli(argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    docking_cli.register(sub)
    args = p.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def expert_dirs(tmp_path_factory, expert_factory, tokenizer_dir):
    from transformers import AutoTokenizer

    from substrate_lm.export import export_model

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    root = tmp_path_factory.mktemp("experts")
    dirs = []
    for seed, layers in ((0, 2), (1, 1)):
        model = expert_factory(seed, vocab=len(tok), n_layer=layers)
        dirs.append(export_model(model, root / f"e{seed}", tokenizer=tok))
    bits = build_substrate("bits", len(tok), 16, seed=7)  # a genuine frozen table, not the others' one
    odd = expert_factory(2, vocab=len(tok), table=bits.table, meta=bits.meta)
    dirs.append(export_model(odd, root / "odd"))
    return dirs


def test_compose_cli_writes_a_loadable_dir_with_the_tokenizer(expert_dirs, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "moe"
    rc = run_cli(["compose", "--expert", str(expert_dirs[0]), "--expert", str(expert_dirs[1]),
                  "--weights", "3,1", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "composed 2 experts" in text and "weight 0.7500" in text and "tokenizer: copied" in text
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    assert model.config.weights == [0.75, 0.25] and len(tok) == model.config.vocab_size
    assert model.config.eos_token_id == tok.eos_token_id
    ids = torch.tensor([tok.encode("Ada took the old map")])
    assert model.generate(ids, 3, do_sample=False).shape[1] == ids.shape[1] + 3
    with pytest.raises(SubstrateError, match="not empty"):
        run_cli(["compose", "--expert", str(expert_dirs[0]), "--expert", str(expert_dirs[1]), "--out", str(out)])
    rc = run_cli(["compose", "--expert", str(expert_dirs[0]), "--expert", str(expert_dirs[1]), "--out", str(out),
                  "--overwrite", "--adapter", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert rc == 0 and info["fusion"] == "adapter" and info["experts"][0]["weight"] == 0.5


def test_compose_cli_trains_an_adapter_on_prepared_data(expert_dirs, data_dir, tmp_path, capsys):
    out = tmp_path / "fused"
    rc = run_cli(["compose", "--expert", str(expert_dirs[0]), "--expert", str(expert_dirs[1]), "--out", str(out),
                  "--adapter-data", str(data_dir), "--adapter-steps", "3", "--finetune-steps", "2",
                  "--batch-size", "2", "--seq-len", "16", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert rc == 0 and info["fusion"] == "adapter"
    assert set(info["adapter"]) == {"trainable", "val_before", "val_trained", "val_after", "kept"}
    a = info["adapter"]
    assert a["val_after"] == min(a["val_before"], a["val_trained"])  # the better of average and adapter is kept
    assert a["kept"] == ("trained" if a["val_trained"] <= a["val_before"] else "before")
    assert info["finetune"]["trainable"] > info["adapter"]["trainable"]


def test_compose_cli_mismatch_is_one_line_through_main(expert_dirs, tmp_path, capsys):
    rc = cli_main(["compose", "--expert", str(expert_dirs[0]), "--expert", str(expert_dirs[2]),
                            "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: expert 2 substrate fingerprint sha256:")
    assert not (tmp_path / "bad").exists()
    rc = cli_main(["compose", "--expert", str(expert_dirs[0]), "--expert", str(expert_dirs[1]),
                            "--weights", "1,x", "--out", str(tmp_path / "bad")])
    assert rc == 2 and "--weights" in capsys.readouterr().err


def test_grow_cli_runs_and_resumes(data_dir, tmp_path, capsys):
    cfg = tmp_path / "g.toml"
    cfg.write_text(
        "[run]\nname = 'cli'\ndevice = 'cpu'\n"
        "[model]\npreset = 'tiny'\noverrides = {d_model = 32, n_head = 4, block_size = 64}\n"
        "[grow]\nn_layer = 2\n"
        "[train]\nsteps = 3\nbatch_size = 2\nseq_len = 16\nwarmup = 1\n"
        "[eval]\nsteps = 1\n[baseline]\nenabled = false\n"
    )
    common = ["grow", "--config", str(cfg), "--data.path", str(data_dir), "--run.dir", str(tmp_path / "run")]
    assert run_cli(common) == 0
    out = capsys.readouterr().out
    assert "| stage2 | 2 |" in out and "final model:" in out
    assert run_cli(common + ["--resume"]) == 0
    assert "finished earlier" in capsys.readouterr().err
    with pytest.raises(SubstrateError, match="--resume"):
        run_cli(common)


def test_compose_cli_keeps_the_adapter_run_in_run_dir_and_resumes_it(expert_dirs, data_dir, tmp_path, capsys):
    base = ["compose", "--expert", str(expert_dirs[0]), "--expert", str(expert_dirs[1]), "--adapter-data",
            str(data_dir), "--adapter-steps", "2", "--batch-size", "2", "--seq-len", "16", "--json"]
    with pytest.raises(SubstrateError, match="--resume needs --run-dir"):
        run_cli(base + ["--out", str(tmp_path / "x"), "--resume"])
    runs = tmp_path / "runs"
    assert run_cli(base + ["--out", str(tmp_path / "a"), "--run-dir", str(runs)]) == 0
    first = json.loads(capsys.readouterr().out)["adapter"]
    assert (runs / "adapter" / "config.toml").is_file() and (runs / "adapter" / "checkpoints").is_dir()
    with pytest.raises(SubstrateError, match="--run-dir .* is not empty"):
        run_cli(base + ["--out", str(tmp_path / "b"), "--run-dir", str(runs)])
    # the finished run resumes to the same adapter without training again
    assert run_cli(base + ["--out", str(tmp_path / "b"), "--run-dir", str(runs), "--resume"]) == 0
    again = json.loads(capsys.readouterr().out)["adapter"]
    assert again == first
