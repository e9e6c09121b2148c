"""Area filters for rows that hang off more than one level, written once for the
dashboard, the API and the reports (plain ``Area.filter`` covers rows with one org, team
and project path).
"""

from __future__ import annotations

from django.db.models import Q

from apps.identity.scope import Area


def budget_q(area: Area) -> Q:
    """Budgets attached inside the area: at one of its organisations, teams or projects,
    or below them (a team's projects and keys). Never a budget attached above the area —
    an organisation's budget shows the whole organisation's spend, which a team's finance
    person or team admin may not see."""
    return (
        area.q(org="organization_id")
        | area.q(org="team__organization_id", team="team_id")
        | area.q(
            org="project__team__organization_id", team="project__team_id", project="project_id"
        )
        | area.q(
            org="key__project__team__organization_id",
            team="key__project__team_id",
            project="key__project_id",
        )
    )


def whole_organizations(area: Area, organization_ids: list[int] | None = None) -> list[int] | None:
    """The organisations wholly inside the area (None: every one, for the platform), e.g.
    for organisation-wide reports; limited to ``organization_ids`` when given."""
    if area.everything:
        return organization_ids
    ids = set(area.org_ids)
    if organization_ids is not None:
        ids &= set(organization_ids)
    return sorted(ids)
