"""The Symbolizer facade on real running processes (and fake /proc trees for hostile cases).

Expected names come from the program itself (it prints the address of each of its functions)
and from nm / objdump / readelf; expected mapping fields from /proc/PID/maps read by the test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from sym_build import Binaries
from sym_helpers import (
    deadline,
    mapping_of,
    nm_address,
    nm_sorted_text,
    objdump_file_offset,
    objdump_last_instruction_end,
    read_maps,
    readelf_build_id,
    readelf_functions,
    readelf_loads,
    running,
)

from symbolizer import FrameKind, Symbolizer
from symbolizer.model import Mapping

NOWHERE = "/nonexistent-kallsyms"
OWN_FUNCTIONS = ("hf_work", "hf_middle", "hf_static_helper", "hf_next_function")


def user_stack(printed: dict[str, int], names: tuple[str, ...]) -> list[int]:
    """Leaf = the function's address + 2; callers = address + 3 (a return address inside it:
    the byte before it, looked up, is still inside even the 4-byte hf_next_function)."""
    return [printed[name] + (2 if index == 0 else 3) for index, name in enumerate(names)]


@pytest.mark.parametrize("variant", ["pie", "nopie", "no_build_id"])
def test_own_functions_named_with_module_from_maps(binaries: Binaries, variant: str) -> None:
    path: Path = getattr(binaries, variant)
    symbolizer = Symbolizer(kallsyms_path=NOWHERE)
    # GIVEN a running program (PIE, non-PIE, or without build-id) and its maps
    with running(path) as child:
        maps = read_maps(child.pid)
        symbolizer.pin_process(child.pid, maps)
        stack = user_stack(child.printed, OWN_FUNCTIONS)
        # WHEN a stack through its functions is symbolized
        result = symbolizer.symbolize_user(child.pid, maps, stack)
    # THEN each frame is named as the program printed it, with its mapping as the module
    assert [s.frames[0].function for s in result] == list(OWN_FUNCTIONS)
    assert [s.addr for s in result] == stack
    assert all(s.named and s.kind is FrameKind.NATIVE and len(s.frames) == 1 for s in result)
    text = mapping_of(maps, stack[0])
    module = result[0].module
    assert module is not None
    assert (module.path, module.start, module.end, module.file_offset) == (
        str(path),
        text.start,
        text.end,
        text.file_offset,
    )
    assert module.build_id == readelf_build_id(path)
    assert module.has_functions
    assert result[0].frames[0].system_name == ""


def test_shared_library_and_libc_functions_named(binaries: Binaries) -> None:
    symbolizer = Symbolizer(kallsyms_path=NOWHERE)
    # GIVEN a running program; the library printed its local function and its load base
    # (dladdr), and dlsym's address of getpid in libc
    with running(binaries.pie) as child:
        maps = read_maps(child.pid)
        symbolizer.pin_process(child.pid, maps)
        lib_entry = child.printed["lib_base"] + nm_address(binaries.lib, "hf_lib_entry")
        getpid = child.printed["getpid"]
        stack = [child.printed["hf_lib_static_work"] + 1, lib_entry + 3, getpid + 3]
        # WHEN the stack is symbolized
        result = symbolizer.symbolize_user(child.pid, maps, stack)
    # THEN library frames are named and the libc frame has getpid's name or an alias of it
    libc = Path(mapping_of(maps, getpid).path)
    getpid_value = nm_address(libc, "getpid", dynamic=True)
    libc_names = {s.name for s in readelf_functions(libc, dynamic=True) if s.value == getpid_value}
    assert result[0].frames[0].function == "hf_lib_static_work"
    assert result[1].frames[0].function == "hf_lib_entry"
    assert result[2].frames[0].function in libc_names
    assert result[1].module is not None and result[1].module.build_id == readelf_build_id(binaries.lib)
    assert result[2].module is not None and result[2].module.path == str(libc)


def test_pinned_binary_is_named_after_the_process_exited_and_the_file_was_deleted(
    tmp_path: Path, binaries: Binaries
) -> None:
    copy = tmp_path / "short-lived"
    shutil.copy(binaries.pie, copy)
    symbolizer = Symbolizer(kallsyms_path=NOWHERE)
    # GIVEN a process pinned while alive, then killed, and its binary deleted
    with running(copy) as child:
        maps = read_maps(child.pid)
        symbolizer.pin_process(child.pid, maps)
    copy.unlink()
    assert not Path(f"/proc/{child.pid}").exists()
    # WHEN its stack is symbolized afterwards
    result = symbolizer.symbolize_user(child.pid, maps, user_stack(child.printed, OWN_FUNCTIONS))
    # THEN its frames are still named
    assert [s.frames[0].function for s in result] == list(OWN_FUNCTIONS)
    assert symbolizer.stats.binaries_failed == {}


def test_unpinned_binary_of_an_exited_process_gives_offsets(binaries: Binaries) -> None:
    symbolizer = Symbolizer(kallsyms_path=NOWHERE)
    # GIVEN a process that exited before anyone pinned it
    with running(binaries.pie) as child:
        maps = read_maps(child.pid)
    stack = [child.printed["hf_work"], child.printed["hf_middle"] + 5]
    # WHEN its stack is symbolized
    result = symbolizer.symbolize_user(child.pid, maps, stack)
    # THEN the frames are "basename+0xFILE_OFFSET" of each sampled address (objdump -F),
    # unnamed, and the failure is counted as "gone"
    assert [s.frames[0].function for s in result] == [
        f"pie+0x{objdump_file_offset(binaries.pie, 'hf_work'):x}",
        f"pie+0x{objdump_file_offset(binaries.pie, 'hf_middle') + 5:x}",
    ]
    assert not any(s.named for s in result)
    assert result[0].module is not None and not result[0].module.has_functions
    assert symbolizer.stats.binaries_failed.get("gone", 0) >= 1


def test_return_address_is_looked_up_one_byte_earlier(binaries: Binaries) -> None:
    path = binaries.pie
    # GIVEN hf_calls_at_end, whose last instruction is a call (objdump), so that the call's
    # return address is the first byte of the function nm lists next
    mnemonic, call_end = objdump_last_instruction_end(path, "hf_calls_at_end")
    assert mnemonic == "call"
    ordered = nm_sorted_text(path)
    start = nm_address(path, "hf_calls_at_end")
    following = next((addr, name) for addr, name in ordered if addr > start)
    assert following[0] == call_end, "compiler layout changed: the call is not the last byte"
    symbolizer = Symbolizer(kallsyms_path=NOWHERE)
    with running(path) as child:
        maps = read_maps(child.pid)
        return_addr = child.printed["hf_calls_at_end"] + (call_end - start)
        # WHEN that address is symbolized as a caller's return address, and as a leaf
        as_caller = symbolizer.symbolize_user(child.pid, maps, [child.printed["hf_work"], return_addr])
        as_leaf = symbolizer.symbolize_user(child.pid, maps, [return_addr])
    # THEN as a return address it names the calling function; as a leaf, the next function
    assert as_caller[1].frames[0].function == "hf_calls_at_end"
    assert as_caller[1].addr == return_addr
    assert as_leaf[0].frames[0].function == following[1]


def test_stripped_binary_names_exported_functions_and_offsets_the_rest(binaries: Binaries) -> None:
    # GIVEN a --strip-all -rdynamic binary (same code layout as its unstripped original)
    assert readelf_loads(binaries.stripped) == readelf_loads(binaries.rdynamic)
    symbolizer = Symbolizer(kallsyms_path=NOWHERE)
    with running(binaries.stripped) as child:
        maps = read_maps(child.pid)
        symbolizer.pin_process(child.pid, maps)
        # WHEN an exported (.dynsym) and a static (only in the stripped-away .symtab) function
        # are symbolized
        result = symbolizer.symbolize_user(
            child.pid, maps, [child.printed["hf_work"], child.printed["hf_static_helper"] + 5]
        )
    # THEN the exported one is named, the static one is "stripped+0xFILE_OFFSET"
    assert result[0].frames[0].function == "hf_work" and result[0].named
    offset = objdump_file_offset(binaries.rdynamic, "hf_static_helper") + 5
    assert result[1].frames[0].function == f"stripped+0x{offset:x}"
    assert not result[1].named
    assert result[1].module is not None and result[1].module.build_id == readelf_build_id(binaries.stripped)


def test_repeated_stacks_hit_the_cache_and_a_binary_is_parsed_once(binaries: Binaries) -> None:
    symbolizer = Symbolizer(kallsyms_path=NOWHERE)
    # GIVEN two processes of the same binary
    with running(binaries.pie) as first, running(binaries.pie) as second:
        for child in (first, second):
            maps = read_maps(child.pid)
            symbolizer.pin_process(child.pid, maps)
            stack = user_stack(child.printed, OWN_FUNCTIONS)
            # WHEN the same stack is symbolized twice in each
            once = symbolizer.symbolize_user(child.pid, maps, stack)
            before = symbolizer.stats
            twice = symbolizer.symbolize_user(child.pid, maps, stack)
            after = symbolizer.stats
            # THEN the second time every frame is a cache hit with the same answer
            assert [s.frames for s in once] == [s.frames for s in twice]
            assert after.cache_hits - before.cache_hits == len(stack)
            assert after.cache_misses == before.cache_misses
    # AND the binary (same file, same build-id) was parsed once
    assert symbolizer.stats.binaries_loaded == 1


def test_a_copy_with_the_same_build_id_shares_the_table(tmp_path: Path, binaries: Binaries) -> None:
    # GIVEN the program and a byte-identical copy (another inode, same build-id)
    copy = tmp_path / "copy"
    shutil.copy(binaries.pie, copy)
    symbolizer = Symbolizer(kallsyms_path=NOWHERE)
    for path in (binaries.pie, copy):
        with running(path) as child:
            maps = read_maps(child.pid)
            symbolizer.pin_process(child.pid, maps)
            result = symbolizer.symbolize_user(child.pid, maps, [child.printed["hf_work"]])
            assert result[0].frames[0].function == "hf_work"
    # THEN the second was answered from the table parsed for the first
    assert symbolizer.stats.binaries_loaded == 1
    assert symbolizer.stats.tables_shared == 1


def test_pin_opens_nothing_when_every_file_is_known(binaries: Binaries, monkeypatch: pytest.MonkeyPatch) -> None:
    symbolizer = Symbolizer(kallsyms_path=NOWHERE)
    with running(binaries.pie) as child:
        maps = read_maps(child.pid)
        symbolizer.pin_process(child.pid, maps)
        pinned = symbolizer.stats.pinned_files
        # GIVEN every file_key already pinned, and every open() counted
        opened: list[object] = []
        real_open = os.open

        def counting_open(*args: Any, **kwargs: Any) -> int:
            opened.append(args[0])
            return real_open(*args, **kwargs)

        monkeypatch.setattr(os, "open", counting_open)
        # WHEN pinning again 2000 times
        for _ in range(2000):
            symbolizer.pin_process(child.pid, maps)
        monkeypatch.undo()
    # THEN nothing is opened again (a known file costs a dict lookup, not a syscall)
    assert pinned == 4  # the program, its library, libc, ld.so (no other executable files)
    assert symbolizer.stats.pinned_files == pinned
    assert opened == []


def test_forget_unused_closes_fds_nobody_used(binaries: Binaries) -> None:
    symbolizer = Symbolizer(kallsyms_path=NOWHERE)
    with running(binaries.pie) as child:
        maps = read_maps(child.pid)
        symbolizer.pin_process(child.pid, maps)
        symbolizer.symbolize_user(child.pid, maps, [child.printed["hf_work"]])
    # GIVEN 4 files pinned, one of which was then parsed (its fd closed after parsing)
    assert symbolizer.stats.pinned_files == 3
    # WHEN forget_unused is called twice (two intervals without use)
    symbolizer.forget_unused()
    assert symbolizer.stats.pinned_files == 3  # one interval of grace
    symbolizer.forget_unused()
    # THEN no fd stays open, and the parsed binary still names frames
    assert symbolizer.stats.pinned_files == 0
    again = symbolizer.symbolize_user(child.pid, maps, [child.printed["hf_middle"]])
    assert again[0].frames[0].function == "hf_middle"


def test_a_process_looked_up_in_an_interval_keeps_its_answers_for_the_next(binaries: Binaries) -> None:
    symbolizer = Symbolizer(kallsyms_path=NOWHERE)
    with running(binaries.pie) as child:
        maps = read_maps(child.pid)
        symbolizer.pin_process(child.pid, maps)
        vdso = next(m for m in maps if m.path == "[vdso]")
        # GIVEN a stack of named frames, a vdso frame (unnamed) and a word outside every mapping
        stack = [*user_stack(child.printed, OWN_FUNCTIONS), vdso.start + 0x10, 0x10]
        first = symbolizer.symbolize_user(child.pid, maps, stack)
        assert [s.named for s in first] == [True] * 4 + [False, False]
        # WHEN the interval ends and the next one symbolizes the same stack
        symbolizer.forget_unused()
        again = symbolizer.symbolize_user(child.pid, maps, stack)
        # THEN the named frames and the no-code word are the same objects (not looked up again;
        # the profile builder caches by identity), the unnamed vdso frame is looked up again
        assert [a is b for a, b in zip(first, again, strict=True)] == [True] * 4 + [False, True]
        assert again == first
        # AND after an interval without a lookup of the process, its answers are let go
        symbolizer.forget_unused()
        symbolizer.forget_unused()
        third = symbolizer.symbolize_user(child.pid, maps, stack)
    assert third == first and not any(a is b for a, b in zip(first, third, strict=True))


def test_pinned_files_are_bounded(binaries: Binaries) -> None:
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, max_binaries=2)
    with running(binaries.pie) as child:
        symbolizer.pin_process(child.pid, read_maps(child.pid))
    assert symbolizer.stats.pinned_files == 2


# ----- synthetic mappings in a fake /proc (no process needed) ---------------------------------


def file_mapping(path: Path, inside: str, start: int = 0x400000) -> Mapping:
    return Mapping(start, start + 0x10000, "r-xp", 0x1000, 0, 0, path.stat().st_ino, inside)


@pytest.mark.parametrize("cut", [10, 64, 0x400, -100])
def test_truncated_binary_in_a_container_gives_offsets(
    fake_proc: tuple[Path, Path], binaries: Binaries, cut: int
) -> None:
    proc, root = fake_proc
    # GIVEN a container process mapping a truncated copy of the program
    (root / "app").write_bytes(binaries.pie.read_bytes()[:cut])
    mapping = file_mapping(root / "app", "/app")
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, proc_root=str(proc))
    # WHEN a stack in it is symbolized
    symbolizer.pin_process(4242, [mapping])
    result = symbolizer.symbolize_user(4242, [mapping], [0x400010, 0x400020])
    # THEN nothing raises; frames are app+0xFILE_OFFSET (offset 0x1000 + 0x10 / 0x20), unnamed
    assert [s.frames[0].function for s in result] == ["app+0x1010", "app+0x1020"]
    assert not any(s.named for s in result)
    assert symbolizer.stats.binaries_failed == {"bad_elf": 1}


def test_fifo_mapping_is_never_opened(fake_proc: tuple[Path, Path]) -> None:
    proc, root = fake_proc
    # GIVEN a container whose mapped "binary" path is now a FIFO (same inode reported)
    os.mkfifo(root / "trap")
    mapping = file_mapping(root / "trap", "/trap")
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, proc_root=str(proc))
    # WHEN it is pinned and symbolized, under a deadline
    with deadline(5.0):
        symbolizer.pin_process(4242, [mapping])
        result = symbolizer.symbolize_user(4242, [mapping], [0x400010])
    # THEN no hang, an offset frame, and the cause counted
    assert result[0].frames[0].function == "trap+0x1010"
    assert symbolizer.stats.binaries_failed == {"not_regular": 1}


def pie_text_mapping(pie: Path, on_disk: Path, inside: str, base: int = 0x555555554000) -> Mapping:
    """The mapping the kernel makes for ``pie``'s first executable PT_LOAD (readelf) at ``base``."""
    text = next(h for h in readelf_loads(pie) if "E" in h.flags)
    start = base + text.elf_vaddr - text.elf_vaddr % 0x1000
    offset = text.file_offset - text.file_offset % 0x1000
    return Mapping(start, start + 0x1000, "r-xp", offset, 0, 0, on_disk.stat().st_ino, inside)


