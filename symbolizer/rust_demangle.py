"""Symbolizer stage: Rust v0 symbol names (RFC 2603, ``_R...``) to readable paths, in Python.

In: a linker name starting with ``_R``. Out: the path as LLVM's ``rustDemangle`` prints it (the
short form Rust's own backtraces use: no crate disambiguators, no types on const generics) -
``<hfrust::Squares as hfrust::Work>::work``, ``hfrust::generic_sum::<u32>`` - with a ``.suffix``
(``.llvm.1234``) appended as `` (.suffix)``; or None when the name does not parse. Numbers,
identifiers and bounds are ``symbolizer.rust_lexer``'s.

Written here rather than loaded from libLLVM (the only shared library with a v0 demangler on a
stock host): opening libLLVM costs a process ~47 MB of resident memory. Nesting and output are
bounded (back-references can repeat a subtree), so a hostile name costs little.
"""

from __future__ import annotations

from collections.abc import Callable

from symbolizer.rust_lexer import Invalid, Lexer

_BASIC_TYPES = {
    "a": "i8", "b": "bool", "c": "char", "d": "f64", "e": "str", "f": "f32", "h": "u8", "i": "isize",
    "j": "usize", "l": "i32", "m": "u32", "n": "i128", "o": "u128", "p": "_", "s": "i16", "t": "u16",
    "u": "()", "v": "...", "x": "i64", "y": "u64", "z": "!",
}
_INTEGER_TYPES = frozenset("ahijlmnostxy")
_CHAR_ESCAPES = {0x09: "\\t", 0x0D: "\\r", 0x0A: "\\n", 0x5C: "\\\\", 0x22: '"', 0x27: "\\'"}


def demangle_rust_v0(name: str) -> str | None:
    """The readable form of the v0 name ``name``, or None when it is not one."""
    if not name.startswith("_R"):
        return None
    body, dot, suffix = name[2:].partition(".")
    parser = _Parser(body)
    try:
        parser.path(in_type=False)
        if parser.at < len(body):  # the instantiating crate: parsed, not shown
            parser.printing = False
            parser.path(in_type=False)
        if parser.at != len(body):
            raise Invalid("trailing characters")
    except (Invalid, RecursionError):
        return None
    text = "".join(parser.out)
    return f"{text} (.{suffix})" if dot else text


