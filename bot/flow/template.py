"""Piping: ``{{score}}`` and ``{{respondent.first_name or "there"}}`` inside question text.

Templates are split and their expressions parsed when the flow loads, so a typo in a pipe is
a load error with a position, not a blank in front of a customer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from bot.flow.conditions import (
    BoolOp,
    ConditionSyntaxError,
    Name,
    Node,
    Resolver,
    evaluate,
    names,
    parse,
)

_PIPE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


@dataclass(frozen=True)
class Template:
    """Literal text and compiled expressions, alternating."""

    source: str
    parts: tuple[str | Node, ...]
    offsets: tuple[int, ...] = ()  # where each expression starts in ``source``

    @cached_property
    def is_plain(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    def names(self) -> Iterator[Name]:
        for part in self.parts:
            if not isinstance(part, str):
                yield from names(part)

    def render(self, resolve: Resolver, display: Callable[[Name, Any], str] | None = None) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            picked, value = _picked(part, resolve)
            if display is not None and isinstance(picked, Name):
                out.append(display(picked, value))
            else:
                out.append(_plain(value))
        return "".join(out)


def _picked(node: Node, resolve: Resolver) -> tuple[Node, Any]:
    """The operand whose value an expression shows, and that value: ``a or b`` shows ``a``
    or ``b`` (shown as that name would be: a choice's label, not its stored value)."""
    if isinstance(node, BoolOp):
        picked: tuple[Node, Any] = (node, None)
        for operand in node.operands:
            picked = _picked(operand, resolve)
            if (node.op == "and") != bool(picked[1]):
                break
        return picked
    return node, evaluate(node, resolve)


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def compile_template(source: str) -> Template:
    """Compile ``source``; raises ConditionSyntaxError with an offset into ``source``."""
    parts: list[str | Node] = []
    offsets: list[int] = []
    pos = 0
    for m in _PIPE.finditer(source):
        if m.start() > pos:
            parts.append(source[pos : m.start()])
        inner = m.group(1)
        lead = len(inner) - len(inner.lstrip())
        try:
            parts.append(parse(inner.strip()))
            offsets.append(m.start(1) + lead)
        except ConditionSyntaxError as err:
            raise ConditionSyntaxError(err.message, m.start(1) + lead + err.offset) from err
        pos = m.end()
    if pos < len(source):
        parts.append(source[pos:])
    rest = _PIPE.sub("", source)
    if "{{" in rest:
        raise ConditionSyntaxError("'{{' without a closing '}}'", source.index("{{"))
    return Template(source, tuple(parts), tuple(offsets))


def plain_text(value: Any) -> str:
    """How a value reads inside a sentence (used by piping and summaries)."""
    return _plain(value)
