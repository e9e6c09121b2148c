"""Guardrails at run time: the prompt in the inspect stage, the answer in the route stage.

A key's effective rules (``apps.guardrails.policy``) are compiled into a ``GuardSet`` with
the snapshot, off the hot path: detectors built, regexes compiled, shared by every key with
the same rules. Per request:

* ``inspect_input`` scans every text of the prompt — system, user and assistant messages,
  tool results and tool-call arguments, embeddings input — and blocks (400
  ``guardrail_blocked`` naming the detector, never the text), redacts in place (the same
  value gets the same placeholder, e.g. ``[EMAIL_1]``, across the whole request) or flags;
  shadow rules only record what they would have done. Input limits are checked first.
* ``OutputGuard`` sees the answer before the client does: a whole body, or a stream event
  by event. For streams it holds back the last ``window`` characters of content so a value
  split across chunks is caught before any of it leaves; a block cuts the stream with an
  explicit error event. Redactions in the answer, and restoring the prompt's redacted
  values (``restore_in_response``), work on both.

Other client formats (``ctx.inbound``, Anthropic Messages, the Responses API): the input
scan reads the body the client sent, in its own shape, and redacts it in place — so a
native attempt sends the redacted text — then re-derives ``ctx.body`` (the OpenAI
translation the other stages and translated attempts use) from it; earlier turns'
thinking blocks are not scanned (they are the model's output, already checked, and
changing one voids its signature). The
output guard recognises a native answer (an Anthropic ``Message``; ``text_delta`` and
``thinking_delta`` events) as well as OpenAI's. Thinking is scanned like text: a block
rule cuts it, a redaction masks it — the rule's promise that the value never reaches the
client wins over the block's signature, which then no longer matches (Anthropic refuses
such a block if it is sent back within a tool-use loop). A native Responses API answer
is guarded the same way: its ``output_text`` parts (whole) or ``response.output_text.delta``
events (streamed); the events that repeat the whole text once it is over
(``output_text.done``, ``content_part.done``, ``output_item.done`` and the final response)
carry the text as released, never the original. Released deltas may merge held-back ones,
so the inbound wrapper numbers a guarded native stream's events again.

Findings (``ctx.findings``) carry the detector, the action taken and the stage — never the
matched text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError
from apps.gateway.providers.anthropic.spec import MESSAGES_FORMAT
from apps.guardrails.detectors import (
    Finding,
    blocked_label,
    build_detectors,
    note_finding,
    redact,
    restore,
    scan_all,
)
from apps.guardrails.plugins import GuardrailPlugin, PluginRequest
from apps.guardrails.policy import EffectiveRule

PII = frozenset({"email", "phone", "card", "iban", "us_ssn", "ip_address"})
STREAM_WINDOW = 128  # characters of streamed content held back for cross-chunk matches


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: EffectiveRule
    detectors: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class GuardSet:
    input: tuple[CompiledRule, ...] = ()
    output: tuple[CompiledRule, ...] = ()
    limits: CompiledRule | None = None
    plugins: tuple[CompiledRule, ...] = ()  # apps.guardrails.plugins, by rule name
    restore: bool = False  # some redacting input rule restores values in the answer


def _detector_config(rule: EffectiveRule) -> dict[str, Any]:
    settings = rule.settings_dict()
    if rule.detector == "phone":
        options = {k: settings[k] for k in ("regions", "leniency") if k in settings}
        return {"pii": [{"name": "phone", **options}]}
    if rule.detector in PII:
        return {"pii": [rule.detector]}
    if rule.detector == "secrets":
        return {"secrets": True}
    if rule.detector == "prompt_injection":
        return {
            "prompt_injection": {
                "threshold": settings.get("threshold", 0.7),
                "method": settings.get("method", "combined"),
            }
        }
    return {
        "custom": [
            {
                "name": rule.key_name.removeprefix("custom."),
                "regex": settings.get("regex"),
                "keywords": settings.get("keywords"),
                "case_sensitive": bool(settings.get("case_sensitive", False)),
            }
        ]
    }


_COMPILED: dict[tuple[EffectiveRule, ...], GuardSet] = {}


def guardset_compile(rules: Sequence[EffectiveRule]) -> GuardSet | None:
    """Memoised per distinct rule set: thousands of keys usually share a few policies."""
    if not rules:
        return None
    cache_key = tuple(sorted(rules, key=lambda r: r.key_name))
    compiled = _COMPILED.get(cache_key)
    if compiled is not None:
        return compiled
    inputs, outputs, plugins, limits = [], [], [], None
    for rule in cache_key:
        if rule.detector == "input_limits":
            limits = CompiledRule(rule, ())
            continue
        if rule.detector == "plugin":
            plugins.append(CompiledRule(rule, ()))
            continue
        entry = CompiledRule(rule, tuple(build_detectors(_detector_config(rule))))
        if "input" in rule.stages:
            inputs.append(entry)
        if "output" in rule.stages:
            outputs.append(entry)
    compiled = GuardSet(
        input=tuple(inputs),
        output=tuple(outputs),
        limits=limits,
        plugins=tuple(plugins),
        restore=any(r.restore and r.action == "redact" and not r.shadow for r in cache_key),
    )
    if len(_COMPILED) > 1000:
        _COMPILED.clear()
    _COMPILED[cache_key] = compiled
    return compiled


# --- findings ------------------------------------------------------------------------------


def _note(ctx: RequestContext, detector: str, action: str, stage: str) -> None:
    """Recorded under the rule's detector name, the sub-kind beside it (``secrets`` /
    ``aws_access_key``), so filtering the audit log by the rule finds what it flagged."""
    note_finding(ctx.findings, detector, action, stage)


def _blocked(detector: str, stage: str, param: str | None = None) -> GatewayError:
    where = "request" if stage == "input" else "answer"
    return GatewayError(
        400,
        f"The {where} was blocked by the guardrail {blocked_label(detector)}.",
        code="guardrail_blocked",
        param=param,
    )


# --- the prompt ------------------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    """One text of the request body, and how to put a redacted version back."""

    path: str
    owner: Any
    key: Any

    @property
    def text(self) -> str:
        return self.owner[self.key]

    def replace(self, text: str) -> None:
        self.owner[self.key] = text


def _slots(body: dict[str, Any]) -> Iterator[_Slot]:
    messages = body.get("messages")
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                yield _Slot(f"messages[{i}].content", message, "content")
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        yield _Slot(f"messages[{i}].content[{j}].text", part, "text")
            for k, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    path = f"messages[{i}].tool_calls[{k}].function.arguments"
                    yield _Slot(path, function, "arguments")
    value = body.get("input")  # embeddings
    if isinstance(value, str):
        yield _Slot("input", body, "input")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                yield _Slot(f"input[{i}]", value, i)


def _anthropic_slots(body: dict[str, Any]) -> Iterator[_Slot]:
    """The texts of an Anthropic Messages body (``ctx.inbound`` of ``/v1/messages``): the
    system prompt, text blocks, tool inputs' strings, tool results and text documents, at
    the paths the client sent them. Thinking blocks of earlier turns are not scanned: they
    are the model's own (already checked) output, and changing one voids its signature."""
    system = body.get("system")
    if isinstance(system, str):
        yield _Slot("system", body, "system")
    elif isinstance(system, list):
        yield from _block_slots(system, "system")
    messages = body.get("messages")
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                yield _Slot(f"messages[{i}].content", message, "content")
            elif isinstance(content, list):
                yield from _block_slots(content, f"messages[{i}].content")


