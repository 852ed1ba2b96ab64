"""Instruction data: masked labels, plain-text encoding, a deterministic split, padded batches, errors."""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_helpers import make_char_tokenizer  # noqa: E402

from substrate_lm.data.instructions import (IGNORE_INDEX, InstructionSplit, encode_records,  # noqa: E402
                                            load_instructions)
from substrate_lm.errors import SubstrateError  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return make_char_tokenizer()


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records),
                    encoding="utf-8")
    return path


def pairs(n: int) -> list[dict]:
    return [{"prompt": f"Q: {i} plus 1?\nA:", "response": f" {i + 1}."} for i in range(n)]


def ids_of(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_prompt_is_masked_and_response_plus_eos_is_learned(tmp_path, tok):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Q: hi?\nA:", "response": " yes"}, {"text": "a cat."}])
    pair, text = encode_records(f, tok)
    p, r, eos = ids_of(tok, "Q: hi?\nA:"), ids_of(tok, " yes"), tok.eos_token_id
    assert pair.ids.tolist() == p + r + [eos]
    assert pair.labels.tolist() == [IGNORE_INDEX] * len(p) + r + [eos]
    assert (pair.line, text.line) == (1, 2)
    t = ids_of(tok, "a cat.") + [eos]
    assert text.ids.tolist() == t and text.labels.tolist() == t  # plain text: every token learned


def test_special_token_strings_stay_characters(tmp_path, tok):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "say </s>", "response": " <pad>"}])
    (ex,) = encode_records(f, tok)
    specials = {tok.eos_token_id, tok.pad_token_id}
    assert [i for i in ex.ids.tolist()[:-1] if i in specials] == []  # only the eos we place
    assert ex.ids[-1] == tok.eos_token_id


def test_split_is_deterministic_order_free_and_never_empty(tmp_path, tok):
    recs = pairs(40)
    a = load_instructions(write_jsonl(tmp_path / "a.jsonl", recs), tok, seq_len=32, val_fraction=0.1)
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    b = load_instructions(write_jsonl(tmp_path / "b.jsonl", shuffled), tok, seq_len=32, val_fraction=0.1)
    key = lambda split: sorted(e.ids.tobytes() for e in split.examples)  # noqa: E731
    assert key(a.val) == key(b.val) and len(a.val) == 4 and len(a.train) == 36
    other = load_instructions(tmp_path / "a.jsonl", tok, seq_len=32, val_fraction=0.1, seed=1)
    assert key(other.val) != key(a.val)  # the seed keys the split
    tiny = load_instructions(write_jsonl(tmp_path / "c.jsonl", pairs(2)), tok, seq_len=32, val_fraction=0.01)
    assert (len(tiny.train), len(tiny.val)) == (1, 1)


def test_batches_are_padded_aligned_and_cut(tmp_path, tok):
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ab", "response": "cd"}, {"text": "x" * 50}])
    exs = encode_records(f, tok)
    split = InstructionSplit(exs, pad_id=tok.pad_token_id)
    x, y = split.get_batch(0, 2, 8, mode="sequential")
    assert x.shape == y.shape == (2, 8) and x.dtype == y.dtype == torch.long
    short = exs[0]  # 5 tokens: a b c d eos -> 4 inputs, targets are labels[1:]
    assert x[0, :4].tolist() == short.ids[:4].tolist() and (x[0, 4:] == tok.pad_token_id).all()
    assert y[0, :4].tolist() == short.labels[1:].tolist() and (y[0, 4:] == IGNORE_INDEX).all()
    assert y[0, :4].tolist() == [IGNORE_INDEX] + short.ids[2:].tolist()  # "b" is prompt, "c d eos" learned
    assert x[1].tolist() == exs[1].ids[:8].tolist() and y[1].tolist() == exs[1].ids[1:9].tolist()  # cut


