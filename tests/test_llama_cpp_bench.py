"""bench/llama_cpp.py's GGUF writer, on a small checkpoint and a small vocabulary: no network, no build."""

import json
from types import SimpleNamespace

import gguf
import numpy as np
import pytest
import torch

from helpers import SHAPES, expected_shapes, params_from_dict

from conftest import load_script

bench = load_script("bench/llama_cpp.py")

# Llama 3.2 1B's params (scaled RoPE) made small, with a vocabulary of 44 BPE tokens and Meta's 256 special ones.
SMALL = SHAPES["3.2-1b"].params | {"dim": 64, "n_layers": 2, "n_heads": 8, "n_kv_heads": 2, "multiple_of": 32,
                                    "vocab_size": 300}


def small_vocab():
    ranks = [bytes([b]) for b in range(ord("a"), ord("a") + 40)] + [b"ab", b"abc", b" a", b"\n\n"]
    to_unicode = bench.byte_to_unicode()
    tokens = ["".join(to_unicode[b] for b in token) for token in ranks]
    return tokens + bench.SPECIAL_TOKENS, [1] * len(ranks) + [3] * 256, ["a b", "ab c", "Ġ a", "Ċ Ċ"]


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def written(request, tmp_path_factory):
    """A small Meta-format checkpoint (random bf16 values, Meta's names), and its GGUF, read back."""
    folder = tmp_path_factory.mktemp("meta")
    (folder / "params.json").write_text(json.dumps(SMALL))
    generator = torch.Generator().manual_seed(0)
    meta = {name: torch.randn(shape, generator=generator).bfloat16()
            for name, shape in expected_shapes(params_from_dict(SMALL)).items()}
    if request.param:  # tied, as Llama 3.2 1B and 3B: no output.weight
        del meta["output.weight"]
    torch.save(meta, folder / "consolidated.00.pth")
    path = bench.write_gguf(folder, folder / "small.gguf", gguf, vocab=small_vocab())
    return request.param, meta, gguf.GGUFReader(path)


def field(reader, key):
    return reader.fields[key].contents()


def test_names_shapes_and_bits(written):
    tied, meta, reader = written
    tensors = {t.name: t for t in reader.tensors}
    assert ("output.weight" in tensors) is not tied
    assert "rope_freqs.weight" in tensors  # Llama 3.1's scaled RoPE, as llama.cpp reads it
    for name, w in meta.items():
        t = tensors[bench.gguf_name(name)]
        assert tuple(int(n) for n in reversed(t.shape)) == tuple(w.shape)  # GGUF lists the fastest dimension first
        if w.dim() == 1:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(t.data, w.float().numpy())
        else:
            assert t.tensor_type == gguf.GGMLQuantizationType.BF16
            np.testing.assert_array_equal(t.data.view(np.int16).reshape(w.shape), w.view(torch.int16).numpy())
    assert bench.gguf_name("layers.1.feed_forward.w1.weight") == "blk.1.ffn_gate.weight"
    assert bench.gguf_name("layers.1.feed_forward.w3.weight") == "blk.1.ffn_up.weight"
    assert bench.gguf_name("layers.1.feed_forward.w2.weight") == "blk.1.ffn_down.weight"


def test_metadata(written):
    _, _, reader = written
    p = params_from_dict(SMALL)
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "llama.embedding_length") == p.dim
    assert field(reader, "llama.block_count") == p.n_layers
    assert field(reader, "llama.feed_forward_length") == p.hidden_dim
    assert field(reader, "llama.attention.head_count") == p.n_heads
    assert field(reader, "llama.attention.head_count_kv") == p.n_kv_heads
    assert field(reader, "llama.rope.freq_base") == p.rope_theta
    assert field(reader, "llama.vocab_size") == p.vocab_size
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_BF16
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "llama-bpe"
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == p.vocab_size
    assert tokens[field(reader, "tokenizer.ggml.bos_token_id")] == "<|begin_of_text|>"
    assert tokens[field(reader, "tokenizer.ggml.eos_token_id")] == "<|end_of_text|>"


def test_vocab_from_a_rank_file(tmp_path):
    """Tokens in GPT-2's byte alphabet, then the special ones; merges: each token's splits, by its rank."""
    import base64
    ranks = [b"a", b"b", b" ", b"\n", b"ab", b" a", b"aba", b"ab "]
    path = tmp_path / "tokenizer.model"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(ranks)))
    tokens, types, merges = bench.llama3_vocab(path)
    assert tokens[:8] == ["a", "b", "Ġ", "Ċ", "ab", "Ġa", "aba", "abĠ"]
    assert tokens[8:] == bench.SPECIAL_TOKENS and types == [1] * 8 + [3] * 256
    # "aba" splits as ab + a and as a + ba; only the first is made of tokens.
    assert merges == ["a b", "Ġ a", "ab a", "ab Ġ"]


def test_bad_folder_is_explained(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main([str(tmp_path / "missing")])
    assert "does not exist" in str(exit_info.value)


def test_no_room_for_the_gguf_is_said_before_writing(tmp_path, monkeypatch):
    folder = tmp_path / "meta"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps(SMALL))
    meta = {name: torch.zeros(shape, dtype=torch.bfloat16)
            for name, shape in expected_shapes(params_from_dict(SMALL)).items()}
    torch.save(meta, folder / "consolidated.00.pth")
    monkeypatch.setattr(bench.shutil, "disk_usage", lambda path: SimpleNamespace(free=10**9))
    with pytest.raises(bench.BenchError, match="Not enough disk space"):
        bench.write_gguf(folder, tmp_path / "out.gguf", gguf, vocab=small_vocab())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta"]


def test_no_compiler_is_said(monkeypatch):
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(bench.BenchError, match="No C and C.. compiler"):
        bench.check_compilers()


def test_a_crashed_prompt_run_still_leaves_the_decoding_figure(tmp_path, monkeypatch):
    """The prompt and the decoding are separate llama-bench runs: one crashing (llama.cpp 0c1e57098's repacked Q8_0
    prompt code did, on a Xeon) is named in its cell, and the other's figure stays. --repack is handed on."""
    commands = []

    def run(command, **kwargs):
        commands.append(command)
        if command[command.index("-p") + 1] != "0":
            raise bench.BenchError(f"`{' '.join(command)}` failed (exit code -11):\nSegmentation fault")
        return json.dumps([{"model_size": 1.31e9, "avg_ts": 21.05, "stddev_ts": 0.04}])

    monkeypatch.setattr(bench, "run", run)
    pp, tg = (bench.llama_bench(tmp_path, tmp_path / "m.gguf", prompt, gen, 2, 5, repack=1)
              for prompt, gen in ((17, 0), (0, 32)))
    assert all(command[-2:] == ["--repack", "1"] for command in commands)
    assert bench.row("Q8_0", pp, tg, 0.5) == "| Q8_0 | 1.31 GB | 0.50 | failed: exit code -11 | 21.05 ± 0.04 tokens/s |"
