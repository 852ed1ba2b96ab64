"""Run configs: recipes, overrides, type checks, unknown keys; every recipe builds on meta."""

from __future__ import annotations

import pytest
import torch

from substrate_lm.errors import SubstrateError
from substrate_lm.training import RunConfig, build_model_meta, load_config, recipe_names
from substrate_lm.training.config import describe_config, parse_override_args

PAPER_PARAMS = {  # issue 2: parameter counts of the paper family (1024-wide table included)
    "paper-1024-bit": (335.5e6, 335.7e6),
    "paper-256-bit": (285.2e6, 285.4e6),
    "paper-64-bit": (272.6e6, 272.8e6),
    "paper-16-bit": (269.4e6, 269.6e6),
}


def test_recipes_exist():
    names = recipe_names(training_only=True)
    for required in ("tiny", "small", "paper-1024-bit", "paper-uni-glyph", "paper-unfrozen",
                     "paper-256-bit", "paper-64-bit", "paper-16-bit", "paper-1024-float"):
        assert required in names


@pytest.mark.parametrize("name", recipe_names(training_only=True))
def test_every_recipe_parses_and_builds_on_meta(name):
    cfg = load_config(name)
    model = build_model_meta(cfg.model)
    assert all(p.device.type == "meta" for p in model.parameters())
    n = sum(p.numel() for p in model.parameters())
    if name in PAPER_PARAMS:
        lo, hi = PAPER_PARAMS[name]
        assert lo <= n <= hi, (name, n)
    # the table is frozen unless the recipe trains it
    frozen = not model.token_embeddings.weight.requires_grad
    assert frozen == (cfg.model.preset != "unfrozen" and cfg.model.substrate not in ("trainable", "unfrozen"))
    assert cfg.train.seq_len <= model.config.block_size


def test_paper_recipes_differ_only_in_model_and_name():
    papers = [n for n in recipe_names(training_only=True) if n.startswith("paper-")]
    ref = load_config(papers[0]).to_dict()
    for name in papers[1:]:
        d = load_config(name).to_dict()
        for section in d:
            if section in ("model", "run"):
                continue
            assert d[section] == ref[section], (name, section)
        assert {k: v for k, v in d["model"].items() if k != "preset"} == \
            {k: v for k, v in ref["model"].items() if k != "preset"}


def test_overrides_cli_style_are_typed():
    cfg = load_config("tiny", ["--train.lr", "3e-4", "--train.steps=7", "--log.tensorboard", "false",
                               "--train.compile", "--train.betas", "[0.8, 0.9]",
                               "--model.overrides.n_layer", "3", "--log.sample_prompts", "a,b",
                               "--eval.interval", "0"])
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 7 and cfg.log.tensorboard is False and cfg.train.compile is True
    assert cfg.train.betas == [0.8, 0.9]
    assert cfg.model.overrides == {"n_layer": 3}
    assert cfg.log.sample_prompts == ["a", "b"]
    assert cfg.eval.interval == 0
    assert build_model_meta(cfg.model).config.n_layer == 3


def test_unknown_keys_name_the_key_and_the_valid_ones(tmp_path):
    with pytest.raises(SubstrateError) as exc:
        load_config("tiny", ["--train.learning_rate", "1e-3"])
    msg = str(exc.value)
    assert "train.learning_rate" in msg and "lr" in msg and "warmup" in msg and "\n" not in msg
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nsteps = 3\nlrr = 0.1\n")
    with pytest.raises(SubstrateError, match=r"train\.lrr.*valid keys.*\blr\b"):
        load_config(bad)
    bad.write_text("[trian]\nsteps = 3\n")
    with pytest.raises(SubstrateError, match=r"\[trian\].*train"):
        load_config(bad)
    with pytest.raises(SubstrateError, match="unknown option --[a-z_]*; settings are written --<section>.<key> VALUE"):
        load_config("tiny", ["--steps", "3"])


@pytest.mark.parametrize("override, match", [
    (["--train.steps", "many"], "train.steps must be an integer"),
    (["--train.precision", "fp16"], "train.precision must be one of fp32, bf16"),
    (["--log.jsonl", "maybe"], "log.jsonl must be true or false"),
    (["--train.min_lr", "1.0"], "train.min_lr must be between"),
    (["--dist.strategy", "zero3"], "dist.strategy must be one of"),
    (["--train.batch_size", "0"], "train.batch_size must be >= 1"),
])
def test_bad_values_are_one_line_errors(override, match):
    with pytest.raises(SubstrateError, match=match):
        load_config("tiny", override)


def test_toml_type_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nsteps = "ten"\n')
    with pytest.raises(SubstrateError, match="train.steps must be an integer"):
        load_config(bad)
    bad.write_text("[train]\nsteps = true\n")  # a bool is not an int
    with pytest.raises(SubstrateError, match="train.steps must be an integer"):
        load_config(bad)
    bad.write_text("[train\n")
    with pytest.raises(SubstrateError, match="invalid TOML"):
        load_config(bad)


def test_toml_round_trip(tmp_path):
    cfg = load_config("paper-uni-glyph", {"train.lr": 1.5e-4, "model.overrides": {"dropout": 0.1}})
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    again = load_config(path)
    assert again == cfg
    assert again.log.sample_prompts[0].endswith("\nAnswer:")


def test_recipe_name_errors_and_defaults():
    with pytest.raises(SubstrateError, match="no recipe named 'nope'.*tiny"):
        load_config("nope")
    assert load_config(None) == RunConfig()
    assert parse_override_args(["--a.b", "-1", "--c.d"]) == {"a.b": "-1", "c.d": "true"}


def test_help_lists_every_key_with_its_docstring():
    text = describe_config()
    for key in ("--train.lr", "--train.chunked_loss", "--dist.strategy", "--checkpoint.keep_last",
                "--data.world", "--model.overrides"):
        assert key in text
    assert "Peak learning rate" in text


def test_meta_build_needs_no_memory():
    cfg = load_config("paper-1024-bit")
    model = build_model_meta(cfg.model)
    assert model.lm_head.weight.shape == (65536, 1024)
    assert model.token_embeddings.weight.device == torch.device("meta")
