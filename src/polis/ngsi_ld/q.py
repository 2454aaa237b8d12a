"""The NGSI-LD query language `q` (ETSI GS CIM 009 §4.9): AST, parser and a Python evaluator.

Grammar accepted (no whitespace anywhere, as in the spec's ABNF):

    q        := and ("|" and)*                 AND (";") binds tighter than OR ("|")
    and      := term (";" term)*
    term     := "(" q ")" | "!" path | path [op values]
    op       := "==" | "!=" | ">" | ">=" | "<" | "<=" | "~=" | "!~="
    values   := value | value ("," value)+ | value ".." value      lists and ranges only with == and !=
    value    := number | true | false | "double-quoted" | unquoted date, time or date-time (kept as a string)
    path     := name ("." name)* ["[" key ("." key)* "]"]

- A bare `path` means "exists", `!path` "does not exist".
- In a path the first name is the attribute and the next ones are sub-attributes, except that a final
  `observedAt`, `createdAt`, `modifiedAt`, `unitCode` or `datasetId` names that member of the attribute
  (or sub-attribute). `[k1.k2]` digs into a compound value: value["k1"]["k2"]; keys are not expanded.
- A name that starts with `http://`, `https://` or `urn:` is a full IRI: it runs up to the next operator,
  `[`, `;`, `|` or `)`, dots included, so it ends the path (an IRI cannot be followed by `.sub`).
- The first name is always an attribute: `createdAt>...` asks about an attribute so named, not about the
  entity's system timestamp. `attr[en]` on a LanguageProperty reaches languageMap["en"].
- Limits, all answered with BadRequestData: MAX_Q_LENGTH characters, MAX_DEPTH nested parentheses,
  MAX_TERMS conditions, MAX_KEYS keys in a key path.
- In quoted strings `\\"` is a quote and `\\\\` a backslash; any other backslash is kept as written, so
  regular expressions such as `"^\\d+"` need no doubling.

Semantics (mirrored exactly by the SQL translation in polis.store.q_sql):
- A comparison holds if ANY instance of the attribute (one per datasetId), and for multi-valued values
  ANY element, satisfies it (`compared_values` says what is compared for each attribute kind).
- Numbers compare with numbers only, as IEEE doubles (bool is not a number; non-finite numbers compare
  with nothing); strings with strings by code point (right for ISO 8601 UTC date-times); booleans with
  booleans through == and != only. Any other pairing is simply false.
- A path exists when some instance has it, whatever its value (null and {} included); a key path when
  value["k1"]["k2"] can be looked up; a member when it is present and not null.
- The negated operators `!=` and `!~=` hold when the path exists and the positive operator does not.
- `~=` is a `re.search` in Python and `regexp_matches` (RE2) in DuckDB. Patterns using features RE2 lacks
  (look-around, back-references, atomic groups, possessive quantifiers, `\\Z`, verbose mode...) are rejected,
  and Python compiles with re.ASCII so `\\d`, `\\w`, `\\b` are ASCII as in RE2. Known remaining differences:
  `$` also matches before a final newline in Python; `(?i)` folds only ASCII letters in Python; Python's
  `\\s` also matches \\v. A pathological pattern can backtrack for long in Python (RE2 cannot), and
  nested repeats whose product passes 1000 (`(a{100}){100}`) compile here but fail in DuckDB at query time.
"""

from __future__ import annotations

import math
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NoReturn, Protocol, TypeAlias, cast

import re2

from polis.domain.entity import ENTITY_MEMBERS, RESERVED_ATTRIBUTE_MEMBERS, VALUE_MEMBER, Entity, Instance
from polis.domain.errors import BadRequestData

MAX_Q_LENGTH = 4096
MAX_DEPTH = 64  # parentheses
MAX_TERMS = 64  # conditions; SQL evaluates each on every row of the paths involved
MAX_KEYS = 8  # depth of a [k1.k2...] key path; the index stores no deeper keys
MEMBERS = frozenset({"observedAt", "createdAt", "modifiedAt", "unitCode", "datasetId"})
OPERATORS = ("==", "!=", ">", ">=", "<", "<=", "~=", "!~=")
NEGATED = {"!=": "==", "!~=": "~="}  # negated operator -> the positive one it denies

