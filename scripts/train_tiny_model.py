"""Train the embedded tiny Llama 3 (data/tiny-llama3) on data/tiny-llama3/corpus.txt.

    make tiny-model        # or: python scripts/train_tiny_model.py

The result is a real Llama 3 in Meta's format (params.json and a bfloat16
consolidated.00.pth with Meta's tensor names), with Meta's tokenizer and
vocabulary, small only in `dim` and `n_layers`. It is trained with the
course's own `forward`, so it is exactly the architecture the notebooks
build.

Be clear about what it is: a tiny stand-in that has learned the dozen
sentences of data/tiny-llama3/corpus.txt by heart, plus one small skill: continuing a
count ("17, 18, 19," -> " 20,"). It answers 42 to the classic prompt and
recites a corpus sentence from its first words, and it knows nothing else;
elsewhere its predictions are noise. The embedding rows of tokens it never saw
as inputs are zero.

Two extras in each training step give its attention heads something to do:
the whole corpus packed into one long sequence in a random order (so a
sentence must be told apart from what came before it), and a few short
random counts such as "31, 32, 33, 34." (so the next number depends on the
previous tokens). Without them the heads of a model this small stay close to
uniform, and the attention notebook would have little to show. The model lets
the course run, and CI check it, in seconds and with no download.

The seed is fixed. On this project's 2-core machine (PyTorch 2.13.0, CPU) a
run takes about 10 minutes, and two runs wrote byte-identical checkpoints.
Elsewhere float rounding may differ slightly; the checks at the end say
whether the result still does its job, and the script exits with an error
if it does not.
"""

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from helpers import Llama, Tokenizer, expected_shapes, forward, load_model, params_from_dict
from helpers.model import TINY_MODEL_DIR

# Meta's params.json keys. GQA with 4 query heads per key/value head, Llama 3's
# rope_theta and FFN rule (int(2 * 4 * 64 / 3) = 170, times 1.3 = 221, rounded
# up to a multiple of 32 = 224).
PARAMS = {
    "dim": 64,
    "n_layers": 4,
    "n_heads": 8,
    "n_kv_heads": 2,
    "vocab_size": 128256,
    "multiple_of": 32,
    "ffn_dim_multiplier": 1.3,
    "norm_eps": 1e-05,
    "rope_theta": 500000.0,
}
SEED = 0
STEPS = 600
COUNTS_PER_STEP = 6
PEAK_LR = 3e-3
WARMUP = 20
COUNT_PROMPT = "17, 18, 19,"
CLASSIC_PROMPT = "the answer to the ultimate question of life, the universe, and everything is "


def initial_weights(params, generator):
    """Meta's tensor names and shapes: norms start at 1, matrices at small random values."""
    weights = {}
    for name, shape in expected_shapes(params).items():
        if len(shape) == 1:
            tensor = torch.ones(shape)
        else:
            tensor = torch.randn(shape, generator=generator) * 0.02
        weights[name] = tensor.requires_grad_()
    return weights


def learning_rate(step):
    """Linear warm-up, then a cosine decay to a tenth of the peak."""
    if step < WARMUP:
        return PEAK_LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, STEPS - WARMUP)
    return PEAK_LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def counting_sequence(tokenizer, generator):
    """A short random count such as "31, 32, 33, 34." between BOS and EOS."""
    length = int(torch.randint(5, 11, (1,), generator=generator))
    first = int(torch.randint(0, 100 - length, (1,), generator=generator))
    text = ", ".join(str(first + i) for i in range(length)) + "."
    return torch.tensor(tokenizer.encode(text) + [tokenizer.eos_id])


def training_sequences(documents, tokenizer, generator):
    """One step's batch: every sentence, the corpus packed in a random order, and a few counts."""
    order = torch.randperm(len(documents), generator=generator).tolist()
    # One BOS at the start; each sentence keeps its EOS, which separates it from the next.
    packed = torch.cat([documents[order[0]]] + [documents[i][1:] for i in order[1:]])
    counts = [counting_sequence(tokenizer, generator) for _ in range(COUNTS_PER_STEP)]
    return documents + [packed] + counts


