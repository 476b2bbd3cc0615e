"""Load flows in three stages: YAML with positions → pydantic schema → semantic checks.

Every problem is collected (not just the first) and reported as ``file:line:col: message
(hint)``. Conditions and pipes are compiled here, so the engine never meets a typo. A flow's
content hash covers its steps after includes are expanded, so editing a block makes a new
version of every flow that includes it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from bot.errors import FlowError, Problem
from bot.flow import conditions as cond
from bot.flow.durations import parse_duration
from bot.flow.model import CHOICE_TYPES, SCALE_TYPES, Flow, Step, TagRule
from bot.flow.schema import (
    CONFIG_FILES,
    STEP_TYPES,
    BlockFile,
    ChoiceStep,
    FlowMeta,
    MultiChoiceStep,
    SegmentsFile,
    StepModel,
)
from bot.flow.template import Template, compile_template
from bot.flow.yamlsource import (
    LineDict,
    LineList,
    key_position,
    position,
    read_yaml,
    source_position,
)

_STEP_ADAPTER: TypeAdapter[Any] = TypeAdapter(StepModel)
_STEP_CLASSES: dict[str, type[BaseModel]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in get_args(get_args(StepModel)[0])
}
BRANCHING_HINT = "steps run in order; ask one only sometimes with when: (e.g. when: score <= 6)"
MAX_ENUMERATION = 50_000  # answer combinations tried for one condition
MAX_ENUMERATION_PER_FLOW = 100_000  # and for all of a flow's conditions together
MAX_INCLUDE_DEPTH = 8


@dataclass
class RawStep:
    """One step as written, with the file it came from (for error positions)."""

    node: Any
    file: str


@dataclass
class _Collector:
    problems: list[Problem] = field(default_factory=list)
    # the never-true checks' tries left for everything one load builds (a flow and its blocks)
    budget: list[int] = field(default_factory=lambda: [MAX_ENUMERATION_PER_FLOW])
    checked_alone: set[Path] = field(default_factory=set)  # blocks already checked on their own
    # segments.yml's dimensions and segments (None: no usable segments.yml, tags unchecked)
    declared: dict[str, set[str]] | None = None

    def at(self, file: str, pos: tuple[int, int], message: str, hint: str = "") -> None:
        self.problems.append(Problem(file, pos[0], pos[1], message, hint))

    def unique(self) -> list[Problem]:
        """Each problem once, in file order: an included block is also checked on its own,
        and what it finds comes first (its hint is the one that applies to a block)."""
        first: dict[tuple[str, int, int, str], Problem] = {}
        for problem in self.problems:
            first.setdefault((problem.file, problem.line, problem.col, problem.message), problem)
        return sorted(first.values(), key=lambda p: (p.file, p.line, p.col, p.message))

    def raise_if_any(self) -> None:
        if self.problems:
            self.problems = self.unique()
            raise FlowError(self.problems)


# --- stage 2: schema -------------------------------------------------------------------


def _tag_position(node: Any, path: tuple[Any, ...], tag: str) -> tuple[int, int]:
    """Where a tag is written: a mapping's key, a list's item, or the value itself."""
    written = _at(node, path)
    if isinstance(written, LineDict) and tag in written:
        return key_position(node, (*path, tag))
    if isinstance(written, LineList) and tag in written:
        return position(node, (*path, written.index(tag)))
    return position(node, path)


def _check_tags(spec: Any, raw: RawStep, declared: dict[str, set[str]], out: _Collector) -> None:
    """Tags whose dimension or segment segments.yml does not declare: a typo (needs:prize)
    would otherwise file people into a segment nobody reports on, without a word."""
    written = [(("tags", j, "add"), rule.weights) for j, rule in enumerate(spec.tags)]
    written += [
        (("choices", k, "tags"), choice.weights)
        for k, choice in enumerate(getattr(spec, "choices", []))
    ]
    for path, weights in written:
        for tag in weights:
            dimension, segment = tag.split(":", 1)
            if segment in declared.get(dimension, ()):
                continue
            if dimension in declared:
                known = declared[dimension]
                hint = (
                    did_you_mean(segment, known) or f"{dimension} has {', '.join(sorted(known))};"
                )
            elif declared:
                hint = (
                    did_you_mean(dimension, declared)
                    or f"dimensions are {', '.join(sorted(declared))};"
                )
            else:
                hint = "segments.yml declares no dimensions yet;"
            out.at(
                raw.file,
                _tag_position(raw.node, path, tag),
                f"step '{spec.id}' tags {tag}, which segments.yml does not declare",
                f"{hint} or declare it in segments.yml",
            )


def _model_for(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, list, dict) or get_args(annotation):
        for arg in get_args(annotation):
            found = _model_for(arg)
            if found is not None:
                return found
    return None


def _at(node: Any, path: Iterable[Any]) -> Any:
    """The node at ``path`` (keys and indexes), or None."""
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _model_at(cls: type[BaseModel] | None, parts: Iterable[Any]) -> type[BaseModel] | None:
    for part in parts:
        if cls is None:
            return None
        if isinstance(part, int):
            continue
        info = cls.model_fields.get(part)
        cls = _model_for(info.annotation) if info else None
    return cls


def did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def _schema_problems(
    err: ValidationError, node: Any, file: str, cls: type[BaseModel] | None, out: _Collector
) -> None:
    for item in err.errors(include_url=False):
        loc = tuple(item["loc"])
        kind = item["type"]
        here_cls = cls
        if loc and loc[0] in STEP_TYPES and cls is None:
            here_cls, loc = _STEP_CLASSES[loc[0]], loc[1:]
        where = ".".join(str(p) for p in loc)
        if kind == "extra_forbidden":
            owner = _model_at(here_cls, loc[:-1])
            allowed = sorted(owner.model_fields) if owner else []
            parent = _at(node, loc[:-1])
            written = set(parent) if isinstance(parent, dict) else set()
            unused = [key for key in allowed if key not in written]  # not one already there
            hint = (
                BRANCHING_HINT
                if loc[-1] in ("next", "goto", "jump", "skip_to")
                else (
                    did_you_mean(str(loc[-1]), unused)
                    or did_you_mean(str(loc[-1]), allowed)
                    or (f"allowed keys: {', '.join(allowed)}" if allowed else "")
                )
            )
            out.at(file, key_position(node, loc), f"unknown key '{loc[-1]}'", hint)
        elif kind == "missing":
            parent = loc[:-1]
            out.at(file, position(node, parent), f"missing required key '{loc[-1]}'")
        elif kind in ("union_tag_not_found", "union_tag_invalid"):
            given = node.get("type") if isinstance(node, dict) else None
            if given is None:
                out.at(
                    file,
                    position(node, ()),
                    "step has no 'type'",
                    f"one of: {', '.join(STEP_TYPES)}",
                )
            else:
                hint = did_you_mean(str(given), STEP_TYPES) or f"one of: {', '.join(STEP_TYPES)}"
                out.at(file, position(node, ("type",)), f"unknown step type '{given}'", hint)
        elif kind == "string_pattern_mismatch":
            value = item.get("input")
            out.at(
                file,
                position(node, loc),
                f"{where}: {value!r} is not allowed here",
                _pattern_hint(loc),
            )
        else:
            message = item["msg"].removeprefix("Value error, ")
            hint = ""
            if kind == "string_type" and isinstance(item.get("input"), bool | int | float):
                read_as = "a yes/no value" if isinstance(item["input"], bool) else "a number"
                hint = f"YAML read {item['input']!r} as {read_as}: put the text in quotes"
            out.at(file, position(node, loc), f"{where}: {message}" if where else message, hint)


def _pattern_hint(loc: tuple[Any, ...]) -> str:
    last = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if last in ("id", "save_as"):
        return "use lower-case letters, digits and _ (e.g. why_low)"
    if last == "value":
        return "a choice value is a stable slug: lower-case letters, digits, - and _"
    if last in ("add", "tags"):
        return "a tag is dimension:segment, e.g. needs:price"
    if last == "expires_after":
        return "a duration like 30m, 2h, 7d or 2w"
    return ""


def _plain(node: Any) -> Any:
    """LineDict/LineList → plain dict/list (for hashing and storage)."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


