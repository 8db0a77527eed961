"""Segment rules: a TOML file of named boolean rules over a profile's facts.

A rule file holds one ``[segments.<id>]`` table per segment::

    [segments.sports_fans]
    description = "Engaged sports readers"
    rule = "interests.sports >= 3 and counts.page_view >= 5"

A rule is a small expression language written in Python's expression syntax:
``and``, ``or``, ``not``, parentheses, the comparisons ``== != < <= > >=``
(chains such as ``1 <= counts.click < 10`` allowed), integer and float
literals (optionally negative), and three kinds of field:

- ``counts.<type>``: events of that type (``page_view``, ``impression``,
  ``click``, ``conversion``, ``identify``); any other type is an error;
- ``interests.<name>``: page views whose url's first path segment is
  ``<name>``; any identifier is allowed, one never seen reads 0;
- ``ids``: the number of ids linked to the profile.

A rule is evaluated over *facts*, a flat mapping such as ``{"counts.click":
2, "interests.sports": 4, "ids": 1}`` (built from a profile by
``dmp_faust.domain.profiles.facts``); a fact that is missing reads 0.

Why this is safe, although the rule text comes from a file: the text is
handed to :func:`ast.parse` only, which builds a syntax tree and runs
nothing. The tree is then walked against a whitelist and turned into nested
closures (:func:`_predicate`, :func:`_number`); any node not on the list
(calls, names other than the fields, strings, subscripts, arithmetic,
attribute chains, lambdas, comprehensions, ...) is refused with a
:class:`RuleError`. Nothing is ever passed to ``eval``, ``exec`` or
``compile``, no Python name is resolved and no attribute is read from any
object: ``counts.click`` becomes the string key ``"counts.click"`` looked up
in the facts, and the closures do nothing but look up keys, compare numbers
and combine booleans. Rules are limited in length and nesting so that neither
the parser nor the evaluation can exhaust the stack.
"""

from __future__ import annotations

import ast
import operator
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

from dmp_faust.domain.events import EVENT_TYPES

Facts = Mapping[str, float]
Predicate = Callable[[Facts], bool]
_Number = Callable[[Facts], float]

SEGMENT_ID: Final = re.compile(r"[a-z0-9_-]{1,64}")
MAX_RULE_CHARS: Final = 2_000
MAX_RULE_DEPTH: Final = 32
SEGMENT_KEYS: Final = ("description", "rule")
SHIPPED_SOURCE: Final = "dmp_faust/segments.toml"

