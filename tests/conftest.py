import base64
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from helpers import TINY_MODEL_DIR, Llama, expected_shapes, load_model, params_from_dict
from helpers.params import params_to_dict

CLASSIC_PROMPT = "the answer to the ultimate question of life, the universe, and everything is "
CLASSIC_IDS = [128000, 1820, 4320, 311, 279, 17139, 3488, 315, 2324, 11, 279, 15861, 11, 323, 4395, 374, 220]


def load_script(relative_path):
    """A script of the repository (scripts/, bench/) imported as a module."""
    path = Path(__file__).resolve().parent.parent / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny():
    return load_model(TINY_MODEL_DIR, verbose=False)


def random_raw_params(n_heads=8, n_kv_heads=2, **overrides):
    """A small model's params.json, as a dictionary."""
    raw = dict(dim=64, n_layers=2, n_heads=n_heads, n_kv_heads=n_kv_heads, vocab_size=1000,
               multiple_of=32, ffn_dim_multiplier=1.3, norm_eps=1e-5, rope_theta=500000.0)
    return raw | overrides


def random_params(n_heads=8, n_kv_heads=2, **overrides):
    return params_from_dict(random_raw_params(n_heads, n_kv_heads, **overrides))


def random_weights(params, seed=0, dtype=torch.float32):
    """Meta-named weights with random values large enough for every part to matter."""
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in expected_shapes(params).items():
        if len(shape) == 1:
            w = 1 + 0.2 * torch.randn(shape, generator=g)
        else:
            w = torch.randn(shape, generator=g) / shape[-1] ** 0.5
        weights[name] = w.to(dtype)
    return weights


def random_model(params, seed=0, dtype=torch.float32):
    return Llama(Path("random"), params, random_weights(params, seed, dtype), tokenizer=None)


@pytest.fixture
def fresh_fused(monkeypatch):
    """helpers.linear's compiled one-row kernels (bf16 and int8) not tried yet, and taken by any matrix
    (the real thresholds are real models' sizes)."""
    from helpers import kernels

    kernels.reset()
    monkeypatch.setattr(kernels, "BACKGROUND", True)  # as a learner's process has it (bench/decode_step.py sets it off)
    monkeypatch.setattr(kernels, "MIN_ELEMENTS", 0)
    monkeypatch.setattr(kernels, "MIN_WIDTH", 0)
    yield
    kernels.reset()


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


def write_model(folder, params, weights, raw_params=None):
    """Write a model folder in Meta's layout (params.json and consolidated.00.pth)."""
    import json
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = raw_params if raw_params is not None else params_to_dict(params)
    (folder / "params.json").write_text(json.dumps(raw))
    torch.save(weights, folder / "consolidated.00.pth")
    return folder


@pytest.fixture
def small_vocab(tmp_path):
    """A model folder's params, weights and tokenizer.model for a 512-token vocabulary (the 256 bytes
    and the 256 special tokens), so that load_model gets as far as the weights without the 128,256-row
    tables: tests must not churn this process's memory (see test_loading's memory-mapping test)."""
    params = random_params(vocab_size=512)
    folder = tmp_path / "model"
    folder.mkdir()
    ranks = "".join(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256))
    (folder / "tokenizer.model").write_text(ranks)
    return folder, params, random_weights(params)


def pytest_collection_modifyitems(items):
    """The real-shape notebook runs first: they are one class, minutes long, that pytest-xdist gives to
    one worker (`make test` keeps this order with --no-loadscope-reorder), while the other worker takes
    the rest."""
    items.sort(key=lambda item: item.path.name != "test_notebooks_on_real_shapes.py")  # a stable sort


def reference_diffs():
    """The reference comparisons this process made: (largest differences, the bound they met)."""
    reference = sys.modules.get("reference")
    return (list(reference.MEASURED_DIFFS), reference.BOUND) if reference is not None else ([], None)


def pytest_configure(config):
    config.reference_diffs = []
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(CollectWorkerDiffs(config))


class CollectWorkerDiffs:
    """In the main process of an xdist run: each worker's reference comparisons, as it finishes."""

    def __init__(self, config):
        self.config = config

    def pytest_testnodedown(self, node):
        self.config.reference_diffs.append(getattr(node, "workeroutput", {}).get("reference_diffs", ([], None)))


def pytest_sessionfinish(session):
    """On an xdist worker: hand its reference comparisons to the main process."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["reference_diffs"] = reference_diffs()


def pytest_terminal_summary(terminalreporter, config):
    """The figure README quotes: the largest difference from transformers over all reference comparisons."""
    measured = config.reference_diffs + [reference_diffs()]
    diffs = [diff for some, _ in measured for diff in some]
    bound = next((bound for _, bound in measured if bound is not None), None)
    if diffs:
        terminalreporter.write_line(f"reference equivalence: largest |ours - transformers| over {len(diffs)} "
                                    f"fp32 comparisons of the logits = {max(diffs):.1e} (bound {bound})")
