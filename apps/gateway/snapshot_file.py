"""The last good policy snapshot on local disk, so that a gateway restarted while the
database is away serves — per each organisation's outage policy — instead of failing to
start.

The snapshot holds decrypted provider credentials and key digests, so the file is
encrypted and authenticated with the keys that protect those credentials in the database
(``ODOCK_ENCRYPTION_KEYS``, Fernet), written atomically (temporary file, fsync, rename;
mode 0600). It is a pickle of the compiled snapshot (nested frozen dataclasses, compiled
guardrails) — the one format that keeps every part without a serialiser to maintain —
and only a file that authenticates with those keys is ever unpickled.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path

from apps.gateway.snapshot import Snapshot

log = logging.getLogger(__name__)


def snapshot_file_save(path: Path, snapshot: Snapshot, encrypt: Callable[[bytes], bytes]) -> None:
    data = encrypt(pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)  # readers see the old file or the new one, never half
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def snapshot_file_load(path: Path, decrypt: Callable[[bytes], bytes]) -> Snapshot | None:
    """The snapshot kept at ``path``, or None (none kept, or not ours to trust)."""
    try:
        token = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        # Authenticated by the encryption keys before anything is unpickled.
        snapshot = pickle.loads(decrypt(token))  # noqa: S301
    except Exception:
        log.exception("the policy snapshot kept in %s cannot be used", path)
        return None
    return snapshot if isinstance(snapshot, Snapshot) else None
