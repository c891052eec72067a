"""Tokenizers: the embedded tekken default, HF tokenizer.json files, small synthetic vocabularies."""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import llguidance
import pytest

from core.errors import InvalidTokens, TokenizerError, UnknownTokenizer
from core.tokenizers import Tokenizer, load_default_tokenizer, load_tokenizer
from core.tokenizers.tekken import TEKKEN_FILE

REPO = Path(__file__).resolve().parents[2]

# Obtained from mistral-common 1.13.1's own Tekkenizer (tekken_240911.json, read from the wheel)
# and, independently, from a tiktoken Encoding built from that JSON (+1000) and llguidance.
KNOWN_IDS = {
    "Hello world": [22177, 4304],
    "The quick brown fox jumps over the lazy dog.": [
        1784,
        7586,
        22980,
        94137,
        72993,
        2136,
        1278,
        42757,
        10575,
        1046,
    ],
    '{"name":"Ada","age":36}': [19227, 2391, 12592, 1065, 3190, 8011, 1541, 2811, 1051, 1054, 1125],
    "日本語 🙂\n\tx = [1, 2]": [
        10008,
        15199,
        119685,
        1153,
        1130,
        1010,
        47623,
        1376,
        1766,
        1049,
        1044,
        1032,
        1050,
        1093,
    ],
    "</s>": [1885, 1115, 1062],
}
TEKKEN_DIGEST = "4d812a5a2f6d65fdeff46b4f235b37ef6a26940c088a59b230373caa194e2ea3"

VARIED_TEXTS = [
    "",
    " ",
    "\n",
    "\r\n\r\n",
    "   leading and trailing   ",
    "Hello, world!",
    "naïve café — déjà vu, Straße, ÆØÅ",
    "日本語のテキストと中文文本和한국어",
    "emoji 🙂🚀 family 👨‍👩‍👧 skin 👍🏽 flag 🇫🇷",
    "combining: e\u0301 a\u0308, zero width\u200bjoin",
    "def f(x):\n\treturn {'a': [1, 2.5e-3, None]}\n\n\n",
    '{"key": "value", "n": -12.5, "ok": true, "list": [1, 2, 3]}',
    "SELECT * FROM t WHERE a <> 'b' AND c >= 10;",
    "<s>[INST] special-looking text [/INST]</s> <unk> <pad> [TOOL_CALLS]",
    "\x00\x01\x7f control \x0b\x0c chars \u2028 \u00a0 \u3000",
    "x" * 2000,
    "1234567890" * 30,
]


def _tekken() -> Tokenizer:
    return load_default_tokenizer()  # built once per process


# -- the embedded default: tekken ------------------------------------------------------------


def test_default_tokenizer_has_131072_ids_eos_2_and_bos_1() -> None:
    tok = _tekken()
    assert tok.name == "tekken"
    assert tok.vocab_size == 131_072
    assert tok.ll.vocab_size == 131_072
    assert (tok.eos_token_id, tok.bos_token_id) == (2, 1)
    assert tok.special_token_ids == frozenset(range(1000))


def test_default_tokenizer_control_tokens_are_special_for_us_and_for_llguidance() -> None:
    tok = _tekken()
    for token_id in (0, 1, 2, 19, 20, 999):
        assert tok.is_special(token_id)
        assert tok.ll.is_special_token(token_id)
    for token_id in (1000, 1254, 22177, 131_071):
        assert not tok.is_special(token_id)
        assert not tok.ll.is_special_token(token_id)
    assert not tok.is_special(131_072)
    # llguidance's special-token marker is a leading 0xFF byte, so it also reports the byte token
    # 0xFF (id 1255) as special; harmless, as 0xFF never occurs in UTF-8 text. We do not.
    assert tok.ll.is_special_token(1255)
    assert not tok.is_special(1255) and tok.token_bytes(1255) == b"\xff"