def train(documents, params, tokenizer):
    generator = torch.Generator().manual_seed(SEED)
    weights = initial_weights(params, generator)
    model = Llama(TINY_MODEL_DIR, params, weights, tokenizer)
    optimizer = torch.optim.AdamW(weights.values(), lr=PEAK_LR, betas=(0.9, 0.95), weight_decay=0.0)
    seen = torch.zeros(params.vocab_size, dtype=torch.bool)  # tokens that were ever an input
    start = time.perf_counter()
    for step in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        optimizer.zero_grad()
        loss = 0.0
        sequences = training_sequences(documents, tokenizer, generator)
        for doc in sequences:
            seen[doc[:-1]] = True
            logits = forward(model, doc[:-1])
            # Each document contributes in proportion to its length.
            doc_loss = torch.nn.functional.cross_entropy(logits, doc[1:], reduction="sum")
            doc_loss.backward()
            loss += doc_loss.item()
        n_predictions = sum(len(doc) - 1 for doc in sequences)
        for w in weights.values():
            w.grad /= n_predictions
        optimizer.step()
        if step % 50 == 0 or step == STEPS - 1:
            print(f"step {step:4d}  loss {loss / n_predictions:.4f}  ({time.perf_counter() - start:.0f} s)")
    # A row of the embedding table gets a gradient only when its token is an input, so the rows of the
    # ~128,000 tokens that never were still hold their random start values, which mean nothing. Zero
    # them: the model computes exactly the same on every text it was trained on, and the file, which
    # the wheel and the Kaggle dataset compress, shrinks to half its size there.
    with torch.no_grad():
        weights["tok_embeddings.weight"][~seen] = 0
    print(f"{int(seen.sum())} tokens were inputs; the embedding rows of the other {int((~seen).sum()):,} are set to 0")
    return {name: w.detach() for name, w in weights.items()}


def save(weights, out_dir):
    """Write params.json and a bfloat16 consolidated.00.pth into a new folder beside out_dir; return it."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-llama3-", dir=out_dir.parent))
    (staging / "params.json").write_text(json.dumps(PARAMS, indent=2) + "\n")
    # clone(): each tensor gets its own storage, so the file holds nothing extra.
    torch.save({name: w.to(torch.bfloat16).clone() for name, w in weights.items()}, staging / "consolidated.00.pth")
    return staging


def publish(staging, out_dir):
    """Replace out_dir with the checked model in `staging`."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)


def greedy(model, tokens, max_new):
    tokens = list(tokens)
    for _ in range(max_new):
        with torch.inference_mode():
            tokens.append(int(forward(model, tokens)[-1].argmax()))
        if tokens[-1] == model.tokenizer.eos_id:
            break
    return tokens


def check(out_dir, lines):
    """Reload the saved model with the course's loader and check that it does its job."""
    model = load_model(out_dir, verbose=False)
    tok = model.tokenizer
    answer = tok.decode(greedy(model, tok.encode(CLASSIC_PROMPT), 1)[-1:])
    print(f"classic prompt -> {answer!r}")
    recited = 0
    for line in lines:
        prompt = " ".join(line.split()[:2])
        text = tok.decode(greedy(model, tok.encode(prompt), 60)[1:]).replace("<|end_of_text|>", "")
        recited += text == line
        print(f"{'ok' if text == line else 'NO'}  {prompt!r} -> {text!r}")
    print(f"{recited} of {len(lines)} sentences recited from their first two words")
    count = tok.decode(greedy(model, tok.encode(COUNT_PROMPT), 6)[1:])
    print(f"{COUNT_PROMPT!r} -> {count!r}")
    return answer == "42" and recited == len(lines) and count.startswith(COUNT_PROMPT + " 20,")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(TINY_MODEL_DIR), help="where to write the model")
    parser.add_argument("--corpus", default=str(TINY_MODEL_DIR / "corpus.txt"))
    args = parser.parse_args()
    torch.manual_seed(SEED)
    tokenizer = Tokenizer()
    lines = [line for line in Path(args.corpus).read_text(encoding="utf-8").splitlines() if line.strip()]
    documents = [torch.tensor(tokenizer.encode(line) + [tokenizer.eos_id]) for line in lines]
    print(f"{len(lines)} sentences, {sum(map(len, documents))} tokens; params: {PARAMS}")
    weights = train(documents, params_from_dict(PARAMS), tokenizer)
    staging = save(weights, args.out)
    size = (staging / "consolidated.00.pth").stat().st_size
    print(f"trained: {sum(w.numel() for w in weights.values()):,} parameters, {size / 1e6:.1f} MB")
    if not check(staging, lines):
        sys.exit(f"The trained model does not answer 42, recite every sentence and count: {args.out} is left as it "
                 f"was, and the new model is in {staging} for a look. Train longer (STEPS).")
    publish(staging, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
