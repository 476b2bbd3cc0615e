"""The tiny, safe expression language used by ``when:``, tag rules and ``{{ piping }}``.

Grammar (lowest to highest precedence)::

    expr    := or
    or      := and ('or' and)*
    and     := not ('and' not)*
    not     := 'not' not | compare
    compare := operand (('=='|'!='|'<'|'<='|'>'|'>=') operand | 'not'? 'in' operand)?
    operand := NUMBER | STRING | 'true' | 'false' | 'null' | NAME ('.' NAME)*
             | '(' expr ')' | '(' expr ',' ... ')' | '[' expr, ... ']'

Expressions are parsed once, when the flow loads, into a small AST of frozen dataclasses;
evaluation walks that tree and never calls ``eval``. A missing answer is ``null``; ordering
comparisons against ``null`` or between unlike types are simply false, so a skipped step
never crashes a conversation. ``a or b`` returns the first truthy operand, which is what
``{{respondent.first_name or "there"}}`` needs.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_EXPRESSION_LENGTH = 500


class ConditionSyntaxError(ValueError):
    """An expression cannot be parsed; ``offset`` is the 0-based column inside it."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


Resolver = Callable[["Name"], Any]
Run = Callable[[Resolver], Any]


def _set_run(node: object, run: Run) -> None:
    """Each node carries its compiled evaluator, made when the node is (children first): a
    closure per node, so evaluating a condition is a few calls rather than a walk that asks
    each node what it is (conditions run on every answer: 4% of an answer's server time).
    Frozen nodes: set once, while the node is being made."""
    object.__setattr__(node, "run", run)


@dataclass(frozen=True)
class Literal:
    value: Any
    run: Run = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        value = self.value
        _set_run(self, lambda _resolve: value)


@dataclass(frozen=True)
class Name:
    """``score`` (an answer) or ``respondent.role`` (a profile attribute)."""

    parts: tuple[str, ...]
    offset: int
    run: Run = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set_run(self, lambda resolve: resolve(self))

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class ListOf:
    items: tuple[Node, ...]
    run: Run = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        runs = tuple(item.run for item in self.items)
        _set_run(self, lambda resolve: [run(resolve) for run in runs])


@dataclass(frozen=True)
class Compare:
    op: str
    left: Node
    right: Node
    run: Run = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compare, left, right = _COMPARISONS[self.op], self.left.run, self.right.run
        _set_run(self, lambda resolve: compare(left(resolve), right(resolve)))


@dataclass(frozen=True)
class Not:
    operand: Node
    run: Run = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        operand = self.operand.run
        _set_run(self, lambda resolve: not operand(resolve))


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple[Node, ...]
    run: Run = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        runs, stop_when = tuple(o.run for o in self.operands), self.op == "or"

        def run(resolve: Resolver) -> Any:
            value: Any = None
            for operand in runs:
                value = operand(resolve)
                if bool(value) is stop_when:  # the first truthy for "or", falsy for "and"
                    return value
            return value

        _set_run(self, run)


Node = Literal | Name | ListOf | Compare | Not | BoolOp

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|\.)
  | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    offset: int


_WRITTEN_ELSEWHERE = {  # what people bring from other languages, and what it is here
    "=<": "<=",
    "=>": ">=",
    "&&": "and",
    "||": "or",
    "!": "not",
    "&": "and",
    "|": "or",
}


def _hint(source: str, pos: int) -> str:
    for written, here in _WRITTEN_ELSEWHERE.items():
        if source.startswith(written, pos):
            return f" (write {here!r} here, not {written!r})"
    return " (use == to compare)" if source[pos] == "=" else ""