def _block_slots(blocks: list[Any], path: str) -> Iterator[_Slot]:
    for j, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        where = f"{path}[{j}]"
        kind = block.get("type")
        if isinstance(block.get("text"), str):
            yield _Slot(f"{where}.text", block, "text")
        elif kind == "tool_use" and isinstance(block.get("input"), dict):
            yield from _value_slots(block["input"], f"{where}.input")
        elif kind == "tool_result":
            content = block.get("content")
            if isinstance(content, str):
                yield _Slot(f"{where}.content", block, "content")
            elif isinstance(content, list):
                yield from _block_slots(content, f"{where}.content")
        elif kind == "document":
            source = block.get("source")
            if isinstance(source, dict) and source.get("type") == "text":
                if isinstance(source.get("data"), str):
                    yield _Slot(f"{where}.source.data", source, "data")
            elif isinstance(source, dict) and isinstance(source.get("content"), list):
                yield from _block_slots(source["content"], f"{where}.source.content")


def _value_slots(value: Any, path: str) -> Iterator[_Slot]:
    """The strings inside a JSON value (a tool call's input)."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        where = f"{path}.{key}" if isinstance(value, dict) else f"{path}[{key}]"
        if isinstance(item, str):
            yield _Slot(where, value, key)
        elif isinstance(item, dict | list):
            yield from _value_slots(item, where)


def _responses_slots(body: dict[str, Any]) -> Iterator[_Slot]:
    """The texts of a Responses API body (``ctx.inbound`` of ``/v1/responses``: the whole
    reconstructed conversation): instructions, message texts, function-call arguments and
    outputs. Reasoning items are not scanned (encrypted, the model's own output)."""
    if isinstance(body.get("instructions"), str):
        yield _Slot("instructions", body, "instructions")
    items = body.get("input")
    if isinstance(items, str):
        yield _Slot("input", body, "input")
        return
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if not isinstance(item, dict):
            continue
        for key in ("content", "output", "arguments"):
            value = item.get(key)
            if isinstance(value, str):
                yield _Slot(f"input[{i}].{key}", item, key)
            elif isinstance(value, list):
                for j, part in enumerate(value):
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        yield _Slot(f"input[{i}].{key}[{j}].text", part, "text")


#: Inbound format (``ctx.inbound.format``) → the walker of its own body's texts.
INBOUND_SLOTS: dict[str, Callable[[dict[str, Any]], Iterator[_Slot]]] = {
    MESSAGES_FORMAT: _anthropic_slots,
    "openai.responses": _responses_slots,
}


def _request_slots(ctx: RequestContext) -> list[_Slot]:
    """The texts of the request as the client sent it: the inbound format's own body when
    its walker is known (so a redaction reaches what a native attempt sends), else
    ``ctx.body`` (the OpenAI translation)."""
    inbound = ctx.inbound
    walk = INBOUND_SLOTS.get(inbound.format) if inbound is not None else None
    if walk is not None:
        return list(walk(inbound.body))  # type: ignore[union-attr]
    return list(_slots(ctx.body)) if ctx.body is not None else []


def _check_limits(ctx: RequestContext, limits: CompiledRule, prompt_tokens: Any) -> None:
    settings = limits.rule.settings_dict()
    body = ctx.body or {}
    exceeded = None
    if len(ctx.raw_body) > settings.get("max_input_bytes", float("inf")):
        exceeded = "limit.input_bytes"
    elif len(body.get("messages") or ()) > settings.get("max_messages", float("inf")):
        exceeded = "limit.messages"
    elif "max_prompt_tokens" in settings and prompt_tokens(body) > settings["max_prompt_tokens"]:
        exceeded = "limit.prompt_tokens"
    if exceeded is None:
        return
    if limits.rule.shadow:
        _note(ctx, exceeded, "shadow:block", "input")
        return
    _note(ctx, exceeded, "block", "input")
    raise _blocked(exceeded, "input")


def inspect_input(ctx: RequestContext, guard: GuardSet, prompt_tokens: Any) -> None:
    """Scan, then act: blocks raise; redactions change ``ctx.body`` in place."""
    if guard.limits is not None:
        _check_limits(ctx, guard.limits, prompt_tokens)
    if guard.input and (ctx.body is not None or ctx.inbound is not None):
        _scan_input(ctx, guard)
    if guard.output or (guard.restore and ctx.redactions):
        ctx.output_guard = OutputGuard(ctx, guard)


def _scan_input(ctx: RequestContext, guard: GuardSet) -> None:
    slots = _request_slots(ctx)
    numbering: dict[str, str] = {}
    redacted = False
    for compiled in guard.input:
        rule = compiled.rule
        for slot in slots:
            findings = scan_all(compiled.detectors, slot.text)
            if not findings:
                continue
            if rule.shadow:
                for f in findings:
                    _note(ctx, f.detector, f"shadow:{rule.action}", "input")
                continue
            for f in findings:
                _note(ctx, f.detector, rule.action, "input")
            if rule.action == "block":
                raise _blocked(findings[0].detector, "input", slot.path)
            if rule.action == "redact":
                text, pairs = redact(slot.text, findings, numbering=numbering)
                slot.replace(text)
                redacted = True
                ctx.redactions.extend(p for p in pairs if p not in ctx.redactions)
    inbound = ctx.inbound
    native_slots = inbound is not None and inbound.format in INBOUND_SLOTS
    if redacted and native_slots and inbound.governed is not None:  # type: ignore[union-attr]
        ctx.body = inbound.governed(inbound.body)  # type: ignore[union-attr]


async def inspect_plugins(
    ctx: RequestContext, guard: GuardSet, plugins: dict[str, GuardrailPlugin]
) -> None:
    """The rules that call installed plugins, after the built-in detectors (so a plugin
    calling out sees the prompt already redacted)."""
    if not guard.plugins or ctx.body is None or ctx.key is None:
        return
    texts = [slot.text for slot in _request_slots(ctx)]
    identity = ctx.key.identity
    request = PluginRequest(
        request_id=ctx.request_id,
        endpoint=ctx.endpoint,
        model=ctx.model_name,
        organization=identity.org_name,
        team=identity.team_name,
        project=identity.project_name,
        key_prefix=identity.key_prefix,
    )
    for compiled in guard.plugins:
        rule = compiled.rule
        plugin = plugins.get(rule.key_name.removeprefix("plugin."))
        if plugin is None:
            _note(ctx, rule.key_name, "not_installed", "input")
            continue
        result = await plugin.check(texts, request)
        if result.failed:
            if result.fail_open or rule.shadow:
                _note(ctx, f"{rule.key_name}.unavailable", "fail_open", "input")
                continue
            _note(ctx, f"{rule.key_name}.unavailable", "fail_closed", "input")
            raise GatewayError(
                503,
                f"The guardrail '{rule.key_name}' could not check the request; retry later.",
                code="guardrail_unavailable",
                type="api_error",
                headers=[(b"retry-after", b"5")],
            )
        action = f"shadow:{rule.action}" if rule.shadow else rule.action
        for detector in result.findings:
            _note(ctx, detector, action, "input")
        if result.findings and not rule.shadow and rule.action == "block":
            raise _blocked(result.findings[0], "input")


# --- the answer --------------------------------------------------------------------------


@dataclass
class OutputGuard:
    ctx: RequestContext
    guard: GuardSet
    window: int = STREAM_WINDOW
    pending: str = ""
    template: dict[str, Any] | None = None
    tail: str = ""  # the last released characters: context for matches, never re-sent
    blocked: bool = False
    _buffer: bytes = b""
    _seen: set[tuple[str, int]] = field(default_factory=set)
    _released: int = 0
    # A native Responses stream: the text released per (item id, content index), which
    # the events repeating the whole text carry instead of the original.
    _parts: dict[tuple[str, int], str] = field(default_factory=dict)

    # -- shared ---------------------------------------------------------------------------

    def _scan(self, text: str) -> list[tuple[EffectiveRule, Finding]]:
        found = []
        for compiled in self.guard.output:
            for f in scan_all(compiled.detectors, text):
                found.append((compiled.rule, f))
        return found

    def _apply(self, text: str, found: list[tuple[EffectiveRule, Finding]], base: int) -> str:
        """Record findings once, raise on an enforced block, redact, restore."""
        redactions = []
        for rule, f in found:
            absolute = (f.detector, base + f.start)
            new = absolute not in self._seen
            self._seen.add(absolute)
            action = f"shadow:{rule.action}" if rule.shadow else rule.action
            if new:
                _note(self.ctx, f.detector, action, "output")
            if rule.shadow:
                continue
            if rule.action == "block":
                raise _blocked(f.detector, "output")
            if rule.action == "redact":
                redactions.append(f)
        if redactions:
            text, _pairs = redact(text, redactions, numbering={})
        if self.guard.restore and self.ctx.redactions:
            text = restore(text, self.ctx.redactions)
        return text

    # -- a whole answer -----------------------------------------------------------------------

    def filter_body(self, body: bytes) -> bytes:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if not isinstance(answer, dict):
            return body
        if answer.get("type") == "message":  # Anthropic's, from a native attempt
            return self._filter_message(answer, body)
        if answer.get("object") == "response":  # the Responses API's, from a native attempt
            return orjson.dumps(answer) if self._filter_response(answer) else body
        changed = False
        for choice in answer.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str) and content:
                new = self._apply(content, self._scan(content), 0)
                if new != content:
                    message["content"] = new
                    changed = True
        return orjson.dumps(answer) if changed else body

    def _filter_message(self, message: dict[str, Any], body: bytes) -> bytes:
        """An Anthropic ``Message``: its text and thinking blocks are what the model wrote."""
        changed = False
        for block in message.get("content") or ():
            if not isinstance(block, dict):
                continue
            member = _ANTHROPIC_BLOCK_TEXT.get(block.get("type"))  # type: ignore[arg-type]
            text = block.get(member) if member is not None else None
            if isinstance(text, str) and text:
                new = self._apply(text, self._scan(text), 0)
                if new != text:
                    block[member] = new  # type: ignore[index]
                    changed = True
        return orjson.dumps(message) if changed else body

    def _filter_response(self, response: dict[str, Any]) -> bool:
        """A Responses ``Response``: its messages' ``output_text`` parts are what the model
        wrote. True when one changed."""
        changed = False
        for part in _output_text_parts(response.get("output")):
            text = part.get("text")
            if isinstance(text, str) and text:
                new = self._apply(text, self._scan(text), 0)
                if new != text:
                    part["text"] = new
                    changed = True
        return changed

    def _responses_done(self, event: bytes) -> bytes:
        """An event repeating a whole text of a native Responses stream, with the text as
        it was released."""
        at = event.find(b"data: {")
        try:
            data = orjson.loads(event[at + 6 :]) if at >= 0 else None
        except orjson.JSONDecodeError:
            return event
        if not isinstance(data, dict):
            return event
        kind, parts = data.get("type"), self._parts
        if kind == "response.output_text.done":
            data["text"] = parts.get((data.get("item_id"), data.get("content_index")), "")
        elif kind == "response.content_part.done" and isinstance(data.get("part"), dict):
            if data["part"].get("type") == "output_text":
                key = (data.get("item_id"), data.get("content_index"))
                data["part"]["text"] = parts.get(key, "")  # type: ignore[call-overload]
        elif kind == "response.output_item.done":
            self._released_into([data.get("item")])
        elif isinstance(data.get("response"), dict):  # completed, incomplete
            self._released_into(data["response"].get("output"))
        return b"event: " + str(kind).encode() + b"\ndata: " + orjson.dumps(data)

    def _released_into(self, output: Any) -> None:
        for item in output if isinstance(output, list) else ():
            if not isinstance(item, dict) or item.get("type") != "message":
                continue
            for index, part in enumerate(item.get("content") or ()):
                if isinstance(part, dict) and part.get("type") == "output_text":
                    part["text"] = self._parts.get((item.get("id"), index), "")

    # -- a stream ---------------------------------------------------------------------------

    def filter_chunk(self, chunk: bytes) -> bytes:
        """Bytes of SSE events in; the bytes to send now out (content may be held back).
        A block raises ``Blocked`` carrying what was released before it."""
        self._buffer += chunk
        if b"\n\n" not in self._buffer:
            return b""
        *events, self._buffer = self._buffer.split(b"\n\n")
        out: list[bytes] = []
        try:
            for event in events:
                if not event.strip():
                    continue
                content, parsed = _content_of(event)
                if content is None:
                    out.append(self._flush())
                    if event.startswith(_RESPONSES_WHOLE_TEXT):
                        event = self._responses_done(event)
                    out.append(event + b"\n\n")
                else:
                    if self.template is not None and parsed is not None and "choices" in parsed:
                        parsed["choices"][0]["delta"].pop("role", None)  # said once is enough
                    self.template = parsed
                    self.pending += content
                    out.append(self._release(final=False))
        except GatewayError as error:
            raise Blocked(error, b"".join(out)) from None
        return b"".join(out)

    def finish(self) -> bytes:
        """At the end of the stream: whatever is still held back, checked."""
        return self._flush() + (self._buffer + b"\n\n" if self._buffer.strip() else b"")

    def _flush(self) -> bytes:
        return self._release(final=True) if self.pending else b""

    def _release(self, *, final: bool) -> bytes:
        context = self.tail
        found = [
            (rule, Finding(f.detector, f.start - len(context), f.end - len(context), f.score))
            for rule, f in self._scan(context + self.pending)
            if f.end > len(context)  # matches wholly in released text were handled then
        ]
        for rule, f in found:  # a block acts the moment its match is complete
            if rule.action == "block" and not rule.shadow:
                _note(self.ctx, f.detector, "block", "output")
                raise _blocked(f.detector, "output")
        cut = len(self.pending) if final else len(self.pending) - self.window
        if cut <= 0:
            return b""
        for _rule, f in found:
            if f.start < cut < f.end:
                cut = max(f.start, 0)  # never release part of a match
        opening = self.pending.rfind("[", max(cut - 24, 0), cut)
        if not final and opening != -1 and "]" not in self.pending[opening:cut]:
            cut = opening  # nor part of a placeholder that may be restored
        if cut <= 0:
            return b""
        text = self.pending[:cut]
        inside = [(r, f) for r, f in found if f.start >= 0 and f.end <= cut]
        text = self._apply(text, inside, self._released)
        self._released += cut
        self.tail = (self.tail + self.pending[:cut])[-self.window :]
        self.pending = self.pending[cut:]
        template = self.template
        if template is not None and template.get("type") == _RESPONSES_DELTA:
            key = (template.get("item_id"), template.get("content_index"))
            self._parts[key] = self._parts.get(key, "") + text  # type: ignore[index]
        return _with_content(template, text)


