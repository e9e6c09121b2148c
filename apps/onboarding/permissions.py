"""Who may use the guided flows, written once for the views (and their tests).

* New team: a person whose role manages a whole organisation (org admin, platform admin),
  in those organisations only. A team admin manages its team's subtree, never the
  organisation, so it may not create sibling teams: the same rule as the admin's team
  add page (``Capability.MANAGE`` at the organisation level).
* New provider and model: providers, models and deployments are the platform catalog,
  which only platform admins change (``ProviderAdmin.write_capability = None``). Every
  administrative role has ``Capability.CONFIGURE``, but it is the *read* capability
  (finance and auditors hold it too), so it cannot be what lets someone add a provider
  credential; the flow follows the catalog's own write rule.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from apps.identity.roles import Capability
from apps.identity.scope import scope_for
from apps.tenancy.models import Organization


def team_creation_organizations(user: Any) -> QuerySet[Organization]:
    """The organisations ``user`` may create teams in (empty: the flow is closed)."""
    area = scope_for(user).area(Capability.MANAGE)
    if area.everything:
        return Organization.objects.filter(is_active=True)
    return Organization.objects.filter(pk__in=area.org_ids, is_active=True)


def may_create_teams(user: Any) -> bool:
    return team_creation_organizations(user).exists()


def may_onboard_providers(user: Any) -> bool:
    """Whether ``user`` may add providers, models and deployments (and test them)."""
    return scope_for(user).platform