def test_container_binary_resolves_through_the_process_root(fake_proc: tuple[Path, Path], binaries: Binaries) -> None:
    proc, root = fake_proc
    # GIVEN a container process mapping /bin/app (reachable via bin -> usr/bin only)
    (root / "usr" / "bin").mkdir(parents=True)
    shutil.copy(binaries.pie, root / "usr" / "bin" / "app")
    (root / "bin").symlink_to("usr/bin")
    base = 0x555555554000
    mapping = pie_text_mapping(binaries.pie, root / "usr" / "bin" / "app", "/bin/app", base)
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, proc_root=str(proc))
    # WHEN hf_work's runtime address (base + nm value: PIE vaddrs start at 0) is symbolized
    symbolizer.pin_process(4242, [mapping])
    result = symbolizer.symbolize_user(4242, [mapping], [base + nm_address(binaries.pie, "hf_work")])
    # THEN it is named
    assert result[0].frames[0].function == "hf_work" and result[0].named


def test_a_file_missing_at_pin_time_is_retried_by_the_next_pin(
    fake_proc: tuple[Path, Path], binaries: Binaries
) -> None:
    proc, root = fake_proc
    # GIVEN a mapping of /app whose file is not (yet) at that path: the first pin fails "gone"
    shutil.copy(binaries.pie, root / "elsewhere")
    base = 0x555555554000
    mapping = pie_text_mapping(binaries.pie, root / "elsewhere", "/app", base)
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, proc_root=str(proc))
    symbolizer.pin_process(4242, [mapping])
    assert symbolizer.stats.binaries_failed == {"gone": 1}
    # WHEN the file appears at the path (same inode) and a process mapping it is pinned
    (root / "elsewhere").rename(root / "app")
    symbolizer.pin_process(4242, [mapping])
    result = symbolizer.symbolize_user(4242, [mapping], [base + nm_address(binaries.pie, "hf_work")])
    # THEN the transient failure was retried and the frame is named
    assert result[0].frames[0].function == "hf_work"


