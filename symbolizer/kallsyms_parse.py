"""Symbolizer stage: the text of /proc/kallsyms to sorted columns, with no Python code per line.

In: the bytes of a kallsyms file. Out: ``KallsymsColumns`` - addresses sorted (stably), a
text flag, a names blob with offsets, a module number per symbol, and each module's name and
text range. Absolute symbols (a/A) are dropped.

The text is cut into ~64 KiB chunks at line ends (so each chunk's token objects stay in the
CPU cache and their memory is reused by the next chunk). The core kernel's lines (before the
first tab) are split on whitespace into (address, type, name) triples, module lines into
quadruples (``name\\t[module]``); columns are sliced out of the token lists and the addresses
decoded in one ``bytes.fromhex``. Any text outside that shape (junk, mixed address widths)
goes through a per-line regex instead. The kernel lists its core symbols sorted and the
module, ftrace and BPF symbols after and above them, so usually only that tail is sorted.
"""

from __future__ import annotations

import re
import sys
from array import array
from dataclasses import dataclass
from itertools import accumulate, chain, compress, groupby, islice
from operator import le
from typing import TypeAlias

CHUNK_BYTES = 1 << 16
_TEXT = bytes(int(chr(i) in "tTwW") for i in range(256))  # type byte -> 1 for text symbols
_KEPT = bytes(int(chr(i) not in "aA") for i in range(256))  # type byte -> 0 for absolute ones
_LINE = re.compile(rb"^([0-9a-fA-F]+) (\S) ([^\s\[]+)(?:\t(\[[^\]\s]+\]))?[ \t]*\r?$", re.MULTILINE)
_MODULE_TOKEN = re.compile(rb"\[[^\]\s]+\]")


Column: TypeAlias = "array[int] | memoryview"  # in memory, or a view of a mapped cache file
Bytes: TypeAlias = "bytes | memoryview"


@dataclass(slots=True)
class KallsymsColumns:
    """Symbol i: ``addrs[i]``, named ``names[name_offsets[i]:name_offsets[i + 1]]``, text when
    ``is_text[i]``, in module ``module_names[module_index[i]]`` ("" is the core kernel), whose
    text symbols span [``module_starts[m]``, ``module_ends[m]``) (0, 0 without any). A parse
    gives ``array``s and ``bytes``; ``symbolizer.kernel_cache`` gives views of a mapped file."""

    addrs: Column
    is_text: Bytes
    names: Bytes
    name_offsets: Column
    module_index: Column
    module_names: list[str]
    module_starts: list[int]
    module_ends: list[int]


class _Builder:
    """Columns in file order, appended chunk by chunk."""

    def __init__(self) -> None:
        self.hex_addrs: list[bytes] = []  # joined per chunk
        self.count = 0
        self.types: list[bytes] = []
        self.names: list[bytes] = []  # joined per chunk
        self.name_offsets = array("Q", [0])
        self.core = 0  # leading symbols of the core kernel (not listed in modules)
        self.modules: list[bytes] = []  # b"" or b"[name]" per symbol after those

    def add(self, hex_addrs: list[bytes], types: bytes, names: list[bytes], modules: list[bytes] | None) -> None:
        if b"a" in types or b"A" in types:
            mask = types.translate(_KEPT)
            hex_addrs, names = list(compress(hex_addrs, mask)), list(compress(names, mask))
            modules = None if modules is None else list(compress(modules, mask))
            types = bytes(compress(types, mask))
        self.hex_addrs.append(b"".join(hex_addrs))
        self.types.append(types)
        base = self.name_offsets[-1]
        self.name_offsets.extend(map(base.__add__, accumulate(map(len, names))))
        self.names.append(b"".join(names))
        if modules is not None:
            self.modules += modules
        elif self.modules:
            self.modules += [b""] * len(names)
        else:
            self.core += len(names)
        self.count += len(names)


def parse_columns(raw: bytes) -> KallsymsColumns:
    """Parse ``raw``, the whole text of a kallsyms file; malformed lines are skipped."""
    built = _split(raw)
    addrs = None if built is None else _decode_addresses(b"".join(built.hex_addrs), built.count)
    if built is None or addrs is None:
        built = _Builder()
        _regex_lines(raw, built)
        addrs = array("Q", (int(hex_addr, 16) & 0xFFFF_FFFF_FFFF_FFFF for hex_addr in built.hex_addrs))
    return _sorted_columns(addrs, b"".join(built.types), b"".join(built.names), built.name_offsets, built)


def _chunks(text: bytes) -> list[bytes]:
    out = []
    at = 0
    while at < len(text):
        end = text.find(b"\n", at + CHUNK_BYTES) + 1 or len(text)
        out.append(text[at:end])
        at = end
    return out