def _tokens(source: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if not m:
            raise ConditionSyntaxError(
                f"unexpected character {source[pos]!r}{_hint(source, pos)}", pos
            )
        kind = m.lastgroup or ""
        if kind != "ws":
            text = m.group()
            if kind == "name" and text in _KEYWORDS:
                kind = text
            out.append(_Tok(kind, text, pos))
        pos = m.end()
    out.append(_Tok("end", "", len(source)))
    return out


class _Parser:
    def __init__(self, source: str) -> None:
        self.toks = _tokens(source)
        self.i = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self, kind: str, text: str | None = None) -> _Tok:
        tok = self.tok
        if tok.kind != kind or (text is not None and tok.text != text):
            want = text or kind
            got = tok.text or "end of expression"
            raise ConditionSyntaxError(f"expected {want!r} but found {got!r}", tok.offset)
        self.i += 1
        return tok

    def at(self, kind: str, text: str | None = None) -> bool:
        return self.tok.kind == kind and (text is None or self.tok.text == text)

    def parse(self) -> Node:
        node = self.expr()
        if not self.at("end"):
            raise ConditionSyntaxError(
                f"unexpected {self.tok.text!r} (join conditions with 'and' / 'or')", self.tok.offset
            )
        return node

    def expr(self) -> Node:
        return self._bool("or", self.and_)

    def and_(self) -> Node:
        return self._bool("and", self.not_)

    def _bool(self, op: str, sub: Callable[[], Node]) -> Node:
        operands = [sub()]
        while self.at(op):
            self.i += 1
            operands.append(sub())
        return operands[0] if len(operands) == 1 else BoolOp(op, tuple(operands))

    def not_(self) -> Node:
        if self.at("not"):
            self.i += 1
            return Not(self.not_())
        return self.compare()

    def compare(self) -> Node:
        left = self.operand()
        if self.at("op") and self.tok.text in {"==", "!=", "<", "<=", ">", ">="}:
            op = self.take("op").text
            return Compare(op, left, self.operand())
        if self.at("in"):
            self.i += 1
            return Compare("in", left, self.collection())
        if self.at("not") and self.toks[self.i + 1].kind == "in":
            self.i += 2
            return Compare("not in", left, self.collection())
        return left

    def collection(self) -> Node:
        """After ``in``, brackets always make a list: ``plan in ("basic_plus")`` means the one
        value, as its author meant — not "contained in the text", where "basic" would match."""
        node = self.operand()
        if self.toks[self.i - 1].text == ")" and not isinstance(node, ListOf):
            return ListOf((node,))
        return node

    def operand(self) -> Node:
        tok = self.tok
        if tok.kind == "number":
            self.i += 1
            return Literal(float(tok.text) if "." in tok.text else int(tok.text))
        if tok.kind == "string":
            self.i += 1
            return Literal(_unquote(tok.text))
        if tok.kind in {"true", "false", "null"}:
            self.i += 1
            return Literal({"true": True, "false": False, "null": None}[tok.kind])
        if tok.kind == "name":
            self.i += 1
            parts = [tok.text]
            while self.at("op", "."):
                self.i += 1
                parts.append(self.take("name").text)
            return Name(tuple(parts), tok.offset)
        if self.at("op", "("):
            self.i += 1
            first = self.expr()
            if self.at("op", ","):
                items = [first]
                while self.at("op", ","):
                    self.i += 1
                    if self.at("op", ")"):
                        break
                    items.append(self.expr())
                self.take("op", ")")
                return ListOf(tuple(items))
            self.take("op", ")")
            return first
        if self.at("op", "["):
            self.i += 1
            items = []
            while not self.at("op", "]"):
                items.append(self.expr())
                if not self.at("op", ","):
                    break
                self.i += 1
            self.take("op", "]")
            return ListOf(tuple(items))
        got = tok.text or "end of expression"
        raise ConditionSyntaxError(f"expected a value or a name but found {got!r}", tok.offset)


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def parse(source: str) -> Node:
    """Parse an expression into its AST, or raise :class:`ConditionSyntaxError`."""
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ConditionSyntaxError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters", 0)
    if not source.strip():
        raise ConditionSyntaxError("empty expression", 0)
    return _Parser(source).parse()


def names(node: Node) -> Iterator[Name]:
    """Every name an expression reads, in source order."""
    if isinstance(node, Name):
        yield node
    elif isinstance(node, ListOf):
        for item in node.items:
            yield from names(item)
    elif isinstance(node, Compare):
        yield from names(node.left)
        yield from names(node.right)
    elif isinstance(node, Not):
        yield from names(node.operand)
    elif isinstance(node, BoolOp):
        for item in node.operands:
            yield from names(item)


def comparisons(node: Node) -> Iterator[Compare]:
    """Every comparison in an expression (for load-time checks of compared values)."""
    if isinstance(node, Compare):
        yield node
    elif isinstance(node, Not):
        yield from comparisons(node.operand)
    elif isinstance(node, BoolOp):
        for item in node.operands:
            yield from comparisons(item)


def evaluate(node: Node, resolve: Resolver) -> Any:
    """Evaluate an AST; ``resolve`` maps a :class:`Name` to its value (``None`` if missing)."""
    return node.run(resolve)


def _contains(left: Any, right: Any) -> bool:
    if isinstance(right, list | tuple):
        return left in right if not isinstance(left, list) else any(x in right for x in left)
    if isinstance(right, str) and isinstance(left, str):
        return left.lower() in right.lower()
    return False


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(left: Any, right: Any) -> bool:
        if left is None or right is None:
            return False
        if isinstance(left, bool) or isinstance(right, bool):
            return False
        both_numbers = isinstance(left, int | float) and isinstance(right, int | float)
        if not both_numbers and not (isinstance(left, str) and isinstance(right, str)):
            return False
        return op(left, right)

    return compare


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, bool) != isinstance(right, bool):
        return False
    return bool(left == right)


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "in": _contains,
    "not in": lambda left, right: not _contains(left, right),
    "==": _same,
    "!=": lambda left, right: not _same(left, right),
    "<": _ordered(operator.lt),
    "<=": _ordered(operator.le),
    ">": _ordered(operator.gt),
    ">=": _ordered(operator.ge),
}


def truthy_in(context: Mapping[str, Any], respondent: Mapping[str, Any]) -> Resolver:
    """A resolver over answers by step id and ``respondent.*`` attributes."""

    def resolve(name: Name) -> Any:
        if name.parts[0] == "respondent":
            value: Any = respondent
            for part in name.parts[1:]:
                value = value.get(part) if isinstance(value, Mapping) else None
            return value
        value = context.get(name.parts[0])
        for part in name.parts[1:]:
            value = value.get(part) if isinstance(value, Mapping) else None
        return value

    return resolve
