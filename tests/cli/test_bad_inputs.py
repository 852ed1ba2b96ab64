"""Hostile inputs for every subcommand: a one-line ``error: ...`` and a non-zero exit, never a traceback.

Each case runs ``substrate_lm.cli.main.main(argv)`` in-process on tiny fixtures (a two-n-gram
tokenizer, a ``tiny`` 16-bit model, a 64 x 16 substrate, a 30 KB world) and damaged copies of them.
A case passes when:

* the command exits non-zero (a bad value accepted with exit 0 is a failure),
* nothing printed contains ``Traceback``,
* stderr is exactly one line starting with ``error:`` -- or argparse's own usage error (exit 2,
  usage lines then ``substrate-lm ...: error: ...``), which stays as argparse prints it,
* the line is not the backstop's ``error: internal error: ...``: a case that reaches the backstop
  is an unvalidated input (a bug), so the suite counts it as a failure.

``python tests/cli/test_bad_inputs.py`` prints the table of cases (markdown).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

import substrate_lm.cli.corpus as corpus_cli
from substrate_lm.cli import common
from substrate_lm.cli.common import add_runtime_args, apply_runtime, check_safetensors
from substrate_lm.cli.main import _check_argv_utf8, build_parser, main
from substrate_lm.errors import SubstrateError
from substrate_lm.tokenizer import build_from_stats

BAD_UTF8 = "caf\udcc3( \udcff"  # what Python makes of invalid UTF-8 bytes in argv (surrogateescape)

# -- the table ------------------------------------------------------------------------------------
# (case id, argv with {placeholders}); placeholders: see the ``ws`` fixture.

CASES: list[tuple[str, list[str]]] = []


def case(cid: str, *argv: str) -> None:
    CASES.append((cid, list(argv)))


# global
case("argv-not-utf8", "tokenizer", "encode", "-t", "{tok}", BAD_UTF8)

# info
case("info-missing", "info", "{missing}")
case("info-file", "info", "{txt}")
case("info-empty-dir", "info", "{emptydir}")
case("info-no-model", "info")
case("info-no-weights", "info", "{m_noweights}")
case("info-truncated-weights", "info", "{m_truncweights}")
case("info-binary-weights", "info", "{m_binweights}")
case("info-config-not-json", "info", "{m_badconfig}")
case("info-config-truncated", "info", "{m_truncconfig}")
case("info-config-not-utf8", "info", "{m_utf8config}")
case("info-config-list", "info", "{m_listconfig}")

# init
case("init-unknown-preset", "init", "--preset", "nope", "--out", "{new}")
case("init-out-is-file", "init", "--preset", "tiny", "--out", "{txt}")
case("init-out-nonempty", "init", "--preset", "tiny", "--out", "{nonempty}")
case("init-old-set", "init", "--preset", "tiny", "--set", "n_layer=2", "--out", "{new}")
case("init-set-no-value", "init", "--preset", "tiny", "--model.overrides.n_layer", "--out", "{new}")
case("init-set-no-section", "init", "--preset", "tiny", "--n_layer", "3", "--out", "{new}")
case("init-set-other-section", "init", "--preset", "tiny", "--train.steps", "3", "--out", "{new}")
case("init-set-unknown-model-key", "init", "--preset", "tiny", "--model.bogus", "1", "--out", "{new}")
case("init-set-unknown-key", "init", "--preset", "tiny", "--model.overrides.bogus_key", "1", "--out", "{new}")
case("init-set-negative", "init", "--preset", "tiny", "--model.overrides.n_layer", "-1", "--out", "{new}")
case("init-set-zero", "init", "--preset", "tiny", "--model.overrides.d_model", "0", "--out", "{new}")
case("init-set-non-numeric", "init", "--preset", "tiny", "--model.overrides.n_layer", "abc", "--out", "{new}")
case("init-set-float-for-int", "init", "--preset", "tiny", "--model.overrides.n_layer", "2.5", "--out", "{new}")
case("init-set-nan", "init", "--preset", "tiny", "--model.overrides.dropout", "nan", "--out", "{new}")
case("init-no-preset", "init", "--out", "{new}")
case("init-preset-twice", "init", "--preset", "tiny", "--model.preset", "small", "--out", "{new}")
case("init-init-from", "init", "--preset", "tiny", "--model.init_from", "{model}", "--out", "{new}")
case("init-unknown-substrate", "init", "--preset", "tiny", "--substrate", "nope", "--out", "{new}")
case("init-tokenizer-missing", "init", "--preset", "tiny", "--tokenizer", "{missing}", "--out", "{new}")
case("init-threads-zero", "init", "--preset", "tiny", "--threads", "0", "--out", "{new}")
case("init-tokenizer-empty-dir", "init", "--preset", "tiny", "--tokenizer", "{emptydir}", "--out", "{new}")
case("init-substrate-file-missing", "init", "--preset", "tiny", "--substrate-file", "{missing}", "--out", "{new}")
case("init-substrate-file-truncated", "init", "--preset", "tiny", "--substrate-file", "{sub_trunc}", "--out", "{new}")
case("init-substrate-file-binary", "init", "--preset", "tiny", "--substrate-file", "{bin}", "--out", "{new}")
case("init-seed-non-numeric", "init", "--preset", "tiny", "--seed", "abc", "--out", "{new}")

case("finetune-no-model", "finetune", "--data", "{jsonl}", "--out", "{new}")
case("finetune-device-unknown", "finetune", "--model", "{model}", "--data", "{jsonl}", "--device", "nope", "--out", "{new}")
case("finetune-model-missing", "finetune", "--model", "{missing}", "--data", "{jsonl}", "--out", "{new}")
case("finetune-model-empty-dir", "finetune", "--model", "{emptydir}", "--data", "{jsonl}", "--out", "{new}")
case("finetune-model-no-weights", "finetune", "--model", "{m_noweights}", "--data", "{jsonl}", "--out", "{new}")
case("finetune-data-missing", "finetune", "--model", "{model}", "--data", "{missing}", "--out", "{new}")
case("finetune-data-bad-jsonl", "finetune", "--model", "{model}", "--data", "{badjsonl}", "--out", "{new}")
case("finetune-data-empty", "finetune", "--model", "{model}", "--data", "{empty}", "--out", "{new}")
case("finetune-data-not-utf8", "finetune", "--model", "{model}", "--data", "{badutf8}", "--out", "{new}")
case("finetune-out-nonempty", "finetune", "--model", "{model}", "--data", "{jsonl}", "--out", "{nonempty}")
case("finetune-resume-not-a-run", "finetune", "--out", "{nonempty}", "--resume")
case("finetune-lora-r-without-lora", "finetune", "--model", "{model}", "--data", "{jsonl}", "--out", "{new}", "--lora-r", "4")
case("finetune-lora-r-zero", "finetune", "--model", "{model}", "--data", "{jsonl}", "--out", "{new}", "--lora", "--lora-r", "0")
case("finetune-steps-zero", "finetune", "--model", "{model}", "--data", "{jsonl}", "--out", "{new}", "--steps", "0")
case("finetune-unknown-setting", "finetune", "--model", "{model}", "--data", "{jsonl}", "--out", "{new}", "--train.nope", "1")
case("finetune-old-set", "finetune", "--model", "{model}", "--data", "{jsonl}", "--out", "{new}", "--set", "train.steps=3")

# generate
case("generate-missing", "generate", "{missing}", "--prompt", "the")
case("generate-truncated-weights", "generate", "{m_truncweights}", "--prompt", "the")
case("generate-prompt-not-utf8", "generate", "{model}", "--prompt", BAD_UTF8, "--max-new-tokens", "2")
case("generate-max-new-zero", "generate", "{model}", "--prompt", "the", "--max-new-tokens", "0")
case("generate-max-new-negative", "generate", "{model}", "--prompt", "the", "--max-new-tokens", "-3")
case("generate-temperature-negative", "generate", "{model}", "--prompt", "the", "--temperature", "-1")
case("generate-temperature-nan", "generate", "{model}", "--prompt", "the", "--temperature", "nan")
case("generate-top-k-negative", "generate", "{model}", "--prompt", "the", "--top-k", "-2")
case("generate-top-p-above-one", "generate", "{model}", "--prompt", "the", "--top-p", "1.5")
case("generate-top-p-zero", "generate", "{model}", "--prompt", "the", "--top-p", "0")
case("generate-device-unknown", "generate", "{model}", "--prompt", "the", "--device", "nope")
case("generate-tokenizer-missing", "generate", "{model}", "--prompt", "the", "--tokenizer", "{missing}")
case("generate-max-new-non-numeric", "generate", "{model}", "--prompt", "the", "--max-new-tokens", "abc")
case("generate-threads-zero", "generate", "{model}", "--prompt", "the", "--threads", "0")
case("generate-threads-non-numeric", "generate", "{model}", "--prompt", "the", "--threads", "two")
case("generate-device-missing-cuda-index", "generate", "{model}", "--prompt", "the", "--device", "cuda:99")
case("generate-no-prompt", "generate", "{model}")
case("generate-prompt-and-interactive", "generate", "{model}", "--prompt", "the", "--interactive")

# tokenizer build
case("tok-build-ngrams-missing", "tokenizer", "build", "--ngrams", "{missing}", "--out", "{new}")
case("tok-build-ngrams-empty", "tokenizer", "build", "--ngrams", "{empty}", "--out", "{new}")
case("tok-build-ngrams-dir", "tokenizer", "build", "--ngrams", "{emptydir}", "--out", "{new}")
case("tok-build-ngrams-binary", "tokenizer", "build", "--ngrams", "{bin}", "--out", "{new}")
case("tok-build-ngrams-not-utf8", "tokenizer", "build", "--ngrams", "{badutf8}", "--out", "{new}")
case("tok-build-ngrams-garbage", "tokenizer", "build", "--ngrams", "{txt}", "--out", "{new}")
case("tok-build-corpus-missing", "tokenizer", "build", "--corpus", "{missing}", "--out", "{new}")
case("tok-build-corpus-empty", "tokenizer", "build", "--corpus", "{empty}", "--out", "{new}")
case("tok-build-corpus-empty-dir", "tokenizer", "build", "--corpus", "{emptydir}", "--out", "{new}")
case("tok-build-corpus-not-utf8", "tokenizer", "build", "--corpus", "{badutf8}", "--out", "{new}")
case("tok-build-corpus-binary", "tokenizer", "build", "--corpus", "{bin}", "--out", "{new}")
case("tok-build-corpus-bad-jsonl", "tokenizer", "build", "--corpus", "{badjsonl}", "--out", "{new}")
case("tok-build-layout-unknown", "tokenizer", "build", "--corpus", "{txt}", "--layout", "nope", "--out", "{new}")
case("tok-build-top-k-zero", "tokenizer", "build", "--corpus", "{txt}", "--top-k", "0", "--out", "{new}")
case("tok-build-top-k-negative", "tokenizer", "build", "--corpus", "{txt}", "--top-k", "-5", "--out", "{new}")
case("tok-build-top-k-huge", "tokenizer", "build", "--corpus", "{txt}", "--top-k", "10000000", "--out", "{new}")
case("tok-build-langs-commas", "tokenizer", "build", "--corpus", "{txt}", "--langs", ",,,", "--out", "{new}")
case("tok-build-out-is-file", "tokenizer", "build", "--corpus", "{txt}", "--out", "{txt}")
case("tok-build-out-existing", "tokenizer", "build", "--corpus", "{txt}", "--out", "{tok}")
case("tok-build-out-nonempty", "tokenizer", "build", "--corpus", "{txt}", "--out", "{nonempty}")

# tokenizer encode / decode / inspect
case("tok-encode-tok-missing", "tokenizer", "encode", "-t", "{missing}", "the")
case("tok-encode-tok-empty-dir", "tokenizer", "encode", "-t", "{emptydir}", "the")
case("tok-encode-tok-is-text", "tokenizer", "encode", "-t", "{txt}", "the")
case("tok-encode-tok-truncated", "tokenizer", "encode", "-t", "{tok_trunc}", "the")
case("tok-encode-tok-binary", "tokenizer", "encode", "-t", "{tok_bin}", "the")
case("tok-encode-file-missing", "tokenizer", "encode", "-t", "{tok}", "--file", "{missing}")
case("tok-encode-file-dir", "tokenizer", "encode", "-t", "{tok}", "--file", "{emptydir}")
case("tok-encode-file-not-utf8", "tokenizer", "encode", "-t", "{tok}", "--file", "{badutf8}")
case("tok-encode-file-binary", "tokenizer", "encode", "-t", "{tok}", "--file", "{bin}")
case("tok-decode-non-numeric", "tokenizer", "decode", "-t", "{tok}", "abc")
case("tok-decode-negative", "tokenizer", "decode", "-t", "{tok}", "--", "-1")
case("tok-decode-too-large", "tokenizer", "decode", "-t", "{tok}", "99999999")
case("tok-decode-float", "tokenizer", "decode", "-t", "{tok}", "1.5")
case("tok-decode-broken-json", "tokenizer", "decode", "-t", "{tok}", "[1, 2")
case("tok-decode-nested-json", "tokenizer", "decode", "-t", "{tok}", "[[1]]")
case("tok-decode-json-object", "tokenizer", "decode", "-t", "{tok}", "[{\"a\": 1}]")
case("tok-decode-json-bool", "tokenizer", "decode", "-t", "{tok}", "[true]")
case("tok-decode-tok-missing", "tokenizer", "decode", "-t", "{missing}", "1")
case("tok-inspect-max-rows-negative", "tokenizer", "inspect", "-t", "{tok}", "--max-rows", "-1")
case("tok-inspect-file-missing", "tokenizer", "inspect", "-t", "{tok}", "--file", "{missing}")
case("tok-inspect-file-not-utf8", "tokenizer", "inspect", "-t", "{tok}", "--file", "{badutf8}")
case("tok-inspect-file-empty", "tokenizer", "inspect", "-t", "{tok}", "--file", "{empty}")
case("tok-inspect-file-bad-jsonl", "tokenizer", "inspect", "-t", "{tok}", "--file", "{badjsonl}")
case("tok-inspect-text-not-utf8", "tokenizer", "inspect", "-t", "{tok}", "--text", BAD_UTF8)
case("tok-inspect-tok-truncated", "tokenizer", "inspect", "-t", "{tok_trunc}")

# substrate build
case("sub-build-kind-unknown", "substrate", "build", "--kind", "nope", "--vocab-size", "64", "--width", "16", "--out", "{new}")
case("sub-build-vocab-zero", "substrate", "build", "--kind", "bits", "--vocab-size", "0", "--width", "16", "--out", "{new}")
case("sub-build-vocab-negative", "substrate", "build", "--kind", "bits", "--vocab-size", "-4", "--width", "16", "--out", "{new}")
case("sub-build-width-zero", "substrate", "build", "--kind", "bits", "--vocab-size", "64", "--width", "0", "--out", "{new}")
case("sub-build-width-negative", "substrate", "build", "--kind", "float", "--vocab-size", "64", "--width", "-8", "--out", "{new}")
case("sub-build-width-too-small", "substrate", "build", "--kind", "bits", "--vocab-size", "64", "--width", "3", "--out", "{new}")
case("sub-build-tokenid-width-small", "substrate", "build", "--kind", "token-id", "--vocab-size", "64", "--width", "4", "--out", "{new}")
case("sub-build-tile-zero", "substrate", "build", "--kind", "bits", "--vocab-size", "64", "--width", "16", "--tile-period", "0", "--out", "{new}")
case("sub-build-tile-negative", "substrate", "build", "--kind", "bits", "--vocab-size", "64", "--width", "16", "--tile-period", "-8", "--out", "{new}")
case("sub-build-tile-not-divisor", "substrate", "build", "--kind", "bits", "--vocab-size", "64", "--width", "16", "--tile-period", "7", "--out", "{new}")
case("sub-build-tile-wrong-kind", "substrate", "build", "--kind", "float", "--vocab-size", "64", "--width", "16", "--tile-period", "8", "--out", "{new}")
case("sub-build-source-width-zero", "substrate", "build", "--kind", "float", "--vocab-size", "64", "--width", "16", "--source-width", "0", "--out", "{new}")
case("sub-build-std-negative", "substrate", "build", "--kind", "trainable", "--vocab-size", "64", "--width", "16", "--std", "-1", "--out", "{new}")
case("sub-build-std-nan", "substrate", "build", "--kind", "trainable", "--vocab-size", "64", "--width", "16", "--std", "nan", "--out", "{new}")
case("sub-build-std-inf", "substrate", "build", "--kind", "trainable", "--vocab-size", "64", "--width", "16", "--std", "inf", "--out", "{new}")
case("sub-build-seed-negative", "substrate", "build", "--kind", "bits", "--vocab-size", "64", "--width", "16", "--seed", "-1", "--out", "{new}")
case("sub-build-glyph-vocab-size", "substrate", "build", "--kind", "glyph", "--vocab-size", "64", "--width", "16", "--out", "{new}")
case("sub-build-glyph-cell-zero", "substrate", "build", "--kind", "glyph", "--tokenizer", "{tok}", "--width", "16", "--cell", "0", "--out", "{new}")
case("sub-build-glyph-font-binary", "substrate", "build", "--kind", "glyph", "--tokenizer", "{tok}", "--width", "16", "--font", "{bin}", "--out", "{new}")
case("sub-build-glyph-font-missing", "substrate", "build", "--kind", "glyph", "--tokenizer", "{tok}", "--width", "16", "--font", "{missing}", "--out", "{new}")
case("sub-build-glyph-augment-unknown", "substrate", "build", "--kind", "glyph", "--tokenizer", "{tok}", "--width", "16", "--augment", "nope", "--out", "{new}")
case("sub-build-font-wrong-kind", "substrate", "build", "--kind", "bits", "--vocab-size", "64", "--width", "16", "--font", "{bin}", "--out", "{new}")
case("sub-build-tokenizer-missing", "substrate", "build", "--kind", "bits", "--tokenizer", "{missing}", "--width", "16", "--out", "{new}")
case("sub-build-out-exists", "substrate", "build", "--kind", "bits", "--vocab-size", "64", "--width", "16", "--out", "{sub}")
case("sub-build-out-is-dir", "substrate", "build", "--kind", "bits", "--vocab-size", "64", "--width", "16", "--out", "{emptydir}", "--force")
case("sub-build-out-parent-is-file", "substrate", "build", "--kind", "bits", "--vocab-size", "64", "--width", "16", "--out", "{txt}/x.safetensors")
case("sub-build-dump-is-dir", "substrate", "build", "--kind", "bits", "--vocab-size", "64", "--width", "16", "--out", "{new}", "--dump-txt", "{emptydir}", "--force")
case("sub-build-width-non-numeric", "substrate", "build", "--kind", "bits", "--vocab-size", "64", "--width", "wide", "--out", "{new}")

# substrate verify / show / dump
case("sub-verify-missing", "substrate", "verify", "{missing}")
case("sub-verify-empty-file", "substrate", "verify", "{empty}")
case("sub-verify-binary", "substrate", "verify", "{bin}")
case("sub-verify-truncated", "substrate", "verify", "{sub_trunc}")
case("sub-verify-text", "substrate", "verify", "{txt}")
case("sub-verify-empty-dir", "substrate", "verify", "{emptydir}")
case("sub-verify-model-truncated", "substrate", "verify", "{m_truncweights}")
case("sub-verify-model-bad-config", "substrate", "verify", "{m_badconfig}")
case("sub-verify-kind-unknown", "substrate", "verify", "{sub}", "--kind", "nope")
case("sub-show-id-non-numeric", "substrate", "show", "abc", "--id", "--substrate", "{sub}")
case("sub-show-id-negative", "substrate", "show", "--id", "--substrate", "{sub}", "--", "-1")
case("sub-show-id-too-large", "substrate", "show", "9999", "--id", "--substrate", "{sub}")
case("sub-show-substrate-missing", "substrate", "show", "A", "--substrate", "{missing}")
case("sub-show-substrate-truncated", "substrate", "show", "A", "--substrate", "{sub_trunc}")
case("sub-show-substrate-binary", "substrate", "show", "A", "--substrate", "{bin}")
case("sub-show-model-missing", "substrate", "show", "A", "--model", "{missing}")
case("sub-show-model-truncated", "substrate", "show", "A", "--model", "{m_truncweights}")
case("sub-show-top-negative", "substrate", "show", "A", "--substrate", "{sub}", "--top", "-1")
case("sub-show-values-negative", "substrate", "show", "A", "--substrate", "{sub}", "--values", "-3")
case("sub-show-multichar-no-tokenizer", "substrate", "show", "abc", "--substrate", "{sub}")
case("sub-show-token-unknown", "substrate", "show", "qqqq", "--tokenizer", "{tok}")
case("sub-show-tokenizer-missing", "substrate", "show", "A", "--tokenizer", "{missing}")
case("sub-show-png-is-dir", "substrate", "show", "A", "--png", "{emptydir}")
case("sub-show-token-not-utf8", "substrate", "show", "\udcff", "--substrate", "{sub}")
case("sub-dump-missing", "substrate", "dump", "{missing}", "--out", "{new}")
case("sub-dump-truncated", "substrate", "dump", "{sub_trunc}", "--out", "{new}")
case("sub-dump-binary", "substrate", "dump", "{bin}", "--out", "{new}")
case("sub-dump-out-exists", "substrate", "dump", "{sub}", "--out", "{txt}")
case("sub-dump-out-is-dir", "substrate", "dump", "{sub}", "--out", "{emptydir}", "--force")

# corpus world
case("world-size-non-numeric", "corpus", "world", "--size", "abc", "--out", "{new}")
case("world-mc-share-out-of-range", "corpus", "world", "--size", "60KB", "--mc-share", "2", "--out", "{new}")
case("world-mc-variants-zero", "corpus", "world", "--size", "60KB", "--mc-variants", "0", "--out", "{new}")
case("world-size-zero", "corpus", "world", "--size", "0", "--out", "{new}")
case("world-size-negative", "corpus", "world", "--size=-5MB", "--out", "{new}")
case("world-size-nan", "corpus", "world", "--size", "nanMB", "--out", "{new}")
case("world-size-huge", "corpus", "world", "--size", "5TB", "--out", "{new}")
case("world-langs-unknown", "corpus", "world", "--size", "30KB", "--langs", "xx", "--out", "{new}")
case("world-langs-empty", "corpus", "world", "--size", "30KB", "--langs", ",,", "--out", "{new}")
case("world-questions-negative", "corpus", "world", "--size", "30KB", "--questions", "-1", "--out", "{new}")
case("world-val-fraction-negative", "corpus", "world", "--size", "30KB", "--val-fraction", "-0.1", "--out", "{new}")
case("world-val-fraction-nan", "corpus", "world", "--size", "30KB", "--val-fraction", "nan", "--out", "{new}")
case("world-qa-fraction-above", "corpus", "world", "--size", "30KB", "--qa-fraction", "2", "--out", "{new}")
case("world-qa-fraction-nan", "corpus", "world", "--size", "30KB", "--qa-fraction", "nan", "--out", "{new}")
case("world-entities-odd", "corpus", "world", "--size", "30KB", "--entities-per-category", "7", "--out", "{new}")
case("world-entities-negative", "corpus", "world", "--size", "30KB", "--entities-per-category", "-2", "--out", "{new}")
case("world-entities-zero", "corpus", "world", "--size", "30KB", "--entities-per-category", "0", "--out", "{new}")
case("world-out-is-file", "corpus", "world", "--size", "30KB", "--out", "{txt}")
case("world-out-existing-corpus", "corpus", "world", "--size", "30KB", "--out", "{world_copy}")
# issue 23: --overwrite replaces only a world the tool wrote; dangling links; FIFOs; foreign tokenizers
case("world-overwrite-user-train", "corpus", "world", "--size", "30KB", "--overwrite", "--out", "{user_corpus}")
case("world-out-dangling-link", "corpus", "world", "--size", "30KB", "--out", "{dangling}")
case("init-out-dangling-link", "init", "--preset", "tiny", "--tokenizer", "{tok}", "--out", "{dangling}")
case("train-run-dir-dangling-link", "train", "--config", "tiny", "--run.dir", "{dangling}", "--print-config")
case("data-out-dangling-link", "data", "prepare", "--source", "{txt}", "--tokenizer", "{tok}", "--out", "{dangling}")
case("tok-build-out-dangling-link", "tokenizer", "build", "--corpus", "{txt}", "--out", "{dangling}")
case("tok-encode-file-fifo", "tokenizer", "encode", "-t", "{tok}", "--file", "{fifo}")
case("tok-inspect-file-fifo", "tokenizer", "inspect", "-t", "{tok}", "--file", "{fifo}")
case("tok-build-ngrams-fifo", "tokenizer", "build", "--ngrams", "{fifo}", "--out", "{new}")
case("data-source-fifo", "data", "prepare", "--source", "{fifo}", "--tokenizer", "{tok}", "--out", "{new}")
case("data-source-binary", "data", "prepare", "--source", "text:{bin}", "--tokenizer", "{tok}", "--out", "{new}")
case("data-source-not-utf8", "data", "prepare", "--source", "{badutf8}", "--tokenizer", "{tok}", "--out", "{new}")
case("generate-foreign-tokenizer", "generate", "{model}", "--prompt", "the", "--tokenizer", "{tok_other}")
case("world-out-nonempty", "corpus", "world", "--size", "30KB", "--out", "{nonempty}")
case("world-out-existing-corpus-dir-only", "corpus", "world", "--size", "30KB", "--out", "{world_copy}/questions")
case("world-seed-non-numeric", "corpus", "world", "--size", "30KB", "--seed", "x", "--out", "{new}")

# data prepare / stats
case("data-source-missing", "data", "prepare", "--source", "{missing}", "--tokenizer", "{tok}", "--out", "{new}")
case("data-source-empty", "data", "prepare", "--source", "{empty}", "--tokenizer", "{tok}", "--out", "{new}")
case("data-source-empty-dir", "data", "prepare", "--source", "{emptydir}", "--tokenizer", "{tok}", "--out", "{new}")
case("data-source-bad-jsonl", "data", "prepare", "--source", "jsonl:{badjsonl}", "--tokenizer", "{tok}", "--out", "{new}")
case("data-source-unknown-scheme", "data", "prepare", "--source", "nope:{txt}", "--tokenizer", "{tok}", "--out", "{new}")
case("data-source-parquet-not", "data", "prepare", "--source", "parquet:{txt}", "--tokenizer", "{tok}", "--out", "{new}")
case("data-tokenizer-missing", "data", "prepare", "--source", "{txt}", "--tokenizer", "{missing}", "--out", "{new}")
case("data-val-fraction-negative", "data", "prepare", "--source", "{txt}", "--tokenizer", "{tok}", "--val-fraction", "-0.5", "--out", "{new}")
case("data-val-fraction-above", "data", "prepare", "--source", "{txt}", "--tokenizer", "{tok}", "--val-fraction", "1.5", "--out", "{new}")
case("data-val-fraction-nan", "data", "prepare", "--source", "{txt}", "--tokenizer", "{tok}", "--val-fraction", "nan", "--out", "{new}")
case("data-shard-tokens-zero", "data", "prepare", "--source", "{txt}", "--tokenizer", "{tok}", "--shard-tokens", "0", "--out", "{new}")
case("data-shard-tokens-negative", "data", "prepare", "--source", "{txt}", "--tokenizer", "{tok}", "--shard-tokens", "-9", "--out", "{new}")
case("data-out-is-file", "data", "prepare", "--source", "{txt}", "--tokenizer", "{tok}", "--out", "{txt}")
case("data-out-nonempty", "data", "prepare", "--source", "{txt}", "--tokenizer", "{tok}", "--out", "{nonempty}")
case("data-text-field-empty", "data", "prepare", "--source", "jsonl:{jsonl}", "--tokenizer", "{tok}", "--text-field", "", "--out", "{new}")
case("data-text-field-absent", "data", "prepare", "--source", "jsonl:{jsonl}", "--tokenizer", "{tok}", "--text-field", "nope", "--out", "{new}")
case("data-stats-missing", "data", "stats", "{missing}")
case("data-stats-empty-dir", "data", "stats", "{emptydir}")
case("data-stats-file", "data", "stats", "{txt}")
case("data-stats-bad-json", "data", "stats", "{data_badstats}")

# train / export (--print-config: a bad value accepted exits 0 at once instead of training)
case("train-no-config", "train")
case("train-clip-nan", "train", "--config", "tiny", "--train.clip", "nan", "--print-config")
case("train-eps-negative", "train", "--config", "tiny", "--train.eps", "-1", "--print-config")
case("train-steps-absurd", "train", "--config", "tiny", "--train.steps", "99999999999999999999", "--print-config")
case("train-override-typo", "train", "--config", "tiny", "--model.overrides.n_layers", "4", "--print-config")
case("train-peak-flops-inf", "train", "--config", "tiny", "--log.peak_flops", "inf", "--print-config")
case("train-recipe-unknown", "train", "--config", "nope", "--print-config")
case("train-config-missing", "train", "--config", "{missing}.toml", "--print-config")
case("train-config-binary", "train", "--config", "{bin_toml}", "--print-config")
case("train-config-not-utf8", "train", "--config", "{badutf8_toml}", "--print-config")
case("train-device-twice", "train", "--config", "tiny", "--device", "cpu", "--run.device", "cuda", "--print-config")
case("train-threads-twice", "train", "--config", "tiny", "--threads", "1", "--run.threads=2", "--print-config")
case("train-config-bad-toml", "train", "--config", "{bad_toml}", "--print-config")
case("train-config-empty-dir", "train", "--config", "{emptydir}", "--print-config")
case("train-set-steps-non-numeric", "train", "--config", "tiny", "--train.steps", "abc", "--print-config")
case("train-set-steps-negative", "train", "--config", "tiny", "--train.steps", "-5", "--print-config")
case("train-set-lr-nan", "train", "--config", "tiny", "--train.lr", "nan", "--print-config")
case("train-set-lr-negative", "train", "--config", "tiny", "--train.lr", "-1e-3", "--print-config")
case("train-set-batch-zero", "train", "--config", "tiny", "--train.batch_size", "0", "--print-config")
case("train-set-unknown-key", "train", "--config", "tiny", "--train.bogus", "1", "--print-config")
case("train-set-unknown-section", "train", "--config", "tiny", "--bogus.key", "1", "--print-config")
case("train-set-substrate-unknown", "train", "--config", "tiny", "--model.substrate", "nope", "--print-config")
case("train-set-no-value", "train", "--config", "tiny", "--train.steps", "--print-config")
case("export-missing", "export", "{missing}", "--out", "{new}")
case("export-empty-dir", "export", "{emptydir}", "--out", "{new}")
case("export-file", "export", "{txt}", "--out", "{new}")
case("export-model-dir", "export", "{model}", "--out", "{new}")
case("export-tokenizer-missing", "export", "{emptydir}", "--out", "{new}", "--tokenizer", "{missing}")

# eval
case("eval-no-args", "eval")
case("eval-model-missing", "eval", "--model", "{missing}", "--bench", "world-mc", "--data-dir", "{world}", "--out", "{new}")
case("eval-model-truncated", "eval", "--model", "{m_truncweights}", "--bench", "world-mc", "--data-dir", "{world}", "--out", "{new}")
case("eval-bench-unknown", "eval", "--model", "{model}", "--bench", "nope", "--data-dir", "{world}", "--out", "{new}")
case("eval-bench-empty", "eval", "--model", "{model}", "--bench", ",", "--data-dir", "{world}", "--out", "{new}")
case("eval-task-file-not-jsonl", "eval", "harness", "--model", "{model}", "--task-file", "{txt}", "--out", "{new}")
case("eval-task-file-missing", "eval", "--model", "{model}", "--task-file", "{missing}", "--out", "{new}")
case("eval-task-name-without-file", "eval", "--model", "{model}", "--task-name", "x", "--out", "{new}")
case("eval-ppl-data-not-prepared", "eval", "ppl", "--model", "{model}", "--data", "{emptydir}")
case("eval-ppl-data-missing", "eval", "ppl", "--model", "{model}", "--data", "{missing}")
case("eval-ppl-data-and-text", "eval", "ppl", "--model", "{model}", "--data", "{emptydir}", "--text", "{txt}")
case("eval-harness-tasks-no-include", "eval", "harness", "--model", "{model}", "--tasks", "x", "--out", "{new}")
case("eval-n-runs-zero", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{world}", "--n-runs", "0", "--out", "{new}")
case("eval-n-runs-negative", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{world}", "--n-runs", "-2", "--out", "{new}")
case("eval-batch-zero", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{world}", "--batch-size", "0", "--out", "{new}")
case("eval-limit-zero", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{world}", "--limit", "0", "--out", "{new}")
case("eval-limit-negative", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{world}", "--limit", "-1", "--out", "{new}")
case("eval-sample-size-zero", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{world}", "--sample-size", "0", "--out", "{new}")
case("eval-sample-size-word", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{world}", "--sample-size", "many", "--out", "{new}")
case("eval-device-unknown", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{world}", "--device", "nope", "--out", "{new}")
case("eval-dtype-unknown", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{world}", "--dtype", "float7", "--out", "{new}")
case("eval-threads-zero", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{world}", "--threads", "0", "--out", "{new}")
case("eval-data-dir-missing", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{missing}", "--out", "{new}")
case("eval-data-dir-empty", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{emptydir}", "--out", "{new}")
case("eval-data-dir-file", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{txt}", "--out", "{new}")
case("eval-world-broken-questions", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{world_badq}", "--out", "{new}")
case("eval-out-is-file", "eval", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{world}", "--out", "{txt}")
case("eval-protocol-unknown", "eval", "--model", "{model}", "--bench", "world-mc", "--protocol", "nope", "--out", "{new}")
case("ppl-text-missing", "eval", "ppl", "--model", "{model}", "--text", "{missing}")
case("ppl-text-empty", "eval", "ppl", "--model", "{model}", "--text", "{empty}")
case("ppl-text-dir", "eval", "ppl", "--model", "{model}", "--text", "{emptydir}")
case("ppl-text-not-utf8", "eval", "ppl", "--model", "{model}", "--text", "{badutf8}")
case("ppl-text-binary", "eval", "ppl", "--model", "{model}", "--text", "{bin}")
case("ppl-text-bad-jsonl", "eval", "ppl", "--model", "{model}", "--text", "{badjsonl}")
case("ppl-window-zero", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--window", "0")
case("ppl-window-one", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--window", "1")
case("ppl-window-negative", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--window", "-4")
case("ppl-window-beyond-context", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--window", "100000")
case("ppl-stride-zero", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--stride", "0")
case("ppl-stride-negative", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--stride", "-1")
case("ppl-stride-above-window", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--window", "16", "--stride", "32")
case("ppl-max-chars-zero", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--max-chars", "0")
case("ppl-max-chars-negative", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--max-chars", "-10")
case("ppl-batch-zero", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--batch-size", "0")
case("ppl-model-missing", "eval", "ppl", "--model", "{missing}", "--text", "{txt}")
case("ppl-model-truncated", "eval", "ppl", "--model", "{m_truncweights}", "--text", "{txt}")
case("ppl-model-no-weights", "eval", "ppl", "--model", "{m_noweights}", "--text", "{txt}")
case("ppl-model-bad-config", "eval", "ppl", "--model", "{m_badconfig}", "--text", "{txt}")
case("ppl-device-unknown", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--device", "nope")
case("ppl-dtype-unknown", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--dtype", "float7")
case("ppl-threads-negative", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--threads", "-1")
case("ppl-out-is-dir", "eval", "ppl", "--model", "{model}", "--text", "{txt}", "--out", "{emptydir}")
case("tasks-data-dir-missing", "eval", "tasks", "--data-dir", "{missing}", "--out", "{new}")
case("tasks-data-dir-empty", "eval", "tasks", "--data-dir", "{emptydir}", "--out", "{new}")
case("tasks-bench-unknown", "eval", "tasks", "--data-dir", "{world}", "--bench", "nope", "--out", "{new}")
case("tasks-limit-negative", "eval", "tasks", "--data-dir", "{world}", "--bench", "world-mc", "--limit", "-3", "--out", "{new}")
case("tasks-out-is-file", "eval", "tasks", "--data-dir", "{world}", "--bench", "world-mc", "--out", "{txt}")
case("tasks-broken-questions", "eval", "tasks", "--data-dir", "{world_badq}", "--bench", "world-mc", "--out", "{new}")
case("harness-model-missing", "eval", "harness", "--model", "{missing}", "--bench", "world-mc", "--data-dir", "{world}", "--out", "{new}")
case("harness-bench-unknown", "eval", "harness", "--model", "{model}", "--bench", "nope", "--data-dir", "{world}", "--out", "{new}")
case("harness-batch-zero", "eval", "harness", "--model", "{model}", "--bench", "world-mc", "--data-dir", "{world}", "--batch-size", "0", "--out", "{new}")

# analyze
case("analyze-model-missing", "analyze", "--model", "{missing}", "--out", "{new}")
case("analyze-model-truncated", "analyze", "--model", "{m_truncweights}", "--out", "{new}")
case("analyze-compare-missing", "analyze", "--model", "{model}", "--compare", "{missing}", "--out", "{new}")
case("analyze-world-missing", "analyze", "--model", "{model}", "--world", "{missing}", "--out", "{new}")
case("analyze-world-empty", "analyze", "--model", "{model}", "--world", "{emptydir}", "--out", "{new}")
case("analyze-world-bad-json", "analyze", "--model", "{model}", "--world", "{world_badjson}", "--out", "{new}")
case("analyze-items-missing", "analyze", "--model", "{model}", "--items", "{missing}", "--out", "{new}")
case("analyze-items-not-utf8", "analyze", "--model", "{model}", "--items", "{badutf8}", "--out", "{new}")
case("analyze-items-binary", "analyze", "--model", "{model}", "--items", "{bin}", "--out", "{new}")
case("analyze-items-bad-jsonl", "analyze", "--model", "{model}", "--items", "{badjsonl}", "--out", "{new}")
case("analyze-items-empty", "analyze", "--model", "{model}", "--items", "{empty}", "--out", "{new}")
case("analyze-layers-word", "analyze", "--model", "{model}", "--layers", "abc", "--out", "{new}")
case("analyze-layers-out-of-range", "analyze", "--model", "{model}", "--layers", "99", "--out", "{new}")
case("analyze-max-items-negative", "analyze", "--model", "{model}", "--max-items", "-1", "--out", "{new}")
case("analyze-per-entity-zero", "analyze", "--model", "{model}", "--per-entity", "0", "--out", "{new}")
case("analyze-k-zero", "analyze", "--model", "{model}", "--k", "0", "--out", "{new}")
case("analyze-folds-one", "analyze", "--model", "{model}", "--folds", "1", "--out", "{new}")
case("analyze-maps-unknown", "analyze", "--model", "{model}", "--maps", "umap", "--out", "{new}")
case("analyze-batch-zero", "analyze", "--model", "{model}", "--batch-size", "0", "--out", "{new}")
case("analyze-threads-zero", "analyze", "--model", "{model}", "--threads", "0", "--out", "{new}")
case("analyze-device-unknown", "analyze", "--model", "{model}", "--device", "nope", "--out", "{new}")
case("analyze-lang-unknown", "analyze", "--model", "{model}", "--world", "{world}", "--lang", "xx", "--out", "{new}")
case("analyze-out-is-file", "analyze", "--model", "{model}", "--out", "{txt}")
case("analyze-probe-style-unknown", "analyze", "--model", "{model}", "--probe-style", "nope", "--out", "{new}")

# compose / grow
case("compose-run-dir-nonempty", "compose", "--expert", "{model}", "--expert", "{model}", "--adapter-data", "{emptydir}", "--run-dir", "{nonempty}", "--out", "{new}")
case("compose-one-expert", "compose", "--expert", "{model}", "--out", "{new}")
case("compose-expert-missing", "compose", "--expert", "{missing}", "--expert", "{model}", "--out", "{new}")
case("compose-expert-truncated", "compose", "--expert", "{m_truncweights}", "--expert", "{model}", "--out", "{new}")
case("compose-weights-word", "compose", "--expert", "{model}", "--expert", "{model}", "--weights", "a,b", "--out", "{new}")
case("compose-weights-nan", "compose", "--expert", "{model}", "--expert", "{model}", "--weights", "1,nan", "--out", "{new}")
case("compose-weights-negative", "compose", "--expert", "{model}", "--expert", "{model}", "--weights=-1,2", "--out", "{new}")
case("compose-weights-count", "compose", "--expert", "{model}", "--expert", "{model}", "--weights", "1", "--out", "{new}")
case("compose-weights-zero", "compose", "--expert", "{model}", "--expert", "{model}", "--weights", "0,0", "--out", "{new}")
case("compose-adapter-steps-negative", "compose", "--expert", "{model}", "--expert", "{model}", "--adapter-data", "{emptydir}", "--adapter-steps", "-1", "--out", "{new}")
case("compose-adapter-hidden-negative", "compose", "--expert", "{model}", "--expert", "{model}", "--adapter", "--adapter-hidden", "-4", "--out", "{new}")
case("compose-lr-nan", "compose", "--expert", "{model}", "--expert", "{model}", "--adapter-data", "{emptydir}", "--lr", "nan", "--out", "{new}")
case("compose-batch-zero", "compose", "--expert", "{model}", "--expert", "{model}", "--adapter-data", "{emptydir}", "--batch-size", "0", "--out", "{new}")
case("compose-seq-len-zero", "compose", "--expert", "{model}", "--expert", "{model}", "--adapter-data", "{emptydir}", "--seq-len", "0", "--out", "{new}")
case("compose-adapter-data-missing", "compose", "--expert", "{model}", "--expert", "{model}", "--adapter-data", "{missing}", "--out", "{new}")
case("compose-finetune-no-data", "compose", "--expert", "{model}", "--expert", "{model}", "--finetune-steps", "5", "--out", "{new}")
case("compose-finetune-negative", "compose", "--expert", "{model}", "--expert", "{model}", "--finetune-steps", "-5", "--out", "{new}")
case("compose-out-is-file", "compose", "--expert", "{model}", "--expert", "{model}", "--out", "{txt}")
case("compose-out-nonempty", "compose", "--expert", "{model}", "--expert", "{model}", "--out", "{nonempty}")
case("compose-device-unknown", "compose", "--expert", "{model}", "--expert", "{model}", "--device", "nope", "--out", "{new}")
case("compose-threads-zero", "compose", "--expert", "{model}", "--expert", "{model}", "--threads", "0", "--out", "{new}")
case("grow-config-unknown", "grow", "--config", "nope")
case("grow-config-missing", "grow", "--config", "{missing}.toml")
case("grow-config-binary", "grow", "--config", "{bin_toml}")
case("grow-config-not-utf8", "grow", "--config", "{badutf8_toml}")
case("grow-config-bad-toml", "grow", "--config", "{bad_toml}")
case("grow-old-set", "grow", "--config", "grow-tiny", "--set", "train.steps=3")
case("grow-set-no-value", "grow", "--config", "grow-tiny", "--train.steps")
case("grow-set-non-numeric", "grow", "--config", "grow-tiny", "--train.steps", "abc")
case("grow-set-unknown-key", "grow", "--config", "grow-tiny", "--train.bogus", "1")
case("grow-set-unknown-section", "grow", "--config", "grow-tiny", "--bogus.steps", "1")
case("grow-set-negative", "grow", "--config", "grow-tiny", "--train.steps", "-1")
case("grow-set-bad-choice", "grow", "--config", "grow-tiny", "--train.precision", "fp16")
case("grow-no-config", "grow")
case("grow-baseline-steps-negative", "grow", "--config", "grow-tiny", "--baseline.steps", "-5")
case("grow-baseline-lr-nan", "grow", "--config", "grow-tiny", "--baseline.lr", "nan")
case("grow-n-layer-override", "grow", "--config", "grow-tiny", "--model.overrides.n_layer", "7")
case("grow-run-dir-foreign", "grow", "--config", "grow-tiny", "--run.dir", "{nonempty}")
case("grow-threads-twice", "grow", "--config", "grow-tiny", "--threads", "1", "--run.threads", "2")
case("grow-device-unknown", "grow", "--config", "grow-tiny", "--device", "nope")

# plan
case("plan-no-config", "plan")
case("plan-config-unknown", "plan", "--config", "nope")
case("plan-config-bad-toml", "plan", "--config", "{bad_toml}")
case("plan-gpus-zero", "plan", "--config", "tiny", "--gpus", "0")
case("plan-gpu-memory-unit", "plan", "--config", "tiny", "--gpu-memory", "80XB")
case("plan-gpu-memory-negative", "plan", "--config", "tiny", "--gpu-memory", "-8GB")
case("plan-gpu-unknown", "plan", "--config", "tiny", "--gpu", "Z9000")
case("plan-mfu-above-one", "plan", "--config", "tiny", "--mfu", "1.5")
case("plan-mfu-nan", "plan", "--config", "tiny", "--mfu", "nan")
case("plan-headroom-one", "plan", "--config", "tiny", "--headroom", "1")
case("plan-set-unknown-key", "plan", "--config", "tiny", "--train.bogus", "1")
case("plan-seq-len-past-context", "plan", "--config", "tiny", "--train.seq_len", "100000")
case("plan-threads-zero", "plan", "--config", "tiny", "--threads", "0")

# demo / ablate
case("demo-old-set", "demo", "--out", "{new}", "--set", "steps=600")
case("demo-set-non-numeric", "demo", "--out", "{new}", "--train.steps", "abc")
case("demo-set-negative", "demo", "--out", "{new}", "--train.steps", "-5")
case("demo-set-nan", "demo", "--out", "{new}", "--train.lr", "nan")
case("demo-set-moved-key", "demo", "--out", "{new}", "--demo.steps", "100")
case("demo-set-docking-non-numeric", "demo", "--out", "{new}", "--docking.grow_steps", "abc")
case("demo-set-docking-unknown-key", "demo", "--out", "{new}", "--docking.bogus", "1")
case("demo-set-unknown-key", "demo", "--out", "{new}", "--demo.bogus", "1")
case("demo-set-no-section", "demo", "--out", "{new}", "--steps", "3")
case("demo-substrates-unknown", "demo", "--out", "{new}", "--substrates", "nope")
case("demo-out-is-file", "demo", "--out", "{txt}")
case("demo-threads-twice", "demo", "--out", "{new}", "--threads", "1", "--demo.threads", "2")
case("ablate-config-missing", "ablate", "--config", "{missing}.toml")
case("ablate-config-binary", "ablate", "--config", "{bin_toml}")
case("ablate-config-not-utf8", "ablate", "--config", "{badutf8_toml}")
case("ablate-config-bad-toml", "ablate", "--config", "{bad_toml}")
case("ablate-config-empty-dir", "ablate", "--config", "{emptydir}")
case("ablate-old-set", "ablate", "--config", "{ablate_toml}", "--set", "n_runs=3")
case("ablate-set-non-numeric", "ablate", "--config", "{ablate_toml}", "--ablation.n_runs", "abc")
case("ablate-set-negative", "ablate", "--config", "{ablate_toml}", "--ablation.n_runs", "-1")
case("ablate-set-bad-list", "ablate", "--config", "{ablate_toml}", "--ablation.seeds", "[1,")
case("ablate-set-unknown-key", "ablate", "--config", "{ablate_toml}", "--ablation.bogus", "1")
case("ablate-set-no-value", "ablate", "--config", "{ablate_toml}", "--ablation.n_runs")
case("ablate-no-config", "ablate")
case("ablate-heldout-missing", "ablate", "--config", "{ablate_toml}", "--ablation.heldout", "{missing}")
case("ablate-heldout-not-prepared", "ablate", "--config", "{ablate_toml}", "--ablation.heldout", "{emptydir}")
case("ablate-heldout-split-bad", "ablate", "--config", "{ablate_toml}", "--ablation.heldout_split", "test")
case("ablate-heldout-window-one", "ablate", "--config", "{ablate_toml}", "--ablation.heldout_window", "1")
case("ablate-task-file-missing", "ablate", "--config", "{ablate_toml}", "--ablation.task_files", "{missing}.jsonl")
case("ablate-device-unknown", "ablate", "--config", "{ablate_toml}", "--device", "nope")
case("ablate-threads-zero", "ablate", "--config", "{ablate_toml}", "--threads", "0")


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Paths the placeholders stand for: good tiny inputs and damaged copies."""
    import torch  # noqa: F401  (conftest pins the thread count)

    root = tmp_path_factory.mktemp("bad")
    p = {"missing": root / "does-not-exist", "emptydir": root / "emptydir", "nonempty": root / "nonempty"}
    p["emptydir"].mkdir()
    p["nonempty"].mkdir()
    (p["nonempty"] / "notes.txt").write_text("the user's own file\n")
    p["txt"] = root / "good.txt"
    p["txt"].write_text("the cat sat on the mat. hello the test.\n" * 20, encoding="utf-8")
    p["empty"] = root / "empty.txt"
    p["empty"].write_bytes(b"")
    p["badutf8"] = root / "bad-utf8.txt"
    p["badutf8"].write_bytes("the caf".encode() + b"\xc3\x28 \xff\xfe text\n" * 5)
    p["bin"] = root / "binary.bin"
    p["bin"].write_bytes(bytes(range(256)) * 8)
    p["badjsonl"] = root / "bad.jsonl"
    p["badjsonl"].write_text('{"text": "fine"}\n{"text": "cut in the mid\n[1, 2]\n', encoding="utf-8")
    p["jsonl"] = root / "good.jsonl"
    p["jsonl"].write_text('{"text": "the cat"}\n{"text": "the dog"}\n', encoding="utf-8")
    for name, data in (("bin_toml", bytes(range(256))), ("badutf8_toml", b"[run]\nname = \"\xff\xfe\"\n"),
                       ("bad_toml", b"[run\nname = = 3\n")):
        p[name] = root / f"{name}.toml"
        p[name].write_bytes(data)

    p["tok"] = root / "tok"
    build_from_stats([{"lang": "en", "language_name": "English",
                       "top_ngrams": {2: [("th", 50), ("he", 40)], 3: [("the", 20)]}}]).save_pretrained(p["tok"])
    p["tok_trunc"] = root / "tok-trunc"
    shutil.copytree(p["tok"], p["tok_trunc"])
    data = (p["tok"] / "tokenizer.json").read_bytes()
    (p["tok_trunc"] / "tokenizer.json").write_bytes(data[: len(data) // 2])
    p["tok_bin"] = root / "tok-bin"
    shutil.copytree(p["tok"], p["tok_bin"])
    (p["tok_bin"] / "tokenizer.json").write_bytes(bytes(range(256)) * 4)

    assert main(["substrate", "build", "--kind", "bits", "--vocab-size", "64", "--width", "16",
                 "--out", str(root / "sub.safetensors")]) == 0
    p["sub"] = root / "sub.safetensors"
    p["sub_trunc"] = root / "sub-trunc.safetensors"
    data = p["sub"].read_bytes()
    p["sub_trunc"].write_bytes(data[: len(data) // 2])

    p["model"] = root / "model"
    assert main(["init", "--preset", "tiny", "--substrate", "16-bit", "--tokenizer", str(p["tok"]),
                 "--model.overrides.n_layer", "1", "--out", str(p["model"])]) == 0
    weights = (p["model"] / "model.safetensors").read_bytes()
    config = (p["model"] / "config.json").read_text()

    def damaged(name, **files):
        d = root / name
        d.mkdir()
        for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(p["model"] / f, d / f)
        for f, content in files.items():
            target = d / f.replace("_", ".")
            if content is None:
                target.unlink(missing_ok=True)
            elif isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        if "model_safetensors" not in files:
            (d / "model.safetensors").symlink_to(p["model"] / "model.safetensors")
        p[f"m_{name}"] = d

    damaged("noweights", model_safetensors=None)
    damaged("truncweights", model_safetensors=weights[: len(weights) // 3])
    damaged("binweights", model_safetensors=bytes(range(256)) * 64)
    damaged("badconfig", config_json="{not json")
    damaged("truncconfig", config_json=config[: len(config) // 2])
    damaged("utf8config", config_json=b'{"model_type": "\xff\xfe"}')
    damaged("listconfig", config_json="[1, 2, 3]")

    assert main(["corpus", "world", "--size", "30KB", "--langs", "en", "--questions", "5",
                 "--out", str(root / "world")]) == 0
    p["world"] = root / "world"
    p["world_copy"] = root / "world-copy"
    shutil.copytree(p["world"], p["world_copy"])
    p["world_badq"] = root / "world-badq"
    shutil.copytree(p["world"], p["world_badq"])
    (p["world_badq"] / "questions" / "mc.jsonl").write_text('{"question": "cut\n', encoding="utf-8")
    p["world_badjson"] = root / "world-badjson"
    shutil.copytree(p["world"], p["world_badjson"])
    (p["world_badjson"] / "world.json").write_text('{"entities": [', encoding="utf-8")

    p["user_corpus"] = root / "user-corpus"
    p["user_corpus"].mkdir()
    (p["user_corpus"] / "train.jsonl").write_text('{"text": "my own corpus"}\n', encoding="utf-8")
    p["dangling"] = root / "dangling"
    p["dangling"].symlink_to(root / "nowhere" / "target")
    p["fifo"] = root / "pipe.txt"
    os.mkfifo(p["fifo"])
    p["tok_other"] = root / "tok-other"  # the same size as {tok}, other n-grams
    build_from_stats([{"lang": "en", "language_name": "English",
                       "top_ngrams": {2: [("qz", 50), ("xj", 40)], 3: [("qzx", 20)]}}]).save_pretrained(p["tok_other"])
    p["data_badstats"] = root / "data-badstats"
    p["data_badstats"].mkdir()
    (p["data_badstats"] / "stats.json").write_bytes(b'{"train": {"tok\xff')
    p["ablate_toml"] = root / "ablate.toml"
    p["ablate_toml"].write_text(f'[ablation]\nout = "{root / "ablate-out"}"\n', encoding="utf-8")
    return {k: str(v) for k, v in p.items()}


# -- the check ------------------------------------------------------------------------------------


def resolve(arg: str, values: dict[str, str]) -> str:
    """Replace ``{name}`` placeholders (only known names: JSON braces stay)."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), arg)


def run_case(argv: list[str], capsys) -> tuple[int, str, str, bool]:
    """(exit status, stdout, stderr, argparse usage error?) of ``main(argv)``."""
    usage = False
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse: usage error (2) or --help (0)
        rc, usage = (exc.code if isinstance(exc.code, int) else 1), True
    out, err = capsys.readouterr()
    return rc, out, err, usage


def check_rejected(rc: int, out: str, err: str, usage: bool) -> None:
    assert "Traceback" not in out + err, f"traceback printed:\n{err}"
    assert rc not in (0, None), f"bad input accepted with exit 0; stdout: {out[-300:]!r} stderr: {err[-300:]!r}"
    lines = err.strip().splitlines()
    if usage:
        assert rc == 2 and lines and ": error: " in lines[-1], f"argparse exit {rc}: {err!r}"
        return
    assert len(lines) == 1, f"stderr is not one line: {err!r}"
    assert lines[0].startswith("error: "), f"stderr does not start with 'error: ': {err!r}"
    assert not lines[0].startswith("error: internal error"), f"reached the backstop (not validated): {lines[0]}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", [pytest.param(argv, id=cid) for cid, argv in CASES])
def test_bad_input_is_one_line_error(argv, ws, tmp_path, capsys):
    values = {**ws, "new": str(tmp_path / "new-out")}
    resolved = [resolve(a, values) for a in argv]
    rc, out, err, usage = run_case(resolved, capsys)
    check_rejected(rc, out, err, usage)


def test_cases_are_unique_and_cover_every_subcommand():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    covered = {argv[0] for _, argv in CASES}
    assert set(sub.choices) - covered == set(), "subcommands without bad-input cases"


def test_the_check_fails_on_what_it_must_catch():
    """The checker itself: exit 0, a traceback, two lines, a backstop line all fail."""
    for bad in [(0, "", "", False), (2, "", "Traceback (most recent call last):\n", False),
                (2, "", "error: one\nerror: two\n", False), (2, "", "warning: x\n", False),
                (1, "", "error: internal error: KeyError: 'x' (a bug: please report it)\n", False),
                (0, "", "usage: x\nx: error: y\n", True)]:
        with pytest.raises(AssertionError):
            check_rejected(*bad)
    check_rejected(2, "", "error: --window must be at least 2; pass e.g. --window 512\n", False)
    check_rejected(2, "", "usage: substrate-lm eval\nsubstrate-lm eval: error: argument --n-runs: bad\n", True)


def markdown_table() -> str:
    rows = ["| case | command line | expected |", "|---|---|---|"]
    for cid, argv in CASES:
        shown = " ".join(json.dumps(a, ensure_ascii=True) if (not a or " " in a or "\\" in repr(a)) else a
                         for a in argv)
        rows.append(f"| {cid} | `substrate-lm {shown}` | one-line error, exit != 0 |")
    return "\n".join(rows)


# -- the backstop in cli/main.py ------------------------------------------------------------------


def _with_func(monkeypatch, func):
    """Run ``substrate-lm corpus world ...`` with its command function replaced by ``func``."""
    monkeypatch.setattr(corpus_cli, "cmd_world", func)
    return lambda: main(["corpus", "world", "--out", "x"])


def test_backstop_internal_error_is_one_line_exit_1(monkeypatch, capsys):
    monkeypatch.delenv("SUBSTRATE_LM_DEBUG", raising=False)

    def boom(args):
        raise KeyError("layer_9")

    assert _with_func(monkeypatch, boom)() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: internal error: KeyError: 'layer_9' (a bug: please report it; rerun with "
                          "SUBSTRATE_LM_DEBUG=1 for the traceback)")


def test_backstop_debug_env_reraises(monkeypatch):
    monkeypatch.setenv("SUBSTRATE_LM_DEBUG", "1")

    def boom(args):
        raise ZeroDivisionError("x")

    with pytest.raises(ZeroDivisionError):
        _with_func(monkeypatch, boom)()


def test_backstop_oserror_names_the_file(monkeypatch, capsys, tmp_path):
    import errno
    import os

    target = tmp_path / "ckpt" / "model.pt"

    def full_disk(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    assert _with_func(monkeypatch, full_disk)() == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {target}: No space left on device; free some disk space or write to another disk"

    def denied(args):
        open(tmp_path, "w")  # a folder: IsADirectoryError, a wrong path (exit 2)

    assert _with_func(monkeypatch, denied)() == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path}: Is a directory") and "\n" not in err


def test_backstop_library_oserror_keeps_its_message(monkeypatch, capsys):
    def hub(args):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files of org/model.\nCheck it.")

    assert _with_func(monkeypatch, hub)() == 1
    err = capsys.readouterr().err
    assert err == "error: We couldn't connect to 'https://huggingface.co' to load the files of org/model. Check it.\n"


def test_backstop_undecodable_user_file_is_named(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_bytes(b"ok \xff\xfe")

    def read(args):
        with open(bad, encoding="utf-8") as fh:
            return len(fh.read())

    assert _with_func(monkeypatch, read)() == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad} is not valid UTF-8 text (invalid start byte, byte b'\\xff' at offset 3)")


def test_substrate_error_message_is_kept_on_one_line(monkeypatch, capsys):
    def two_lines(args):
        raise SubstrateError("first part\nsecond part")

    assert _with_func(monkeypatch, two_lines)() == 2
    assert capsys.readouterr().err == "error: first part second part\n"


def test_argparse_usage_errors_stay_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "ppl", "--model", "m", "--text", "t", "--window", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and "argument --window: must be a positive integer (>= 1), got 0" in err


def test_non_utf8_argument_that_is_an_existing_path_is_allowed(tmp_path, capsys):
    odd = tmp_path / "caf\udce9"  # a Latin-1 file name on a UTF-8 system
    odd.write_text("x")
    _check_argv_utf8([str(odd)])
    with pytest.raises(SubstrateError, match="argument 1 .*not valid UTF-8"):
        _check_argv_utf8([str(tmp_path / "missing\udce9")])


# -- shared helpers in cli/common.py --------------------------------------------------------------


def test_check_safetensors_catches_truncation_and_padding(tmp_path):
    from safetensors.torch import save_file
    import torch

    good = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(10, 4)}, str(good))
    check_safetensors(good)
    data = good.read_bytes()
    for name, content in (("cut", data[:-1]), ("padded", data + b"\0"), ("tiny", data[:5]), ("junk", b"\xff" * 64)):
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(content)
        with pytest.raises(SubstrateError, match=str(p)):
            check_safetensors(p)


def test_argument_types_reject_bad_numbers():
    import argparse

    assert common.positive_int("3") == 3 and common.nonneg_int("0") == 0 and common.fraction("0.25") == 0.25
    assert common.unit_interval("1") == 1.0 and common.positive_float("1e-4") == 1e-4
    for fn, text in ((common.positive_int, "0"), (common.positive_int, "x"), (common.nonneg_int, "-1"),
                     (common.positive_float, "nan"), (common.positive_float, "inf"), (common.positive_float, "0"),
                     (common.fraction, "1"), (common.fraction, "-0.1"), (common.unit_interval, "0"),
                     (common.finite_float, "-inf")):
        with pytest.raises(argparse.ArgumentTypeError):
            fn(text)


def test_runtime_args_validate_device_and_set_threads(monkeypatch):
    import argparse

    import torch

    p = argparse.ArgumentParser()
    add_runtime_args(p)
    before = torch.get_num_threads()
    try:
        assert apply_runtime(p.parse_args(["--device", "cpu", "--threads", "2"])) == "cpu"
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert apply_runtime(p.parse_args([])) in ("cpu", "cuda")
    for bad in ("nope", "cuda:99" if torch.cuda.is_available() else "cuda"):
        with pytest.raises(SubstrateError, match="--device"):
            apply_runtime(p.parse_args(["--device", bad]))


def test_corpus_world_overwrite_replaces_an_existing_corpus(tmp_path, capsys):
    out = tmp_path / "w"
    base = ["corpus", "world", "--size", "20KB", "--langs", "en", "--questions", "2", "--out", str(out)]
    assert main(base + ["--seed", "1"]) == 0
    first = (out / "world.json").read_bytes()
    assert main(base + ["--seed", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "world.json").read_bytes() == first  # refused: untouched
    assert main(base + ["--seed", "2", "--overwrite"]) == 0
    assert (out / "world.json").read_bytes() != first


@pytest.mark.parametrize("action", ["encode", "decode"])
def test_stdin_that_is_not_utf8_is_one_line_error(action, ws, monkeypatch, capsys):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"12 \xff\xfe 13"), encoding="utf-8"))
    rc, out, err, usage = run_case(["tokenizer", action, "-t", ws["tok"]], capsys)
    check_rejected(rc, out, err, usage)
    assert "standard input is not valid UTF-8" in err


if __name__ == "__main__":  # pragma: no cover
    print(markdown_table())
    print(f"\n{len(CASES)} cases")
