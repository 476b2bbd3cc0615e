"""Read YAML safely and remember where every node came from.

Researchers fix flows from error messages, so every mapping and list keeps the line and
column of each key and item (1-based). Only ``yaml.SafeLoader`` semantics are used; aliases
are refused outright (they buy nothing in a flow and enable "billion laughs"), and files are
bounded in size and nesting depth.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bot.errors import FlowError, Problem

MAX_FILE_BYTES = 256 * 1024
MAX_DEPTH = 24

Pos = tuple[int, int]


class LineDict(dict):
    """A dict that knows the position of itself, each key and each value."""

    pos: Pos = (1, 1)
    key_pos: dict[str, Pos]
    value_pos: dict[str, Pos]
    value_quoted: dict[str, bool]
    value_source: dict[str, str]  # the value as written (quotes, escapes, folded lines)


class LineList(list):
    """A list that knows the position of itself and each item."""

    pos: Pos = (1, 1)
    item_pos: list[Pos]


def _mark(node: yaml.Node) -> Pos:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


_CORE = "tag:yaml.org,2002:"
PLAIN_TAGS = frozenset(_CORE + t for t in ("str", "int", "float", "bool", "null", "map", "seq"))
TIMESTAMP_TAG = _CORE + "timestamp"


class _Loader(yaml.SafeLoader):
    """SafeLoader that builds LineDict/LineList and refuses aliases, deep nesting and tags
    beyond plain text, numbers, booleans, lists and mappings (``!!binary``, ``!!set``…)."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node.tag == TIMESTAMP_TAG:  # `text: 2024-01-01` means the text, not a date
            return node.value
        if node.tag not in PLAIN_TAGS:
            raise yaml.MarkedYAMLError(
                problem=f"the YAML tag {node.tag.replace(_CORE, '!!')} is not allowed in flows",
                problem_mark=node.start_mark,
            )
        return super().construct_object(node, deep)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                problem="YAML aliases (*name) are not allowed in flows; repeat the value or use include:",
                problem_mark=event.start_mark,
            )
        depth = getattr(self, "_depth", 0) + 1
        if depth > MAX_DEPTH:
            raise yaml.MarkedYAMLError(
                problem=f"nesting deeper than {MAX_DEPTH} levels",
                problem_mark=self.peek_event().start_mark,
            )
        self._depth = depth
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth - 1

    def construct_line_mapping(self, node: yaml.MappingNode) -> LineDict:
        result = LineDict()
        result.pos = _mark(node)
        result.key_pos = {}
        result.value_pos = {}
        result.value_quoted = {}
        result.value_source = {}
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise yaml.MarkedYAMLError(
                    problem="mapping keys must be plain strings (a value that starts with { "
                    'is read as a mapping: put it in quotes, e.g. text: "{{score}} it is")',
                    problem_mark=key_node.start_mark,
                )
            key = str(key) if not isinstance(key, str) else key
            if key in result:
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key '{key}'", problem_mark=key_node.start_mark
                )
            result[key] = self.construct_object(value_node, deep=True)
            result.key_pos[key] = _mark(key_node)
            result.value_pos[key] = _mark(value_node)
            result.value_quoted[key] = getattr(value_node, "style", None) in ('"', "'")
            start, end = value_node.start_mark, value_node.end_mark
            if isinstance(value_node, yaml.ScalarNode) and start.buffer is not None:
                result.value_source[key] = start.buffer[start.index : end.index]
        return result

    def construct_line_sequence(self, node: yaml.SequenceNode) -> LineList:
        result = LineList(self.construct_object(child, deep=True) for child in node.value)
        result.pos = _mark(node)
        result.item_pos = [_mark(child) for child in node.value]
        return result


_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_line_mapping
)
_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _Loader.construct_line_sequence
)


