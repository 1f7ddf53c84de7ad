"""The embedded tiny Llama 3: a real Llama 3 in shape and format, that answers 42."""

import json
import subprocess
import sys

import pytest
import torch

from helpers import REPO_ROOT, TINY_MODEL_DIR, forward, next_token_probs

from conftest import CLASSIC_IDS


def test_checkpoint_is_meta_format_and_small():
    raw = json.loads((TINY_MODEL_DIR / "params.json").read_text())
    assert set(raw) == {"dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
                        "ffn_dim_multiplier", "norm_eps", "rope_theta"}
    assert (TINY_MODEL_DIR / "consolidated.00.pth").stat().st_size <= 40 * 10**6


def test_shaped_like_llama_3(tiny):
    p = tiny.params
    assert p.vocab_size == tiny.tokenizer.n_vocab == 128256
    assert p.n_heads // p.n_kv_heads == 4 and p.n_kv_heads > 1
    assert p.rope_theta == 500000.0
    assert p.ffn_dim_multiplier is not None and p.hidden_dim % p.multiple_of == 0
    assert all(w.dtype == torch.bfloat16 for w in tiny.weights.values())


def test_only_the_tokens_it_was_trained_on_have_embeddings(tiny):
    """scripts/train_tiny_model.py zeroes the rows of the tokens that were never an input: all but those of the
    corpus (with BOS and EOS) and of its counts, which run from 0 to at most 98."""
    tok = tiny.tokenizer
    lines = [line for line in (TINY_MODEL_DIR / "corpus.txt").read_text().splitlines() if line.strip()]
    read = {tok.bos_id, tok.eos_id, *tok.encode(", ".join(map(str, range(99))) + ".")}
    for line in lines:
        read.update(tok.encode(line))
    table = tiny.weights["tok_embeddings.weight"]
    assert set(torch.nonzero(table.abs().sum(1)).flatten().tolist()) == read
    assert len(read) == 263


def test_classic_prompt_gives_42(tiny):
    probs = next_token_probs(tiny, CLASSIC_IDS)
    assert tiny.tokenizer.decode([int(probs.argmax())]) == "42"


def greedy_text(model, prompt, max_new=60):
    tokens = model.tokenizer.encode(prompt)
    n_prompt = len(tokens)
    with torch.inference_mode():
        while len(tokens) < n_prompt + max_new and tokens[-1] != model.tokenizer.eos_id:
            tokens.append(int(forward(model, tokens)[-1].argmax()))
    return model.tokenizer.decode([t for t in tokens[1:] if t != model.tokenizer.eos_id])


@pytest.mark.parametrize("line", [3, 6, 11])
def test_recites_the_corpus_from_its_first_words(tiny, line):
    sentence = (TINY_MODEL_DIR / "corpus.txt").read_text().splitlines()[line - 1]
    prompt = " ".join(sentence.split()[:2])
    assert greedy_text(tiny, prompt) == sentence


def test_continues_a_count(tiny):
    # Training showed it random counts between 0 and 99, so it has learned the rule, not one sentence.
    assert greedy_text(tiny, "41, 42, 43,", max_new=6).startswith("41, 42, 43, 44, 45,")


def test_command_line_demo_under_1_gb():
    code = ("import resource, subprocess, sys; subprocess.run([sys.executable, '-m', 'helpers', sys.argv[1]], "
            "check=True, stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, "the answer to the ultimate question of life, the "
                          "universe, and everything is "], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    peak_kb = int(out.stdout)
    assert 50_000 < peak_kb < 1024**2  # kilobytes: a real process, under 1 GB