# --- includes --------------------------------------------------------------------------


def _is_include(node: Any) -> bool:
    return isinstance(node, dict) and "include" in node


def _expand(
    items: Any, file: str, root: Path, stack: tuple[Path, ...], out: _Collector
) -> Iterator[RawStep]:
    if not isinstance(items, list):
        return
    for i, node in enumerate(items):
        if not _is_include(node):
            yield RawStep(node, file)
            continue
        pos = position(items, (i,))
        extra = sorted(set(node) - {"include"})
        if extra:
            out.at(
                file, key_position(node, (extra[0],)), f"unknown key '{extra[0]}' next to include:"
            )
        rel = node["include"]
        if not isinstance(rel, str) or not rel.endswith((".yml", ".yaml")):
            out.at(
                file,
                pos,
                "include: needs a path to a .yml file",
                "e.g. include: blocks/consent.yml",
            )
            continue
        target = (root / rel).resolve()
        if root.resolve() not in target.parents:
            out.at(file, pos, f"include path '{rel}' is outside the flows folder")
            continue
        if target in stack:
            chain = " -> ".join(str(p.relative_to(root.resolve())) for p in (*stack, target))
            out.at(file, pos, f"include cycle: {chain}")
            continue
        if len(stack) > MAX_INCLUDE_DEPTH:
            out.at(file, pos, f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
            continue
        if not target.is_file():
            out.at(
                file,
                pos,
                f"included file '{rel}' not found",
                "paths are relative to the flows folder",
            )
            continue
        shown = _display(target, root)
        try:
            block = read_yaml(target, display=shown)
        except FlowError as err:
            out.problems.extend(err.problems)
            continue
        if not _check_schema(BlockFile, block, shown, out):
            continue
        raws = list(_expand(block["steps"], shown, root, (*stack, target), out))
        # Valid on its own too (as docs/flows.md promises, and `parley validate` checks a
        # block): its conditions may not lean on the steps of whichever flow includes it.
        if target not in out.checked_alone:  # once a load, however often it is included
            out.checked_alone.add(target)
            alone = _Collector(budget=out.budget, checked_alone=out.checked_alone)
            _build_steps(raws, alone)
            out.problems[:0] = alone.problems  # first: its hints are the ones for a block
        yield from raws


def _display(path: Path, root: Path) -> str:
    """How a file is named in messages: relative to the working directory when under it
    (``flows/nps.yml``), else relative to the flows folder's parent."""
    resolved = path.resolve()
    for base in (Path.cwd(), root.resolve().parent):
        try:
            return str(resolved.relative_to(base))
        except ValueError:
            continue
    return str(path)


def _check_schema(cls: type[BaseModel], node: Any, file: str, out: _Collector) -> bool:
    if not isinstance(node, dict):
        out.at(file, position(node, ()), "expected a mapping of keys at the top of the file")
        return False
    try:
        cls.model_validate(node)
    except ValidationError as err:
        _schema_problems(err, node, file, cls, out)
        return False
    return True


# --- stage 3: semantics ----------------------------------------------------------------


@dataclass
class _Scope:
    """What expressions in one place may name: steps asked before it (and maybe itself)."""

    earlier: dict[str, Any]  # step id -> spec
    later: set[str]


def _expr_pos(raw: RawStep, path: tuple[Any, ...], offset: int) -> tuple[int, int]:
    node = raw.node
    for part in path[:-1]:
        node = node[part]
    last = path[-1]
    if isinstance(node, LineDict) and last in node.value_pos:
        line, col = node.value_pos[last]
        written, value = node.value_source.get(last), node.get(last)
        if written is not None and isinstance(value, str):
            found = source_position(written, (line, col), value, offset)
            if found is not None:
                return found
        quoted = node.value_quoted.get(last, False)
        return (line, col + offset + (1 if quoted else 0))
    return position(raw.node, path)


def _check_expr(
    node: cond.Node,
    raw: RawStep,
    path: tuple[Any, ...],
    scope: _Scope,
    out: _Collector,
    base: int = 0,
) -> None:
    for name in cond.names(node):
        pos = _expr_pos(raw, path, base + name.offset)
        head = name.parts[0]
        if head == "respondent":
            if len(name.parts) != 2:
                out.at(
                    raw.file,
                    pos,
                    f"'{name.dotted}': write respondent.ATTRIBUTE",
                    "e.g. respondent.role",
                )
            continue
        if head in scope.later and head not in scope.earlier:
            out.at(
                raw.file,
                pos,
                f"'{head}' is asked later, so it has no answer here",
                "only answers to earlier steps can be used here",
            )
        elif head not in scope.earlier:
            known = [*scope.earlier, "respondent"]
            owners = [
                step_id
                for step_id, spec in scope.earlier.items()
                if head in {str(c.value) for c in getattr(spec, "choices", [])}
            ]
            hint = (
                f"'{head}' is a choice of {owners[0]}: quote it, \"{head}\""
                if owners and len(name.parts) == 1
                else did_you_mean(head, known) or "use an earlier step id or respondent.ATTRIBUTE"
            )
            out.at(raw.file, pos, f"unknown name '{head}'", hint)
        elif scope.earlier[head].type == "message":
            out.at(raw.file, pos, f"'{head}' is a message step and has no answer")
        elif len(name.parts) > 1:
            out.at(raw.file, pos, f"'{name.dotted}': a step's answer has no attributes")
    for comp in cond.comparisons(node):
        _check_comparison(comp, raw, path, scope, out, base)


def _literals(node: cond.Node) -> list[Any] | None:
    if isinstance(node, cond.Literal):
        return [node.value]
    if isinstance(node, cond.ListOf) and all(isinstance(i, cond.Literal) for i in node.items):
        return [i.value for i in node.items]  # type: ignore[union-attr]
    return None


def _check_comparison(
    comp: cond.Compare,
    raw: RawStep,
    path: tuple[Any, ...],
    scope: _Scope,
    out: _Collector,
    base: int = 0,
) -> None:
    for name_side, other in ((comp.left, comp.right), (comp.right, comp.left)):
        if not isinstance(name_side, cond.Name) or name_side.parts[0] not in scope.earlier:
            continue
        spec = scope.earlier[name_side.parts[0]]
        values = _literals(other)
        if values is None:
            continue
        pos = _expr_pos(raw, path, base + name_side.offset)
        step_id = spec.id
        for value in values:
            if value is None:
                continue
            if spec.type == "multi_choice" and comp.op in ("==", "!=") and isinstance(value, str):
                out.at(
                    raw.file,
                    pos,
                    f"'{step_id}' is a list of picks, so == never matches one value",
                    f'write "{value}" in {step_id}',
                )
            if spec.type in CHOICE_TYPES:
                allowed = [c.value for c in spec.choices]
                if value not in allowed:
                    hint = did_you_mean(str(value), allowed) or f"values are: {', '.join(allowed)}"
                    out.at(raw.file, pos, f"'{step_id}' has no choice with value {value!r}", hint)
            elif spec.type in SCALE_TYPES:
                if not isinstance(value, int | float) or isinstance(value, bool):
                    out.at(
                        raw.file,
                        pos,
                        f"'{step_id}' is a number scale; compare it with a number, not {value!r}",
                    )
            elif spec.type == "yes_no" and not isinstance(value, bool):
                out.at(
                    raw.file,
                    pos,
                    f"'{step_id}' is yes/no; compare it with true or false, not {value!r}",
                )


def _compile(source: Any, raw: RawStep, path: tuple[Any, ...], out: _Collector) -> cond.Node | None:
    if not isinstance(source, str):
        out.at(raw.file, position(raw.node, path), 'a condition must be text, e.g. "score <= 6"')
        return None
    try:
        return cond.parse(source)
    except cond.ConditionSyntaxError as err:
        out.at(raw.file, _expr_pos(raw, path, err.offset), f"bad condition: {err.message}")
        return None


def _template(
    source: str | None, raw: RawStep, path: tuple[Any, ...], scope: _Scope, out: _Collector
) -> Template | None:
    if source is None:
        return None
    try:
        template = compile_template(source)
    except cond.ConditionSyntaxError as err:
        out.at(
            raw.file, _expr_pos(raw, path, err.offset), f"bad {{{{...}}}} in text: {err.message}"
        )
        return None
    expressions = [p for p in template.parts if not isinstance(p, str)]
    for part, offset in zip(expressions, template.offsets, strict=True):
        _check_expr(part, raw, path, scope, out, offset)
    return template


def _domain(spec: Any, may_skip: bool) -> list[Any] | None:
    """Every value a step's answer can take, or None when there are too many to list."""
    values: list[Any]
    if spec.type in ("nps", "csat", "ces", "rating"):
        lo, hi = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}.get(
            spec.type, (getattr(spec, "min", 0), getattr(spec, "max", 0))
        )
        values = list(range(lo, hi + 1))
    elif spec.type == "choice":
        values = [c.value for c in spec.choices]
    elif spec.type == "multi_choice" and len(spec.choices) <= 8:
        vals = [c.value for c in spec.choices]
        values = [
            list(combo) for r in range(len(vals) + 1) for combo in itertools.combinations(vals, r)
        ]
    elif spec.type == "yes_no":
        values = [True, False]
    else:
        return None
    return [*values, None] if may_skip else values


