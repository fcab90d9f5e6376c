"""Collection stage: drained samples -> symbolized, labeled, aggregated profile samples.

In: ``DrainedSample`` lists from the drain, the process registry, the symbolizer.
Out: a ``Profile`` per interval. Symbolization happens right after each drain, while the
registry still holds every process in it; identical stacks of one process are merged.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
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

SampleKey = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, int], ...], tuple[Symbolized, ...], int, int]


class Collector:
    def __init__(self, registry: ProcessRegistry, symbolizer: SymbolizerLike):
        self._registry = registry
        self._symbolizer = symbolizer
        self._counts: dict[SampleKey, int] = {}
        self._processes: dict[tuple[int, int], ProcessInfo] = {}  # (pid, incarnation) seen this interval

    def add(self, drained: Iterable[DrainedSample]) -> None:
        merged: dict[tuple[int, int, str, tuple[int, ...], tuple[int, ...], int, int], int] = {}
        for s in drained:  # threads of one process with the same stacks fold together
            k = (s.pid, s.incarnation, s.comm, s.user_addrs, s.kernel_addrs, s.user_stack_error,
                 s.kernel_stack_error)
            merged[k] = merged.get(k, 0) + s.count
        for (pid, incarnation, comm, user, kernel, user_err, kernel_err), count in merged.items():
            info = self._registry.lookup(pid, incarnation, comm)
            stack = self._kernel_part(kernel, kernel_err) + self._user_part(info, user, user_err, kernel)
            self._processes[(pid, incarnation)] = info
            key = (self._labels(info, comm), (("pid", pid),), stack, pid, incarnation)
            self._counts[key] = self._counts.get(key, 0) + count
        self._registry.end_drain()

    def take(self, *, start_ns: int, duration_ns: int, frequency_hz: int, host: str,
             counters: dict[str, int]) -> Profile:
        """The samples gathered since the last take, as one Profile; starts a new interval."""
        counts, self._counts = self._counts, {}
        processes, self._processes = self._processes, {}
        samples = tuple(
            ProfileSample(stack=stack, count=n, labels=labels, num_labels=num, process=processes[(pid, inc)])
            for (labels, num, stack, pid, inc), n in counts.items()
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
                   kernel: tuple[int, ...]) -> tuple[Symbolized, ...]:
        if not user:
            lost = _USER_STACK_LOST.get(error)
            if lost:
                return (lost,)
            # No user stack while not in the kernel: the unwinder gave up on user code.
            return () if kernel or info.is_kernel_thread else (_NO_USER_STACK,)
        symbolized = self._symbolizer.symbolize_user(info.pid, info.mappings, user)
        if info.alive and any(s.module is None for s in symbolized):
            # An address outside every known mapping: a library mapped after the snapshot.
            refreshed = self._registry.refresh_maps(info.pid, info.incarnation)
            if refreshed is not None:
                symbolized = self._symbolizer.symbolize_user(info.pid, refreshed.mappings, user)
        return tuple(symbolized)