class Blocked(Exception):
    """An output block mid-stream, with the content released before it (still to send)."""

    def __init__(self, error: GatewayError, released: bytes) -> None:
        super().__init__(error.message)
        self.error = error
        self.released = released


_BLOCK_DELTA = b"event: content_block_delta"
# Anthropic's deltas that carry what the model wrote, and the member holding the text.
_ANTHROPIC_TEXT = {"text_delta": "text", "thinking_delta": "thinking"}
_ANTHROPIC_BLOCK_TEXT = {"text": "text", "thinking": "thinking"}


_RESPONSES_DELTA = "response.output_text.delta"
_RESPONSES_DELTA_EVENT = b"event: " + _RESPONSES_DELTA.encode() + b"\n"
#: The Responses stream events that repeat a whole text (or the whole response).
_RESPONSES_WHOLE_TEXT = tuple(
    b"event: response." + kind + b"\n"
    for kind in (
        b"output_text.done",
        b"content_part.done",
        b"output_item.done",
        b"completed",
        b"incomplete",
    )
)


def _output_text_parts(output: Any) -> Iterator[dict[str, Any]]:
    for item in output if isinstance(output, list) else ():
        if isinstance(item, dict) and item.get("type") == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict) and part.get("type") == "output_text":
                    yield part


