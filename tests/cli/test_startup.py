"""Start-up: the command line imports heavy modules only where a command uses them, and
``generate --interactive`` answers many prompts with one loaded model.

No timed assertion (the box is shared): the tests check *what* is imported, in a fresh interpreter.
Measured times: benchmarks/2026-12-06-startup.md.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest

from substrate_lm.cli.main import build_parser, main

HEAVY = ("torch", "transformers", "datasets", "matplotlib", "sklearn", "peft", "lm_eval", "pyarrow", "safetensors")


def _modules_after(code: str) -> set[str]:
    """Top-level modules a fresh interpreter has imported after running ``code``."""
    probe = textwrap.dedent(code) + textwrap.dedent("""
        import json as _json, sys as _sys
        print("MODULES=" + _json.dumps(sorted({m.split(".")[0] for m in _sys.modules})))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("MODULES="))
    return set(json.loads(line[len("MODULES="):]))


def _subcommands() -> list[list[str]]:
    import argparse

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield path + [name]
                    yield from walk(sub, path + [name])

    return [[]] + list(walk(build_parser(), []))


def test_help_of_every_command_imports_nothing_heavy():
    commands = _subcommands()
    assert len(commands) > 20
    code = f"""
        import contextlib, io
        from substrate_lm.cli.main import main
        for argv in {commands!r}:
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    main(argv + ["--help"])
                except SystemExit:
                    pass
    """
    heavy = _modules_after(code) & set(HEAVY)
    assert not heavy, f"--help imported {sorted(heavy)}"


def test_info_presets_does_not_import_transformers():
    code = """
        import contextlib, io
        from substrate_lm.cli.main import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["info", "--presets"]) == 0
    """
    mods = _modules_after(code)
    assert "transformers" not in mods and "datasets" not in mods


def test_preset_counts_match_the_models():
    import torch

    from substrate_lm.cli.model_cmds import preset_counts
    from substrate_lm.export import parameter_counts
    from substrate_lm.modeling import SubstrateForCausalLM
    from substrate_lm.presets import describe_presets

    for preset in describe_presets():
        with torch.device("meta"):
            model = SubstrateForCausalLM(preset.config())
        assert preset_counts(preset) == parameter_counts(model), preset.name


def test_the_transformers_bars_are_quieted_when_transformers_is_first_imported():
    code = """
        import sys
        from substrate_lm.logutil import quiet_transformers_bars_when_imported
        quiet_transformers_bars_when_imported()
        assert "transformers" not in sys.modules
        from transformers.utils import logging
        assert getattr(logging._tqdm_hook, "substrate_quiet", False)
        quiet_transformers_bars_when_imported()  # idempotent once loaded
        assert getattr(logging._tqdm_hook, "substrate_quiet", False)
    """
    _modules_after(code)


# -- generate --interactive -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from substrate_lm.tokenizer import build_from_stats

    root = tmp_path_factory.mktemp("interactive")
    stats = [{"lang": "en", "language_name": "English", "top_ngrams": {2: [("th", 5), ("he", 4)], 3: [("the", 2)]}}]
    build_from_stats(stats).save_pretrained(root / "tok")
    out = root / "m"
    assert main(["init", "--preset", "tiny", "--substrate", "16-bit", "--tokenizer", str(root / "tok"),
                 "--out", str(out), "--model.overrides.n_layer", "1"]) == 0
    return out


def test_interactive_loop_one_model_many_prompts(tiny_model):
    from substrate_lm.cli.model_cmds import interactive, load_model_dir, load_tokenizer_for

    model = load_model_dir(str(tiny_model))
    tok = load_tokenizer_for(str(tiny_model))
    out, err = io.StringIO(), io.StringIO()
    gen = {"max_new_tokens": 3, "do_sample": False}
    n = interactive(model, tok, gen, "cpu", stdin=io.StringIO("the cat\nhello\n:q\nnever read\n"), out=out, err=err)
    assert n == 2
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("the cat") and lines[1].startswith("hello")
    assert err.getvalue() == ""  # not a terminal: no prompt marker
    # greedy: the same prompt gives the same text as a one-shot generate
    again = io.StringIO()
    interactive(model, tok, gen, "cpu", stdin=io.StringIO("the cat\n\nhello\n"), out=again, err=io.StringIO())
    assert again.getvalue().splitlines() == lines[:1]  # the empty line ended the loop


def test_generate_interactive_from_stdin(tiny_model):
    """The whole command in a subprocess, prompts on stdin, end of input ends it."""
    proc = subprocess.run([sys.executable, "-m", "substrate_lm.cli.main", "generate", str(tiny_model), "--interactive",
                           "--greedy", "--max-new-tokens", "2", "--threads", "1"],
                          input="the\nhe said\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("the") and lines[1].startswith("he said")


def test_generate_needs_a_prompt_or_interactive(tiny_model, capsys):
    assert main(["generate", str(tiny_model)]) == 2
    assert "--interactive" in capsys.readouterr().err
    assert main(["generate", str(tiny_model), "--prompt", "x", "--interactive"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_interactive_input_not_utf8_is_one_line_error(tiny_model):
    from substrate_lm.cli.model_cmds import interactive, load_model_dir, load_tokenizer_for
    from substrate_lm.errors import SubstrateError

    model = load_model_dir(str(tiny_model))
    tok = load_tokenizer_for(str(tiny_model))
    stdin = io.TextIOWrapper(io.BytesIO(b"the\n\xff\xfe bad\n"), encoding="utf-8")
    out = io.StringIO()
    with pytest.raises(SubstrateError, match="not valid UTF-8"):
        interactive(model, tok, {"max_new_tokens": 2, "do_sample": False}, "cpu", stdin=stdin, out=out,
                    err=io.StringIO())
