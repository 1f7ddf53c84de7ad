"""Command-line demo: python -m helpers "<prompt>" [--model DIR]

Prints which model it uses, the prompt's tokens, and the five most likely
next tokens with their probabilities.
"""

import argparse
import sys
import textwrap

import torch

from .errors import LlamaError
from .model import load_model
from .transformer import next_token_probs


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m helpers",
        description="Predict the next token with the course's from-scratch Llama 3.",
        epilog="The model is found as in helpers/model.py: --model, then LLAMA3_DIR, then a Kaggle "
        "input, then llama-3-8B/original, then the embedded tiny model.",
    )
    parser.add_argument("prompt", help="the text to continue (quote it)")
    parser.add_argument("--model", metavar="DIR", help="a Llama 3 folder with params.json and consolidated.00.pth")
    parser.add_argument("--top", type=int, default=5, metavar="K", help="how many next tokens to list (default 5)")
    return parser.parse_args(argv)


def run(args):
    model = load_model(args.model)
    tokenizer = model.tokenizer
    tokens = tokenizer.encode_prompt(args.prompt)
    print(f"\nPrompt: {len(tokens)} token{'s' if len(tokens) != 1 else ''}")
    tokenizer.show(tokens)
    probs = next_token_probs(model, tokens)
    top = torch.topk(probs, min(args.top, len(probs)))
    print(f"\nTop {len(top.indices)} next tokens:")
    for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        print(f"{rank:>3}. {tokenizer.pieces([i])[0]!r:<20} {p:8.2%}   (id {i})")


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except (LlamaError, OSError) as error:
        print("\n" + textwrap.fill(f"Error: {error}", width=88), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
