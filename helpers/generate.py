"""Generating text: the decoding loop, sampling, stop tokens, streaming, the chat format (notebook 07).

One step of generation turns the last position's logits into one token id:
greedily (the largest logit) or by sampling from softmax(logits / temperature),
optionally restricted to the k most likely tokens (top-k) or to the fewest
most likely tokens whose probabilities add up to p (top-p, "nucleus").
The token is appended and the loop goes on until a stop token or a length limit.
"""

import codecs
import math
import operator
from dataclasses import dataclass

import torch

from .errors import LlamaError
from .kv_cache import KVCache
from .transformer import check_tokens, forward

CHAT_ROLES = ("system", "user", "assistant")


def top_k_filter(logits, k):
    """`logits` with every entry below the k-th largest set to -inf.

    Entries tied with the k-th largest are kept too, so the result does not
    depend on how a sort orders equal values. `k=None` keeps everything.
    """
    if k is not None and k < 1:
        raise LlamaError(f"top-k must be at least 1 (it keeps the k most likely tokens), not {k}.")
    if k is None or k >= logits.shape[-1]:
        return logits
    kth_largest = torch.topk(logits, k).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits, p):
    """`logits` with -inf outside the nucleus: the fewest most likely tokens whose probabilities reach `p`.

    The most likely token is always kept. Entries tied with the least likely
    token kept are kept too. `p=None` or `p=1` keeps everything.
    """
    if p is not None and not 0 < p <= 1:
        raise LlamaError(f"top-p is a probability mass between 0 (excluded) and 1, not {p}.")
    if p is None or p == 1:
        return logits
    probs = torch.softmax(logits, dim=-1)
    sorted_probs = probs.sort(dim=-1, descending=True).values
    # A token is needed while the tokens more likely than it add up to less than p.
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    n_kept = (mass_before < p).sum(dim=-1, keepdim=True).clamp(min=1)
    smallest_kept = sorted_probs.gather(-1, n_kept - 1)
    return logits.masked_fill(probs < smallest_kept, float("-inf"))


def sample_next(logits, temperature=0.0, top_k=None, top_p=None, generator=None):
    """One token id from one position's `logits` (vocab,).

    Temperature 0 is greedy: the largest logit (the first of equal ones).
    Otherwise the logits are divided by the temperature (below 1 sharpens the
    distribution, above 1 flattens it), filtered by top-k then top-p, and one
    token is drawn from their softmax (`draw`) with `generator` (a seeded
    `torch.Generator`, or None for PyTorch's global one).
    """
    check_temperature(temperature)
    if temperature == 0:
        return int(logits.argmax())
    # Shifting the logits so that the largest is 0 changes no probability, and keeps a tiny
    # temperature from turning them into inf - inf = nan.
    logits = top_p_filter(top_k_filter((logits - logits.max()) / temperature, top_k), top_p)
    return draw(torch.softmax(logits, dim=-1), generator)


def draw(probs, generator=None):
    """An index drawn with probability probs[i] / probs.sum(), by a race between the tokens.

    Each token waits a random time, exponential with its probability as its rate: E_i / probs[i],
    where E_i = -log(1 - u_i) and u_i is uniform (`torch.rand`). The first to finish is token i
    with probability probs[i] / probs.sum(); a token of probability 0 never finishes.
    torch.multinomial draws the same way, but from exponentials of its own, which differed between
    torch 2.6 and 2.13 for a seed, where torch.rand's numbers did not: drawn this way, a seed gives
    the same text on both. Which token wins moves only if two tokens finish within float rounding of
    each other, so the last bits in which CPUs' softmaxes differ do not change the text.
    """
    waits = torch.rand(probs.shape, generator=generator, dtype=torch.float64).neg_().log1p_().neg_()
    finish = torch.where(probs > 0, waits / probs, float("inf"))
    return int(finish.argmin())


