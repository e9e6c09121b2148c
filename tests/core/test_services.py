"""model_update / model_save / rows_sync: the write primitives every app's services use."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from apps.compliance.models import ConfigChange
from apps.core.services import RowInvalid, model_save, model_update, rows_sync
from apps.providers.models import Model, ModelFallback
from tests.factories import org_create


@pytest.mark.django_db
def test_model_update_saves_only_the_fields_that_differ():
    org = org_create("acme")
    before = ConfigChange.objects.count()

    org, changed = model_update(instance=org, data={"name": "acme", "display_name": "Acme"})

    assert changed == ["display_name"]
    org.refresh_from_db()
    assert org.display_name == "Acme"
    (change,) = ConfigChange.objects.all()[: ConfigChange.objects.count() - before]
    assert change.changes == {"display_name": {"before": "", "after": "Acme"}}


@pytest.mark.django_db
def test_model_update_with_nothing_new_writes_nothing():
    org = org_create("acme")
    before = ConfigChange.objects.count()

    _org, changed = model_update(instance=org, data={"name": "acme", "is_active": True})

    assert changed == []
    assert ConfigChange.objects.count() == before


@pytest.mark.django_db
def test_model_update_validates_before_saving():
    org = org_create("acme")

    with pytest.raises(ValidationError) as caught:
        model_update(instance=org, data={"name": "not a slug!"})

    assert "name" in caught.value.message_dict
    org.refresh_from_db()
    assert org.name == "acme"


@pytest.mark.django_db
def test_model_save_says_whether_it_created():
    created = model_save(instance=Model(name="m1"), data={"input_per_mtok": Decimal("1")})
    again = model_save(instance=Model.objects.get(name="m1"), data={"input_per_mtok": 1})
    changed = model_save(instance=Model.objects.get(name="m1"), data={"input_per_mtok": 2})

    assert (created.created, created.changed, created.wrote) == (True, (), True)
    assert (again.created, again.changed, again.wrote) == (False, (), False)
    assert (changed.created, changed.changed) == (False, ("input_per_mtok",))


@pytest.mark.django_db
def test_rows_sync_creates_updates_and_deletes_by_natural_key():
    model, a, b, c = (Model.objects.create(name=n) for n in ("m", "a", "b", "c"))
    ModelFallback.objects.create(model=model, fallback=a, position=0)
    ModelFallback.objects.create(model=model, fallback=b, position=1)

    result = rows_sync(
        existing=ModelFallback.objects.filter(model=model).order_by("pk"),
        natural=lambda row: row.fallback_id,
        desired=[(b.pk, {"position": 0}), (c.pk, {"position": 1})],
        new=lambda pk: ModelFallback(model=model, fallback_id=pk),
        label=lambda row: f"fallback {row.fallback.name}",
    )

    assert result.created == ["fallback c"]
    assert result.updated == ["fallback b (position)"]
    assert result.deleted == ["fallback a"]
    rows = ModelFallback.objects.filter(model=model).order_by("position")
    assert [(r.fallback.name, r.position) for r in rows] == [("b", 0), ("c", 1)]


@pytest.mark.django_db
def test_rows_sync_names_the_failing_row_by_its_index():
    model = Model.objects.create(name="m")
    fallback = Model.objects.create(name="f")

    with pytest.raises(RowInvalid) as caught:
        rows_sync(
            existing=[],
            natural=lambda row: row.fallback_id,
            desired=[(fallback.pk, {"position": 0}), (model.pk, {"position": 1})],
            new=lambda pk: ModelFallback(model=model, fallback_id=pk),
            label=str,
        )

    assert caught.value.index == 1  # a model cannot be its own fallback
