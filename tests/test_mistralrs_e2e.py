"""The pieces of make conformance's mistral.rs check that need no mistral.rs: the tokenizer it writes (Qwen's special
tokens at Qwen's ids, bytes for the rest) and the prompt both runtimes are given."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    folder = str(ROOT / "tools" / "conformance")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "conformance" / f"{name}.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def test_the_tokenizer_puts_qwens_special_tokens_at_qwens_ids(tmp_path):
    from tokenizers import Tokenizer

    e2e = _tool("mistralrs_e2e")
    e2e.write_tokenizer(tmp_path)
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tok.token_to_id("<|image_pad|>") == 151655 and tok.token_to_id("<|vision_start|>") == 151652
    assert tok.token_to_id("<|im_end|>") == 151645
    ids = tok.encode("Describe é.", add_special_tokens=False).ids
    assert max(ids) < 256 and tok.decode(ids) == "Describe é."  # bytes, no merges: every text round-trips


def test_the_prompt_holds_one_pad_per_image_token(tmp_path):
    from tokenizers import Tokenizer

    e2e = _tool("mistralrs_e2e")
    e2e.write_tokenizer(tmp_path)
    for n in (0, 4, 12):
        ids = e2e.prompt_ids(tmp_path, n)
        assert ids.count(e2e.IMAGE_PAD) == n and ids.count(151652) == 1
    text_only = e2e.prompt_ids(tmp_path, None)
    assert 151652 not in text_only and len(e2e.prompt_ids(tmp_path, 12)) == len(text_only) + 2 + 12
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tok.decode(text_only, skip_special_tokens=False).startswith("<|im_start|>user\n")