class _Parser(Lexer):
    """Paths, types and consts of one name's body (after ``_R``), printed as LLVM prints them."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.bound_lifetimes = 0

    def lifetime(self, index: int) -> None:
        """An erased lifetime (0) or a De Bruijn index into the bound lifetimes."""
        if index == 0:
            self.emit("'_")
            return
        if index > self.bound_lifetimes:
            raise Invalid("lifetime not bound")
        depth = self.bound_lifetimes - index
        self.emit("'" + (chr(ord("a") + depth) if depth < 26 else f"z{depth - 25}"))

    # ----- paths -------------------------------------------------------------------------------

    def path(self, in_type: bool, leave_open: bool = False) -> bool:
        """One path; returns True when generic arguments were left open (no ">" yet)."""
        return self.nest(lambda: self._path(in_type, leave_open)) is True

    def _path(self, in_type: bool, leave_open: bool) -> bool:
        tag = self.next()
        if tag == "C":  # crate root
            self.optional_base62("s")
            self.emit_identifier(*self.identifier())
        elif tag in "MX":  # <T> (inherent impl), <T as Trait> (trait impl)
            self.impl_path(in_type)
            self.emit("<")
            self.type()
            if tag == "X":
                self.emit(" as ")
                self.path(in_type=True)
            self.emit(">")
        elif tag == "Y":  # <T as Trait> (trait definition)
            self.emit("<")
            self.type()
            self.emit(" as ")
            self.path(in_type=True)
            self.emit(">")
        elif tag == "N":
            self.nested(in_type)
        elif tag == "I":  # generic arguments
            self.path(in_type)
            self.emit("<" if in_type else "::<")
            self.list_until_end(self.generic_arg, ", ")
            if leave_open:
                return True
            self.emit(">")
        elif tag == "B":
            return self.backref(lambda: self.path(in_type, leave_open)) is True
        else:
            raise Invalid("bad path tag")
        return False

    def nested(self, in_type: bool) -> None:
        namespace = self.next()
        if not namespace.isascii() or not namespace.isalpha():
            raise Invalid("bad namespace")
        self.path(in_type)
        disambiguator = self.optional_base62("s")
        text, punycode = self.identifier()
        if namespace.isupper():  # closures, shims and other special namespaces
            self.emit("::{" + {"C": "closure", "S": "shim"}.get(namespace, namespace))
            if text:
                self.emit(":")
                self.emit_identifier(text, punycode)
            self.emit(f"#{disambiguator}}}")
        elif text:  # an internal namespace: shown only when named
            self.emit("::")
            self.emit_identifier(text, punycode)

    def impl_path(self, in_type: bool) -> None:
        """The impl's own path: parsed, never shown."""
        printing, self.printing = self.printing, False
        try:
            self.optional_base62("s")
            self.path(in_type)
        finally:
            self.printing = printing

    def backref(self, parse: Callable[[], object]) -> object:
        """Parse again at an earlier position (only when printing: skipped text needs no walk);
        what ``parse`` returned, or None."""
        target = self.base62()
        if target >= self.at:  # positions count from after "_R"; must point back
            raise Invalid("backref points forward")
        if not self.printing:
            return None
        saved, self.at = self.at, target
        try:
            return parse()
        finally:
            self.at = saved

    def list_until_end(self, parse: Callable[[], object], separator: str) -> int:
        """Items up to "E", separated in the output; returns how many."""
        count = 0
        while not self.eat("E"):
            if count:
                self.emit(separator)
            parse()
            count += 1
        return count

    # ----- generic arguments, types and consts ---------------------------------------------------

    def generic_arg(self) -> None:
        if self.eat("L"):
            self.lifetime(self.base62())
        elif self.eat("K"):
            self.const()
        else:
            self.type()

    def type(self) -> None:
        self.nest(self._type)

    def _type(self) -> None:
        start = self.at
        tag = self.next()
        if tag in _BASIC_TYPES:
            self.emit(_BASIC_TYPES[tag])
        elif tag == "A":
            self.emit("[")
            self.type()
            self.emit("; ")
            self.const()
            self.emit("]")
        elif tag == "S":
            self.emit("[")
            self.type()
            self.emit("]")
        elif tag == "T":
            self.emit("(")
            if self.list_until_end(self.type, ", ") == 1:
                self.emit(",")
            self.emit(")")
        elif tag in "RQ":
            self.emit("&")
            if self.eat("L") and (lifetime := self.base62()):
                self.lifetime(lifetime)
                self.emit(" ")
            if tag == "Q":
                self.emit("mut ")
            self.type()
        elif tag in "PO":
            self.emit("*const " if tag == "P" else "*mut ")
            self.type()
        elif tag == "F":
            self.fn_sig()
        elif tag == "D":
            self.dyn_bounds()
            if not self.eat("L"):
                raise Invalid("dyn without a lifetime")
            if lifetime := self.base62():
                self.emit(" + ")
                self.lifetime(lifetime)
        elif tag == "B":
            self.backref(self.type)
        else:  # a named type
            self.at = start
            self.path(in_type=True)

    def binder(self) -> None:
        """``["G" <base-62>]``: higher-ranked lifetimes bound for what follows."""
        count = self.optional_base62("G")
        if count == 0:
            return
        if count >= len(self.text) - self.bound_lifetimes:  # each needs at least a byte to refer to it
            raise Invalid("too many bound lifetimes")
        self.emit("for<")
        for index in range(count):
            self.bound_lifetimes += 1
            if index:
                self.emit(", ")
            self.lifetime(1)
        self.emit("> ")

    def fn_sig(self) -> None:
        bound = self.bound_lifetimes
        self.binder()
        if self.eat("U"):
            self.emit("unsafe ")
        if self.eat("K"):
            if self.eat("C"):
                abi = "C"
            else:
                text, punycode = self.identifier()
                if punycode:
                    raise Invalid("punycode ABI")
                abi = text.replace("_", "-")
            self.emit(f'extern "{abi}" ')
        self.emit("fn(")
        self.list_until_end(self.type, ", ")
        self.emit(")")
        if not self.eat("u"):  # a unit return type is not shown
            self.emit(" -> ")
            self.type()
        self.bound_lifetimes = bound

    def dyn_bounds(self) -> None:
        bound = self.bound_lifetimes
        self.emit("dyn ")
        self.binder()
        self.list_until_end(self.dyn_trait, " + ")
        self.bound_lifetimes = bound

    def dyn_trait(self) -> None:
        open_ = self.path(in_type=True, leave_open=True)
        while self.eat("p"):  # associated type bindings: Trait<Item = T>
            self.emit(", " if open_ else "<")
            open_ = True
            self.emit(self.identifier()[0])
            self.emit(" = ")
            self.type()
        if open_:
            self.emit(">")

    def const(self) -> None:
        self.nest(self._const)

    def _const(self) -> None:
        tag = self.next()
        if tag in _INTEGER_TYPES:
            negative = self.eat("n")
            digits = self.hex_digits()
            self.emit(("-" if negative else "") + (str(int(digits, 16)) if len(digits) <= 16 else "0x" + digits))
        elif tag == "b":
            digits = self.hex_digits()
            if digits not in ("0", "1"):
                raise Invalid("bad bool")
            self.emit("true" if digits == "1" else "false")
        elif tag == "c":
            digits = self.hex_digits()
            if len(digits) > 6:
                raise Invalid("bad char")
            point = int(digits, 16)
            shown = _CHAR_ESCAPES.get(point) or (chr(point) if 0x20 <= point <= 0x7E else f"\\u{{{digits}}}")
            self.emit(f"'{shown}'")
        elif tag == "p":
            self.emit("_")
        elif tag == "B":
            self.backref(self.const)
        else:
            raise Invalid("bad const")