def test_random_batches_are_pure_epochs_and_rank_slices(tmp_path, tok):
    exs = encode_records(write_jsonl(tmp_path / "d.jsonl", pairs(10)), tok)
    split = InstructionSplit(exs, pad_id=0)
    epoch = split.rows(0, 5, seed=3) + split.rows(1, 5, seed=3)
    assert sorted(epoch) == list(range(10))  # one epoch sees every example once
    assert split.rows(0, 5, seed=3) == split.rows(0, 5, seed=3) != split.rows(0, 5, seed=4)
    # two ranks with batch 2 see exactly what one process with batch 4 sees
    assert split.rows(2, 2, seed=3, rank=0, world_size=2) + split.rows(2, 2, seed=3, rank=1, world_size=2) \
        == split.rows(2, 4, seed=3)
    x1, y1 = split.get_batch(7, 3, 16, seed=3)
    x2, y2 = split.get_batch(7, 3, 16, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_long_prompts_are_cut_and_reported(tmp_path, tok):
    recs = pairs(4) + [{"prompt": "p" * 40, "response": " r"}]
    notes = []
    data = load_instructions(write_jsonl(tmp_path / "d.jsonl", recs), tok, seq_len=32, warn=notes.append)
    assert data.stats["truncated"] == 1 and data.stats["dropped"] == 1
    assert len(data.train) + len(data.val) == 4
    assert len(notes) == 1 and "1 of 5" in notes[0] and "--seq-len" in notes[0]


def test_gzip_and_json_array_files(tmp_path, tok):
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in pairs(3)).encode()))
    arr = tmp_path / "d.json"
    arr.write_text(json.dumps(pairs(3), indent=1), encoding="utf-8")
    plain = encode_records(write_jsonl(tmp_path / "d.jsonl", pairs(3)), tok)
    for f in (gz, arr):
        assert [e.ids.tolist() for e in encode_records(f, tok)] == [e.ids.tolist() for e in plain]


@pytest.mark.parametrize("lines, match", [
    (['{"prompt": "a", "response": "b"}', '{"prompt": "a", "resp'], r"d\.jsonl:2: invalid JSON"),
    (["", "  "], "holds no records"),
    (['{"prompt": "a"}'], r":1: the record has no 'response' field"),
    (['{"question": "a", "answer": "b"}'], r":1: expected a 'prompt' and 'response'.*question"),
    (['{"messages": [{"role": "user", "content": "hi"}]}'], "prompt/response pairs"),
    (['["a", "b"]'], "an empty JSON array|expected a JSON object"),
    (['{"prompt": "a", "response": 3}'], "'response' holds int"),
    (['{"text": "only one"}'], "1 usable example"),
])
def test_bad_files_are_one_line_errors(tmp_path, tok, lines, match):
    f = write_jsonl(tmp_path / "d.jsonl", lines)
    with pytest.raises(SubstrateError, match=match) as exc:
        load_instructions(f, tok, seq_len=16)
    assert "\n" not in str(exc.value)


def test_missing_file_and_bad_utf8(tmp_path, tok):
    with pytest.raises(SubstrateError, match="does not exist"):
        load_instructions(tmp_path / "nope.jsonl", tok, seq_len=16)
    f = tmp_path / "latin.jsonl"
    f.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(SubstrateError, match=r"latin\.jsonl:2: not valid UTF-8"):
        load_instructions(f, tok, seq_len=16)


def test_copies_of_a_record_stay_in_one_split(tmp_path, tok):
    recs = pairs(6) * 5  # every record five times
    data = load_instructions(write_jsonl(tmp_path / "d.jsonl", recs), tok, seq_len=32, val_fraction=0.2)
    val = {e.ids.tobytes() for e in data.val.examples}
    assert len(data.val) == 5 and len(val) == 1
    assert not val & {e.ids.tobytes() for e in data.train.examples}
    same = load_instructions(write_jsonl(tmp_path / "s.jsonl", pairs(1) * 3), tok, seq_len=32)
    assert (len(same.train), len(same.val)) == (2, 1)  # one record only: its copies are split


def test_a_byte_order_mark_is_not_an_error(tmp_path, tok):
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in pairs(2)).encode())
    assert len(encode_records(f, tok)) == 2