Scalar: TypeAlias = int | float | str | bool


@dataclass(frozen=True, slots=True)
class Path:
    attribute: str  # expanded IRI of the attribute
    sub: tuple[str, ...] = ()  # expanded IRIs of sub-attributes (attr.sub.subsub)
    member: str | None = None  # one of MEMBERS, or None for the value
    keys: tuple[str, ...] = ()  # compound value keys from [k1.k2] (not expanded)


@dataclass(frozen=True, slots=True)
class Range:
    low: Scalar
    high: Scalar


@dataclass(frozen=True, slots=True)
class Comparison:
    path: Path
    op: str  # one of OPERATORS
    value: Scalar | tuple[Scalar, ...] | Range


@dataclass(frozen=True, slots=True)
class Exists:
    path: Path
    negated: bool = False


@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[QExpr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    parts: tuple[QExpr, ...]


QExpr: TypeAlias = Comparison | Exists | And | Or


# -- parsing ------------------------------------------------------------------------------------------

_IRI_PREFIXES = ("http://", "https://", "urn:")
_NAME_EXTRA = frozenset("_-:/#")
_IRI_STOP = frozenset(";|)[<>=")
_AFTER_VALUE = frozenset(";|),")
_ORDERED_OPS = (">=", "<=", "!~=", "==", "!=", "~=", ">", "<")  # longest first where prefixes clash
_BOOL = re.compile(r"(true|false)\b", re.ASCII)
_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?|\d{2}:\d{2}:\d{2}(?:\.\d+)?Z?",
    re.ASCII,  # Python's \d would also take other scripts' digits
)
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?", re.ASCII)
_GROUP_FLAGS = re.compile(r"\(\?(?::|P<|[ims]*(?:-[ims]+)?[:)])")
_REPEAT = re.compile(r"\{(\d*)(?:,(\d*))?\}")
_BAD_ESCAPES = frozenset("0123456789ZzgNuU")
_BAD_CLASS_ESCAPES = _BAD_ESCAPES | {"b"}  # [\b] is a backspace in Python, an error in RE2
RE2_MAX_REPEAT = 1000


def parse_q(text: str, expand: Callable[[str], str] = lambda t: t) -> QExpr:
    """Parse a `q` expression; `expand` turns attribute and sub-attribute names into IRIs."""
    if not text:
        raise BadRequestData("q: the query must not be empty")
    if len(text) > MAX_Q_LENGTH:
        raise BadRequestData(f"q: the query is {len(text)} characters long; at most {MAX_Q_LENGTH} are allowed")
    return _Parser(text, expand).parse()