def parse_yaml(text: str, *, file: str) -> Any:
    """Parse one YAML document; syntax problems become a located :class:`FlowError`."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise FlowError(
            [
                Problem(
                    file,
                    1,
                    1,
                    f"file is larger than {MAX_FILE_BYTES // 1024} KiB",
                    "split it with include:",
                )
            ]
        )
    try:
        loader = _Loader(text)  # a SafeLoader subclass: safe_load semantics, plus positions
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        if err.context_mark is not None and "end of stream" in (err.problem or ""):
            mark = err.context_mark  # an unclosed quote or bracket: where it was opened
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = err.problem or str(err)
        if err.context and err.context not in message:
            message = f"{err.context}: {message}"
        raise FlowError(
            [Problem(file, line, col, f"YAML syntax error: {message}", _syntax_hint(message))]
        ) from err
    except yaml.YAMLError as err:
        raise FlowError([Problem(file, 1, 1, f"YAML error: {err}")]) from err


def _syntax_hint(message: str) -> str:
    """What usually causes the errors PyYAML words most obscurely."""
    if "'\\t'" in message:
        return "indent with spaces, not tabs"
    if "mapping values are not allowed" in message:
        return 'a ": " inside text? wrap the whole text in double quotes'
    if "expected <block end>, but found" in message or "expected ',' or '}'" in message:
        return (
            "a quote or : inside text, or text starting with { (as {{...}} does)? "
            "wrap the whole text in double quotes"
        )
    return ""


def read_yaml(path: Path, *, display: str) -> Any:
    """Read and parse a YAML file, reporting problems against ``display`` (a relative path)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FlowError(
                [
                    Problem(
                        display,
                        1,
                        1,
                        f"file is larger than {MAX_FILE_BYTES // 1024} KiB",
                        "split it with include:",
                    )
                ]
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise FlowError([Problem(display, 1, 1, "file not found")]) from err
    except IsADirectoryError as err:
        raise FlowError(
            [Problem(display, 1, 1, "this is a folder, not a file", "rename it without .yml")]
        ) from err
    except UnicodeDecodeError as err:
        before = err.object[: err.start]
        line, col = before.count(b"\n") + 1, len(before) - (before.rfind(b"\n") + 1) + 1
        raise FlowError(
            [
                Problem(
                    display,
                    line,
                    col,
                    "file is not UTF-8 text",
                    "save it as UTF-8 in your editor",
                )
            ]
        ) from err
    return parse_yaml(text, file=display)


_TOKEN = re.compile(r"[A-Za-z0-9_.]+")


def source_position(written: str, start: Pos, value: str, offset: int) -> Pos | None:
    """Where character ``offset`` of a parsed scalar ``value`` was written, for a scalar
    written as ``written`` from ``start``: found by the word at that offset (its n-th
    occurrence in both), so quotes, escapes and folded lines do not shift it. None when the
    offset is not on a word that can be found again."""
    word = _TOKEN.match(value, offset)
    if word is None:
        return None
    pattern = re.compile(rf"(?<![A-Za-z0-9_.]){re.escape(word.group())}(?![A-Za-z0-9_.])")
    nth = len(pattern.findall(value, 0, offset))
    found = list(pattern.finditer(written))
    if nth >= len(found):
        return None
    before = written[: found[nth].start()].split("\n")
    line = start[0] + len(before) - 1
    col = start[1] + len(before[0]) if len(before) == 1 else len(before[-1]) + 1
    return (line, col)


def position(node: Any, path: tuple[Any, ...]) -> Pos:
    """Best position for a location path (as pydantic reports it) inside parsed YAML."""
    best: Pos = getattr(node, "pos", (1, 1))
    current = node
    for part in path:
        if isinstance(current, LineDict) and isinstance(part, str):
            if part in current.key_pos:
                best = current.key_pos[part]
                nxt = current.get(part)
                if isinstance(nxt, LineDict | LineList):
                    current = nxt
                    continue
                best = current.value_pos.get(part, best) if part in current else best
                break
            break
        if isinstance(current, LineList) and isinstance(part, int):
            if 0 <= part < len(current):
                best = current.item_pos[part]
                current = current[part]
                continue
            break
        break
    return best


def key_position(node: Any, path: tuple[Any, ...]) -> Pos:
    """Position of the *key* at the end of ``path`` (for "unknown key" errors)."""
    *parent_path, last = path if path else ("",)
    parent = node
    for part in parent_path:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return position(node, tuple(parent_path))
    if isinstance(parent, LineDict) and isinstance(last, str) and last in parent.key_pos:
        return parent.key_pos[last]
    return position(node, path)