def test_default_tokenizer_names_control_tokens_like_mistral_common() -> None:
    tok = _tekken()
    assert [tok.token_bytes(i) for i in (0, 1, 2, 3, 11, 19, 20, 999)] == [
        b"<unk>",
        b"<s>",
        b"</s>",
        b"[INST]",
        b"<pad>",
        b"[TOOL_CONTENT]",
        b"<SPECIAL_20>",
        b"<SPECIAL_999>",
    ]


def test_default_tokenizer_is_built_once_per_process() -> None:
    assert load_default_tokenizer() is _tekken()
    assert load_tokenizer("default") is _tekken()
    assert load_tokenizer("tekken") is _tekken()


@pytest.mark.parametrize("text", list(KNOWN_IDS))
def test_known_text_has_stable_ids(text: str) -> None:
    assert _tekken().encode(text) == KNOWN_IDS[text]


def test_eos_text_is_encoded_as_plain_text_not_as_the_control_id() -> None:
    tok = _tekken()
    ids = tok.encode("</s>")
    assert ids == [1885, 1115, 1062]
    assert tok.eos_token_id not in ids
    mixed = tok.encode("a</s>b <s>[INST] x [/INST] <unk><pad>[TOOL_CALLS]")
    assert all(i >= 1000 for i in mixed)


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_default_tokenizer_round_trips_text(text: str) -> None:
    tok = _tekken()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_default_encode_equals_llguidance_tokenization(text: str) -> None:
    tok = _tekken()
    assert tok.encode(text) == tok.ll.tokenize_str(text)


def test_decode_renders_special_tokens_as_names_unless_skipped() -> None:
    tok = _tekken()
    ids = [1, *KNOWN_IDS["Hello world"], 2]
    assert tok.decode(ids) == "<s>Hello world</s>"
    assert tok.decode(ids, skip_special_tokens=True) == "Hello world"
    assert tok.decode_bytes(ids, skip_special_tokens=True) == b"Hello world"


def test_decode_replaces_invalid_utf8_with_replacement_character() -> None:
    tok = _tekken()
    # Ranks 0..255 are the single bytes, so id 1000 + b is the byte b.
    half_emoji = [1000 + 0xF0, 1000 + 0x9F]
    assert tok.decode_bytes(half_emoji) == b"\xf0\x9f"
    assert tok.decode([*tok.encode("a"), *half_emoji, *tok.encode("b")]) == "a\ufffdb"


def test_token_bytes_of_byte_tokens_and_merged_tokens() -> None:
    tok = _tekken()
    assert tok.token_bytes(1000 + ord("a")) == b"a"
    assert tok.token_bytes(22177) == b"Hello"
    assert tok.token_bytes(4304) == b" world"


@pytest.mark.parametrize("bad", [[-1], [131_072], [5, 131_072 + 7], [10**12]])
def test_decode_refuses_ids_outside_the_vocabulary(bad: list[int]) -> None:
    with pytest.raises(InvalidTokens) as info:
        _tekken().decode(bad)
    assert info.value.index == next(i for i, t in enumerate(bad) if not 0 <= t < 131_072)


def test_token_bytes_refuses_ids_outside_the_vocabulary() -> None:
    with pytest.raises(InvalidTokens):
        _tekken().token_bytes(-1)


def test_lone_surrogates_are_encoded_as_replacement_character(hf_json: str) -> None:
    tiny = _tiny(tokens=[b"<eos>", b"a", "\ufffd".encode()])
    for tok in (_tekken(), Tokenizer.from_hf_json("tiny-bpe", hf_json), tiny):
        assert tok.encode("a\ud800a") == tok.encode("a\ufffda")
        assert tok.decode(tok.encode("a\udfffa")) == "a\ufffda"


def test_default_tokenizer_digest_is_stable() -> None:
    assert _tekken().digest == TEKKEN_DIGEST


def test_embedded_data_file_records_its_source() -> None:
    header = json.loads(gzip.decompress(TEKKEN_FILE.read_bytes()).split(b"\n", 1)[0])
    assert header["source"] == "mistral-common 1.13.1 mistral_common/data/tekken_240911.json"
    assert header["source_sha256"] == ("1948e2d48b0e7377f1bb5f1210f1ae5f984934e75713fc07e2452729b8365316")
    assert (TEKKEN_FILE.parent / "NOTICE").read_text().count("Apache License") >= 1


