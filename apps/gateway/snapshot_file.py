"""The last good policy snapshot on local disk, so that a gateway restarted while the
database is away serves — per each organisation's outage policy — instead of failing to
start.

The snapshot holds decrypted provider credentials and key digests, so the file is
encrypted and authenticated with the keys that protect those credentials in the database
(``ODOCK_ENCRYPTION_KEYS``, Fernet), written atomically (temporary file, fsync, rename;
mode 0600). It is a pickle of the compiled snapshot (nested frozen dataclasses, compiled
guardrails) — the one format that keeps every part without a serialiser to maintain —
and only a file that authenticates with those keys is ever unpickled.

Incremental updates are not worth a full rewrite each (100,000 keys pickle for seconds):
each is appended to ``<file>.delta`` as one length-prefixed encrypted record, fsynced,
and the next full snapshot written replaces them.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path

from apps.gateway.snapshot import Snapshot, SnapshotDelta, snapshot_apply

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
    # The deltas are in the new snapshot (a crash before this line: the loader skips them).
    _delta_path(path).unlink(missing_ok=True)


def _delta_path(path: Path) -> Path:
    return path.with_name(path.name + ".delta")


def snapshot_delta_append(
    path: Path, delta: SnapshotDelta, encrypt: Callable[[bytes], bytes]
) -> None:
    """Keep one incremental update after the snapshot at ``path`` (fsynced)."""
    record = encrypt(pickle.dumps(delta, protocol=pickle.HIGHEST_PROTOCOL))
    fd = os.open(_delta_path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, len(record).to_bytes(4, "big") + record)
        os.fsync(fd)
    finally:
        os.close(fd)


def _deltas(path: Path, decrypt: Callable[[bytes], bytes]) -> list[SnapshotDelta]:
    try:
        data = _delta_path(path).read_bytes()
    except FileNotFoundError:
        return []
    deltas, offset = [], 0
    while offset + 4 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        record = data[offset + 4 : offset + 4 + size]
        if len(record) < size:
            break  # torn by a crash while appending: the updates before it stand
        # Authenticated by the encryption keys before anything is unpickled.
        delta = pickle.loads(decrypt(record))  # noqa: S301
        if isinstance(delta, SnapshotDelta):
            deltas.append(delta)
        offset += 4 + size
    return deltas


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
    if not isinstance(snapshot, Snapshot):
        return None
    try:
        for delta in _deltas(path, decrypt):
            if delta.log_cursor > snapshot.log_cursor:
                snapshot = snapshot_apply(snapshot, delta)
    except Exception:  # the full snapshot alone is still the best there is
        log.exception("the policy snapshot updates kept in %s cannot be used", path)
    return snapshot