class _Parser:
    def __init__(self, text: str, expand: Callable[[str], str]) -> None:
        self.text = text
        self.pos = 0
        self.expand = expand
        self.depth = 0
        self.terms = 0

    # errors name the 1-based position and what was expected there
    def fail(self, message: str, pos: int | None = None) -> NoReturn:
        where = self.pos if pos is None else pos
        shown = self.text if len(self.text) <= 200 else self.text[:200] + "..."
        raise BadRequestData(f"q: {message} at position {where + 1} in '{shown}'")

    def expected(self, what: str, pos: int | None = None) -> NoReturn:
        self.fail(f"expected {what}", pos)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> QExpr:
        expr = self.parse_or()
        if self.pos < len(self.text):
            if self.peek() == ")":
                self.fail("unbalanced ')'")
            self.expected("';', '|' or the end of the query")
        return expr

    def parse_or(self) -> QExpr:
        parts = [self.parse_and()]
        while self.peek() == "|":
            self.pos += 1
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def parse_and(self) -> QExpr:
        parts = [self.parse_term()]
        while self.peek() == ";":
            self.pos += 1
            parts.append(self.parse_term())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def parse_term(self) -> QExpr:
        if self.peek() == "(":
            return self.parse_group()
        self.terms += 1
        if self.terms > MAX_TERMS:
            self.fail(f"too many conditions (at most {MAX_TERMS})")
        if self.peek() == "!":
            self.pos += 1
            path = self.parse_path()
            if self.peek() and self.peek() not in ";|)":
                self.expected("';', '|', ')' or the end after a '!attribute' condition (it takes no operator)")
            return Exists(path, negated=True)
        path = self.parse_path()
        op_pos = self.pos
        op = self.parse_op()
        if op is None:
            return Exists(path)
        return Comparison(path, op, self.parse_values(op, op_pos))

    def parse_group(self) -> QExpr:
        open_pos = self.pos
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"parentheses nested deeper than {MAX_DEPTH}")
        self.pos += 1
        inner = self.parse_or()
        if self.peek() != ")":
            self.expected(f"')' (to close the '(' from position {open_pos + 1})")
        self.pos += 1
        self.depth -= 1
        return inner

    # -- paths --

    def parse_path(self) -> Path:
        segments = []
        while True:
            name, is_iri = self.parse_name()
            segments.append(name)
            if is_iri or self.peek() != ".":
                break
            self.pos += 1
        keys: tuple[str, ...] = ()
        if self.peek() == "[":
            keys = self.parse_keys()
        member = segments.pop() if len(segments) > 1 and segments[-1] in MEMBERS else None
        if any(s in MEMBERS for s in segments[1:]):
            self.fail("a member such as 'observedAt' can only end a path")
        if member is not None and keys:
            self.fail(f"'{member}' has no [keys]")
        return Path(
            attribute=self.expand(segments[0]),
            sub=tuple(self.expand(s) for s in segments[1:]),
            member=member,
            keys=keys,
        )

    def parse_name(self) -> tuple[str, bool]:
        text, start = self.text, self.pos
        end = start
        is_iri = text.startswith(_IRI_PREFIXES, start)
        if is_iri:
            while end < len(text) and not self.iri_ends(end):
                end += 1
        else:
            while end < len(text) and (text[end].isalnum() or text[end] in _NAME_EXTRA):
                end += 1
        if end == start:
            self.expected("an attribute name")
        self.pos = end
        return text[start:end], is_iri

    def iri_ends(self, i: int) -> bool:
        ch = self.text[i]
        if ch in _IRI_STOP or ch <= " ":
            return True
        # '!' and '~' are legal in IRIs; only as the start of an operator do they end one
        return (ch == "!" and self.text.startswith(("!=", "!~="), i)) or (ch == "~" and self.text.startswith("~=", i))

    def parse_keys(self) -> tuple[str, ...]:
        text = self.text
        self.pos += 1
        keys = []
        while True:
            start = end = self.pos
            while end < len(text) and text[end] not in ".[]" and text[end] >= " ":
                end += 1
            if end == start:
                self.expected("a key name inside '[...]'")
            keys.append(text[start:end])
            self.pos = end
            if self.peek() == "]":
                self.pos += 1
                break
            if self.peek() != ".":
                self.expected("'.' or ']' in the key path")
            self.pos += 1
        if len(keys) > MAX_KEYS:
            self.fail(f"a key path may have at most {MAX_KEYS} keys")
        return tuple(keys)

    # -- operators and values --

    def parse_op(self) -> str | None:
        ch = self.peek()
        if ch == "" or ch in ";|)":
            return None
        for op in _ORDERED_OPS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        self.expected("an operator (==, !=, >, >=, <, <=, ~=, !~=) or ';', '|', ')' or the end")

    def parse_values(self, op: str, op_pos: int) -> Scalar | tuple[Scalar, ...] | Range:
        first = self.parse_scalar(op)
        if self.peek() == ",":
            if op not in ("==", "!="):
                self.fail(f"a list of values is only allowed with == and !=, not '{op}'")
            values = [first]
            while self.peek() == ",":
                self.pos += 1
                values.append(self.parse_scalar(op))
            if self.text.startswith("..", self.pos):
                self.fail("a value list cannot also be a range")
            return tuple(values)
        if self.text.startswith("..", self.pos):
            if op not in ("==", "!="):
                self.fail(f"a range is only allowed with == and !=, not '{op}'")
            self.pos += 2
            high = self.parse_scalar(op)
            if _kind(first) != _kind(high) or _kind(first) == "b":
                self.fail("a range needs two numbers or two strings", op_pos + len(op))
            if self.peek() == "," or self.text.startswith("..", self.pos):
                self.expected("';', '|', ')' or the end after a range")
            return Range(first, high)
        if op in ("~=", "!~="):
            self.check_regex(first, op_pos + len(op))
        elif op not in ("==", "!=") and isinstance(first, bool):
            self.fail(f"'{op}' compares numbers or strings, not true/false", op_pos + len(op))
        return first

    def parse_scalar(self, op: str) -> Scalar:
        text, start = self.text, self.pos
        value: Scalar
        if self.peek() == '"':
            value = self.parse_string()
        elif m := _BOOL.match(text, start):
            value = m.group(1) == "true"
            self.pos = m.end()
        elif m := _DATE.match(text, start):
            value = m.group(0)
            self.pos = m.end()
        elif m := _NUMBER.match(text, start):
            value = self.number(m)
        else:
            self.expected(f"a value after '{op}' (a number, true, false or a double-quoted string)")
        if self.pos < len(text) and text[self.pos] not in _AFTER_VALUE and not text.startswith("..", self.pos):
            self.expected("';', '|', ')', ',', '..' or the end after the value")
        return value

    def number(self, m: re.Match[str]) -> int | float:
        literal = m.group(0)
        value: int | float = float(literal) if m.group(1) or m.group(2) else int(literal)
        try:
            finite = math.isfinite(float(value))
        except OverflowError:
            finite = False
        if not finite:
            self.fail(f"number {literal} is out of range")
        self.pos = m.end()
        return value

    def parse_string(self) -> str:
        text, start = self.text, self.pos
        out: list[str] = []
        i = start + 1
        while i < len(text):
            ch = text[i]
            if ch == '"':
                self.pos = i + 1
                return "".join(out)
            if ch == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
                out.append(text[i + 1])
                i += 2
                continue
            out.append(ch)
            i += 1
        self.expected(f"a closing '\"' for the string that starts at position {start + 1}", len(text))

    def check_regex(self, pattern: Scalar, pos: int) -> None:
        if not isinstance(pattern, str):
            self.fail("a regular expression must be a double-quoted string", pos)
        problem = pattern_problem(pattern, re.ASCII)
        if problem:
            self.fail(f"the regular expression {problem}", pos)


