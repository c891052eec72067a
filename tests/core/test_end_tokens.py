"""Several end tokens per tokenizer (where they come from, how a program ends on them) and the
alignment checks between a model and a tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import GuidanceBackend, GuidanceGrammar
from core.errors import TokenizerError
from core.tokenizers import Tokenizer, load_tokenizer, vocabulary_differences

# A chat vocabulary: two end tokens of a turn and one of the text, as Llama 3 Instruct has them.
CHAT = [b"<|end_of_text|>", b"<|eot_id|>", b"<|eom_id|>", b"<|begin_of_text|>", b"a", b"b", b"ab", b"{", b"}", b'"']
END_OF_TEXT, EOT, EOM, BOS = 0, 1, 2, 3
A, B, AB = 4, 5, 6


def _chat(**overrides: object) -> Tokenizer:
    args: dict[str, object] = {"eos_token_ids": [END_OF_TEXT, EOT, EOM], "bos_token_id": BOS}
    args.update(overrides)
    return Tokenizer.from_vocabulary("chat", CHAT, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("end", [END_OF_TEXT, EOT, EOM])
def test_a_program_ends_on_any_of_the_end_tokens(end: int) -> None:
    tok = _chat()
    program = GuidanceBackend(tokenizer=tok).compile_regex("ab")
    grammar = GuidanceGrammar(program, tok)
    assert grammar.accept_tokens([A, B])
    bitmask = GuidanceBackend(tokenizer=tok).allocate_bitmask(1)
    grammar.fill_next_token_bitmask(bitmask, 0)
    allowed = {t for t in range(tok.vocab_size) if bitmask[0, t // 32] >> (t % 32) & 1}
    assert allowed == {END_OF_TEXT, EOT, EOM}
    assert grammar.accept_tokens([end]) and grammar.is_terminated()
    assert grammar.state.end_token == end
    assert grammar.get_variable_values() == {}


def test_end_tokens_in_one_accept_stop_the_count_at_the_first() -> None:
    tok = _chat()
    program = GuidanceBackend(tokenizer=tok).compile_regex("ab")
    assert GuidanceGrammar(program, tok).validate_tokens([AB, EOM, A]) == [AB, EOM]
    grammar = GuidanceGrammar(program, tok)
    assert grammar.accept_tokens([AB, EOT]) and grammar.state.end_token == EOT
    grammar.rollback(1)
    assert not grammar.is_terminated() and grammar.state.end_token is None
    assert not GuidanceGrammar(program, tok).accept_tokens([A, EOT])  # not complete yet


def test_the_end_token_set_is_part_of_the_digest_but_not_its_order() -> None:
    assert _chat().digest == _chat(eos_token_ids=[EOM, EOT, END_OF_TEXT]).digest
    assert _chat().digest != _chat(eos_token_ids=[EOT]).digest
    assert _chat().digest != _chat(bos_token_id=None).digest


def _chat_json() -> str:
    hf = pytest.importorskip("tokenizers")
    tok = hf.Tokenizer(hf.models.BPE())
    tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = hf.decoders.ByteLevel()
    trainer = hf.trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"],
        initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["a tiny corpus of text", '{"json": [1, 2, 3]}'] * 10, trainer)
    text: str = tok.to_str()
    return text


def test_hf_end_tokens_come_from_the_generation_config_then_the_tokenizer_config() -> None:
    text = _chat_json()
    tok = Tokenizer.from_hf_json(
        "llama",
        text,
        tokenizer_config={"eos_token": "<|eot_id|>", "bos_token": {"content": "<|begin_of_text|>"}},
        generation_config={"eos_token_id": [1, 3], "bos_token_id": 0},
    )
    assert tok.eos_token_ids == (1, 3, 2)
    assert tok.bos_token_id == 0
    only_generation = Tokenizer.from_hf_json("llama", text, generation_config={"eos_token_id": 2})
    assert only_generation.eos_token_ids == (2,)
    assert only_generation.digest != tok.digest


def test_hf_end_tokens_given_replace_the_configuration() -> None:
    tok = Tokenizer.from_hf_json("llama", _chat_json(), generation_config={"eos_token_id": 1}, eos_token_ids=[3, 2])
    assert tok.eos_token_ids == (3, 2) and tok.eos_token_id == 3


@pytest.mark.parametrize(
    ("ends", "message"),
    [([], "at least one end token"), ([10**6], "not an id"), ([40], "ordinary"), ([-1], "not an id")],
)
def test_hf_end_tokens_that_are_not_control_tokens_of_the_file_are_refused(ends: list[int], message: str) -> None:
    with pytest.raises(TokenizerError, match=message):
        Tokenizer.from_hf_json("llama", _chat_json(), eos_token_ids=ends)


def test_hf_configuration_naming_an_unknown_token_is_refused() -> None:
    with pytest.raises(TokenizerError, match="eos_token"):
        Tokenizer.from_hf_json("llama", _chat_json(), tokenizer_config={"eos_token": "<|im_end|>"})


def test_a_model_directory_gives_its_configured_end_tokens(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(_chat_json())
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 2, 3]}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|eot_id|>"}))
    tok = load_tokenizer(str(tmp_path))
    assert tok.name == tmp_path.name and tok.eos_token_ids == (1, 2, 3)
    assert load_tokenizer(str(tmp_path), eos_token_ids=[2]).eos_token_ids == (2,)


def test_an_aligned_model_has_no_differences() -> None:
    tok = _chat()
    sample = {i: tok.token_bytes(i) for i in range(tok.vocab_size)}
    assert vocabulary_differences(tok, vocab_size=64, eos_token_ids=[EOM, EOT, END_OF_TEXT], token_bytes=sample) == []
    assert vocabulary_differences(tok) == []


def test_each_difference_from_the_model_is_named() -> None:
    tok = _chat()
    sample = {A: b"a", B: b"B", 99: b"zz"}
    width, ends, tokens = vocabulary_differences(tok, vocab_size=8, eos_token_ids=[END_OF_TEXT], token_bytes=sample)
    assert "logits have 8 ids" in width and "has 10" in width
    assert "[0]" in ends and "[0, 1, 2]" in ends
    assert "2 of 3 sampled tokens differ" in tokens and "b'B'" in tokens and "99" in tokens