def test_default_tokenizer_drives_a_matcher_with_its_own_ids() -> None:
    tok = _tekken()
    matcher = llguidance.LLMatcher(tok.ll, llguidance.LLMatcher.grammar_from_regex(r"Hello [a-z]+"))
    assert matcher.consume_tokens(tok.encode("Hello world"))
    assert matcher.consume_token(tok.eos_token_id)
    assert matcher.is_stopped()


# -- scripts/derive_tekken.py ------------------------------------------------------------------


def _derive_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("derive_tekken", REPO / "scripts" / "derive_tekken.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _synthetic_tekken_json(num_special: int = 1000) -> bytes:
    merges = [b"ab", b"abc", b"  ", b"cd"]
    tokens = [bytes([i]) for i in range(256)] + merges + [b"unused"]
    vocab = [{"rank": r, "token_bytes": base64.b64encode(t).decode(), "token_str": None} for r, t in enumerate(tokens)]
    config = {
        "pattern": r" ?[a-z]+| ?[^a-z]+",
        "num_vocab_tokens": len(vocab),
        "default_vocab_size": num_special + 256 + len(merges),
        "default_num_special_tokens": num_special,
        "version": "v3",
    }
    return json.dumps({"config": config, "vocab": vocab}).encode()


def test_derive_script_is_deterministic_and_keeps_only_the_used_ranks() -> None:
    derive: Callable[[bytes], bytes] = _derive_module().derive
    source = _synthetic_tekken_json()
    out = derive(source)
    assert out == derive(source)
    assert out[4:8] == b"\0\0\0\0"  # gzip mtime 0
    lines = gzip.decompress(out).split(b"\n")
    header: dict[str, Any] = json.loads(lines[0])
    assert header["num_ranks"] == 260
    assert header["eos_token_id"] == 2
    assert len(header["special_names"]) == 20
    assert lines[1:-1] == [base64.b64encode(bytes([i])) for i in range(256)] + [
        b"YWI=",
        b"YWJj",
        b"ICA=",
        b"Y2Q=",  # ab, abc, two spaces, cd; rank 260 ("unused") dropped
    ]


def test_derived_file_loads_as_a_tokenizer(tmp_path: Path) -> None:
    from core.tokenizers.load import _load_tekken

    path = tmp_path / "tekken.tokens.gz"
    path.write_bytes(_derive_module().derive(_synthetic_tekken_json()))
    tok = _load_tekken(path)
    assert tok.vocab_size == 1260
    assert tok.encode("abcd ab") == [1000 + 257, 1000 + ord("d"), 1000 + ord(" "), 1000 + 256]
    assert tok.decode(tok.encode("abc  cd\n")) == "abc  cd\n"
    assert tok.digest != TEKKEN_DIGEST


# -- from_vocabulary: tiny synthetic vocabularies --------------------------------------------


def _tiny(**overrides: Any) -> Tokenizer:
    tokens = [b"<eos>", b"a", b"b", b"c", b"ab", b"abc", b" ", b"<", b">", b"e", b"o", b"s"]
    args: dict[str, Any] = {"eos_token_id": 0}
    args.update(overrides)
    return Tokenizer.from_vocabulary(args.pop("name", "tiny"), args.pop("tokens", tokens), **args)


def test_from_vocabulary_encodes_by_greedy_longest_match() -> None:
    tok = _tiny()
    assert tok.encode("abcab c") == [5, 4, 6, 3]
    assert tok.encode("") == []
    assert tok.decode(tok.encode("cabba")) == "cabba"


def test_from_vocabulary_never_encodes_special_text_as_the_control_id() -> None:
    tok = _tiny()
    assert tok.encode("<eos>") == [7, 9, 10, 11, 8]
    assert tok.decode([0]) == "<eos>"
    assert tok.is_special(0) and not tok.is_special(7)


def test_from_vocabulary_refuses_text_it_cannot_spell() -> None:
    with pytest.raises(ValueError, match="0x7a"):
        _tiny().encode("abz")


def test_from_vocabulary_builds_an_llguidance_tokenizer() -> None:
    tok = _tiny(bos_token_id=None)
    assert tok.vocab_size == tok.ll.vocab_size == 12
    assert tok.ll.is_special_token(0)
    assert tok.ll.tokenize_str("abcab c") == tok.encode("abcab c")
    matcher = llguidance.LLMatcher(tok.ll, llguidance.LLMatcher.grammar_from_regex(r"(ab)+c"))
    assert matcher.consume_tokens(tok.encode("ababc"))
    assert matcher.consume_token(tok.eos_token_id)


def test_from_vocabulary_llguidance_tolerates_bytes_the_vocabulary_lacks() -> None:
    # llguidance tokenizes grammar literals itself; a literal outside the vocabulary must not crash.
    tok = _tiny()
    matcher = llguidance.LLMatcher(tok.ll, llguidance.LLMatcher.grammar_from_regex(r"abz"))
    assert matcher.consume_tokens(tok.encode("ab"))


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"tokens": []}, ValueError),
        ({"eos_token_id": 12}, ValueError),
        ({"special_token_ids": [-1]}, ValueError),
        ({"bos_token_id": 99}, ValueError),
        ({"tokens": [b"<eos>", b""]}, ValueError),
        ({"tokens": [b"<eos>", "a"]}, TypeError),
    ],
)
def test_from_vocabulary_refuses_malformed_vocabularies(overrides: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        _tiny(**overrides)


def test_digest_depends_on_vocabulary_not_name() -> None:
    base = _tiny()
    assert _tiny(name="other").digest == base.digest
    changed_token = [b"<eos>", b"a", b"b", b"c", b"ab", b"abd", b" ", b"<", b">", b"e", b"o", b"s"]
    others = [
        _tiny(tokens=changed_token),
        _tiny(eos_token_id=8),
        _tiny(special_token_ids=[11]),
        _tekken(),
    ]
    digests = {base.digest, *(t.digest for t in others)}
    assert len(digests) == 1 + len(others)
    assert all(len(f) == 64 for f in digests)


# -- Hugging Face tokenizer.json ---------------------------------------------------------------

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x * 2\n",
    "Hello, world! Hello again, world.",
    "naïve café — déjà vu 🙂 日本語",
    "1234567890 +-*/ {} [] () <> </>",
    '{"name": "Ada", "age": 36, "tags": ["a", "b"]}',
] * 20