def pattern_problem(pattern: str, flags: int = 0) -> str | None:
    """Why a client's regular expression cannot be used (a phrase to follow its name), or None.

    Refused: what RE2 would read differently (`re2_problem`), and what Python's `re` cannot compile, a
    syntax error or nesting too deep for its recursive parser (RecursionError: a 500 if let through)."""
    problem = re2_problem(pattern)
    if problem:
        return f"uses {problem}, which is not supported"
    try:
        compile_quietly(pattern, flags)
        client_regex(pattern)
    except (re.error, re2.error, RecursionError, OverflowError) as error:
        return f"does not compile ({error or type(error).__name__})"
    return None


def re2_problem(pattern: str) -> str | None:
    """What in a pattern RE2 (DuckDB) would read differently from Python's `re`, if anything.

    Refusing these keeps the SQL and Python evaluations identical: look-around, back-references,
    atomic groups, possessive quantifiers, conditionals, `\\Z`, flags other than i/m/s, POSIX classes,
    `{,n}` and repeat counts over RE2's limit."""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if pattern[i + 1 : i + 2] in _BAD_ESCAPES and i + 1 < len(pattern):
                return f"the escape '\\{pattern[i + 1]}'"
            i += 2
        elif ch == "[":
            i, problem = _skip_class(pattern, i)
            if problem:
                return problem
        else:
            problem = _outside_class_problem(pattern, i)
            if problem:
                return problem
            i += 1
    return None


