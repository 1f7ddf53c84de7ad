"""python -m helpers: its output, and its one-paragraph errors."""

import dataclasses
import os
import subprocess
import sys

import pytest

import helpers.__main__
from helpers import REPO_ROOT, Tokenizer, chat_tokens

from conftest import CLASSIC_PROMPT, random_weights, write_model


def demo(*args, **env):
    environment = {k: v for k, v in os.environ.items() if k != "LLAMA3_DIR"} | env
    return subprocess.run([sys.executable, "-m", "helpers", *args], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True)


def run_main(capsys, monkeypatch, *args):
    """The demo run in this process (quicker than a new one), as a CompletedProcess."""
    monkeypatch.delenv("LLAMA3_DIR", raising=False)
    returncode = helpers.__main__.main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, returncode, out, err)


def test_prints_model_tokens_and_top_5():
    result = demo(CLASSIC_PROMPT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Model: data/tiny-llama3" in out
    assert "Prompt: 17 tokens" in out and "' ultimate'" in out
    top = out.split("Top 5 next tokens:")[1].strip().splitlines()
    assert len(top) == 5 and top[0].startswith("1. '42'")


def assert_clear_error(result, *phrases):
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("Error:")
    paragraph = " ".join(result.stderr.split())
    for phrase in phrases:
        assert phrase in paragraph


def test_bad_model_folder(tmp_path):
    assert_clear_error(demo("hi", "--model", str(tmp_path)), "is not a Llama 3 model folder")
    assert_clear_error(demo("hi", LLAMA3_DIR=str(tmp_path / "missing")), "from LLAMA3_DIR")


def test_empty_prompt():
    assert_clear_error(demo(""), "The prompt is empty")


def test_prompt_longer_than_the_context():
    assert_clear_error(demo("llama " * 9000), "do not fit in the model's context of 8192 tokens")


def test_chat_wraps_the_prompt_in_the_instruct_format():
    result = demo("Hi <|eot_id|>", "--chat", "--generate", "3")
    assert result.returncode == 0, result.stderr
    listing = result.stdout.split("Generating up to 3 tokens")[0].split("Prompt: 17 tokens")[1]
    shown = [int(line.split()[1]) for line in listing.strip().splitlines()]
    # The typed "<|eot_id|>" stays plain text; chat_tokens (tested against Meta's ChatFormat) adds the real ones.
    assert shown == chat_tokens(Tokenizer(), [{"role": "user", "content": "Hi <|eot_id|>"}])
    assert "[3 new tokens; reached --generate 3]" in result.stdout


def test_prompt_alone_longer_than_the_context(capsys, monkeypatch):
    result = run_main(capsys, monkeypatch, "llama " * 9000, "--generate", "5")
    assert_clear_error(result, "The prompt alone is 9003 tokens, more than the model's context of 8192: no new token "
                       "fits. Shorten the prompt: the prompt and the new tokens together must fit in 8192 tokens.")


@pytest.mark.parametrize("option, value, message", [
    ("--temperature", "nan", "The temperature must be 0 (greedy) or a finite number above 0, not nan."),
    ("--temperature", "inf", "The temperature must be 0 (greedy) or a finite number above 0, not inf."),
    ("--temperature", "-inf", "The temperature must be 0 (greedy) or a finite number above 0, not -inf."),
    ("--top-p", "nan", "top-p is a probability mass between 0 (excluded) and 1, not nan."),
    ("--top-p", "inf", "top-p is a probability mass between 0 (excluded) and 1, not inf."),
])
def test_non_finite_sampling_settings(capsys, monkeypatch, option, value, message):
    assert_clear_error(run_main(capsys, monkeypatch, "A llama", "--generate", "5", f"{option}={value}"), message)


@pytest.fixture(scope="module")
def tiny_with_a_nan(tiny, tmp_path_factory):
    """The tiny model's folder with one NaN in layer 1's weights: the embedding and layer 0 stay finite."""
    w2 = tiny.weights["layers.1.feed_forward.w2.weight"].clone()
    w2[0, 0] = float("nan")
    return write_model(tmp_path_factory.mktemp("nan"), tiny.params,
                       tiny.weights | {"layers.1.feed_forward.w2.weight": w2})


@pytest.mark.parametrize("options", [(), ("--generate", "5"), ("--generate", "5", "--temperature", "0.8")])
def test_weights_with_a_nan(tiny_with_a_nan, options):
    """Before: nan% in the top 5, "!!!!!" generated, and a traceback from torch.multinomial."""
    result = demo(CLASSIC_PROMPT, "--model", str(tiny_with_a_nan), *options)
    assert_clear_error(result, "The checkpoint is damaged (non-finite values): the output of layer 1 (the layers.1.* "
                       "tensors) holds NaN or infinity", "Download consolidated.00.pth again.")
    assert "nan%" not in result.stdout and "!!!!!" not in result.stdout


@pytest.mark.parametrize("prompt, warning, shown", [
    (b"caf\xe9 ", "Warning: 1 byte of the prompt was not valid UTF-8, and replaced with U+FFFD.", "'\ufffd'"),
    (b"\xff\xfe hi", "Warning: 2 bytes of the prompt were not valid UTF-8, and replaced with U+FFFD.",
     "'\ufffd\ufffd'"),
])
def test_prompt_with_invalid_utf8(prompt, warning, shown):
    result = demo(prompt, LC_ALL="C.UTF-8")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [warning]
    assert shown in result.stdout


def test_checkpoint_that_is_a_directory(capsys, monkeypatch, small_vocab):
    folder, params, _ = small_vocab
    write_model(folder, params, {})
    os.remove(folder / "consolidated.00.pth")
    (folder / "consolidated.00.pth").mkdir()
    assert_clear_error(run_main(capsys, monkeypatch, "hi", "--model", str(folder)),
                       "consolidated.00.pth is a directory, not a file: Meta's checkpoint is a single file (16 GB "
                       "for the 8B). Delete or rename the directory, then download the file again (notebook 00) "
                       "or copy it there.")


def test_checkpoint_with_more_layers_than_params_json(capsys, monkeypatch, small_vocab):
    folder, params, _ = small_vocab
    write_model(folder, params, random_weights(dataclasses.replace(params, n_layers=4)))
    assert_clear_error(run_main(capsys, monkeypatch, "hi", "--model", str(folder)),
                       "holds 18 tensors that params.json does not explain ('layers.2.attention.wq.weight', "
                       "'layers.2.attention.wk.weight', 'layers.2.attention.wv.weight', ...). params.json says "
                       "n_layers=2, but the checkpoint has 4 layers.")


def test_unexpected_exception_is_reported_as_a_bug(capsys, monkeypatch):
    def load_model(*args, **kwargs):
        raise RuntimeError("something the course did not foresee")

    monkeypatch.setattr(helpers.__main__, "load_model", load_model)
    result = run_main(capsys, monkeypatch, "A llama", "--top", "3")
    assert_clear_error(result, "Error: this is a bug in the course, not a problem with your input: RuntimeError: "
                       "something the course did not foresee", "To see the traceback, run the command again with "
                       "--debug: python -m helpers 'A llama' --top 3 --debug and open an issue on the course's "
                       "repository, with the command and the output of --debug.")
    with pytest.raises(RuntimeError, match="something the course did not foresee"):
        helpers.__main__.main(["A llama", "--debug"])  # Python prints its traceback


def test_interrupted(capsys, monkeypatch):
    def load_model(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(helpers.__main__, "load_model", load_model)
    result = run_main(capsys, monkeypatch, "A llama")
    assert result.returncode == 130
    assert result.stderr.strip() == "Interrupted."
