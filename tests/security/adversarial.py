"""Adversarial inputs for a secret detector, derived from its own regular expressions.

Every pattern is parsed (Python's ``re`` parser reads the RE2 subset the scanner uses) into its literal
runs, its character classes and a shortest string it matches. From those come the inputs that make
backtracking engines, and careless match loops, super-linear: long runs of the prefix, prefix plus an
almost-valid body repeated, near misses, nested delimiters, long runs of what a class accepts, and a
seeded mix. Nothing is written per detector, so a detector added later is covered automatically.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from re import _constants as c  # noqa: PLC2701 - the parser's node names
from re import _parser

MIB = 1 << 20
# Characters a class is probed with: printable ASCII (tab and newline included) and a few non-ASCII
# ones, so negated classes and Unicode-aware categories are exercised too.
_PROBE = string.printable + "é€\u00a0"


def _category(name: object, ch: str) -> bool:
    table = {
        c.CATEGORY_DIGIT: ch.isdigit(),
        c.CATEGORY_NOT_DIGIT: not ch.isdigit(),
        c.CATEGORY_SPACE: ch.isspace(),
        c.CATEGORY_NOT_SPACE: not ch.isspace(),
        c.CATEGORY_WORD: ch.isalnum() or ch == "_",
        c.CATEGORY_NOT_WORD: not (ch.isalnum() or ch == "_"),
    }
    return table.get(name, False)


def _accepts(items: list, ch: str) -> bool:
    negate, hit = False, False
    for op, arg in items:
        if op is c.NEGATE:
            negate = True
        elif op is c.LITERAL:
            hit = hit or ord(ch) == arg
        elif op is c.RANGE:
            hit = hit or arg[0] <= ord(ch) <= arg[1]
        elif op is c.CATEGORY:
            hit = hit or _category(arg, ch)
    return hit != negate


def _class_chars(op: object, arg: object) -> str:
    """The probe characters one class-like node accepts."""
    if op is c.ANY:
        return "".join(ch for ch in _PROBE if ch != "\n")
    if op is c.NOT_LITERAL:
        return "".join(ch for ch in _PROBE if ord(ch) != arg)
    return "".join(ch for ch in _PROBE if _accepts(arg, ch))


def _pick(chars: str) -> str:
    """A representative of a class: a letter or digit when it has one (what real secrets hold)."""
    return next((ch for ch in chars if ch.isascii() and ch.isalnum()), chars[:1] or "a")


@dataclass
class Shape:
    """What one detector's patterns are made of."""

    literals: list[str]  # maximal runs of literal characters, in pattern order, every alternative
    classes: list[str]  # per distinct class: the probe characters it accepts
    sample: str  # a shortest string the patterns match, in field order (best effort: lookarounds ignored)
    prefix: str  # the literal start of the sample, else its first character


class _Walker:
    def __init__(self) -> None:
        self.literals: list[str] = []
        self.classes: list[str] = []
        self._run: list[str] = []

    def _flush(self) -> None:
        if self._run:
            self.literals.append("".join(self._run))
            self._run = []

    def walk(self, items: Iterable) -> str:
        """Record literals and classes under ``items`` and return a shortest string they match."""
        out: list[str] = []
        for op, arg in items:
            if op is c.LITERAL:
                self._run.append(chr(arg))
                out.append(chr(arg))
                continue
            self._flush()
            if op in (c.IN, c.ANY, c.NOT_LITERAL):
                chars = _class_chars(op, arg)
                if chars and chars not in self.classes:
                    self.classes.append(chars)
                out.append(_pick(chars))
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                low, _high, sub = arg
                body = self.walk(sub)
                self._flush()
                out.append(body * low)
            elif op is c.SUBPATTERN:
                out.append(self.walk(arg[-1]))
                self._flush()
            elif op is c.BRANCH:
                alternatives = [self.walk(alt) for alt in arg[1]]
                self._flush()
                out.append(alternatives[0])
            elif op in (c.ASSERT, c.ASSERT_NOT):
                self.walk(arg[1])  # its literals are worth repeating too; it adds nothing to a match
                self._flush()
        self._flush()
        return "".join(out)