def _skip_class(pattern: str, start: int) -> tuple[int, str | None]:
    """Index after the character class opening at `start`."""
    i = start + 1
    if pattern.startswith("^", i):
        i += 1
    if pattern.startswith("]", i):  # a ']' first in a class is a literal in both engines
        i += 1
    while i < len(pattern):
        if pattern[i] == "\\":
            if pattern[i + 1 : i + 2] in _BAD_CLASS_ESCAPES and i + 1 < len(pattern):
                return i, f"the escape '\\{pattern[i + 1]}'"
            i += 2
            continue
        if pattern.startswith("[:", i):
            return i, "a POSIX class '[:...:]'"
        if pattern[i] == "]":
            return i + 1, None
        i += 1
    return i, None  # unterminated: re.compile reports it


def _outside_class_problem(pattern: str, i: int) -> str | None:
    ch = pattern[i]
    if ch == "(" and pattern.startswith("(?", i) and not _GROUP_FLAGS.match(pattern, i):
        return f"the group '{pattern[i:i + 4]}'"
    if ch in "*+?}" and i > 0 and pattern.startswith("+", i + 1):
        return "a possessive quantifier"
    if ch == "{" and (m := _REPEAT.match(pattern, i)):
        low, high = m.group(1), m.group(2)
        if not low and m.group(0) != "{}":
            return "a '{,n}' repeat"
        if max(int(low or 0), int(high or 0)) > RE2_MAX_REPEAT:
            return f"a repeat count over {RE2_MAX_REPEAT}"
    return None


class ClientPattern(Protocol):
    def search(self, text: str) -> object | None: ...

    def match(self, text: str) -> object | None: ...


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the client's 400, not a line on the server's stderr


@lru_cache(maxsize=512)
def client_regex(pattern: str) -> ClientPattern:
    r"""A client's pattern (one `pattern_problem` accepts) compiled by RE2, the engine DuckDB runs it with in SQL,
    so that matching in Python agrees with SQL and takes time linear in the text whatever the pattern: Python's
    backtracking `re` took ~60 s to try `^x(a|a)+$` on 27 a's and a y, while holding the entity write lock
    (a subscription's idPattern is matched on every write). RE2's \w, \d and \s are ASCII, like re.ASCII."""
    return cast(ClientPattern, re2.compile(pattern, _RE2_OPTIONS))


_HUSH = threading.Lock()


