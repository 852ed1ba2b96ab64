"""`substrate-lm train` / `export` end to end, and training any HF causal LM (GPT-NeoX)."""

from __future__ import annotations

import argparse

import pytest
import torch
from training_helpers import read_log, tiny_config

from substrate_lm.cli import train as train_cli
from substrate_lm.errors import SubstrateError
from substrate_lm.training import RunData, Trainer, export_checkpoint, model_from_checkpoint


def run_cli(argv):
    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def common(run_dir, data_dir):
    return ["--run.dir", str(run_dir), "--data.path", str(data_dir), "--data.world", "",
            "--train.batch_size", "4", "--train.seq_len", "32", "--train.warmup", "1",
            "--eval.steps", "2", "--log.interval", "1", "--log.tensorboard", "false", "--log.progress=false",
            "--log.sample_prompts", "[]"]


def test_train_resume_export_reload(tmp_path, prepared):
    run = tmp_path / "run"
    assert run_cli(["train", "--config", "tiny", *common(run, prepared), "--train.steps", "3",
                    "--checkpoint.interval", "3", "--eval.interval", "3"]) == 0
    # continue the same run folder from its saved config, with more steps
    assert run_cli(["train", "--config", str(run), "--resume", "--train.steps", "5"]) == 0
    steps = [r["step"] for r in read_log(run)]
    assert steps == [1, 2, 3, 4, 5]

    out = tmp_path / "hf"
    assert run_cli(["export", str(run), "--out", str(out)]) == 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    ours, ck = model_from_checkpoint(run)
    assert ck.step == 5
    ids = torch.tensor([tok.encode("the cat sees the moon.", add_special_tokens=False)])
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, ours(ids).logits)
    assert hf.config.substrate_fingerprint == ours.config.substrate_fingerprint
    assert not hf.token_embeddings.weight.requires_grad
    assert "5 optimizer steps" in (out / "README.md").read_text()


def test_cli_errors_are_clear(tmp_path, prepared, capsys):
    with pytest.raises(SubstrateError, match="no recipe named 'nope'"):
        run_cli(["train", "--config", "nope"])
    with pytest.raises(SubstrateError, match="unknown config key train.bogus; valid keys"):
        run_cli(["train", "--config", "tiny", "--train.bogus", "1"])
    with pytest.raises(SubstrateError, match="pass --config"):
        run_cli(["train"])
    with pytest.raises(SubstrateError, match="no usable checkpoint|not a checkpoint"):
        run_cli(["export", str(tmp_path), "--out", str(tmp_path / "x")])
    assert run_cli(["train", "--help-config"]) == 0
    assert "--train.grad_accum" in capsys.readouterr().out
    assert run_cli(["train", "--config", "tiny", "--print-config", "--train.lr", "0.01"]) == 0
    assert "lr = 0.01" in capsys.readouterr().out


def test_any_hf_causal_lm_trains_and_exports(tmp_path, prepared):
    """The loop only needs an HF causal LM: GPT-NeoX trains, checkpoints and exports too."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from substrate_lm.training.build import load_run_data

    cfg = tiny_config(tmp_path / "run", prepared, **{"train.steps": 6, "eval.interval": 3})
    data = load_run_data(cfg.data)
    assert isinstance(data, RunData)
    vocab = data.meta["tokenizer"]["vocab_size"]
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, max_position_embeddings=128, rotary_pct=1.0,
        use_parallel_residual=False, hidden_act="gelu", tie_word_embeddings=False))
    model.gpt_neox.embed_in.weight.requires_grad_(False)  # a frozen table, as the trainer sees it
    table = model.gpt_neox.embed_in.weight.detach().clone()
    result = Trainer(cfg, model=model, data=data).fit()
    losses = [r["loss"] for r in read_log(tmp_path / "run")]
    assert losses[-1] < losses[0]
    assert torch.equal(result.model.gpt_neox.embed_in.weight, table)
    out = export_checkpoint(tmp_path / "run", tmp_path / "hf")
    again = GPTNeoXForCausalLM.from_pretrained(out)
    ids = torch.randint(0, vocab, (1, 16))
    with torch.no_grad():
        assert torch.equal(again(ids).logits, result.model.eval()(ids).logits)


def test_threads_and_device_flags(tmp_path, capsys):
    assert run_cli(["train", "--config", "tiny", "--threads", "3", "--device", "cpu",
                    "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "threads = 3" in out and 'device = "cpu"' in out
    with pytest.raises(SystemExit):  # the shared runtime rule: --threads N >= 1 (argparse's usage error)
        run_cli(["train", "--config", "tiny", "--threads", "-1", "--print-config"])
    assert "must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SubstrateError, match="run.threads must be >= 0"):
        run_cli(["train", "--config", "tiny", "--run.threads", "-1", "--print-config"])


def test_threads_setting_reaches_torch(tmp_path, prepared):
    before = torch.get_num_threads()
    want = 2 if before == 1 else 1  # differs from the current count, so the test can fail
    try:
        cfg = tiny_config(tmp_path / "run", prepared, **{"train.steps": 1, "eval.interval": 0,
                                                          "run.threads": want})
        Trainer(cfg).fit()
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)


def test_export_refuses_an_existing_folder_unless_overwrite(tmp_path, prepared):
    run = tmp_path / "run"
    assert run_cli(["train", "--config", "tiny", *common(run, prepared), "--train.steps", "1",
                    "--eval.interval", "0"]) == 0
    out = tmp_path / "hf"
    assert run_cli(["export", str(run), "--out", str(out)]) == 0
    with pytest.raises(SubstrateError, match="--overwrite"):
        run_cli(["export", str(run), "--out", str(out)])
    assert run_cli(["export", str(run), "--out", str(out), "--overwrite"]) == 0
    with pytest.raises(SubstrateError):  # never the run folder itself, not even with --overwrite
        run_cli(["export", str(run), "--out", str(run), "--overwrite"])
    assert (run / "checkpoints").is_dir()
