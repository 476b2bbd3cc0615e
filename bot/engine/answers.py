"""Turn what a respondent sent into the stored answer value, or say what is expected.

Channels differ (a button sends ``"7"``, a JSON client sends ``7``, a terminal user types
``Best quality`` or ``2``), so coercion is generous about form and strict about meaning.
Stored values follow DESIGN.md: scales → int, choice → value slug, multi_choice → list of
slugs, yes_no → bool, text/email → str.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from bot.flow.model import Step

EMAIL = re.compile(
    r"^[^@\s<>\"']{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$"
)
YES = {"yes", "y", "true", "1", "yep", "yeah", "sure", "ok", "oui", "ja", "si", "sí"}
NO = {"no", "n", "false", "0", "nope", "nah", "non", "nein"}
MAX_RAW = 20_000


class Rejected(ValueError):
    """The value does not fit; the message tells the respondent what would."""


def coerce(step: Step, value: Any, labels: Sequence[str] | None = None) -> Any:
    """The stored form of ``value`` for ``step``; ``None`` means skipped or declined.

    ``labels``: the choices' labels as this person sees them (labels may pipe earlier
    answers); typing one of them picks that choice."""
    shown = tuple(labels) if labels is not None else tuple(c.label for c in step.choices)
    if isinstance(value, str) and len(value) > MAX_RAW:
        raise Rejected(f"That answer is too long (over {MAX_RAW} characters).")
    empty = value is None or (isinstance(value, str) and not value.strip()) or value == []
    if empty and step.type != "email":
        if step.type == "multi_choice" and step.spec.min_picks == 0 and value is not None:  # type: ignore[union-attr]
            return []  # "none of these", picked on purpose; None (skip) stores nothing
        if step.spec.required:
            raise Rejected(_expected(step, shown))
        return None
    kind = step.type
    if kind in ("nps", "csat", "ces", "rating"):
        return _scale(step, value)
    if kind == "choice":
        return _one_choice(step, value, shown)
    if kind == "multi_choice":
        return _multi(step, value, shown)
    if kind == "yes_no":
        return _yes_no(step, value)
    if kind == "text":
        return _text(step, value)
    if kind == "email":
        return _email(step, value)
    raise Rejected("This message needs no answer.")


def _expected(step: Step, labels: Sequence[str] = ()) -> str:
    kind = step.type
    labels = labels or tuple(c.label for c in step.choices)
    if step.bounds is not None:
        lo, hi = step.bounds
        low, high = step.end_labels
        ends = f" ({lo} = {low}, {hi} = {high})" if low and high else ""
        return f"Please answer with a whole number from {lo} to {hi}{ends}."
    if kind == "choice":
        return "Please pick one of: " + "; ".join(labels) + "."
    if kind == "multi_choice":
        spec = step.spec
        top = spec.max_picks or len(step.choices)  # type: ignore[union-attr]
        low = spec.min_picks  # type: ignore[union-attr]
        count = f"{low}" if low == top else f"{low} to {top}"
        return f"Please pick {count} of: " + "; ".join(labels) + "."
    if kind == "yes_no":
        return "Please answer yes or no."
    if kind == "email":
        return "Please give an email address and tick the consent box, or skip."
    return "Please type an answer."


def _scale(step: Step, value: Any) -> int:
    lo, hi = step.bounds or (0, 0)
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,3}\s*", value)
    ):
        number = int(value)
    if number is None or not lo <= number <= hi:
        raise Rejected(_expected(step))
    return number


def fold(text: str, trailing: str = ".!") -> str:
    """Typed text as compared with labels and keywords: "Yes!", "YES" and "ｙｅｓ" are one."""
    return unicodedata.normalize("NFKC", text).casefold().strip().rstrip(trailing)


def _one_choice(step: Step, raw: Any, labels: Sequence[str]) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise Rejected(_expected(step, labels))
    text = str(raw).strip()
    choices = step.choices
    for c in choices:
        if c.value == text:
            return c.value
    folded = fold(text)
    for c, label in zip(choices, labels, strict=True):
        if fold(label) == folded or c.value == folded:
            return c.value
    # isdecimal, not isdigit: "²" is a digit that int() refuses
    if text.isdecimal() and len(text) <= 3 and 1 <= int(text) <= len(choices):
        return choices[int(text) - 1].value
    raise Rejected(_expected(step, labels))


def _multi(step: Step, value: Any, labels: Sequence[str]) -> list[str]:
    if isinstance(value, str):
        parts = [p for p in re.split(r"\s*[,;]\s*", value.strip()) if p]
    elif isinstance(value, list):
        parts = value
    else:
        raise Rejected(_expected(step, labels))
    picked = {_one_choice(step, p, labels) for p in parts}
    ordered = [c.value for c in step.choices if c.value in picked]
    spec = step.spec
    top = spec.max_picks or len(step.choices)  # type: ignore[union-attr]
    if not spec.min_picks <= len(ordered) <= top:  # type: ignore[union-attr]
        if not ordered and not spec.required:
            return []
        raise Rejected(_expected(step, labels))
    return ordered


def _yes_no(step: Step, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        folded = fold(value)
        if folded in YES:
            return True
        if folded in NO:
            return False
    raise Rejected(_expected(step))


# Dropped from typed text: control characters (Unicode category Cc, but for newline and
# tab), lone surrogates (Cs), and the bidi embeddings, overrides and isolates, which
# reorder how the text around them displays (a "Trojan source" trick). Other format
# characters (ZWJ in emoji, ZWNJ in Persian) are text. One character class, so the common
# answer is cleaned at C speed instead of a category lookup per character.
_DROPPED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def _clean_text(value: str) -> str:
    return _DROPPED.sub("", unicodedata.normalize("NFC", value)).strip()


def _text(step: Step, value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise Rejected(_expected(step))
    text = _clean_text(str(value))
    limit = step.spec.max_length  # type: ignore[union-attr]
    if len(text) > limit:
        raise Rejected(f"Please keep it to {limit} characters or fewer (yours has {len(text)}).")
    if not text:
        raise Rejected(_expected(step))
    return text


def _email(step: Step, value: Any) -> str | None:
    """Stored only with consent; an explicit refusal (or a skip) stores nothing."""
    consent = step.spec.consent  # type: ignore[union-attr]
    if value is None or value == "" or (isinstance(value, dict) and value.get("consent") is False):
        return None
    if isinstance(value, str):
        raise Rejected(f"Please also confirm: {consent}")
    if not isinstance(value, dict) or set(value) - {"email", "consent"}:
        raise Rejected(_expected(step))
    if value.get("consent") is not True:
        raise Rejected(f"Please confirm: {consent}")
    email = value.get("email")
    problem = email_problem(email)
    if problem is not None:
        raise Rejected(problem)
    assert isinstance(email, str)
    return email.strip()


def email_problem(email: Any) -> str | None:
    """What is wrong with an email address as typed (None: nothing), so a channel can say so
    before it asks for consent."""
    if (
        not isinstance(email, str)
        or len(email) > 254
        or not email.strip().isprintable()  # no control characters, no lone surrogates
        or not EMAIL.match(email.strip())
    ):
        return "That does not look like an email address (name@example.com)."
    return None