def test_a_large_group_of_copies_never_overfills_validation(tmp_path, tok):
    recs = [{"prompt": "the cat", "response": " sat"}] * 100 + pairs(2)
    f = write_jsonl(tmp_path / "d.jsonl", recs)
    for seed in range(12):  # the 100 copies come first in hash order for some seeds
        data = load_instructions(f, tok, seq_len=32, val_fraction=0.05, seed=seed)
        assert 1 <= len(data.val) <= 5 and len(data.train) >= 97, (seed, data.stats)
        assert len(data.val) == 2  # both distinct records fit; the big group is skipped
    # every group larger than the share: copies are split, never all of them
    only_big = write_jsonl(tmp_path / "big.jsonl", pairs(1) * 10 + pairs(2)[1:] * 10)
    data = load_instructions(only_big, tok, seq_len=32, val_fraction=0.05)
    assert (len(data.val), len(data.train)) == (1, 19)


def test_a_split_without_wrap_counts_every_example_once_over_ranks(tmp_path, tok):
    exs = encode_records(write_jsonl(tmp_path / "d.jsonl", pairs(10)), tok)
    split = InstructionSplit(exs, pad_id=tok.pad_token_id, wrap=False)
    assert split.rows(1, 8, mode="sequential") == [8, 9] + [-1] * 6
    for mode in ("sequential", "random"):
        for world, batch in ((1, 8), (2, 4), (3, 2)):
            steps = -(-10 // (batch * world))
            seen = [i for s in range(steps) for r in range(world)
                    for i in split.rows(s, batch, seed=1, mode=mode, rank=r, world_size=world)]
            assert sorted(i for i in seen if i >= 0) == list(range(10)), (mode, world, batch)
    x, y = split.get_batch(1, 8, 16, mode="sequential")
    assert (x[2:] == tok.pad_token_id).all() and (y[2:] == IGNORE_INDEX).all() and (y[:2] != IGNORE_INDEX).any()
    data = load_instructions(write_jsonl(tmp_path / "e.jsonl", pairs(20)), tok, seq_len=32, val_fraction=0.2)
    assert not data.val.wrap and data.train.wrap  # validation never wraps, training does


def test_learned_tokens_counts_exactly_the_scored_targets(tmp_path, tok):
    recs = pairs(5) + [{"text": "a plain cat."}, {"prompt": "p" * 10, "response": " r" * 20}, {"text": "y" * 60}]
    data = load_instructions(write_jsonl(tmp_path / "d.jsonl", recs), tok, seq_len=24, val_fraction=0.2)
    scored = 0
    for split in (data.train, data.val):
        _, y = split.get_batch(0, len(split), 24, mode="sequential")
        scored += int((y != IGNORE_INDEX).sum())
    assert data.stats["learned_tokens"] == scored


def test_a_lone_surrogate_is_a_one_line_error(tmp_path, tok):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "q", "response": "ok"}\n{"prompt": "a\\ud800", "response": "b"}\n', encoding="utf-8")
    with pytest.raises(SubstrateError, match=r"d\.jsonl:2: field 'prompt' holds an unpaired surrogate") as exc:
        load_instructions(f, tok, seq_len=16)
    assert "\n" not in str(exc.value)


def test_batches_are_as_wide_as_their_longest_row(tmp_path, tok):
    recs = [{"prompt": "ab", "response": "cd"}, {"prompt": "abc", "response": "defgh"}, {"text": "x" * 50}]
    exs = encode_records(write_jsonl(tmp_path / "w.jsonl", recs), tok)
    split = InstructionSplit(exs, pad_id=tok.pad_token_id)
    fixed = InstructionSplit(exs, pad_id=tok.pad_token_id, pad_to="seq_len")
    x, y = split.get_batch(0, 2, 32, mode="sequential")  # rows of 4 and 8 inputs
    assert x.shape == y.shape == (2, 8)
    fx, fy = fixed.get_batch(0, 2, 32, mode="sequential")
    assert fx.shape == (2, 32) and torch.equal(fx[:, :8], x) and torch.equal(fy[:, :8], y)
    assert (fy[:, 8:] == IGNORE_INDEX).all()  # the fixed width only added padding
    assert split.get_batch(1, 2, 32, mode="sequential")[0].shape == (2, 32)  # the cut 51-token text
    # an evaluation split past its end: empty rows are padding only, at least one column
    val = InstructionSplit(exs[:1], pad_id=tok.pad_token_id, wrap=False)
    assert val.get_batch(1, 2, 32, mode="sequential")[0].shape == (2, 1)
    with pytest.raises(SubstrateError, match="pad_to"):
        InstructionSplit(exs, pad_id=0, pad_to="max")
