"""Write a checkpoint shaped exactly like Meta-Llama-3-8B, filled with random numbers.

    .venv/bin/python scripts/write_synthetic_checkpoint.py /tmp/llama3-8b-synthetic
    .venv/bin/python scripts/write_synthetic_checkpoint.py /tmp/llama3-8b-2layers --layers 2

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

from helpers.params import DEFAULT_SHAPE, LLAMA3_8B_PARAMS, SHAPES, checkpoint_bytes, expected_shapes, params_from_dict

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


def write_checkpoint(out_dir, raw_params=LLAMA3_8B_PARAMS, seed=SEED, disk_usage=shutil.disk_usage, tied=False):
    """Write params.json and a random bf16 consolidated.00.pth for `raw_params` into the new folder `out_dir`.

    `tied=True` leaves output.weight out, as Llama 3.2 1B and 3B do (see SHAPES).
    """
    out_dir = Path(out_dir)
    params = params_from_dict(raw_params)
    shapes = expected_shapes(params, tied)
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
    args = parser.parse_args(argv)
    shape = SHAPES[args.shape]
    n_layers = shape.params["n_layers"]
    layers = n_layers if args.layers is None else args.layers
    if not 1 <= layers <= n_layers:
        parser.error(f"--layers must be between 1 and {n_layers} ({shape.name} has {n_layers} layers)")
    raw = shape.params | {"n_layers": layers}
    try:
        out = write_checkpoint(Path(args.out_dir), raw, seed=args.seed, tied=shape.tied)
    except (FileExistsError, NotEnoughSpace) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    size = (out / "consolidated.00.pth").stat().st_size
    tied = ", output tied to the embedding table (no output.weight)" if shape.tied else ""
    print(f"Wrote {out}: {shape.name}'s shapes, {layers} of {n_layers} layers{tied}, {size / 1e9:.2f} GB. "
          "Never commit it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
