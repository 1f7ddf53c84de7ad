"""Hugging Face's tokenizer.json for Llama 3, read into the ranks of the course's tiktoken tokenizer, and written
from them.

tokenizer.json stores byte-level BPE: each token is a string in which every byte is one printable character
(GPT-2's `bytes_to_unicode` table: the printable bytes stand for themselves, the others are moved past 255).
For Llama 3 a token's id is its rank in tokenizer.model, and the special tokens are the `added_tokens`. Only
Llama 3's vocabulary is read (its split pattern, no byte fallback, its special tokens); a model with a
vocabulary of its own gets `NotLlama3Tokenizer`, and `load_model` reads it with helpers/hf_tokenizer.py.
"""

import json
from pathlib import Path

from .errors import LlamaError

# The special tokens the course's generation and chat format need.
REQUIRED_SPECIAL = ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>")


def bytes_to_unicode():
    """GPT-2's table of byte -> character: printable bytes stay themselves, the other 68 get 256, 257, ..."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    table, moved = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + moved)
            moved += 1
    return table


class NotLlama3Tokenizer(LlamaError):
    """A tokenizer.json that is readable but not Llama 3's: the model has a vocabulary of its own."""


def _not_llama3(path, field, found, split_pattern):
    return NotLlama3Tokenizer(
        f"{path}: {field} is {found!r}, so this is not Llama 3's tokenizer (byte-level BPE with the split pattern "
        f"{split_pattern!r} and Llama 3's special tokens). The course reads Llama 3's vocabulary only: use a "
        "Llama 3 model's tokenizer.json, or its tokenizer.model."
    )


def _split_pattern(pre_tokenizer):
    """The regular expression of a tokenizer.json's Split pre-tokenizer, None when it has none."""
    steps = pre_tokenizer.get("pretokenizers", [pre_tokenizer]) if isinstance(pre_tokenizer, dict) else []
    for step in steps:
        if isinstance(step, dict) and step.get("type") == "Split" and isinstance(step.get("pattern"), dict):
            return step["pattern"].get("Regex")
    return None


def read_tokenizer_json(path, split_pattern):
    """The BPE ranks (token bytes -> rank) and special tokens (text -> id) of a Llama 3 tokenizer.json.

    `split_pattern` is the course's (helpers.tokenizer.SPLIT_PATTERN): the file's must be the same.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LlamaError(f"{path} is not valid JSON ({error}): the file is damaged. Download it again.") from None
    model = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("vocab"), dict):
        raise LlamaError(f"{path} has no model.vocab: it is not a Hugging Face tokenizer.json. Download it again.")
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        field = "model.type" if model.get("type") != "BPE" else "model.byte_fallback"
        raise _not_llama3(path, field, model.get(field.split(".")[1]), split_pattern)
    pattern = _split_pattern(raw.get("pre_tokenizer"))
    if pattern != split_pattern:
        raise _not_llama3(path, "the pre_tokenizer's Split pattern", pattern, split_pattern)
    to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    ranks = {}
    for text, rank in model["vocab"].items():
        try:
            ranks[bytes(to_byte[char] for char in text)] = rank
        except KeyError:
            raise _not_llama3(path, f"the token {text!r} of model.vocab", text, split_pattern) from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise LlamaError(f"{path}: the ids of model.vocab are not 0, 1, 2, ... with one token each; the file is "
                         "damaged. Download it again.")
    # The added tokens past the vocabulary are the special ones (one inside it is a token already).
    special = {t.get("content"): t.get("id") for t in raw.get("added_tokens") or []
               if isinstance(t, dict) and not (isinstance(t.get("id"), int) and t["id"] < len(ranks))}
    if any(not isinstance(text, str) or not isinstance(i, int) for text, i in special.items()):
        raise LlamaError(f"{path}: added_tokens holds an entry without a text content and an integer id; the file "
                         "is damaged. Download it again.")
    missing = [name for name in REQUIRED_SPECIAL if name not in special]
    if missing:
        raise _not_llama3(path, "added_tokens", f"without {missing[0]}", split_pattern)
    return ranks, special


def merges_of(ranks):
    """The BPE merges that rebuild `ranks` (token bytes -> rank): for each token, every split of it into two
    tokens of lower rank, ordered by the rank of the token they make (the order tiktoken merges in)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        splits = [(ranks[token[:i]], ranks[token[i:]], token[:i], token[i:]) for i in range(1, len(token))
                  if ranks.get(token[:i], rank) < rank and ranks.get(token[i:], rank) < rank]
        merges += [(left, right) for _, _, left, right in sorted(splits)]
    return merges


def tokenizer_json(ranks, special_ids, split_pattern):
    """A Hugging Face tokenizer.json (as a dictionary) for the tiktoken `ranks` and `special_ids`: what
    `read_tokenizer_json` reads back, and what the `tokenizers` library encodes with the same ids."""
    to_char = bytes_to_unicode()

    def text(token):
        return "".join(to_char[b] for b in token)

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for name, i in special_ids.items()],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split_pattern}, "behavior": "Isolated", "invert": False},
            byte_level]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {text(token): rank for token, rank in ranks.items()},
                  "merges": [[text(left), text(right)] for left, right in merges_of(ranks)]},
    }


def write_tokenizer_json(tokenizer, path):
    """Write the course's `Tokenizer` (from a tokenizer.model) as a Hugging Face tokenizer.json at `path`."""
    from .tokenizer import SPLIT_PATTERN

    raw = tokenizer_json(tokenizer.ranks, tokenizer.special_ids, SPLIT_PATTERN)
    Path(path).write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return Path(path)