class TextStream:
    """Token ids in, text out, as they come, without splitting a character.

    A token holds bytes, and a UTF-8 character of 2 to 4 bytes may be split
    across tokens (Chinese characters and emoji often are). Decoding each
    token on its own would print U+FFFD for the halves; this keeps the first
    bytes of a character until its last byte arrives.
    """

    def __init__(self, tokenizer, on_text=None):
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pieces = []

    def _emit(self, text):
        if text:
            self.pieces.append(text)
            if self.on_text is not None:
                self.on_text(text)
        return text

    def add(self, token_id):
        """The text that `token_id` completes: possibly "", possibly more than the token's own bytes."""
        return self._emit(self.decoder.decode(self.tokenizer.decode_bytes([token_id])))

    def finish(self):
        """Flush what is left; bytes of a character that never completed become U+FFFD."""
        return self._emit(self.decoder.decode(b"", final=True))

    @property
    def text(self):
        return "".join(self.pieces)


def chat_tokens(tokenizer, messages, add_assistant_header=True):
    """Llama 3 Instruct's chat layout as token ids.

    `messages` is a list of {"role": "system" | "user" | "assistant", "content": str}.
    Each message becomes

        <|start_header_id|>role<|end_header_id|>\\n\\n content <|eot_id|>

    after one <|begin_of_text|>, with the content stripped of surrounding
    whitespace as in Meta's reference code. The special tokens are inserted
    as ids, so they are control tokens; the same text typed inside a message
    stays plain text. With `add_assistant_header`, the ids end with an
    assistant header, which invites the model to write the reply.
    """
    special = tokenizer.special_ids

    def header(role):
        return [special["<|start_header_id|>"], *tokenizer.encode(role, bos=False), special["<|end_header_id|>"],
                *tokenizer.encode("\n\n", bos=False)]

    if isinstance(messages, (str, dict)):
        raise LlamaError(f"chat_tokens takes a list of messages, not a {type(messages).__name__}: write "
                         '[{"role": "user", "content": "your text"}].')
    ids = [tokenizer.bos_id]
    for message in messages:
        role, content = (message.get("role"), message.get("content")) if isinstance(message, dict) else (None, None)
        if role not in CHAT_ROLES or not isinstance(content, str):
            raise LlamaError(
                f"A chat message is a dict with a role ({', '.join(CHAT_ROLES)}) and a str content, "
                f"not {message!r}."
            )
        ids += header(role) + tokenizer.encode(content.strip(), bos=False) + [tokenizer.eot_id]
    return ids + header("assistant") if add_assistant_header else ids


@dataclass
class Generation:
    """What `generate` returns."""

    prompt_ids: list  # the prompt's token ids, as the model read them
    new_ids: list  # the generated ids, the stop token included when one ended the run
    text: str | None  # the generated text, without the stop token (None for a model without tokenizer)
    stop_reason: str  # the stop token's text (or "token <id>"), or "max_new_tokens"
    logits: torch.Tensor | None = None  # (len(new_ids), vocab) float32, with keep_logits=True


def as_token_ids(model, prompt):
    """A str prompt encoded after <|begin_of_text|>, or a list of ids taken as they are."""
    if isinstance(prompt, str):
        if model.tokenizer is None:
            raise LlamaError("This model has no tokenizer: give the prompt as a list of token ids.")
        return model.tokenizer.encode_prompt(prompt)
    return check_tokens(model, prompt).tolist()


