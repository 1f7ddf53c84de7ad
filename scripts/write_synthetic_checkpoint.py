"""Write a checkpoint shaped exactly like Meta-Llama-3-8B, filled with random numbers.

    .venv/bin/python scripts/write_synthetic_checkpoint.py /tmp/llama3-8b-synthetic
    .venv/bin/python scripts/write_synthetic_checkpoint.py /tmp/llama3-8b-2layers --layers 2
    .venv/bin/python scripts/write_synthetic_checkpoint.py /tmp/llama3-8b-hf --format hf

With --format hf the folder is in Hugging Face's format instead, holding the very same numbers:
config.json, two safetensors shards with model.safetensors.index.json (names as Hugging Face's, the rows
of q_proj and k_proj reordered for "rotate half"), and a tokenizer.json converted from Meta's
tokenizer.model by helpers/tokenizer_json.py. Each tensor is drawn and written in turn, streamed into its
shard; only one wq or wk at a time is held whole (to reorder its rows).

The folder gets the 8B's params.json and a consolidated.00.pth with its exact
tensor names, shapes and bfloat16 dtype (16.06 GB for all 32 layers), with
values drawn from a fixed seed: normal with std 0.02 for the matrices, 1 for
the norm weights, so activations stay finite through every layer. Speed and
memory depend only on the shapes, so bench/fit.py measures on it what the
real 8B would cost. It is not a language model. Never commit it.

It is written without holding the model in memory:
1. torch.save of a state dict of FakeTensors (no storage at all) inside
   `torch.serialization.skip_data` writes the real file layout, with empty
   space where the tensor bytes go;
2. the file is given its disk blocks up front (posix_fallocate), so a full disk
   fails here with a clear error instead of a crash halfway through;
3. each tensor is filled through a shared memory map of the file, 128 MB per
   map and 16 MB of random numbers at a time.
Writing the 8B on a 2-core machine took 1.2 to 3.6 minutes (the disk decides), with a peak RSS of
0.53 GB, of which 0.33 GB anonymous (PyTorch alone takes 0.15 GB). The
folder is written under a staging name and renamed when complete, so a
folder with the final name is always a whole checkpoint.
"""

import argparse
import json
import mmap
import os
import shutil
import sys
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from helpers.hf_format import INDEX, hf_name
from helpers.params import DEFAULT_SHAPE, LLAMA3_8B_PARAMS, SHAPES, checkpoint_bytes, expected_shapes, params_from_dict
from helpers.rope import half_split_rows
from helpers.tokenizer import Tokenizer
from helpers.tokenizer_json import write_tokenizer_json

# The shapes --shape chooses from are helpers.params.SHAPES: each model's params.json, key for key, and
# whether its output layer is tied (Meta's params.json does not say so; its checkpoint has no output.weight).
SEED = 0
STD = 0.02
CHUNK_ELEMENTS = 1 << 22  # random numbers drawn at a time: 16 MB of float32
SLAB_ELEMENTS = 1 << 26  # elements filled through one map of the file: 128 MB of bf16
# Room for the zip headers and pickle beside the tensor bytes, and some to spare.
SPARE_BYTES = 64 << 20


class NotEnoughSpace(OSError):
    pass


def _check_space(out_dir, params, tied, disk_usage):
    """The bytes the checkpoint needs; an error if `out_dir` exists or its disk has not that much free."""
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; delete it first or choose another folder.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    need, free = checkpoint_bytes(params, tied) + SPARE_BYTES, disk_usage(out_dir.parent).free
    if free < need:
        raise NotEnoughSpace(
            f"Not enough disk space in {out_dir.parent}: the checkpoint needs {need / 1e9:.2f} GB and "
            f"{free / 1e9:.2f} GB are free. Free some space, write fewer layers (--layers), or choose "
            "another folder."
        )
    return need


