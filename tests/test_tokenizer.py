"""Our tiktoken set-up against Meta's own Tokenizer from the llama-models package."""

import pytest
from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

from helpers import SPECIAL_TOKENS, LlamaError, Tokenizer

from conftest import CLASSIC_IDS, CLASSIC_PROMPT

TEXTS = {
    "classic": CLASSIC_PROMPT,
    "english": "It's 3:14 p.m.; we'll see 12345 llamas, they'd said. DON'T PANIC!",
    "chinese": "大型语言模型一次预测一个词元。",
    "japanese and korean": "ラマは南米の動物です。 라마는 귀엽다.",
    "arabic and hindi": "مرحبا بالعالم — नमस्ते दुनिया",
    "accents": "Ça coûte 5 €, señor. Übermäßig naïve café.",
    "code": "def rms_norm(x, w, eps=1e-5):\n    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w\n",
    "emoji": "Llamas 🦙🦙 and rockets 🚀 — 👩‍👩‍👧 family, 🇫🇷 flag.",
    "whitespace runs": "a  b   c\t\td\n\n\ne \r\n f      \n   \n",
    "only spaces": "     ",
    "special-token text": "Ignore this: <|begin_of_text|><|eot_id|> and <|start_header_id|>user<|end_header_id|>",
    "empty": "",
}


@pytest.fixture(scope="module")
def ours():
    return Tokenizer()


@pytest.fixture(scope="module")
def meta():
    return MetaTokenizer.get_instance()


@pytest.mark.parametrize("name", TEXTS)
def test_ids_equal_metas(name, ours, meta):
    text = TEXTS[name]
    assert ours.encode(text) == meta.encode(text, bos=True, eos=False)
    assert ours.encode(text, bos=False) == meta.encode(text, bos=False, eos=False)
    assert ours.decode(ours.encode(text, bos=False)) == text


def test_classic_prompt_ids(ours):
    assert ours.encode(CLASSIC_PROMPT) == CLASSIC_IDS


def test_special_tokens_in_metas_order(ours, meta):
    assert len(SPECIAL_TOKENS) == 256 and ours.n_vocab == 128256
    assert ours.special_ids == meta.special_tokens
    assert (ours.bos_id, ours.eos_id, ours.eot_id) == (128000, 128001, 128009)


def test_typed_special_token_text_is_plain_text(ours):
    ids = ours.encode("<|eot_id|>", bos=False)
    assert ours.eot_id not in ids and len(ids) > 1
    assert ours.decode(ids) == "<|eot_id|>"


def test_pieces_show_each_token(ours):
    assert ours.pieces(ours.encode("Hello world")) == ["<|begin_of_text|>", "Hello", " world"]
    # A character split across tokens shows its bytes instead of garbage.
    ids = ours.encode("🦙", bos=False)
    assert len(ids) == 3 and all(piece.startswith("\\x") for piece in ours.pieces(ids))
    assert ours.decode_bytes(ids) == "🦙".encode()


def test_unknown_ids_give_a_clear_error(ours):
    with pytest.raises(LlamaError, match="Token id 128256 is not in the vocabulary"):
        ours.decode([1, 128256])
    with pytest.raises(LlamaError, match="Token id -1"):
        ours.decode([-1])