_FIELDS_HELP: Final = "fields are counts.<type>, interests.<name>, ids"
_COMPARISONS: Final[dict[type[ast.cmpop], Callable[[float, float], bool]]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_OTHER_COMPARISONS: Final[dict[type[ast.cmpop], str]] = {
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
}
_REFUSED: Final[dict[type[ast.AST], str]] = {
    ast.Call: "function calls are not allowed",
    ast.BinOp: "arithmetic is not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.IfExp: "conditional expressions are not allowed",
    ast.NamedExpr: "assignments are not allowed",
    ast.Tuple: "tuples are not allowed",
    ast.List: "lists are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Set: "sets are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "strings are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
}


class RuleError(ValueError):
    """A rule file or rule that cannot be used. ``str()`` names the file (when
    known), the segment (when known) and the problem, e.g.
    ``segments.toml: segment 'fans': unknown field 'count.click' (...)``."""

    def __init__(self, source: str | None, segment: str | None, problem: str) -> None:
        super().__init__(source, segment, problem)
        self.source = source
        self.segment = segment
        self.problem = problem

    def __str__(self) -> str:
        parts = [self.source] if self.source else []
        if self.segment is not None:
            parts.append(f"segment {self.segment!r}")
        return ": ".join([*parts, self.problem])


@dataclass(frozen=True)
class SegmentRule:
    """One segment: its id, a description for people, and the rule's source
    text. The rule is checked and compiled once, on construction; a bad id or
    rule raises :class:`RuleError`."""

    id: str
    description: str
    rule: str
    _predicate: Predicate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not SEGMENT_ID.fullmatch(self.id):
            raise RuleError(None, self.id, "bad segment id (ids match [a-z0-9_-]{1,64})")
        try:
            predicate = compile_rule(self.rule)
        except RuleError as error:
            raise RuleError(None, self.id, error.problem) from None
        object.__setattr__(self, "_predicate", predicate)

    def matches(self, facts: Facts) -> bool:
        return self._predicate(facts)

    def __reduce__(self) -> tuple[type[SegmentRule], tuple[str, str, str]]:
        # The compiled closures cannot be pickled; the source text recompiles them.
        return (SegmentRule, (self.id, self.description, self.rule))


def compile_rule(text: str) -> Predicate:
    """Check ``text`` against the whitelist and compile it into a predicate over facts."""
    source = text.strip()
    if not source:
        raise RuleError(None, None, "empty rule")
    if len(source) > MAX_RULE_CHARS:
        raise RuleError(None, None, f"rule longer than {MAX_RULE_CHARS} characters")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        where = f" at column {error.offset}" if error.offset else ""
        raise RuleError(None, None, f"syntax error{where}: {error.msg}") from None
    except (RecursionError, MemoryError):
        raise RuleError(None, None, "rule nested too deeply") from None
    _check_depth(tree)
    return _predicate(tree.body)


def _check_depth(tree: ast.Expression) -> None:
    """Refuse a tree nested deeper than MAX_RULE_DEPTH, before anything recurses over it
    (the compiler, the closures it builds, ``ast.unparse`` in error messages)."""
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_RULE_DEPTH:
            raise _refusal(f"rule nested more than {MAX_RULE_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _predicate(node: ast.expr) -> Predicate:
    """A boolean node: a comparison, or ``and`` / ``or`` / ``not`` of boolean nodes."""
    if isinstance(node, ast.BoolOp):
        parts = tuple(_predicate(value) for value in node.values)
        if isinstance(node.op, ast.And):
            return lambda facts: all(part(facts) for part in parts)
        return lambda facts: any(part(facts) for part in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _predicate(node.operand)
        return lambda facts: not inner(facts)
    if isinstance(node, ast.Compare):
        return _comparison(node)
    if isinstance(node, ast.Constant | ast.Name | ast.Attribute | ast.UnaryOp):
        _number(node)  # a bad field or literal is the more useful message
        raise _refusal(
            f"'{ast.unparse(node)}' is a number, not a condition "
            "(compare it, e.g. 'counts.click >= 1')"
        )
    raise _not_allowed(node)


def _comparison(node: ast.Compare) -> Predicate:
    checks = []
    for op in node.ops:
        check = _COMPARISONS.get(type(op))
        if check is None:
            symbol = _OTHER_COMPARISONS.get(type(op), type(op).__name__)
            raise _refusal(f"operator '{symbol}' is not allowed (use == != < <= > >=)")
        checks.append(check)
    operands = tuple(_number(part) for part in (node.left, *node.comparators))
    pairs = tuple(zip(checks, operands[:-1], operands[1:], strict=True))

    def compare(facts: Facts) -> bool:
        return all(check(left(facts), right(facts)) for check, left, right in pairs)

    return compare


def _number(node: ast.expr) -> _Number:
    """A numeric node: a literal, an optionally negated literal, or a field."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        if not isinstance(node.operand, ast.Constant):
            raise _refusal(f"only a number can be signed: {ast.unparse(node)}")
        value = _literal(node.operand)
        signed = -value if isinstance(node.op, ast.USub) else value
        return lambda facts: signed
    if isinstance(node, ast.Constant):
        value = _literal(node)
        return lambda facts: value
    if isinstance(node, ast.Name | ast.Attribute):
        key = _field(node)
        return lambda facts: facts.get(key, 0)
    if isinstance(node, ast.Compare | ast.BoolOp) or (
        isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
    ):
        raise _refusal(f"'{ast.unparse(node)}' is a condition, not a number")
    raise _not_allowed(node)


def _literal(node: ast.expr) -> float:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
        raise _refusal(f"strings are not allowed: {ast.unparse(node)}")
    raise _refusal(f"'{ast.unparse(node)}' is not a number")


def _field(node: ast.Name | ast.Attribute) -> str:
    """The facts key a field reference reads: ``ids``, ``counts.<type>``, ``interests.<name>``."""
    name = ast.unparse(node)
    if isinstance(node, ast.Name):
        if node.id == "ids":
            return "ids"
        raise _refusal(f"unknown field '{name}' ({_FIELDS_HELP})")
    if not isinstance(node.value, ast.Name):
        raise _refusal(f"unknown field '{name}' ({_FIELDS_HELP}; no deeper attributes)")
    if node.value.id == "counts":
        if node.attr not in EVENT_TYPES:
            types = ", ".join(sorted(EVENT_TYPES))
            raise _refusal(f"unknown event type in '{name}' (types are {types})")
        return name
    if node.value.id == "interests":
        return name
    raise _refusal(f"unknown field '{name}' ({_FIELDS_HELP})")


def _not_allowed(node: ast.AST) -> RuleError:
    refused = _REFUSED.get(type(node), "this expression is not allowed")
    return _refusal(f"{refused}: {ast.unparse(node)}")


def _refusal(problem: str) -> RuleError:
    return RuleError(None, None, problem)


# --- the rule file --------------------------------------------------------------------


def load_rules(path: Path | None) -> tuple[SegmentRule, ...]:
    """The rules of the file at ``path``, or the shipped defaults when ``path`` is None."""
    if path is None:
        source = SHIPPED_SOURCE
        resource = resources.files("dmp_faust").joinpath("segments.toml")
        read: Callable[[], bytes] = resource.read_bytes
    else:
        source = str(path)
        read = path.read_bytes
    try:
        data = read()
    except OSError as error:
        raise RuleError(source, None, f"cannot read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RuleError(source, None, f"not UTF-8 (byte {error.start})") from None
    return parse_rules(text, source)


def parse_rules(text: str, source: str) -> tuple[SegmentRule, ...]:
    """The rules in TOML ``text``, in file order; ``source`` names it in errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RuleError(source, None, f"invalid TOML: {error}") from None
    unknown = sorted(key for key in document if key != "segments")
    if unknown:
        raise RuleError(
            source, None, f"unknown top-level key {unknown[0]!r} (expected [segments.<id>])"
        )
    segments = document.get("segments", {})
    if not isinstance(segments, dict):
        raise RuleError(source, None, "'segments' must be a table of [segments.<id>] tables")
    if not segments:
        raise RuleError(source, None, "no segments defined (expected [segments.<id>] tables)")
    return tuple(_segment(source, segment_id, table) for segment_id, table in segments.items())


def _segment(source: str, segment_id: str, table: Any) -> SegmentRule:
    def refuse(problem: str) -> RuleError:
        return RuleError(source, segment_id, problem)

    if not isinstance(table, dict):
        raise refuse("must be a table with a 'rule'")
    unknown = sorted(key for key in table if key not in SEGMENT_KEYS)
    if unknown:
        raise refuse(f"unknown key {unknown[0]!r} (keys are description, rule)")
    if "rule" not in table:
        raise refuse("missing 'rule'")
    rule, description = table["rule"], table.get("description", "")
    if not isinstance(rule, str):
        raise refuse("'rule' must be a string")
    if not isinstance(description, str):
        raise refuse("'description' must be a string")
    try:
        return SegmentRule(segment_id, description, rule.strip())
    except RuleError as error:
        raise refuse(error.problem) from None


# --- evaluation -----------------------------------------------------------------------


def evaluate(rules: Iterable[SegmentRule], facts: Facts) -> frozenset[str]:
    """The ids of the segments whose rule ``facts`` match."""
    return frozenset(rule.id for rule in rules if rule.matches(facts))


def changes(before: Iterable[str], after: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(entered, exited)``: segments in ``after`` only, and in ``before`` only; each sorted."""
    old, new = set(before), set(after)
    return sorted(new - old), sorted(old - new)


def definition(rule: SegmentRule) -> dict[str, str]:
    """The ``definition`` field of ``GET /segments/{id}``."""
    return {"rule": rule.rule, "description": rule.description}