def test_new_mappings_for_a_pid_are_not_answered_from_the_old_ones() -> None:
    # GIVEN a pid symbolized with an anonymous executable mapping at 0x10000
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, proc_root="/nonexistent-proc")
    before = [Mapping(0x10000, 0x20000, "r-xp", 0, 0, 0, 0, "")]
    assert symbolizer.symbolize_user(7, before, [0x10010])[0].kind is FrameKind.JIT
    # WHEN the same pid is symbolized with new mappings (after munmap) and the same address
    after = [Mapping(0x30000, 0x40000, "r-xp", 0, 0, 0, 0, "")]
    result = symbolizer.symbolize_user(7, after, [0x10010])
    # THEN the answer comes from the new mappings
    assert result[0].kind is FrameKind.UNKNOWN


def test_addresses_outside_files_unknown_jit_and_vdso() -> None:
    # GIVEN a process with an anonymous executable mapping (JIT), a named anonymous one, the
    # vDSO, a heap, a file's data and anonymous data (not code), and addresses in no mapping
    mappings = [
        Mapping(0x10000, 0x20000, "r-xp", 0, 0, 0, 0, ""),
        Mapping(0x30000, 0x40000, "r-xp", 0, 0, 0, 0, "[anon:v8]"),
        Mapping(0x60000, 0x70000, "rw-p", 0, 0, 0, 0, "[heap]"),
        Mapping(0x70000, 0x71000, "rw-p", 0x2000, 8, 1, 99, "/usr/lib/libdata.so"),
        Mapping(0x80000, 0x90000, "rw-p", 0, 0, 0, 0, ""),
        Mapping(0x7FFF0000, 0x7FFF2000, "r-xp", 0, 0, 0, 0, "[vdso]"),
    ]
    symbolizer = Symbolizer(kallsyms_path=NOWHERE, proc_root="/nonexistent-proc")
    stack = [0x10010, 0x30020, 0x7FFF0100, 0x60100, 0x70100, 0x80100, 0x50000, 0, 0xFFFF_FFFF_FFFF_FFFF]
    # WHEN symbolized
    result = symbolizer.symbolize_user(1, mappings, stack)
    # THEN one Symbolized per address, in order, of the right kind, none named
    assert [(s.kind, s.frames[0].function) for s in result] == [
        (FrameKind.JIT, "[jit] 0x10010"),
        (FrameKind.JIT, "[jit] 0x30020"),
        (FrameKind.NATIVE, "[vdso]+0x100"),  # the sampled address's offset, not the looked-up one
        (FrameKind.UNKNOWN, "[unknown]"),  # heap: no code
        (FrameKind.UNKNOWN, "[unknown]"),  # a file's data: no code
        (FrameKind.UNKNOWN, "[unknown]"),  # anonymous data of a process without a perf map
        (FrameKind.UNKNOWN, "[unknown]"),
        (FrameKind.UNKNOWN, "[unknown]"),
        (FrameKind.UNKNOWN, "[unknown]"),
    ]
    assert [s.addr for s in result] == stack
    assert not any(s.named for s in result)
    assert all(s.module is None for s in result[3:])
    assert result[0].module is not None and (result[0].module.start, result[0].module.end) == (0x10000, 0x20000)


def test_empty_stack_and_empty_maps() -> None:
    symbolizer = Symbolizer(kallsyms_path=NOWHERE)
    assert symbolizer.symbolize_user(1, [], []) == []
    assert symbolizer.symbolize_user(1, [], [0x1234])[0].frames[0].function == "[unknown]"
    assert symbolizer.symbolize_kernel([]) == []