def write_checkpoint(out_dir, raw_params=LLAMA3_8B_PARAMS, seed=SEED, disk_usage=shutil.disk_usage, tied=False):
    """Write params.json and a random bf16 consolidated.00.pth for `raw_params` into the new folder `out_dir`.

    `tied=True` leaves output.weight out, as Llama 3.2 1B and 3B do (see SHAPES).
    """
    out_dir = Path(out_dir)
    params = params_from_dict(raw_params)
    shapes = expected_shapes(params, tied)
    need = _check_space(out_dir, params, tied, disk_usage)
    staging = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    staging.mkdir()
    try:
        (staging / "params.json").write_text(json.dumps(raw_params, indent=2) + "\n")
        path = staging / "consolidated.00.pth"
        _write_layout(path, shapes)
        with open(path, "r+b") as f:
            try:
                if hasattr(os, "posix_fallocate"):  # Linux; elsewhere a full disk shows up while filling
                    os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as error:
                raise NotEnoughSpace(f"Could not reserve {need / 1e9:.2f} GB in {out_dir.parent}: {error}") from None
            for index, (name, shape) in enumerate(shapes.items()):
                # One generator per tensor: its values depend only on the seed and its place in the file.
                _fill(path, name, torch.Size(shape).numel(), torch.Generator().manual_seed(seed * 1000 + index))
            os.fsync(f.fileno())  # the dirty pages of the shared maps are the file's pages: sync them
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _write_layout(path, shapes):
    """torch.save's file layout for these shapes, without writing (or having) the tensor bytes."""
    with FakeTensorMode():
        fake = {name: torch.empty(shape, dtype=torch.bfloat16) for name, shape in shapes.items()}
    with torch.serialization.skip_data(materialize_fake_tensors=True):
        torch.save(fake, path)


def _fill(path, name, numel, generator):
    """Fill one tensor of the file in place, through shared maps of the file.

    The file is mapped afresh for each slab of the tensor and unmapped after
    it, so the file pages this process has touched (counted in its RSS)
    never exceed one slab.
    """
    for slab in range(0, numel, SLAB_ELEMENTS):
        with torch.serialization.set_default_mmap_options(mmap.MAP_SHARED):
            tensor = torch.load(path, mmap=True, weights_only=True)[name]
        flat = tensor.view(-1)[slab : slab + SLAB_ELEMENTS]
        if tensor.dim() == 1:  # RMSNorm weights start at 1
            flat.fill_(1.0)
            continue
        chunk = torch.empty(min(CHUNK_ELEMENTS, len(flat)))
        for start in range(0, len(flat), len(chunk)):
            part = chunk[: min(len(chunk), len(flat) - start)]
            part.normal_(0.0, STD, generator=generator)
            flat[start : start + len(part)].copy_(part)


def hf_config(params, tied):
    """A Hugging Face config.json for `params`, as Meta's conversion writes one for a Llama 3.x."""
    scaling = params.rope_scaling
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": params.dim, "intermediate_size": params.hidden_dim, "num_hidden_layers": params.n_layers,
        "num_attention_heads": params.n_heads, "num_key_value_heads": params.n_kv_heads,
        "head_dim": params.head_dim, "vocab_size": params.vocab_size, "rms_norm_eps": params.norm_eps,
        "rope_theta": params.rope_theta, "max_position_embeddings": params.max_seq_len,
        "rope_scaling": None if scaling is None else {
            "rope_type": "llama3", "factor": scaling.factor, "low_freq_factor": scaling.low_freq_factor,
            "high_freq_factor": scaling.high_freq_factor, "original_max_position_embeddings": scaling.original_context},
        "tie_word_embeddings": tied, "attention_bias": False, "mlp_bias": False, "torch_dtype": "bfloat16",
        "bos_token_id": 128000, "eos_token_id": 128001,
    }


def _values(name, shape, params, generator):
    """Tensor `name`'s bf16 values in Hugging Face's layout, in pieces: the numbers `_fill` writes into
    Meta's file (the same draws, in the same order), with wq's and wk's rows reordered."""
    numel = torch.Size(shape).numel()
    if len(shape) == 1:  # RMSNorm weights start at 1
        yield torch.ones(numel, dtype=torch.bfloat16)
        return
    heads = {"attention.wq.weight": params.n_heads, "attention.wk.weight": params.n_kv_heads}
    whole = next((n for key, n in heads.items() if name.endswith(key)), None)
    pieces = []
    for slab in range(0, numel, SLAB_ELEMENTS):
        n = min(SLAB_ELEMENTS, numel - slab)
        chunk = torch.empty(min(CHUNK_ELEMENTS, n))
        for start in range(0, n, len(chunk)):
            part = chunk[: min(len(chunk), n - start)]
            part.normal_(0.0, STD, generator=generator)
            if whole:
                pieces.append(part.to(torch.bfloat16))
            else:
                yield part.to(torch.bfloat16)
    if whole:
        yield half_split_rows(torch.cat(pieces).view(shape), whole).reshape(-1)


