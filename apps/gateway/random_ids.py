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
from collections import deque

_POOL_BYTES = 4096
_lock = threading.Lock()
_pool = b""
_at = 0
#: Ready 12-byte hex ids (the request's, a response's, its items'), cut from one pool's
#: hex at a time: a ``popleft`` (atomic: no lock) instead of a locked slice and a ``hex``
#: per id — ~0.4k instructions against ~5k, three ids or more per Responses request.
_HEX_IDS: deque[str] = deque()
_HEX_ID_LENGTH = 24
_HEX_ID_STARTS = range(0, 2 * _POOL_BYTES - _HEX_ID_LENGTH + 1, _HEX_ID_LENGTH)


def _reset() -> None:
    global _pool, _at
    _pool, _at = b"", 0
    _HEX_IDS.clear()


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
    """``nbytes`` random bytes as hex (as ``secrets.token_hex``)."""
    if nbytes == 12:
        while True:
            try:
                return _HEX_IDS.popleft()
            except IndexError:
                _refill_hex_ids()
    return random_bytes(nbytes).hex()


def _refill_hex_ids() -> None:
    """Fresh kernel bytes of their own (never the shared pool's), cut into hex ids."""
    with _lock:
        if not _HEX_IDS:
            pool = os.urandom(_POOL_BYTES).hex()
            _HEX_IDS.extend([pool[i : i + _HEX_ID_LENGTH] for i in _HEX_ID_STARTS])


def random_urlsafe(nbytes: int) -> str:
    """As ``secrets.token_urlsafe(nbytes)``."""
    return base64.urlsafe_b64encode(random_bytes(nbytes)).rstrip(b"=").decode("ascii")
