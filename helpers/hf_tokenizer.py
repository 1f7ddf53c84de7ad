"""A model's own tokenizer.json, read by Hugging Face's `tokenizers` library, behind the course's
tokenizer interface: for a model with Llama's architecture but a vocabulary that is not Llama 3's
(SmolLM2's 49,152 tokens, say). Llama 3's own vocabulary keeps the course's `Tokenizer`.

Byte-level BPE stores each token as text, one printable character standing for each byte
(`bytes_to_unicode`); the bytes behind a token are found by reading that table backwards.
"""

from pathlib import Path

from .errors import LlamaError
from .tokenizer import Tokenizer
from .tokenizer_json import bytes_to_unicode


class HFTokenizer(Tokenizer):
    """Text to a model's token ids and back, through its tokenizer.json."""

    def __init__(self, path, stop_ids=()):
        try:
            from tokenizers import Tokenizer as Backend
        except ModuleNotFoundError:
            raise LlamaError("This model's tokenizer.json is read by the `tokenizers` package, which is not "
                             "installed: pip install -r requirements.txt") from None
        self.path = Path(path)
        try:
            self.backend = Backend.from_file(str(self.path))
        except Exception as error:
            raise LlamaError(f"{self.path} is not a tokenizer.json that the tokenizers library can read: {error}") \
                from None
        self.backend.encode_special_tokens = True  # special tokens typed inside a text stay plain characters
        added = self.backend.get_added_tokens_decoder()
        self.special_ids = {token.content: i for i, token in added.items() if token.special}
        self.n_vocab = self.backend.get_vocab_size(with_added_tokens=True)
        characters = {char: byte for byte, char in bytes_to_unicode().items()}
        self.token_bytes = [b""] * self.n_vocab
        for text, i in self.backend.get_vocab(with_added_tokens=True).items():
            if i in added or any(c not in characters for c in text):
                self.token_bytes[i] = text.encode()
            else:
                self.token_bytes[i] = bytes(characters[c] for c in text)
        prefix = self.backend.encode("", add_special_tokens=True).ids  # what the model puts before a text
        self.bos_id = prefix[0] if prefix else None
        self.eos_id = self.eot_id = None
        self.stop_ids = set(stop_ids)

    def encode(self, text, bos=True):
        """Token ids of `text`, after what the model puts before a text (if any) when `bos` is true."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, not {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens=bos).ids

    def decode_bytes(self, ids):
        return b"".join(self.token_bytes[i] for i in self._check_ids(ids))

    def pieces(self, ids):
        return [self.token_bytes[i].decode("utf-8", errors="backslashreplace") for i in self._check_ids(ids)]
