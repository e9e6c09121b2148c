"""Write helpers every app's services share: one way to update a row, so the admin, the
management API and ``odock_apply`` validate and save the same way (HackSoft's
``model_update``).

Saving only the fields that changed matters beyond speed: the change trail
(``apps.compliance.trail``) records a row per real change, and ``odock_apply`` re-applying
the same file must write nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from django.core.exceptions import ValidationError
from django.db import models

M = TypeVar("M", bound=models.Model)


@dataclass(frozen=True, slots=True)
class Saved(Generic[M]):
    """What an upsert did: the row, whether it is new, and the fields it changed."""

    instance: M
    created: bool
    changed: tuple[str, ...] = ()

    @property
    def wrote(self) -> bool:
        return self.created or bool(self.changed)


@dataclass(frozen=True, slots=True)
class RowInvalid(Exception):
    """A row of a synced list failed validation; ``index`` is its place in the given list
    (so a caller can name it, e.g. ``models[0].deployments[2]``)."""

    index: int
    error: ValidationError


@dataclass
class SyncResult:
    """What a list sync did, as labels of the rows (for reports such as odock_apply's)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # "label (field, field)"
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0

    def add(self, saved: Saved[Any], label: str) -> None:
        if saved.created:
            self.created.append(label)
        elif saved.changed:
            self.updated.append(f"{label} ({', '.join(saved.changed)})")
        else:
            self.unchanged += 1

    def extend(self, other: SyncResult) -> None:
        self.created += other.created
        self.updated += other.updated
        self.deleted += other.deleted
        self.unchanged += other.unchanged


def model_update(*, instance: M, data: Mapping[str, Any]) -> tuple[M, list[str]]:
    """Set the fields of ``data`` that differ, ``full_clean()``, and save only those.

    Returns the instance and the changed field names (empty: nothing was written). A new
    (unsaved) instance is always validated and saved whole. Raises ``ValidationError``.
    """
    adding = instance._state.adding
    changed = [name for name, value in data.items() if getattr(instance, name) != value]
    if not adding and not changed:
        return instance, []
    for name in changed:
        setattr(instance, name, data[name])
    instance.full_clean()
    instance.save(update_fields=None if adding else changed)
    return instance, changed


def model_save(*, instance: M, data: Mapping[str, Any]) -> Saved[M]:
    """``model_update`` reporting whether the row was created (the upserts' return)."""
    adding = instance._state.adding
    instance, changed = model_update(instance=instance, data=data)
    return Saved(instance, adding, () if adding else tuple(changed))


def rows_sync(
    *,
    existing: Iterable[M],
    natural: Callable[[M], Hashable],
    desired: Iterable[tuple[Hashable, Mapping[str, Any]]],
    new: Callable[[Hashable], M],
    label: Callable[[M], str],
    saved_label: Callable[[int, M], str] | None = None,
) -> SyncResult:
    """Make a collection exactly ``desired`` (natural key → values), in order.

    Rows matched by natural key are updated (only what differs), missing ones created with
    ``new(natural)``, and the rest (and duplicates of a natural key) deleted. A row that
    fails validation raises ``RowInvalid`` with its index in ``desired``. ``label`` names a
    row in the result (``saved_label(index, row)``, when given, names a saved one).
    """
    result = SyncResult()
    wanted = list(desired)
    keys = {key for key, _values in wanted}
    kept: dict[Hashable, M] = {}
    for row in existing:
        key = natural(row)
        if key in keys and key not in kept:
            kept[key] = row
        else:
            text = label(row)
            row.delete()
            result.deleted.append(text)
    for index, (key, values) in enumerate(wanted):
        row = kept.get(key) or new(key)
        try:
            saved = model_save(instance=row, data=values)
        except ValidationError as exc:
            raise RowInvalid(index, exc) from None
        text = saved_label(index, saved.instance) if saved_label else label(saved.instance)
        result.add(saved, text)
    return result