def _can_be_true(
    node: cond.Node, scope: _Scope, may_skip: dict[str, bool], budget: list[int]
) -> bool:
    """Brute-force satisfiability over finite answer domains; unknowable → assume True.
    ``budget``: evaluations left for the whole flow — every load (chat, results, each reload
    while serving) runs this, and 200 long conditions took minutes without a bound."""
    heads = sorted({n.parts[0] for n in cond.names(node)})
    domains: list[list[Any]] = []
    for head in heads:
        spec = scope.earlier.get(head)
        dom = _domain(spec, may_skip.get(head, True)) if spec is not None else None
        if dom is None:
            return True
        domains.append(dom)
    total = 1
    for dom in domains:
        total *= len(dom)
        if total > MAX_ENUMERATION:
            return True
    for combo in itertools.product(*domains):
        if budget[0] <= 0:
            return True  # the flow's budget is spent: trusted, not proven
        budget[0] -= 1
        answers = dict(zip(heads, combo, strict=True))
        if cond.evaluate(node, cond.truthy_in(answers, {})):
            return True
    return False


def _build_steps(
    raws: list[RawStep], out: _Collector
) -> tuple[list[Step], list[tuple[Any, RawStep]]]:
    specs: list[tuple[Any, RawStep]] = []
    for raw in raws:
        if not isinstance(raw.node, dict):
            out.at(
                raw.file, position(raw.node, ()), "a step must be a mapping with id, type and text"
            )
            continue
        try:
            specs.append((_STEP_ADAPTER.validate_python(raw.node), raw))
        except ValidationError as err:
            _schema_problems(err, raw.node, raw.file, None, out)
    seen: dict[str, RawStep] = {}
    for spec, raw in specs:
        if spec.id in seen:
            first = seen[spec.id]
            line = position(first.node, ("id",))[0]
            out.at(
                raw.file,
                position(raw.node, ("id",)),
                f"duplicate step id '{spec.id}'",
                f"first used at {first.file}:{line}",
            )
        else:
            seen[spec.id] = raw
    for spec, raw in specs:
        if isinstance(spec, ChoiceStep | MultiChoiceStep):
            values = [c.value for c in spec.choices]
            for i, choice in enumerate(spec.choices):
                if values.index(choice.value) != i:
                    out.at(
                        raw.file,
                        position(raw.node, ("choices", i, "value")),
                        f"duplicate choice value '{choice.value}' in step '{spec.id}'",
                    )
    if len(specs) < len(raws):
        return [], specs  # a step failed its schema: name checks would only add noise
    steps: list[Step] = []
    all_ids = [s.id for s, _ in specs]
    may_skip: dict[str, bool] = {}
    budget = out.budget  # one for the flow and the blocks it includes
    ended_at: str | None = None
    for i, (spec, raw) in enumerate(specs):
        earlier = {s.id: s for s, _ in specs[:i]}
        scope = _Scope(earlier, set(all_ids[i:]))
        known = len(out.problems)  # this step's own when: must check out before it is judged
        when = _compile(spec.when, raw, ("when",), out) if spec.when is not None else None
        if when is not None:
            _check_expr(when, raw, ("when",), scope, out)
        if ended_at is not None:
            out.at(
                raw.file,
                position(raw.node, ("id",)),
                f"step '{spec.id}' can never be asked",
                f"step '{ended_at}' always ends the flow before it",
            )
        elif (
            when is not None
            and len(out.problems) == known
            and not _can_be_true(when, scope, may_skip, budget)
        ):
            out.at(
                raw.file,
                position(raw.node, ("when",)),
                f"step '{spec.id}' can never be asked: its when: is never true",
                "check the values and ranges it compares",
            )
        may_skip[spec.id] = when is not None or not spec.required or spec.type == "email"
        if spec.type == "message" and spec.end and when is None:
            ended_at = spec.id
        own = _Scope({**earlier, spec.id: spec}, set(all_ids[i + 1 :]))
        rules: list[TagRule] = []
        for j, rule in enumerate(spec.tags):
            rule_when = None
            if rule.when is not None:
                rule_when = _compile(rule.when, raw, ("tags", j, "when"), out)
                if rule_when is not None:
                    _check_expr(rule_when, raw, ("tags", j, "when"), own, out)
            rules.append(TagRule(rule_when, rule.weights))
        if out.declared is not None:
            _check_tags(spec, raw, out.declared, out)
        if spec.save_as and spec.type == "message":
            out.at(
                raw.file,
                position(raw.node, ("save_as",)),
                "a message step has no answer to save_as",
            )
        text = _template(spec.text, raw, ("text",), scope, out)
        help_ = _template(spec.help, raw, ("help",), scope, out)
        labels = tuple(
            _template(c.label, raw, ("choices", k, "label"), scope, out)
            or Template(c.label, (c.label,))
            for k, c in enumerate(getattr(spec, "choices", []))
        )
        if text is not None:
            steps.append(Step(spec, when, text, help_, tuple(rules), labels))
    return steps, specs