def _train_byte_level(specials: list[str], *, extra: tuple[str, ...] = ()) -> str:
    hf = pytest.importorskip("tokenizers")
    tok = hf.Tokenizer(hf.models.BPE())
    tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = hf.decoders.ByteLevel()
    trainer = hf.trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=specials,
        initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    if extra:
        tok.add_tokens([hf.AddedToken(t, special=False) for t in extra])
    text: str = tok.to_str()
    return text


@pytest.fixture(scope="module")
def hf_json() -> str:
    return _train_byte_level(["<|endoftext|>", "<s>", "</s>"], extra=("<think>",))


def _random_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789.,;:!?'\"(){}[]<>/\\|-_=+*&^%$#@~`")
    alphabet += list("\n\t\r  éüßñ日本語中文한국어Ωπ€🙂🚀👍🏽\u200d\u00a0")
    texts = [line for line in CORPUS[:6]]
    while len(texts) < count:
        texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))))
    return texts


def test_hf_tokenizer_encodes_exactly_like_the_tokenizers_package(hf_json: str) -> None:
    hf = pytest.importorskip("tokenizers")
    reference = hf.Tokenizer.from_str(hf_json)
    tok = Tokenizer.from_hf_json("tiny-bpe", hf_json)
    for text in _random_texts(300):
        ids = tok.encode(text)
        assert ids == reference.encode(text, add_special_tokens=False).ids, text
        assert tok.decode(ids) == text