def compile_quietly(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """re.compile without its FutureWarnings (e.g. "possible nested set" for `[[a]`): a client's pattern
    that compiles is accepted, and a warning in the server's log helps no one. warnings.catch_warnings
    swaps process-wide state, so two threads interleaving it could let a warning through or leave every
    warning ignored for good: hence one lock for every such hush."""
    with _HUSH, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return re.compile(pattern, flags)


# -- what is compared -------------------------------------------------------------------------------
# Shared with polis.store.attr_index so the index holds exactly the values this evaluator compares.


def instances(raw: Any) -> list[Instance]:
    """The instance dicts an attribute or sub-attribute holds (a list, or defensively a single dict)."""
    if isinstance(raw, dict):
        return [raw]
    if isinstance(raw, list):
        return [i for i in raw if isinstance(i, dict)]
    return []


def value_member(node: Instance) -> str:
    kind = node.get("type", "Property")
    return VALUE_MEMBER.get(kind, "value") if isinstance(kind, str) else "value"


def unwrap(value: Any) -> Any:
    """A JSON-LD value object such as {"@type": "DateTime", "@value": "..."} compares as its @value."""
    if isinstance(value, dict) and "@value" in value:
        return value["@value"]
    return value


def plain_values(raw: Any) -> list[Any]:
    """A value compares as itself or, when it is a list, as each element."""
    if isinstance(raw, list):
        return [unwrap(v) for v in raw]
    return [unwrap(raw)]


def compared_values(node: Instance) -> list[Any]:
    """The values `attr op value` compares for one instance, by attribute kind."""
    member = value_member(node)
    raw = node.get(member)
    if member == "languageMap":
        if not isinstance(raw, dict):
            return []
        out: list[Any] = []
        for text in raw.values():
            out.extend(plain_values(text))
        return out
    if member == "objectList":
        if not isinstance(raw, list):
            return []
        return [o["object"] if isinstance(o, dict) and "object" in o else unwrap(o) for o in raw]
    return plain_values(raw)


def classify(value: Any) -> tuple[str, float | str | bool] | None:
    """("n", float) | ("s", str) | ("b", bool), or None for what compares with nothing."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            return None
        return ("n", number) if math.isfinite(number) else None
    return None


def _kind(value: Scalar) -> str:
    return "b" if isinstance(value, bool) else "s" if isinstance(value, str) else "n"


def is_sub_attribute(name: str) -> bool:
    return name not in RESERVED_ATTRIBUTE_MEMBERS and not name.startswith("@")


# -- evaluation -------------------------------------------------------------------------------------


def matches(expr: QExpr, entity: Entity) -> bool:
    """Whether the entity (internal shape, expanded names) satisfies the expression."""
    if isinstance(expr, Comparison):
        values = path_values(entity, expr.path)
        if values is None:
            return False
        test = _predicate(expr)
        hit = any(c is not None and test(c) for c in map(classify, values))
        return not hit if expr.op in NEGATED else hit
    if isinstance(expr, Exists):
        return (path_values(entity, expr.path) is None) == expr.negated
    if isinstance(expr, And):
        return all(matches(p, entity) for p in expr.parts)
    return any(matches(p, entity) for p in expr.parts)


def path_values(entity: Entity, path: Path) -> list[Any] | None:
    """The values a path reaches in the entity, or None when the path does not exist there."""
    name = path.attribute
    if name in ENTITY_MEMBERS or name.startswith("@"):
        return None
    nodes = instances(entity.get(name))
    for sub in path.sub:
        if not is_sub_attribute(sub):
            return None
        nodes = [s for n in nodes for s in instances(n.get(sub))]
    found = False
    out: list[Any] = []
    for node in nodes:
        if path.member is not None:
            raw = node.get(path.member)
            if raw is None:
                continue
            found = True
            out.extend(plain_values(raw))
        elif path.keys:
            raw = node.get(value_member(node))
            for key in path.keys:
                if not isinstance(raw, dict) or key not in raw:
                    break
                raw = raw[key]
            else:
                found = True
                out.extend(plain_values(raw))
        else:
            found = True
            out.extend(compared_values(node))
    return out if found else None


Classified = tuple[str, Any]


def _predicate(cmp: Comparison) -> Callable[[Classified], bool]:
    """The positive test one compared value must pass (the caller applies `!=`/`!~=` negation)."""
    # Keyed by classified values: the AST itself says 1 == True, which must not share a test.
    value = cmp.value
    key: tuple[Any, ...]
    if isinstance(value, Range):
        key = ("..", classify(value.low), classify(value.high))
    elif isinstance(value, tuple):
        key = (",", frozenset(classify(v) for v in value))
    else:
        key = ("=", classify(value))
    return _build_predicate(NEGATED.get(cmp.op, cmp.op), key)


@lru_cache(maxsize=1024)
def _build_predicate(op: str, key: tuple[Any, ...]) -> Callable[[Classified], bool]:
    shape = key[0]
    if shape == "..":
        (kind, low), (_, high) = key[1], key[2]
        return lambda c: c[0] == kind and low <= c[1] <= high
    if shape == ",":
        wanted = key[1]
        return lambda c: c in wanted
    ref: Classified = key[1]
    if op == "==":
        return lambda c: c == ref
    if op == "~=":
        rx = client_regex(ref[1])
        return lambda c: c[0] == "s" and rx.search(c[1]) is not None
    kind, bound = ref
    compare = _ORDER[op]
    return lambda c: c[0] == kind and compare(c[1], bound)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def attribute_iris(expr: QExpr) -> set[str]:
    """Every attribute IRI the expression mentions."""
    if isinstance(expr, (Comparison, Exists)):
        return {expr.path.attribute}
    out: set[str] = set()
    for part in expr.parts:
        out |= attribute_iris(part)
    return out