def _responses_text_of(event: bytes) -> tuple[str | None, dict[str, Any] | None]:
    at = event.find(b"data: {")
    try:
        parsed = orjson.loads(event[at + 6 :]) if at >= 0 else None
    except orjson.JSONDecodeError:
        return None, None
    delta = parsed.get("delta") if isinstance(parsed, dict) else None
    if not isinstance(delta, str) or not delta:
        return None, None
    return delta, parsed


def _content_of(event: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """The delta content of an OpenAI chunk event (or of an Anthropic ``text_delta`` or
    ``thinking_delta`` event, or a Responses ``response.output_text.delta`` event, from a
    native attempt), or None for any other event."""
    if event.startswith(_RESPONSES_DELTA_EVENT):
        return _responses_text_of(event)
    if not event.startswith(b"data: {") or b'"content"' not in event:
        if event.startswith(_BLOCK_DELTA) and (
            b'"text_delta"' in event or b'"thinking_delta"' in event
        ):
            return _anthropic_text_of(event)
        return None, None
    try:
        parsed = orjson.loads(event[6:])
    except orjson.JSONDecodeError:
        return None, None
    choices = parsed.get("choices")
    if not isinstance(choices, list) or len(choices) != 1:
        return None, None
    delta = choices[0].get("delta") if isinstance(choices[0], dict) else None
    content = delta.get("content") if isinstance(delta, dict) else None
    if not isinstance(content, str) or not content or set(delta) - {"content", "role"}:
        return None, None
    if choices[0].get("finish_reason"):
        return None, None
    return content, parsed


def _anthropic_text_of(event: bytes) -> tuple[str | None, dict[str, Any] | None]:
    at = event.find(b"data: {")
    try:
        parsed = orjson.loads(event[at + 6 :]) if at >= 0 else None
    except orjson.JSONDecodeError:
        return None, None
    delta = parsed.get("delta") if isinstance(parsed, dict) else None
    member = _ANTHROPIC_TEXT.get(delta.get("type")) if isinstance(delta, dict) else None
    text = delta.get(member) if member is not None else None  # type: ignore[union-attr]
    if not isinstance(text, str) or not text:
        return None, None
    return text, parsed


def _with_content(template: dict[str, Any] | None, text: str) -> bytes:
    if template is None or not text:
        return b""
    if template.get("type") == _RESPONSES_DELTA:
        return (
            _RESPONSES_DELTA_EVENT + b"data: " + orjson.dumps({**template, "delta": text}) + b"\n\n"
        )
    if template.get("type") == "content_block_delta":  # Anthropic's
        kind = template["delta"]["type"]
        event = {**template, "delta": {"type": kind, _ANTHROPIC_TEXT[kind]: text}}
        return _BLOCK_DELTA + b"\ndata: " + orjson.dumps(event) + b"\n\n"
    event = dict(template)
    choice = dict(event["choices"][0])
    choice["delta"] = {**choice["delta"], "content": text}
    event["choices"] = [choice]
    return b"data: " + orjson.dumps(event) + b"\n\n"