def test_hf_tokenizer_vocab_size_eos_and_bos(hf_json: str) -> None:
    hf = pytest.importorskip("tokenizers")
    reference = hf.Tokenizer.from_str(hf_json)
    tok = Tokenizer.from_hf_json("tiny-bpe", hf_json)
    assert tok.name == "tiny-bpe"
    assert tok.vocab_size == reference.get_vocab_size(with_added_tokens=True) == tok.ll.vocab_size
    assert tok.eos_token_id == reference.token_to_id("</s>")  # preferred over <|endoftext|>
    assert tok.bos_token_id == reference.token_to_id("<s>")
    assert tok.decode([tok.eos_token_id]) == "</s>"
    assert tok.is_special(tok.eos_token_id) and tok.ll.is_special_token(tok.eos_token_id)
    byte_ff = reference.token_to_id("ÿ")  # byte-level alphabet's name of the byte 0xFF
    assert tok.token_bytes(byte_ff) == b"\xff" and not tok.is_special(byte_ff)
    assert tok.special_token_ids == {reference.token_to_id(t) for t in ("<|endoftext|>", "<s>", "</s>", "<think>")}


@pytest.mark.parametrize("text", ["</s>", "a</s>b", " <|endoftext|> x", "<s><think>y</think>"])
def test_hf_special_token_text_is_encoded_as_plain_text(hf_json: str, text: str) -> None:
    tok = Tokenizer.from_hf_json("tiny-bpe", hf_json)
    ids = tok.encode(text)
    assert not any(tok.is_special(i) for i in ids)
    assert tok.decode(ids) == text


def test_hf_end_tokens_without_configuration_are_every_known_one_in_the_documented_order() -> None:
    tok = Tokenizer.from_hf_json("chat", _train_byte_level(["<|im_end|>", "<|endoftext|>"]))
    assert [tok.decode([i]) for i in tok.eos_token_ids] == ["<|endoftext|>", "<|im_end|>"]
    assert tok.decode([tok.eos_token_id]) == "<|endoftext|>"
    assert tok.bos_token_id is None


def test_hf_tokenizer_without_eos_is_refused() -> None:
    with pytest.raises(TokenizerError, match="no end token found"):
        Tokenizer.from_hf_json("no-eos", _train_byte_level(["<unk>"]))


def test_hf_prefix_space_tokenizer_encodes_text_as_a_continuation() -> None:
    # SentencePiece-style ("▁" prepended): llguidance encodes without the leading "▁" so the
    # bytes round-trip; tokenizers' encode() would start with "▁".
    hf = pytest.importorskip("tokenizers")
    tok_hf = hf.Tokenizer(hf.models.BPE(byte_fallback=True))
    tok_hf.pre_tokenizer = hf.pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok_hf.decoder = hf.decoders.Sequence(
        [hf.decoders.Replace("▁", " "), hf.decoders.ByteFallback(), hf.decoders.Fuse(), hf.decoders.Strip(" ", 1, 0)]
    )
    trainer = hf.trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok_hf.train_from_iterator(CORPUS, trainer)
    spec = json.loads(tok_hf.to_str())
    vocab = spec["model"]["vocab"]
    base = len(vocab)
    vocab.update({f"<0x{b:02X}>": base + b for b in range(256)})
    tok = Tokenizer.from_hf_json("spm-like", json.dumps(spec))
    for text in ["Hello world", " leading space", "日本 🙂", "x", "a</s>b"]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert not any(tok.is_special(i) for i in ids)


def test_hf_digest_is_stable_and_distinct(hf_json: str) -> None:
    first = Tokenizer.from_hf_json("a", hf_json)
    assert Tokenizer.from_hf_json("b", hf_json.encode()).digest == first.digest
    assert first.digest != _tekken().digest


