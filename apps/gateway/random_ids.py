"""Random ids and padding for the hot path, without a syscall each.

``os.urandom`` is a system call; in a sandboxed kernel one costs several microseconds under
load, and a Responses stream needed four (its id, item ids, the obfuscation pad) besides
the request id. The bytes here are the kernel's own CSPRNG output, drawn 4 KiB at a time
and handed out once each; a forked child starts with an empty pool so two processes never
share bytes.
"""

from __future__ import annotations

import base64
import os
import threading

_POOL_BYTES = 4096
_lock = threading.Lock()
_pool = b""
_at = 0


def _reset() -> None:
    global _pool, _at
    _pool, _at = b"", 0


os.register_at_fork(after_in_child=_reset)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the kernel's CSPRNG, never handed out twice."""
    global _pool, _at
    with _lock:
        if _at + n > len(_pool):
            _pool, _at = os.urandom(max(_POOL_BYTES, n)), 0
        out = _pool[_at : _at + n]
        _at += n
    return out


def random_hex(nbytes: int = 12) -> str:
    return random_bytes(nbytes).hex()


def random_urlsafe(nbytes: int) -> str:
    """As ``secrets.token_urlsafe(nbytes)``."""
    return base64.urlsafe_b64encode(random_bytes(nbytes)).rstrip(b"=").decode("ascii")
