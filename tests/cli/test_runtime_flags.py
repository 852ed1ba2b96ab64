"""One rule for --device and --threads on every command that computes (cli.common.RUNTIME_RULE).

Every such command takes ``--device`` (auto, cpu, cuda; default auto) and ``--threads N`` (N >= 1,
default torch's choice); commands that run on the CPU whatever the machine (init, plan) take
``--threads`` alone. Where the flags stand for settings keys (train, finetune, grow: run.device /
run.threads; demo: demo.threads) giving both the flag and the key is refused in one line.
"""

from __future__ import annotations

import argparse

import pytest

from substrate_lm.cli.common import runtime_overrides
from substrate_lm.cli.main import build_parser
from substrate_lm.errors import SubstrateError

# command (as typed, subcommand included) -> takes --device
COMPUTING = {
    ("train",): True, ("finetune",): True, ("grow",): True, ("compose",): True, ("generate",): True,
    ("eval",): True, ("eval", "ppl"): True, ("eval", "harness"): True, ("analyze",): True,
    ("ablate",): True, ("demo",): False, ("init",): False, ("plan",): False,
}


def _subparser(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _option(parser, flag):
    return next((a for a in parser._actions if flag in a.option_strings), None)


@pytest.mark.parametrize("path", sorted(COMPUTING), ids=" ".join)
def test_every_computing_command_has_the_same_runtime_flags(path):
    p = _subparser(build_parser(), path)
    threads = _option(p, "--threads")
    assert threads is not None, f"{' '.join(path)} has no --threads"
    assert threads.default is None and threads.metavar == "N"
    assert threads.type("2") == 2
    with pytest.raises(argparse.ArgumentTypeError):
        threads.type("0")
    assert "CPU threads for torch" in threads.help
    device = _option(p, "--device")
    if not COMPUTING[path]:
        assert device is None, f"{' '.join(path)} runs on the CPU: --threads only"
        return
    assert device is not None, f"{' '.join(path)} has no --device"
    # one default (None = auto) and one help text: the same words on every command
    assert device.default is None and device.metavar == "{auto,cpu,cuda}"
    assert "default auto" in device.help and "auto (CUDA when available, else cpu)" in device.help


def test_shortcut_and_key_together_are_refused():
    keys = {"device": "run.device", "threads": "run.threads"}
    ns = argparse.Namespace(device="cpu", threads=2)
    assert runtime_overrides(ns, ["--train.steps", "3"], keys) == [
        "--train.steps", "3", "--run.device", "cpu", "--run.threads", "2"]
    with pytest.raises(SubstrateError, match="--device and --run.device both set run.device"):
        runtime_overrides(ns, ["--run.device", "cuda"], keys)
    with pytest.raises(SubstrateError, match="--threads and --run.threads both set run.threads"):
        runtime_overrides(argparse.Namespace(device=None, threads=1), ["--run.threads=4"], keys)
    with pytest.raises(SubstrateError, match="not one of auto, cpu, cuda"):
        runtime_overrides(argparse.Namespace(device="cuda:1", threads=None), [], keys)


@pytest.mark.parametrize("argv,key", [
    (["grow", "--config", "grow-tiny", "--threads", "1", "--run.threads", "2"], "run.threads"),
    (["grow", "--config", "grow-tiny", "--device", "cpu", "--run.device", "cpu"], "run.device"),
    (["demo", "--threads", "1", "--demo.threads", "2", "--help-config"], "demo.threads"),
    (["finetune", "--out", "x", "--resume", "--threads", "1", "--run.threads", "2"], "run.threads"),
])
def test_settings_commands_refuse_the_flag_and_its_key(argv, key, capsys):
    from substrate_lm.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and f"both set {key}" in err and "\n" not in err


def test_grow_and_demo_flags_reach_their_settings(capsys):
    from substrate_lm.cli.main import main

    assert main(["grow", "--config", "grow-tiny", "--threads", "3", "--device", "cpu", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "--run.threads = 3" in out and '--run.device = "cpu"' in out
    assert main(["demo", "--quick", "--threads", "2", "--help-config"]) == 0
    assert "--demo.threads = 2" in capsys.readouterr().out