def _check_no_effect(
    specs: list[tuple[Any, RawStep]], file: str, anonymous: bool, out: _Collector
) -> None:
    """What an author wrote that would silently do nothing: an anonymous flow keeps nothing
    about the person (its author would wait for segments that never fill), and an email step
    is always optional. Only for files: a stored version stays loadable as it was stored.
    A shared block's tags are left alone: other flows use them, and here they do nothing."""
    for spec, raw in specs:
        if spec.type == "email" and "required" in raw.node and spec.required:
            out.at(
                raw.file,
                position(raw.node, ("required",)),
                f"step '{spec.id}' cannot be required: an email step is always optional",
                "the person may decline the consent; remove required: true",
            )
        if not anonymous or raw.file != file:
            continue
        written = [("save_as",)] if spec.save_as else []
        written += [("tags",)] if spec.tags else []
        written += [
            ("choices", k, "tags") for k, c in enumerate(getattr(spec, "choices", [])) if c.tags
        ]
        for path in written:
            out.at(
                raw.file,
                key_position(raw.node, path),
                f"step '{spec.id}' has {path[-1]}:, but an anonymous flow keeps nothing "
                "about the person (no tags, no profile)",
                f"remove {path[-1]}:, or anonymous: true",
            )


def build_flow(
    node: Any,
    *,
    file: str,
    root: Path | None,
    expected_id: str | None,
    declared: dict[str, set[str]] | None = None,
) -> Flow:
    """Stages 2 and 3 over parsed YAML (from a file, or a stored definition when root is None).
    ``declared``: segments.yml's segments, which every tag must name."""
    out = _Collector(declared=declared)
    meta_ok = _check_schema(FlowMeta, node, file, out)
    items = node.get("steps") if isinstance(node, dict) else None
    specs: list[tuple[Any, RawStep]] = []
    if isinstance(items, list):  # check the steps even when the header is wrong: report everything
        raws = (
            list(_expand(items, file, root, (), out))
            if root is not None
            else [RawStep(s, file) for s in items]
        )
        steps, specs = _build_steps(raws, out)
    if not meta_ok:
        out.raise_if_any()
    meta = FlowMeta.model_validate(node)
    if root is not None:
        _check_no_effect(specs, file, meta.anonymous, out)
    if expected_id is not None and meta.id != expected_id:
        out.at(
            file,
            position(node, ("id",)),
            f"flow id '{meta.id}' must match its file name",
            f"rename it to '{expected_id}'",
        )
    if not any(s.asks for s in steps) and not out.problems:
        out.at(file, position(node, ("steps",)), "a flow needs at least one question")
    if raws and not steps:  # a step failed its shape: what intro/outro name is unknowable
        out.raise_if_any()
    all_specs = {s.id: s.spec for s in steps}
    top = RawStep(node, file)
    intro = _template(meta.intro, top, ("intro",), _Scope({}, set(all_specs)), out)
    outro = _template(meta.outro, top, ("outro",), _Scope(all_specs, set()), out)
    out.raise_if_any()
    definition = {k: _plain(v) for k, v in node.items() if k != "steps"}
    definition["steps"] = [_plain(r.node) for r in raws]
    digest = hashlib.sha256(
        json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    return Flow(
        id=meta.id,
        kind=meta.kind,
        title=meta.title,
        trigger=meta.trigger,
        intro=intro,
        outro=outro,
        expires_after=parse_duration(meta.expires_after) if meta.expires_after else None,
        anonymous=meta.anonymous,
        steps=tuple(steps),
        hash=digest,
        definition=definition,
        source=file,
    )


def load_flow(
    path: Path, *, root: Path, declared: dict[str, set[str]] | Literal["read"] | None = "read"
) -> Flow:
    """Load one flow file; raises FlowError listing every problem. Its tags are checked
    against ``root``'s segments.yml (``declared``: already read)."""
    shown = _display(path, root)
    node = read_yaml(path, display=shown)
    if declared == "read":
        declared = _declared_segments(root)
    flow = build_flow(node, file=shown, root=root, expected_id=path.stem, declared=declared)
    return dataclasses.replace(flow, path=str(path.resolve()))


def flow_from_definition(definition: dict[str, Any]) -> Flow:
    """Rebuild a stored flow version (includes already expanded)."""
    return build_flow(
        definition, file=f"<stored flow {definition.get('id')}>", root=None, expected_id=None
    )


def flow_files(root: Path) -> list[Path]:
    """The flow files in ``root`` (top-level ``*.yml`` minus the reserved config files)."""
    return sorted(
        p
        for p in root.glob("*.y*ml")
        if p.suffix in (".yml", ".yaml")
        and p.name not in CONFIG_FILES
        and not _config_named_yaml(p)
        and not p.is_dir()
    )


@dataclass(frozen=True)
class FileReport:
    path: str
    kind: str  # flow | block | config
    summary: str
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_tree(root: Path) -> list[FileReport]:
    """Check every file under a flows folder, each against its own schema."""
    reports: list[FileReport] = []
    # a block file, or the blocks folder itself: check them as blocks (only the path's own
    # name or its folder's: a project kept under some ~/blocks/ folder is still flows)
    blocks_dir = root if root.is_dir() else root.parent
    if blocks_dir.name != "blocks":
        blocks_dir = None
    if blocks_dir is not None:
        flows_root = blocks_dir.parent
        files = sorted(root.rglob("*.y*ml")) if root.is_dir() else [root]
        declared = _declared_segments(flows_root)
        return [_validate_block(path, flows_root, declared) for path in files]
    files = sorted(root.glob("*.y*ml")) if root.is_dir() else [root]
    flows_root = root if root.is_dir() else root.parent
    declared = _declared_segments(flows_root)
    for path in files:
        shown = _display(path, flows_root)
        if path.name in CONFIG_FILES:
            reports.append(_validate_config(path, shown))
            continue
        if _config_named_yaml(path):
            wanted = path.with_suffix(".yml").name
            problem = Problem(
                shown, 1, 1, f"Parley reads {wanted}, not {path.name}", f"rename it to {wanted}"
            )
            reports.append(FileReport(shown, "config", "", (problem,)))
            continue
        try:
            flow = load_flow(path, root=flows_root, declared=declared)
        except FlowError as err:
            reports.append(FileReport(shown, "flow", "", tuple(err.problems)))
            continue
        reports.append(
            FileReport(
                shown,
                "flow",
                f"flow '{flow.id}' ({flow.kind}): {flow.question_count} questions, version {flow.hash}",
            )
        )
    blocks = flows_root / "blocks"
    if root.is_dir() and blocks.is_dir():
        for path in sorted(blocks.rglob("*.y*ml")):
            reports.append(_validate_block(path, flows_root, declared))
    if root.is_dir():
        reports += [_not_read(path, flows_root) for path in _stray_files(root)]
    return reports


def _config_named_yaml(path: Path) -> bool:
    return path.suffix == ".yaml" and path.with_suffix(".yml").name in CONFIG_FILES


def _stray_files(root: Path) -> list[Path]:
    """YAML files in folders Parley never reads: a flow or block put there would silently do
    nothing (flows are the files at the top, shared steps live in blocks/)."""
    return sorted(
        path
        for path in root.rglob("*.y*ml")
        if path.parent != root and path.relative_to(root).parts[0] != "blocks"
    )


def _not_read(path: Path, root: Path) -> FileReport:
    shown = _display(path, root)
    problem = Problem(
        shown,
        1,
        1,
        "not read: flows are the .yml files at the top of the flows folder, shared steps "
        "live in blocks/",
        "move it there, or out of the flows folder",
    )
    return FileReport(shown, "flow", "", (problem,))


def _declared_segments(flows_root: Path) -> dict[str, set[str]] | None:
    """segments.yml's dimensions and their segments (None: no usable segments.yml)."""
    path = flows_root / "segments.yml"
    if not path.is_file():
        return None
    try:
        parsed = SegmentsFile.model_validate(read_yaml(path, display=path.name))
    except (FlowError, ValidationError):
        return None  # its own report says what is wrong with it
    return {name: set(dimension.segments) for name, dimension in parsed.dimensions.items()}


def _validate_config(path: Path, shown: str) -> FileReport:
    out = _Collector()
    try:
        node = read_yaml(path, display=shown)
    except FlowError as err:
        return FileReport(shown, "config", "", tuple(err.problems))
    if node is None:
        node = LineDict()
    if _check_schema(CONFIG_FILES[path.name], node, shown, out):
        main_key = {
            "segments.yml": "dimensions",
            "personas.yml": "personas",
            "themes.yml": "themes",
        }[path.name]
        count = len(node.get(main_key) or ())
        return FileReport(shown, "config", f"config {path.name}: {count} {main_key}")
    return FileReport(shown, "config", "", tuple(out.problems))


def _validate_block(path: Path, root: Path, declared: dict[str, set[str]] | None) -> FileReport:
    shown = _display(path, root)
    out = _Collector(declared=declared)
    try:
        node = read_yaml(path, display=shown)
    except FlowError as err:
        return FileReport(shown, "block", "", tuple(err.problems))
    if _check_schema(BlockFile, node, shown, out):
        raws = list(_expand(node["steps"], shown, root, (path.resolve(),), out))
        steps, _ = _build_steps(raws, out)
        if not out.problems:
            return FileReport(
                shown, "block", f"block: {len(steps)} step{'' if len(steps) == 1 else 's'}"
            )
    return FileReport(shown, "block", "", tuple(out.unique()))


def load_each(root: Path) -> tuple[dict[str, Flow], dict[Path, list[Problem]]]:
    """Load every flow under ``root`` on its own: the good ones, and the problems of each
    file that is not (one researcher's half-written draft must not stop the other flows)."""
    if not root.is_dir():
        raise FlowError(
            [Problem(str(root), 1, 1, "flows folder not found", "pass --flows or set PARLEY_FLOWS")]
        )
    flows: dict[str, Flow] = {}
    broken: dict[Path, list[Problem]] = {}
    declared = _declared_segments(root)
    for path in flow_files(root):  # ids are unique: each must match its file's name
        try:  # undeclared tags too: what `parley validate` refuses is not run (nor stored)
            flow = load_flow(path, root=root, declared=declared)
        except FlowError as err:
            broken[path] = list(err.problems)
            continue
        flows[flow.id] = flow
    return flows, broken


def load_all(root: Path) -> dict[str, Flow]:
    """Load every flow under ``root``; one FlowError with all problems if any file is bad."""
    flows, broken = load_each(root)
    if broken:
        raise FlowError([problem for problems in broken.values() for problem in problems])
    return flows


__all__ = [
    "FileReport",
    "Flow",
    "LineList",
    "build_flow",
    "flow_files",
    "flow_from_definition",
    "load_all",
    "load_each",
    "load_flow",
    "validate_tree",
]