def patterns_of(detector: object) -> list[str]:
    """The source of every compiled pattern a detector holds (any field with a ``pattern`` string)."""
    sources = []
    for field in fields(detector):
        value = getattr(detector, field.name)
        source = getattr(value, "pattern", None)
        if isinstance(source, bytes):
            source = source.decode()
        if isinstance(source, str):
            sources.append(source)
    return sources


def _python_syntax(source: str) -> str:
    """An RE2 pattern as Python's parser reads it: inline flags dropped (case does not change what is
    adversarial), RE2's end of text ``\\z`` spelled ``\\Z``."""
    return re.sub(r"\(\?[a-z]+\)", "", source).replace(r"\z", r"\Z")


def shape(detector: object) -> Shape:
    """Literals, classes and a sample of all of a detector's patterns."""
    walker = _Walker()
    samples = []
    for source in patterns_of(detector):
        samples.append(walker.walk(_parser.parse(_python_syntax(source))))
    sample = "".join(samples)
    literals = walker.literals
    prefix = literals[0] if literals and sample.startswith(literals[0]) else sample[:1]
    return Shape(walker.literals, walker.classes, sample, prefix)


def _fill(unit: str, size: int) -> str:
    return (unit * (size // max(1, len(unit)) + 1))[:size]


def inputs(detector: object, others: list[str], size: int = MIB) -> dict[str, str]:
    """Named adversarial texts of about ``size`` characters for one detector (see :func:`builders`)."""
    return {name: build() for name, build in builders(detector, others, size).items()}


def builders(detector: object, others: list[str], size: int = MIB) -> dict[str, Callable[[], str]]:
    """Named makers of adversarial texts of about ``size`` characters for one detector, so that a test
    builds only the text it scans.

    ``others`` are the prefixes of every detector, mixed in so that one input also wakes the rest. Each
    text ends with the detector's keywords, which a scanner may use to skip a detector: an attacker
    would include them.
    """
    s = shape(detector)
    keywords = " " + " ".join(getattr(detector, "keywords", ()) or ())
    body = size - len(keywords)
    near = s.sample[:-1] or s.sample
    texts: dict[str, Callable[[], str]] = {
        "prefix_run": lambda: _fill(s.prefix, body),
        "match_flood": lambda: _fill(s.sample + " ", body),
        "near_miss_run": lambda: _fill(near, body),
        "prefix_then_near_miss": lambda: s.prefix + _fill(near + s.prefix, body - len(s.prefix)),
    }
    if s.literals:
        share = body // (2 * len(s.literals))

        def nested() -> str:
            opening = "".join(_fill(literal, share) for literal in s.literals)
            return opening + "".join(_fill(literal, share) for literal in reversed(s.literals))

        texts["nested_delimiters"] = nested
        texts["literal_cycle"] = lambda: _fill("".join(s.literals), body)
    for index, chars in enumerate(s.classes):
        texts[f"class_run_{index}"] = lambda chars=chars: s.prefix + _fill(chars, body - len(s.prefix))

    def mixed() -> str:
        rng = random.Random(f"{s.sample}:{size}")
        pieces = [s.prefix, s.sample, near, *s.literals, *others]
        out: list[str] = []
        length = 0
        while length < body:
            if rng.random() < 0.7:
                piece = rng.choice(pieces)
            else:
                chars = rng.choice(s.classes or [s.sample])
                piece = "".join(rng.choice(chars) for _ in range(rng.randint(1, 64)))
            out.append(piece)
            length += len(piece)
        return "".join(out)[:body]

    texts["mixed"] = mixed
    return {name: lambda build=build: build() + keywords for name, build in texts.items()}
