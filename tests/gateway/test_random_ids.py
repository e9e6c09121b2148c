"""The hot path's random ids: kernel CSPRNG bytes drawn in bulk, each handed out once, and
never shared with a forked child."""

from __future__ import annotations

import os

from apps.gateway import random_ids


def test_bytes_are_never_handed_out_twice_across_refills():
    seen = [random_ids.random_bytes(12) for _ in range(2000)]  # several 4 KiB pools
    assert len(set(seen)) == len(seen)
    assert all(len(b) == 12 for b in seen)


def test_hex_ids_are_never_handed_out_twice_across_refills():
    seen = [random_ids.random_hex(12) for _ in range(2000)]  # several pools of ready ids
    assert len(set(seen)) == len(seen)
    assert all(len(h) == 24 and int(h, 16) >= 0 for h in seen)


def test_a_request_larger_than_the_pool_is_served_whole():
    assert len(random_ids.random_bytes(10_000)) == 10_000


def test_hex_and_urlsafe_have_the_secrets_module_s_shapes():
    assert len(random_ids.random_hex(12)) == 24
    assert len(random_ids.random_urlsafe(48)) == 64


def test_a_forked_child_does_not_repeat_the_parent_s_next_bytes():
    random_ids.random_bytes(1)  # the parent has a pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next bytes, to the parent
        os.close(read)
        os.write(write, random_ids.random_bytes(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert child != random_ids.random_bytes(16)


def test_a_forked_child_does_not_repeat_the_parent_s_next_hex_id():
    random_ids.random_hex(12)  # the parent has ready ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, random_ids.random_hex(12).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 24).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != random_ids.random_hex(12)