def _write_shard(path, tensors, params, seed, order):
    """One safetensors file of `tensors` (Meta name -> shape), each streamed as `_values` draws it."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 2 * torch.Size(shape).numel()
        header[hf_name(name)] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header | {"__metadata__": {"format": "pt"}}).encode()
    text += b" " * (-len(text) % 8)  # the tensor bytes start 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for name, shape in tensors.items():
            generator = torch.Generator().manual_seed(seed * 1000 + order[name])
            for piece in _values(name, shape, params, generator):
                f.write(piece.view(torch.int16).numpy().tobytes())
        os.fsync(f.fileno())


def write_hf_checkpoint(out_dir, raw_params=LLAMA3_8B_PARAMS, seed=SEED, disk_usage=shutil.disk_usage, tied=False,
                        shards=2):
    """Write, into the new folder `out_dir`, the checkpoint `write_checkpoint` would, in Hugging Face's format."""
    out_dir = Path(out_dir)
    params = params_from_dict(raw_params)
    shapes = expected_shapes(params, tied)
    _check_space(out_dir, params, tied, disk_usage)
    order = {name: index for index, name in enumerate(shapes)}  # Meta's file order seeds each tensor
    total = sum(2 * torch.Size(shape).numel() for shape in shapes.values())
    groups, done = [{} for _ in range(shards)], 0
    for name, shape in shapes.items():  # in file order, about the same bytes in each shard
        groups[min(shards - 1, done * shards // total)][name] = shape
        done += 2 * torch.Size(shape).numel()
    staging = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    staging.mkdir()
    try:
        weight_map = {}
        for number, group in enumerate(groups, start=1):
            shard = f"model-{number:05d}-of-{shards:05d}.safetensors"
            _write_shard(staging / shard, group, params, seed, order)
            weight_map |= {hf_name(name): shard for name in group}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (staging / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        (staging / "config.json").write_text(json.dumps(hf_config(params, tied), indent=2) + "\n")
        write_tokenizer_json(Tokenizer(), staging / "tokenizer.json")
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="the folder to create (for example /tmp/llama3-8b-synthetic)")
    parser.add_argument("--shape", choices=SHAPES, default=DEFAULT_SHAPE,
                        help="whose shapes: " + ", ".join(f"{key} ({s.name})" for key, s in SHAPES.items())
                        + f"; default {DEFAULT_SHAPE}")
    parser.add_argument("--layers", type=int,
                        help="how many of the model's layers to write (params.json says so), for quick runs; "
                             "default all")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--format", choices=("meta", "hf"), default="meta",
                        help="meta: params.json and consolidated.00.pth (default); hf: Hugging Face's config.json, "
                             "2 safetensors shards with their index, tokenizer.json")
    args = parser.parse_args(argv)
    shape = SHAPES[args.shape]
    n_layers = shape.params["n_layers"]
    layers = n_layers if args.layers is None else args.layers
    if not 1 <= layers <= n_layers:
        parser.error(f"--layers must be between 1 and {n_layers} ({shape.name} has {n_layers} layers)")
    raw = shape.params | {"n_layers": layers}
    try:
        write = write_hf_checkpoint if args.format == "hf" else write_checkpoint
        out = write(Path(args.out_dir), raw, seed=args.seed, tied=shape.tied)
    except (FileExistsError, NotEnoughSpace) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in out.iterdir() if f.suffix in (".pth", ".safetensors"))
    tied = ", output tied to the embedding table (no output.weight)" if shape.tied else ""
    print(f"Wrote {out}: {shape.name}'s shapes, {layers} of {n_layers} layers{tied}, {size / 1e9:.2f} GB"
          f"{' in Hugging Face format' if args.format == 'hf' else ''}. "
          "Never commit it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
