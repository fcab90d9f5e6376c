"""Symbolizer stage: the lexical layer of Rust v0 mangled names (RFC 2603), for
``symbolizer.rust_demangle``: a position in the name, its numbers (base-62, decimal, hex) and
identifiers (punycode decoded), and the output being printed, bounded.

In: the text of a name after ``_R``. Out: tokens as Python values, pieces appended to ``out``
(while ``printing``); ``Invalid`` for anything outside the grammar or past a bound.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_DEPTH = 200  # nested paths, types and consts
MAX_OUTPUT = 1 << 14  # characters of demangled text
MAX_NUMBER = (1 << 64) - 1  # numbers wider than LLVM's uint64_t are refused, as it refuses them
_BASE62 = {c: i for i, c in enumerate("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")}
_HEX = frozenset("0123456789abcdef")
_IDENTIFIER_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_PUNYCODE_DIGITS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz")


class Invalid(Exception):
    """The name is not a well-formed v0 name (or exceeds a bound)."""


class Lexer:
    """One pass over a name's body, appending printed pieces to ``out``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0
        self.out: list[str] = []
        self.size = 0
        self.printing = True
        self.depth = 0

    # ----- input -----------------------------------------------------------------------------

    def peek(self) -> str:
        return self.text[self.at] if self.at < len(self.text) else ""

    def next(self) -> str:
        if self.at >= len(self.text):
            raise Invalid("unexpected end")
        self.at += 1
        return self.text[self.at - 1]

    def eat(self, char: str) -> bool:
        if self.at < len(self.text) and self.text[self.at] == char:
            self.at += 1
            return True
        return False

    def emit(self, piece: str) -> None:
        if self.printing:
            self.size += len(piece)
            if self.size > MAX_OUTPUT:
                raise Invalid("output too long")
            self.out.append(piece)

    def nest(self, parse: Callable[[], object]) -> object:
        """``parse()`` one level deeper (paths, types and consts nest); what it returned."""
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise Invalid("nested too deeply")
            return parse()
        finally:
            self.depth -= 1

    # ----- numbers and identifiers ---------------------------------------------------------------

    def base62(self) -> int:
        """``{0-9a-zA-Z} "_"``; "_" is 0, "0_" is 1, and so on."""
        if self.eat("_"):
            return 0
        value = 0
        while (char := self.next()) != "_":
            if char not in _BASE62:
                raise Invalid("bad base-62 digit")
            value = value * 62 + _BASE62[char]
        if value >= MAX_NUMBER:
            raise Invalid("number too large")
        return value + 1

    def optional_base62(self, tag: str) -> int:
        """0 without ``tag``, else the number after it plus one."""
        return self.base62() + 1 if self.eat(tag) else 0

    def decimal(self) -> int:
        start = self.at
        if self.peek() == "0":
            self.at += 1
            return 0
        while self.peek().isdigit() and self.peek().isascii():
            self.at += 1
        if self.at == start:
            raise Invalid("a number expected")
        return int(self.text[start : self.at])

    def hex_digits(self) -> str:
        """``"0_" | <1-9a-f> {<0-9a-f>} "_"``: the digits, without the "_"."""
        start = self.at
        if self.eat("0"):
            if not self.eat("_"):
                raise Invalid("a zero with more digits")
            return "0"
        while (char := self.next()) != "_":
            if char not in _HEX:
                raise Invalid("bad hex digit")
        if self.at - 1 == start:
            raise Invalid("no hex digits")
        return self.text[start : self.at - 1]

    def identifier(self) -> tuple[str, bool]:
        """(text, is punycode) of ``["u"] <decimal> ["_"] <bytes>``."""
        punycode = self.eat("u")
        length = self.decimal()
        self.eat("_")
        if length > len(self.text) - self.at:
            raise Invalid("identifier past the end")
        text = self.text[self.at : self.at + length]
        self.at += length
        if not _IDENTIFIER_CHARS.issuperset(text):
            raise Invalid("bad identifier character")
        return text, punycode

    def emit_identifier(self, text: str, punycode: bool) -> None:
        if not punycode:
            self.emit(text)
            return
        basic, _, encoded = text.rpartition("_")  # Rust's delimiter is "_", not "-"
        if not _PUNYCODE_DIGITS.issuperset(encoded):
            raise Invalid("bad punycode digit")
        try:
            decoded = (f"{basic}-{encoded}" if basic else encoded).encode("ascii").decode("punycode")
        except UnicodeError as err:
            raise Invalid("bad punycode") from err
        if any(0xD800 <= ord(char) <= 0xDFFF for char in decoded):
            raise Invalid("punycode of a surrogate")
        self.emit(decoded)