def _split(raw: bytes) -> _Builder | None:
    """Columns by whitespace splitting, or None when the text is not of the kernel's shape.

    Core lines must give triples and module lines quadruples, every type token one byte and
    every distinct module token ``[name]`` (addresses are checked when decoded); a line with
    a token too many or too few shifts every later column, which these checks see.
    """
    tab = raw.find(b"\t")
    cut = len(raw) if tab < 0 else raw.rfind(b"\n", 0, tab) + 1
    built = _Builder()
    for chunk in _chunks(raw[:cut]):
        tokens = chunk.split()
        lines = len(tokens) // 3
        types = b"".join(tokens[1::3])
        if len(tokens) != 3 * lines or len(types) != lines:
            return None
        built.add(tokens[0::3], types, tokens[2::3], None)
    for chunk in _chunks(raw[cut:].replace(b"\t", b" ")):
        tokens = chunk.split()
        lines = len(tokens) // 4
        types = b"".join(tokens[1::4])
        modules = tokens[3::4]
        if len(tokens) != 4 * lines or len(types) != lines:
            return None
        if not all(_MODULE_TOKEN.fullmatch(token) for token in dict.fromkeys(modules)):
            return None
        built.add(tokens[0::4], types, tokens[2::4], modules)
    return built if built.count else None


def _decode_addresses(joined: bytes, count: int) -> array[int] | None:
    """``count`` addresses of 16 (or all 8) hex digits each, concatenated; else None."""
    width = len(joined) // count if count else 0
    if width not in (8, 16) or len(joined) != width * count:
        return None
    try:
        packed = bytes.fromhex(joined.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    narrow = array("Q" if width == 16 else "I")
    narrow.frombytes(packed)
    if sys.byteorder == "little":
        narrow.byteswap()  # the text is big-endian
    return narrow if narrow.typecode == "Q" else array("Q", narrow)


def _regex_lines(raw: bytes, built: _Builder) -> None:
    """The slow path: one regex match per well-formed line, hex addresses kept one per symbol."""
    for match in _LINE.finditer(raw):
        kind = match.group(2)
        if kind in (b"a", b"A"):
            continue
        built.hex_addrs.append(match.group(1))
        built.types.append(kind)
        name = match.group(3)
        built.names.append(name)
        built.name_offsets.append(built.name_offsets[-1] + len(name))
        built.modules.append(match.group(4) or b"")
        built.count += 1


def _sorted_columns(
    addrs: array[int], types: bytes, names: bytes, name_offsets: array[int], built: _Builder
) -> KallsymsColumns:
    is_text = types.translate(_TEXT)
    core, modules = built.core, built.modules
    numbers = {token: i for i, token in enumerate(dict.fromkeys(chain((b"",), modules)))}
    core_sorted = _is_sorted(memoryview(addrs)[:core])
    starts, ends = _module_ranges(addrs, is_text, built, numbers, core_sorted)
    module_index = array("I", [0]) * core + array("I", map(numbers.__getitem__, modules))
    if not core_sorted or (core and core < len(addrs) and min(islice(addrs, core, None)) < addrs[core - 1]):
        core = 0  # sort everything
    if not _is_sorted(memoryview(addrs)[core:]):
        order = sorted(range(core, len(addrs)), key=addrs.__getitem__)
        addrs, is_text, names, name_offsets, module_index = _sort_from(
            core, order, addrs=addrs, is_text=is_text, names=names, offsets=name_offsets, module_index=module_index)
    module_names = [token[1:-1].decode("utf-8", "replace") for token in numbers]
    return KallsymsColumns(addrs, is_text, names, name_offsets, module_index, module_names, starts, ends)


def _is_sorted(values: memoryview | array[int]) -> bool:
    return all(map(le, values, islice(values, 1, None)))


def _sort_from(
    start: int, order: list[int], *, addrs: array[int], is_text: bytes, names: bytes, offsets: array[int],
    module_index: array[int]
) -> tuple[array[int], bytes, bytes, array[int], array[int]]:
    """The columns with symbols [start:] reordered as ``order`` (indexes from ``start`` up) says."""
    starts = map(offsets.__getitem__, order)
    ends = map(offsets.__getitem__, map((1).__add__, order))
    moved = list(map(names.__getitem__, map(slice, starts, ends)))
    head_end = offsets[start]
    return (
        addrs[:start] + array("Q", map(addrs.__getitem__, order)),
        is_text[:start] + bytes(map(is_text.__getitem__, order)),
        names[:head_end] + b"".join(moved),
        offsets[: start + 1] + array("Q", map(head_end.__add__, accumulate(map(len, moved)))),
        module_index[:start] + array("I", map(module_index.__getitem__, order)),
    )


def _module_ranges(
    addrs: array[int], is_text: bytes, built: _Builder, numbers: dict[bytes, int], core_sorted: bool
) -> tuple[list[int], list[int]]:
    """Each module's text range: the core kernel's from its first and last text symbols when
    sorted, the others from runs of equal module tokens in file order (the kernel lists one
    module's symbols together, so there are few runs)."""
    low: list[int | None] = [None] * len(numbers)
    high = [0] * len(numbers)
    runs = [(b"", built.core)] if built.core else []
    runs += [(token, len(list(run))) for token, run in groupby(built.modules)]
    at = 0
    for token, length in runs:
        run_addrs = memoryview(addrs)[at : at + length]
        run_text = is_text[at : at + length]
        if at == 0 and core_sorted and built.core:
            first, last = run_text.find(1), run_text.rfind(1)
            text = [run_addrs[first], run_addrs[last]] if first >= 0 else []
        else:
            text = list(compress(run_addrs, run_text))
        at += length
        if text:
            number = numbers[token]
            previous = low[number]
            low[number] = min(text) if previous is None else min(previous, *text)
            high[number] = max(high[number], max(text) + 1)
    return [0 if value is None else value for value in low], high