def whole_number(value, what):
    """`value` as an int, or a LlamaError naming `what` for a float, a str, a bool or None."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise LlamaError(f"{what} must be a whole number, not {value!r}.") from None


def check_seed(seed):
    """`seed` as an int, or a LlamaError for one that is not a whole number from -2**63 to 2**64 - 1 (what
    torch.Generator takes)."""
    seed = whole_number(seed, "The seed")
    if not -(2**63) <= seed < 2**64:
        raise LlamaError(f"The seed must be a whole number from -2**63 to 2**64 - 1, not {seed}.")
    return seed


def check_temperature(temperature):
    """A LlamaError for a temperature that is not 0 or a finite number above 0 (below 0 would favour the least
    likely tokens)."""
    if isinstance(temperature, (str, bytes)) or temperature is None:
        raise LlamaError(f"The temperature must be a number: 0 (greedy) or above, not {temperature!r}.")
    if not math.isfinite(temperature) or temperature < 0:
        raise LlamaError(f"The temperature must be 0 (greedy) or a finite number above 0, not {temperature}.")


def check_generation(model, ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None):
    """A clear LlamaError for a request that cannot work, before any work is done."""
    max_new_tokens = whole_number(max_new_tokens, "The number of new tokens")
    if top_k is not None:
        whole_number(top_k, "top-k")
    if max_new_tokens < 0:
        raise LlamaError(f"The number of new tokens must be 0 or more, not {max_new_tokens}.")
    total, context = len(ids) + max_new_tokens, model.params.max_seq_len
    if total > context and len(ids) >= context:
        raise LlamaError(
            f"The prompt alone is {len(ids)} tokens, {'more than' if len(ids) > context else 'as many as'} "
            f"the model's context of {context}: no new token fits. Shorten the prompt: the prompt and the "
            f"new tokens together must fit in {context} tokens."
        )
    if total > context:  # the prompt fits, with room for fewer new tokens
        raise LlamaError(
            f"The prompt ({len(ids)} tokens) and {max_new_tokens} new tokens make {total} tokens, more than "
            f"the model's context of {context}. Shorten the prompt or ask for at most "
            f"{context - len(ids)} new tokens."
        )
    check_temperature(temperature)
    # The filters check their own settings; run them on a dummy distribution.
    top_p_filter(top_k_filter(torch.zeros(2), top_k), top_p)


@torch.inference_mode()
def generate(model, prompt, max_new_tokens, temperature=0.0, top_k=None, top_p=None, seed=None,
             use_cache=True, on_text=None, stop_ids=None, keep_logits=False):
    """Continue `prompt` by up to `max_new_tokens` tokens; return a `Generation`.

    - `prompt`: a str (encoded after <|begin_of_text|>) or a list of token ids (used as given).
    - `temperature=0` is greedy; above 0 it samples, after the `top_k` and `top_p` filters
      (see `sample_next`). `seed` makes sampling repeatable; None uses PyTorch's global generator.
    - It stops after a token in `stop_ids` (default: the tokenizer's <|end_of_text|>,
      <|eot_id|> and <|eom_id|>; pass `()` to never stop early) or after `max_new_tokens` tokens.
    - `use_cache=True` runs the prompt once, then one position per step, with a `KVCache`;
      `use_cache=False` recomputes the whole sequence at every step (same tokens, slower).
    - `on_text(str)` is called with the new text as it is decoded, never half a character;
      the stop token is not part of the text.
    - `keep_logits=True` keeps each step's logits in the result.

    The result's `new_ids` are the generated ids (the stop token included when one ended
    the run), `text` their text and `stop_reason` why it stopped. A prompt that is empty,
    holds unknown ids, or would not fit in the context with `max_new_tokens` more tokens
    is a LlamaError raised before any work is done, as are invalid sampling settings.
    """
    ids = as_token_ids(model, prompt)
    check_generation(model, ids, max_new_tokens, temperature, top_k, top_p)
    tokenizer = model.tokenizer
    if stop_ids is None:
        stop_ids = tokenizer.stop_ids if tokenizer is not None else ()
    if on_text is not None and tokenizer is None:
        raise LlamaError("Streaming text needs a tokenizer, and this model has none.")
    stream = TextStream(tokenizer, on_text) if tokenizer is not None else None
    generator = None if seed is None else torch.Generator().manual_seed(check_seed(seed))
    cache = KVCache(model.params, len(ids) + max_new_tokens) if use_cache else None

    new_ids, kept_logits, stop_reason = [], [], "max_new_tokens"
    step_input = ids
    while len(new_ids) < max_new_tokens:
        logits = forward(model, step_input, cache, last_only=True)[-1]
        if keep_logits:
            kept_logits.append(logits)
        token = sample_next(logits, temperature, top_k, top_p, generator)
        new_ids.append(token)
        if token in stop_ids:
            stop_reason = tokenizer.decode([token]) if tokenizer is not None else f"token {token}"
            break
        if stream is not None:
            stream.add(token)
        # With a cache, the next step reads only the new token; without, everything again.
        step_input = [token] if use_cache else ids + new_ids
    if stream is not None:
        stream.finish()
    return Generation(
        prompt_ids=ids,
        new_ids=new_ids,
        text=stream.text if stream is not None else None,
        stop_reason=stop_reason,
        logits=torch.stack(kept_logits) if kept_logits else None,
    )
