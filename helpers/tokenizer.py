"""Meta's Llama 3 tokenizer, rebuilt on tiktoken (taught in notebook 01); also read from a Hugging Face
tokenizer.json (helpers/tokenizer_json.py).

`tokenizer.model` is a text file of 128,000 lines, each a base64-encoded
byte string and its rank. tiktoken does the byte-pair merges; we give it the
rank table, the regular expression that cuts text into pieces first, and
the 256 special tokens that follow the ranks.
"""

import base64
import binascii
import operator
from importlib import resources
from pathlib import Path

import tiktoken

from .errors import LlamaError
from .tokenizer_json import read_tokenizer_json

# Before any merge, text is cut into pieces with this pattern and BPE runs
# inside each piece only. Its branches, in order: English contractions, a word
# (with at most one non-letter in front, usually a space), 1 to 3 digits,
# punctuation (with an optional space in front and newlines after), newlines
# with the whitespace in front of them, whitespace that a word does not follow,
# and any other whitespace.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

N_SPECIAL_TOKENS = 256
_NAMED_SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
]
# Meta's order: the named ones, then reserved tokens numbered on from 2.
SPECIAL_TOKENS = _NAMED_SPECIAL_TOKENS + [
    f"<|reserved_special_token_{i}|>" for i in range(2, 2 + N_SPECIAL_TOKENS - len(_NAMED_SPECIAL_TOKENS))
]


def meta_tokenizer_file():
    """Meta's Llama 3 `tokenizer.model`, as shipped in the `llama-models` package."""
    try:
        return Path(resources.files("llama_models") / "llama3" / "tokenizer.model")
    except ModuleNotFoundError:
        raise LlamaError(
            "Meta's tokenizer file comes with the `llama-models` package, which is not installed. "
            "Run `pip install llama-models` (it is in requirements.txt), or pass the path of a model "
            "folder that has its own tokenizer.model."
        ) from None


def read_ranks(path):
    """Read a tiktoken rank file: one `<base64 bytes> <rank>` per line."""
    path = Path(path)
    if not path.is_file():
        raise LlamaError(f"The tokenizer file {path} does not exist. Each Llama 3 model folder has one.")
    data = path.read_bytes()
    what = _recognise_other_formats(data)
    if what:
        raise LlamaError(
            f"{path} is not a Llama 3 tokenizer.model: it looks like {what}. Llama 3's tokenizer.model "
            "is a text file of base64 tokens and ranks; take it from the `original/` folder of "
            "meta-llama/Meta-Llama-3-8B (or leave it out to use the copy in the llama-models package)."
        )
    ranks = {}
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
            if len(fields) != 2:
                raise ValueError
        except (IndexError, ValueError, binascii.Error):
            raise LlamaError(
                f"{path}, line {number}, is not `<base64 token> <rank>`: {line[:60]!r}. The file is damaged "
                "or of another format; download Llama 3's original/tokenizer.model again."
            ) from None
        ranks[token] = rank
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise LlamaError(f"{path}: the ranks are not 0, 1, 2, ... with one token each; the file is damaged.")
    return ranks


def _recognise_other_formats(data):
    """Name the format of a file that other tutorials' users mistake for Llama 3's tokenizer."""
    head = data[:200].lstrip()
    if not head:
        return "an empty file (an interrupted download?)"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file itself (clone with git-lfs, or download the file)"
    if head.startswith(b"{"):
        return "a JSON file, such as Hugging Face's tokenizer.json"
    if head[:15].lower().startswith((b"<!doctype", b"<html")):
        return "an HTML page (a login or error page saved instead of the file)"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "a binary file, such as a SentencePiece model from Llama 1 or 2"
    return None


class Tokenizer:
    """Text to Llama 3 token ids and back."""

    def __init__(self, path=None):
        """From Meta's tokenizer.model at `path` (None: the copy in llama-models), or from a Hugging Face
        tokenizer.json of Llama 3's vocabulary (helpers/tokenizer_json.py)."""
        path = meta_tokenizer_file() if path is None else Path(path)
        if path.suffix == ".json":
            ranks, self.special_ids = read_tokenizer_json(path, SPLIT_PATTERN)
        else:
            ranks = read_ranks(path)
            self.special_ids = {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
        self.path, self.ranks = path, ranks
        self.encoding = tiktoken.Encoding(
            name="llama3", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=self.special_ids
        )
        self.n_vocab = self.encoding.n_vocab
        self.bos_id = self.special_ids["<|begin_of_text|>"]
        self.eos_id = self.special_ids["<|end_of_text|>"]
        self.eot_id = self.special_ids["<|eot_id|>"]
        # Meta's stop tokens: the end of a document, of a turn, and of a message that hands a tool call over
        # (<|eom_id|>, Llama 3.1 and later; a tokenizer.json of Llama 3 names that id a reserved token).
        eom_id = self.special_ids.get("<|eom_id|>")
        self.stop_ids = {self.eos_id, self.eot_id} | ({eom_id} if eom_id is not None else set())

    def encode(self, text, bos=True):
        """Token ids of `text`, after `<|begin_of_text|>` when `bos` is true.

        A special token's text typed inside `text` is encoded as the plain
        characters it is made of, never as the control token itself.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, not {type(text).__name__}")
        ids = self.encoding.encode(text, allowed_special=set(), disallowed_special=())
        return [self.bos_id] + ids if bos else ids

    def encode_prompt(self, text):
        """A user's prompt as token ids, after `<|begin_of_text|>`; an empty prompt is an error."""
        if isinstance(text, str) and not text:
            raise LlamaError("The prompt is empty: there is nothing to continue. Type some text.")
        return self.encode(text)

    def _check_ids(self, ids):
        ids = [operator.index(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.n_vocab]
        if bad:
            raise LlamaError(
                f"Token id {bad[0]} is not in the vocabulary: ids run from 0 to {self.n_vocab - 1}. "
                "Were these ids made by another tokenizer?"
            )
        return ids

    def decode_bytes(self, ids):
        """The bytes behind `ids`: a token may hold part of a UTF-8 character."""
        return self.encoding.decode_bytes(self._check_ids(ids))

    def decode(self, ids):
        """The text of `ids`; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def pieces(self, ids):
        """Each token's own text, for display; partial UTF-8 bytes are shown as \\x.. escapes."""
        return [
            self.encoding.decode_single_token_bytes(i).decode("utf-8", errors="backslashreplace")
            for i in self._check_ids(ids)
        ]

    def labels(self, ids):
        """Each token quoted, for plot labels: as `repr`, with every non-ASCII character escaped.

        Every font draws ASCII. Matplotlib's default font has no Chinese or
        Devanagari characters, and a token made of them would be drawn as an empty
        box, with a warning; escaped, it reads as '\\u4e2d' instead.
        """
        return [ascii(piece) for piece in self.pieces(ids)]

    def show(self, ids):
        """Print one line per token: its position, its id and its text."""
        for position, (i, piece) in enumerate(zip(ids, self.pieces(ids), strict=True)):
            print(f"{position:>4} {i:>7}  {piece!r}")
