"""The declarative configuration file ``odock_apply`` reads: ``schema`` (its shape),
``check`` (errors of meaning, by path) and ``apply`` (idempotent, through the services).

What a run does (and what a second run relies on):

- **Validate everything first.** The YAML is checked against the schema below
  (``extra="forbid"``: a misspelt field is an error), then for meaning: references to
  providers and models (in the file or already in the database), duplicate names, key
  secrets, environment variables. Every problem is reported as ``path: message``, e.g.
  ``organizations[0].teams[1].rate_limit.rpm: Input should be a valid integer``, and
  nothing is written.
- **One transaction.** An error found while applying rolls the whole run back. Generated
  key secrets are printed only after the commit.
- **Natural keys.** Providers and models by name; a deployment by (model, provider,
  upstream model); organisations by name, teams by name in their organisation, projects in
  their team, keys in their project.
- **Nothing is deleted by omission**, except the collections owned by an object the file
  mentions, which the file's list replaces: a model's ``deployments``, and a level's
  budgets (``budget:`` or ``budgets:``), rate limits (``rate_limit:`` or ``rate_limits:``)
  and model access (``models:``). So a level listed without ``budget:`` ends with no budget
  rows; an empty or absent ``models:`` list allows whatever the parent allows. Providers,
  models, organisations, teams, projects and keys the file does not name are left alone.
- **Optional scalars left out keep their current value** (``active``, a provider's
  ``api_key``/``options``, an organisation's ``display_name``, ``outage_policy`` and each
  of its ``alerts`` fields, a key's ``expires_at``); new rows get the model defaults.
- **Only real changes are saved**, so re-applying the same file writes nothing, does not
  bump the configuration version, and reports ``created 0, updated 0, deleted 0``.
- **Keys.** ``secret:`` is stored as its digest (and the digest replaced if the secret
  changed); without ``secret:`` a new key gets a generated secret printed once, and an
  existing key is left as it is. ``revoked: true`` revokes; it cannot be undone from the
  file. ``expires_at`` must carry a timezone.
- **Money** is Decimal: write it as a string (``"0.15"``) or a plain YAML number (read as
  Decimal, never float); negatives are refused.
- **Provider secrets** can come from the environment (``api_key_env: VAR``) so they need
  not sit in the file.
- **Organisations** may set ``outage_policy: fail_closed | fail_open`` (what the gateway
  does when Redis or the database is away) and ``alerts:`` for budget threshold alerts:
  ``webhook_url``, ``webhook_secret`` or ``webhook_secret_env: VAR`` (the HMAC key, stored
  encrypted), ``emails: [..]`` (each address checked). An empty value (``""``, ``[]``)
  clears that setting. Secrets, like key secrets, are never printed: the report names the
  changed field only.
- **Routing.** A model's ``routing:`` block (``strategy``, ``max_attempts``,
  ``attempt_timeout_seconds``, ``fallback_models`` in order, ``fallback_on`` a list of
  ``error`` / ``context_window`` / ``content_policy``) is complete when given: what it
  leaves out takes the defaults, and its ``fallback_models`` replace the model's. Without
  ``routing:`` the model's routing is left as it is. Deployments take ``priority`` (lower
  first for the ``priority`` strategy) and ``tags``.
- **Model aliases.** A level's ``model_aliases: {claude-sonnet-5: my-model,
  "claude-haiku-*": small}`` replaces its aliases (matched by alias): a name clients send,
  exact or a prefix ending in one ``*`` (quote it in YAML), mapped to a served model (in
  the file or the database). An alias may not be a model's own name. The nearest level
  wins per alias; an exact alias beats a pattern, the longest pattern wins.
- **Data residency.** A level's ``deployment_tags: {region: [eu]}`` replaces its tag rules:
  its requests may only be served by deployments whose tag has one of the values (every
  level's rules apply).
- **Audit.** A level's ``capture: {mode: none|redacted|full, max_bytes: N}`` replaces its
  content capture rule (absent: none at that level; the most specific level with a rule
  decides); an organisation's ``audit_retention_days`` (0: forever) and
  ``response_retention_days`` (stored responses; default 30, 0: until deleted).
- **Guardrails.** A level's ``guardrails:`` list replaces its guardrail rules (matched by
  detector and custom name): ``{detector, name?, action: block|redact|flag, mode:
  enforce|shadow, stage: input|output|both, allow_loosen?, restore_in_response?}`` plus the
  detector's settings written flat (``regex``/``keywords``/``case_sensitive`` for custom,
  ``threshold`` for prompt_injection, ``max_input_bytes``/``max_messages``/
  ``max_prompt_tokens`` for input_limits, ``regions``/``leniency`` for phone). Each rule is
  validated like the admin form.
- **People and end users.** ``users:`` gives existing people (by ``username``; the file
  never creates people) their own ``budget(s)``, ``rate_limit(s)`` and ``models``: they
  govern every key the person owns, each list replacing that person's rules. A key's
  ``owner: <username>`` sets who owns it (left out: kept). An organisation's
  ``end_users:`` list (``{end_user: id | "prefix*" | "*", budget: {limit_usd, period,
  hard}, rate_limit: {rpm, tpm, max_concurrency}}``) replaces its end-user policies,
  matched by ``end_user``; absent: left as they are.
- **MCP.** ``mcp_servers:`` registers upstream MCP servers by name: ``url:`` (Streamable
  HTTP) or ``command:`` + ``args:`` (stdio), ``active``, ``namespaced`` (default true: tools
  and prompts are ``<server>__<name>``; false: upstream names), and credentials the gateway injects:
  ``bearer_token`` or ``bearer_token_env: VAR``, ``headers: {Name: value}`` or
  ``headers_env: {Name: VAR}``, and for stdio ``environment: {NAME: value}`` or
  ``environment_env: {NAME: VAR}`` (stored encrypted, never printed; left out: kept; ``""``
  or ``{}``: cleared). A server's ``tools:`` list (``name``, ``requires_approval``, ``rpm``,
  ``cost_usd``) replaces its per-tool settings. A level's ``tools:`` list replaces its tool
  grants, matched by (``server``, ``tool``): ``{server, tool: "*" | name, effect: allow|deny,
  unattended}``; the server may be in the file or already in the database.
"""

from apps.policies.config.apply import ApplyResult, config_apply
from apps.policies.config.check import config_check, config_warnings
from apps.policies.config.schema import ConfigError, ConfigFile, config_levels, config_load

__all__ = [
    "ApplyResult",
    "ConfigError",
    "ConfigFile",
    "config_apply",
    "config_check",
    "config_levels",
    "config_load",
    "config_warnings",
]
