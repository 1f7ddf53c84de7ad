"""python -m helpers: its output, and its one-paragraph errors."""

import os
import subprocess
import sys

from conftest import CLASSIC_PROMPT

from helpers import REPO_ROOT, Tokenizer, chat_tokens


def demo(*args, **env):
    environment = {k: v for k, v in os.environ.items() if k != "LLAMA3_DIR"} | env
    return subprocess.run([sys.executable, "-m", "helpers", *args], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True)


def test_prints_model_tokens_and_top_5():
    result = demo(CLASSIC_PROMPT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Model: data/tiny-llama3" in out
    assert "Prompt: 17 tokens" in out and "' ultimate'" in out
    top = out.split("Top 5 next tokens:")[1].strip().splitlines()
    assert len(top) == 5 and top[0].startswith("1. '42'")


def assert_clear_error(result, *phrases):
    assert result.returncode != 0
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
