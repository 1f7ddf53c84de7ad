"""Command-line demo: python -m helpers "<prompt>" [--model DIR] [--generate N ...]

Prints which model it uses, the prompt's tokens, and the five most likely
next tokens with their probabilities; with --generate N, it writes up to N
new tokens instead, printing the text as it comes.

An error is one paragraph on stderr and exit status 1 (130 after Ctrl-C); an
error the course did not expect is reported as a bug. --debug shows the traceback.
"""

import argparse
import re
import shlex
import sys
import textwrap

import torch

from .errors import LlamaError
from .generate import chat_tokens, check_generation, generate
from .model import load_model
from .transformer import next_token_probs


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m helpers",
        description="Predict the next token, or write text, with the course's from-scratch Llama 3.",
        epilog="The model is found as in helpers/model.py: --model, then LLAMA3_DIR, then a Kaggle input, then "
        "the folders notebook 00 downloads into (llama-3-8B/original, Llama-3.2-1B/original, ..., or the folder "
        "above for Hugging Face's format), then the embedded tiny model.",
    )
    parser.add_argument("prompt", help="the text to continue (quote it)")
    parser.add_argument("--model", metavar="DIR", help="a Llama 3 folder with params.json and consolidated.00.pth, "
                        "or config.json and model*.safetensors")
    parser.add_argument("--chat", action="store_true",
                        help="wrap the prompt as a user message in Llama 3 Instruct's chat format "
                        "(for Meta-Llama-3-8B-Instruct)")
    parser.add_argument("--rope-scaling-factor", type=float, metavar="F",
                        help="RoPE's scale factor for a Llama 3.1+ model, instead of the one chosen for it")
    parser.add_argument("--top", type=int, metavar="K", help="how many next tokens to list (default 5; not with "
                        "--generate)")
    sampling = parser.add_argument_group("generation")
    sampling.add_argument("--generate", type=int, metavar="N", help="write up to N new tokens (stops early at "
                          "<|end_of_text|>, <|eot_id|> or <|eom_id|>) instead of listing the next tokens")
    sampling.add_argument("--temperature", type=float, default=0.0, metavar="T",
                          help="0 is greedy (the default); above 0 samples, more randomly as T grows")
    sampling.add_argument("--top-k", type=int, metavar="K", help="sample only among the K most likely tokens")
    sampling.add_argument("--top-p", type=float, metavar="P",
                          help="sample only among the fewest most likely tokens whose probabilities reach P")
    sampling.add_argument("--seed", type=int, help="a seed, for sampling that gives the same text every run")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser.parse_args(argv)


def valid_utf8(prompt):
    """The prompt with each byte that was not UTF-8 replaced by U+FFFD, and a warning saying how many.

    Python decodes the command line with surrogateescape: such a byte arrives as
    a lone surrogate, U+DC80 to U+DCFF, which no tokenizer can encode.
    """
    prompt, n = re.subn("[\udc80-\udcff]", "\ufffd", prompt)
    if n:
        were = "bytes of the prompt were" if n != 1 else "byte of the prompt was"
        print(f"Warning: {n} {were} not valid UTF-8, and replaced with U+FFFD.", file=sys.stderr)
    return prompt


def sampling_options(args):
    """The generation options the user set, by their command-line names."""
    options = {"--temperature": args.temperature or None, "--top-k": args.top_k, "--top-p": args.top_p,
               "--seed": args.seed}
    return {name: value for name, value in options.items() if value is not None}


def run_generate(model, tokens, args):
    options = sampling_options(args)
    if args.temperature:
        how = ", ".join(f"{name[2:]} {value}" for name, value in options.items())
    else:
        how = "greedy" + (f"; {', '.join(options)}: no effect unless --temperature is above 0" if options else "")
    print(f"\nGenerating up to {args.generate} tokens ({how}):\n")
    if not args.chat:  # a chat's prompt is the user's message, not the start of the reply
        print(model.tokenizer.decode(tokens[1:]), end="", flush=True)
    result = generate(model, tokens, args.generate, args.temperature, args.top_k, args.top_p, args.seed,
                      on_text=lambda text: print(text, end="", flush=True))
    n = len(result.new_ids)
    why = f"stopped by {result.stop_reason}"
    if result.stop_reason == "max_new_tokens":
        why = f"reached --generate {args.generate}"
    print(f"\n\n[{n} new token{'s' if n != 1 else ''}; {why}]")


def run(args):
    if args.generate is None and sampling_options(args):
        names = ", ".join(sampling_options(args))
        raise LlamaError(f"{names}: these options work only together with --generate N (how many tokens to write).")
    if args.generate is not None and args.top is not None:
        raise LlamaError("--top lists the likeliest next tokens instead of writing text; it does nothing with "
                         "--generate. Leave one of the two out (to sample among the K likeliest, use --top-k K).")
    args.top = 5 if args.top is None else args.top
    if args.top < 1:
        raise LlamaError(f"--top must be at least 1 (how many next tokens to list), not {args.top}.")
    prompt = valid_utf8(args.prompt)
    model = load_model(args.model, rope_scaling_factor=args.rope_scaling_factor)
    tokenizer = model.tokenizer
    tokens = tokenizer.encode_prompt(prompt)
    if args.chat:
        tokens = chat_tokens(tokenizer, [{"role": "user", "content": prompt}])
    if args.generate is not None:
        check_generation(model, tokens, args.generate, args.temperature, args.top_k, args.top_p)
    print(f"\nPrompt: {len(tokens)} token{'s' if len(tokens) != 1 else ''}")
    tokenizer.show(tokens)
    if args.generate is not None:
        return run_generate(model, tokens, args)
    probs = next_token_probs(model, tokens)
    top = torch.topk(probs, min(args.top, len(probs)))
    print(f"\nTop {len(top.indices)} next tokens:")
    for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True), start=1):
        print(f"{rank:>3}. {tokenizer.pieces([i])[0]!r:<20} {p:8.2%}   (id {i})")


def report_bug(error, argv):
    """One paragraph for an exception the course did not expect: a bug, and how to report it."""
    command = shlex.join(["python", "-m", "helpers", *argv, "--debug"])
    print("\n" + textwrap.fill(f"Error: this is a bug in the course, not a problem with your input: "
                               f"{type(error).__name__}: {error}", width=88), file=sys.stderr)
    print(f"To see the traceback, run the command again with --debug:\n    {command}\n"
          "and open an issue on the course's repository, with the command and the output of --debug.",
          file=sys.stderr)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        run(args)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        if isinstance(error, (LlamaError, OSError)):
            print("\n" + textwrap.fill(f"Error: {error}", width=88), file=sys.stderr)
        else:
            report_bug(error, argv)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
