"""The scope query language (ETSI GS CIM 009 §4.19, the `scopeQ` parameter): which entities' `scope` match.

- A term is a scope path, `/Madrid/Gardens`: an entity matches when one of its scopes is that path.
- A last level `#` matches the path and everything below it: `/Madrid/#` matches `/Madrid` and
  `/Madrid/Gardens/East`; `/#` alone matches every entity that has a scope at all.
- A level `+` matches exactly one level: `/Madrid/+/Parks` matches `/Madrid/Centro/Parks`.
- Terms combine with `;` (and), `,` or `|` (or) and parentheses; `;` binds tighter, as in `q`.

Each term becomes one anchored regular expression over a single scope string, so the store can test it in
SQL (RE2 and Python's `re` agree on the small subset used: literals escaped, `[^/]+`, `(?:/.*)?`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from polis.domain.errors import BadRequestData

MAX_LENGTH = 2_000  # a scope query is a handful of paths; longer is a mistake or an attack
_LEVEL = re.compile(r"[^/\s;,|()#+]+\Z")  # the scope levels an entity may have (entity_codec), less operators
_TOKENS = re.compile(r"\s*(?:(?P<op>[;,|()])|(?P<path>[^;,|()\s]+))")


@dataclass(frozen=True, slots=True)
class ScopeTerm:
    path: str  # as written, for messages
    regex: str  # anchored by the matcher (a full match)


@dataclass(frozen=True, slots=True)
class ScopeAll:
    parts: tuple[ScopeExpr, ...]


@dataclass(frozen=True, slots=True)
class ScopeAny:
    parts: tuple[ScopeExpr, ...]


ScopeExpr = ScopeTerm | ScopeAll | ScopeAny


def parse_scope_q(text: str) -> ScopeExpr:
    """The parsed query; BadRequestData naming `scopeQ` and what is wrong for anything malformed."""
    if len(text) > MAX_LENGTH:
        raise BadRequestData(f"scopeQ is longer than {MAX_LENGTH} characters")
    tokens = _tokenize(text)
    if not tokens:
        raise BadRequestData("scopeQ is empty; give a scope path such as /Madrid or /Madrid/#")
    parser = _Parser(tokens)
    expr = parser.any_of()
    if parser.at < len(tokens):
        raise BadRequestData(f"scopeQ '{text}': unexpected '{tokens[parser.at]}'")
    return expr


def matches(expr: ScopeExpr, scopes: list[str]) -> bool:
    """Whether an entity with these scopes matches (the store does the same in SQL)."""
    if isinstance(expr, ScopeTerm):
        return any(re.fullmatch(expr.regex, scope) for scope in scopes)
    if isinstance(expr, ScopeAll):
        return all(matches(part, scopes) for part in expr.parts)
    return any(matches(part, scopes) for part in expr.parts)


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    at = 0
    while at < len(text):
        found = _TOKENS.match(text, at)
        if found is None:  # only trailing blanks are left
            break
        tokens.append(found.group("op") or found.group("path"))
        at = found.end()
    return tokens


def _term(path: str) -> ScopeTerm:
    levels = path.split("/")
    if levels[0] != "" or len(levels) < 2:
        raise BadRequestData(f"scopeQ term '{path}' must start with '/', as in /Madrid/Gardens")
    pieces: list[str] = []
    body = levels[1:]
    for index, level in enumerate(body):
        if level == "#":
            if index != len(body) - 1:
                raise BadRequestData(f"scopeQ term '{path}': '#' may only be the last level")
            # `/#`: any scope; `/A/#`: /A itself or anything below it
            return ScopeTerm(path, "/.*" if not pieces else "".join(pieces) + "(?:/.*)?")
        if level == "+":
            pieces.append("/[^/]+")
        elif _LEVEL.match(level):
            pieces.append("/" + re.escape(level))
        else:
            raise BadRequestData(f"scopeQ term '{path}': level '{level}' is not a scope level")
    return ScopeTerm(path, "".join(pieces))


class _Parser:
    """Recursive descent: any_of := all_of (('|' | ',') all_of)*; all_of := atom (';' atom)*."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.at = 0
        self.depth = 0

    def _peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def any_of(self) -> ScopeExpr:
        parts = [self.all_of()]
        while self._peek() in ("|", ","):
            self.at += 1
            parts.append(self.all_of())
        return parts[0] if len(parts) == 1 else ScopeAny(tuple(parts))

    def all_of(self) -> ScopeExpr:
        parts = [self.atom()]
        while self._peek() == ";":
            self.at += 1
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else ScopeAll(tuple(parts))

    def atom(self) -> ScopeExpr:
        token = self._peek()
        if token is None:
            raise BadRequestData("scopeQ ends where a scope path or '(' was expected")
        self.at += 1
        if token == "(":
            self.depth += 1
            if self.depth > 32:  # recursion is bounded by what a person could mean
                raise BadRequestData("scopeQ nests parentheses more than 32 deep")
            inner = self.any_of()
            if self._peek() != ")":
                raise BadRequestData("scopeQ has an unclosed '('")
            self.at += 1
            self.depth -= 1
            return inner
        if token in (";", ",", "|", ")"):
            raise BadRequestData(f"scopeQ: '{token}' where a scope path or '(' was expected")
        return _term(token)