_NESTED = "[" * 100_000 + "]" * 100_000
_LONG = '{"model": {"type": "BPE", "vocab": {' + '"x": 1, ' * 5000 + '"y": "z"}}}'


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff\xfe\x00",
        "",
        "not json",
        "/etc/passwd",
        "gpt2",
        "[1, 2]",
        "{}",
        '{"model": []}',
        '{"model": {}}',
        '{"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}}',
        '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": {"id": 1}}',
        '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": [{"id": "1"}]}',
        '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, '
        '"added_tokens": [{"id": 99999999999, "content": "</s>"}]}',
        '{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}, '
        '"added_tokens": [{"id": 2, "content": "</s>", "special": true}]}',
        _NESTED,
        _LONG,
    ],
)
def test_invalid_tokenizer_json_raises_tokenizer_error_with_a_short_message(bad: str | bytes) -> None:
    with pytest.raises(TokenizerError) as info:
        Tokenizer.from_hf_json("bad", bad)
    assert len(str(info.value)) < 800


def test_hf_json_with_wrong_added_token_ids_is_refused(hf_json: str) -> None:
    spec = json.loads(hf_json)
    spec["added_tokens"][2]["id"] = 2000  # "</s>": tokenizers ignores the id, we must not trust it
    with pytest.raises(TokenizerError):
        Tokenizer.from_hf_json("moved", json.dumps(spec))


def test_hf_json_with_gaps_in_its_ids_is_refused(hf_json: str) -> None:
    spec = json.loads(hf_json)
    spec["model"]["vocab"]["zzzz"] = 5000
    with pytest.raises(TokenizerError, match="not contiguous"):
        Tokenizer.from_hf_json("gaps", json.dumps(spec))


def test_from_hf_file_and_load_tokenizer_name_after_the_file(tmp_path: Path, hf_json: str) -> None:
    path = tmp_path / "my-model.json"
    path.write_text(hf_json, encoding="utf-8")
    assert Tokenizer.from_hf_file("given", path).name == "given"
    assert load_tokenizer(str(path)).name == "my-model"
    (tmp_path / "snapshot").mkdir()
    (tmp_path / "snapshot" / "tokenizer.json").write_text(hf_json, encoding="utf-8")
    assert load_tokenizer(str(tmp_path / "snapshot")).name == "snapshot"


def test_tokenizer_file_errors_do_not_echo_the_file_content(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text("password=hunter2\n", encoding="utf-8")
    with pytest.raises(TokenizerError) as info:
        load_tokenizer(str(secret))
    assert "hunter2" not in str(info.value)
    with pytest.raises(TokenizerError) as info:
        Tokenizer.from_hf_json("posted", secret.read_text(encoding="utf-8"))
    assert "hunter2" in str(info.value)  # the caller's own text may be quoted


@pytest.mark.parametrize("spec", ["gpt-5", "", "Default", "/no/such/tokenizer.json", "a" * 5000, "a\0b"])
def test_unknown_tokenizer_names_and_missing_files_raise_unknown_tokenizer(spec: str) -> None:
    with pytest.raises(UnknownTokenizer):
        load_tokenizer(spec)


def test_from_hf_file_on_a_missing_file_raises_unknown_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(UnknownTokenizer):
        Tokenizer.from_hf_file("missing", tmp_path / "tokenizer.json")


@pytest.mark.parametrize("special", ["[TOOL_CALLS]", "</s>", "[INST]"])
def test_special_token_text_becomes_the_control_token_only_when_asked(special: str) -> None:
    tok = _tekken()
    text = f"a{special} b{special}"
    plain = tok.tokenize(text)
    assert plain == tok.encode(text) and not any(tok.is_special(i) for i in plain)
    ids = tok.tokenize(text, special=True)
    control = [i for i in ids if tok.is_special(i)]
    assert len(control) == 2 and tok.decode(control[:1]) == special
    assert tok.decode(ids) == tok.decode(plain) == text


def test_tiny_vocabulary_tokenizes_special_text_only_when_asked() -> None:
    tok = _tiny()
    assert tok.tokenize("ab<eos>") == tok.encode("ab<eos>")
    assert tok.tokenize("ab<eos>ab", special=True) == [*tok.encode("ab"), 0, *tok.encode("ab")]
