"""Collection stage: drained samples -> symbolized, labeled, aggregated profile samples.

In: ``DrainedSample`` lists from the drain, the process registry, the symbolizer.
Out: a ``Profile`` per interval. Symbolization happens right after each drain, while the
registry still holds every process in it; identical stacks of one process are merged.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.drain import DrainedSample
from agent.model import Frame, FrameKind, Mapping, ProcessInfo, Profile, ProfileSample, Symbolized
from agent.processes import ProcessRegistry


class SymbolizerLike(Protocol):
    def symbolize_user(self, pid: int, mappings: Sequence[Mapping], addrs: Sequence[int]) -> list[Symbolized]: ...
    def symbolize_kernel(self, addrs: Sequence[int]) -> list[Symbolized]: ...
    def forget_unused(self) -> None: ...
    def release_when_idle(self) -> None: ...


def placeholder(text: str) -> Symbolized:
    """A frame that stands for a stack the kernel could not give us, so no sample is frameless."""
    return Symbolized(addr=0, kind=FrameKind.UNKNOWN, module=None, frames=(Frame(function=text),), named=False)


_USER_STACK_LOST = {
    -errno.EEXIST: placeholder("[user stack lost: stack map collision]"),
    -errno.ENOMEM: placeholder("[user stack lost: stack map full]"),
}
_KERNEL_STACK_LOST = {
    -errno.EEXIST: placeholder("[kernel stack lost: stack map collision]"),
    -errno.ENOMEM: placeholder("[kernel stack lost: stack map full]"),
}
_NO_USER_STACK = placeholder("[missing user stack]")
BROKEN_CHAIN = placeholder("[broken frame chain]")

SampleKey = tuple[object, ...]  # labels, pid, incarnation, then id() of each frame
RawKey = tuple[int, int, str, tuple[int, ...], tuple[int, ...], int, int]  # a DrainedSample less its count


@dataclass(slots=True)
class _Entry:
    """One raw stack of one process this interval, symbolized once, at its first drain."""

    count: int
    stack: tuple[Symbolized, ...]
    labels: tuple[tuple[str, str], ...]
    cut: bool  # its user stack ends in BROKEN_CHAIN
    info: ProcessInfo  # the snapshot it was symbolized with
    final: bool  # every user address was in a mapping: symbolizing again would give the same


class Collector:
    def __init__(self, registry: ProcessRegistry, symbolizer: SymbolizerLike):
        self._registry = registry
        self._symbolizer = symbolizer
        self._entries: dict[RawKey, _Entry] = {}
        self._previous: dict[RawKey, _Entry] = {}  # the last interval's
        self._processes: dict[tuple[int, int], ProcessInfo] = {}  # (pid, incarnation) seen this interval

    def add(self, drained: Iterable[DrainedSample]) -> None:
        """Cost follows what is new: a raw stack already seen this interval (drains are about a
        second apart, intervals 15 s) only adds its count; one seen in the last interval, of
        the same process snapshot and wholly in its maps, takes that symbolization; only a
        new one is symbolized."""
        entries = self._entries
        previous = self._previous
        for s in drained:  # threads of one process with the same stacks fold together
            k = (s.pid, s.incarnation, s.comm, s.user_addrs, s.kernel_addrs, s.user_stack_error,
                 s.kernel_stack_error)
            entry = entries.get(k)
            if entry is not None:
                entry.count += s.count
                continue
            info = self._registry.lookup(s.pid, s.incarnation, s.comm)
            self._processes[(s.pid, s.incarnation)] = info
            before = previous.get(k)
            if before is not None and before.final and before.info is info:
                entries[k] = _Entry(s.count, before.stack, before.labels, before.cut, info, True)
            else:
                entries[k] = self._symbolize(k, info, s.count)
        self._registry.end_drain()

    def _symbolize(self, key: RawKey, info: ProcessInfo, count: int) -> _Entry:
        _pid, _incarnation, comm, user, kernel, user_err, kernel_err = key
        user_part, final = self._user_part(info, user, user_err, kernel)
        return _Entry(count, self._kernel_part(kernel, kernel_err) + user_part, self._labels(info, comm),
                      bool(user_part) and user_part[-1] is BROKEN_CHAIN, info, final)

    def take(self, *, start_ns: int, duration_ns: int, frequency_hz: int, host: str,
             counters: dict[str, int]) -> Profile:
        """The samples gathered since the last take, as one Profile; starts a new interval.
        ``counters`` gain ``user_stacks_cut`` (samples whose user stack ends in a broken chain)."""
        entries, self._entries = self._entries, {}
        self._previous = entries
        processes, self._processes = self._processes, {}
        # Raw stacks that symbolize alike (a cut tail) merge. Frames are compared by identity:
        # the symbolizer hands out one object per address of a process, and hashing the
        # dataclasses was most of this loop's cost.
        counts: dict[SampleKey, int] = {}
        firsts: dict[SampleKey, tuple[int, int, _Entry]] = {}
        for (pid, incarnation, *_), e in entries.items():
            key = (e.labels, pid, incarnation, *map(id, e.stack))
            if key in counts:
                counts[key] += e.count
            else:
                counts[key] = e.count
                firsts[key] = (pid, incarnation, e)
        counters = {**counters, "user_stacks_cut": sum(e.count for e in entries.values() if e.cut)}
        samples = tuple(
            ProfileSample(stack=e.stack, count=counts[key], labels=e.labels, num_labels=(("pid", pid),),
                          process=processes[(pid, incarnation)])
            for key, (pid, incarnation, e) in firsts.items()
        )
        return Profile(samples=samples, frequency_hz=frequency_hz, start_ns=start_ns,
                       duration_ns=duration_ns, host=host, counters=dict(counters))

    @staticmethod
    def _labels(info: ProcessInfo, comm: str) -> tuple[tuple[str, str], ...]:
        labels = [("comm", comm)]
        if info.exe:
            labels.append(("exe", info.exe))
        if info.container_id:
            labels.append(("container_id", info.container_id))
        return tuple(labels)

    def _kernel_part(self, kernel: tuple[int, ...], error: int) -> tuple[Symbolized, ...]:
        if kernel:
            return tuple(self._symbolizer.symbolize_kernel(kernel))
        lost = _KERNEL_STACK_LOST.get(error)
        return (lost,) if lost else ()

    def _user_part(self, info: ProcessInfo, user: tuple[int, ...], error: int,
                   kernel: tuple[int, ...]) -> tuple[tuple[Symbolized, ...], bool]:
        """The user frames, and whether they are final (no address outside the maps, which a
        re-read of the maps might place)."""
        if not user:
            lost = _USER_STACK_LOST.get(error)
            if lost:
                return (lost,), True
            # No user stack while not in the kernel: the unwinder gave up on user code.
            return (() if kernel or info.is_kernel_thread else (_NO_USER_STACK,)), True
        symbolized = self._symbolizer.symbolize_user(info.pid, info.mappings, user)
        final = all(s.module is not None for s in symbolized)
        if info.alive and not final:
            # An address outside every known mapping: a library mapped after the snapshot.
            refreshed = self._registry.refresh_maps(info.pid, info.incarnation)
            if refreshed is not None:
                symbolized = self._symbolizer.symbolize_user(info.pid, refreshed.mappings, user)
        return (cut_at_broken_chain(symbolized) if info.mappings else tuple(symbolized)), final


def cut_at_broken_chain(symbolized: Sequence[Symbolized]) -> tuple[Symbolized, ...]:
    """A user stack up to its first return address in no executable mapping of the process,
    then one ``[broken frame chain]`` frame. Frame-pointer unwinding through code built
    without frame pointers reads a heap, stack or data word as the next return address; that
    frame and every one the walk found after it are not the program's callers. The leaf is the
    sampled instruction pointer, never cut (an unknown leaf means stale maps, not a bad walk)."""
    for i in range(1, len(symbolized)):
        if symbolized[i].module is None:
            return (*symbolized[:i], BROKEN_CHAIN)
    return tuple(symbolized)
