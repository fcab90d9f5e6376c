"""Synthetic ``Profile`` values for exporter tests: small hand-made ones and a large random one."""

from __future__ import annotations

import random

from agent.model import Frame, FrameKind, Module, Profile, ProfileSample, Symbolized

LIBC = Module(path="/usr/lib/libc.so.6", build_id=bytes.fromhex("aabbcc01"), start=0x7F0000000000,
              end=0x7F0000200000, file_offset=0x28000, has_functions=True)
APP = Module(path="/opt/app/bin/server", build_id=bytes.fromhex("0102030405"), start=0x400000,
             end=0x500000, file_offset=0, has_functions=True)
KERNEL = Module(path="[kernel.kallsyms]", build_id=b"", start=0xFFFFFFFF81000000,
                end=0xFFFFFFFF83000000, file_offset=0, has_functions=True)

START_NS = 1_700_000_000_123_000_000  # 2023-11-14T22:13:20.123Z
DURATION_NS = 10_000_000_000


def sym(addr: int, module: Module | None, *names: str, kind: FrameKind = FrameKind.NATIVE,
        file: str = "", line: int = 0, named: bool = True) -> Symbolized:
    """A symbolized address; ``names`` innermost (inlined) first, each a Frame of its own."""
    frames = tuple(Frame(function=n, file=file, line=line + i) for i, n in enumerate(names))
    return Symbolized(addr=addr, kind=kind, module=module, frames=frames, named=named)


def sample(*stack: Symbolized, count: int, comm: str = "server", pid: int = 42) -> ProfileSample:
    """A sample of ``stack`` (leaf first) with the labels the agent attaches."""
    return ProfileSample(stack=stack, count=count, labels=(("comm", comm),), num_labels=(("pid", pid),))


def make_profile(*samples: ProfileSample, frequency_hz: int = 99, host: str = "node-1",
                 counters: dict[str, int] | None = None) -> Profile:
    return Profile(samples=samples, frequency_hz=frequency_hz, start_ns=START_NS, duration_ns=DURATION_NS,
                   host=host, counters=dict(counters or {}))


def large_profile(n_samples: int = 20_000, depth: int = 30, seed: int = 1) -> Profile:
    """``n_samples`` distinct stacks of ``depth`` frames over 40 modules and 4000 addresses.

    Like the symbolizer's caches, equal addresses share one ``Symbolized`` object; every tenth
    address has an inlined frame and every stack starts with two kernel frames.
    """
    rng = random.Random(seed)
    modules = [Module(path=f"/usr/lib/lib{i}.so", build_id=bytes([i]) * 20, start=0x7F0000000000 + i * 0x1000000,
                      end=0x7F0000000000 + (i + 1) * 0x1000000, file_offset=0) for i in range(40)]
    user = []
    for i in range(4000):
        module = modules[i % 40]
        names = (f"inl_{i}", f"func_{i}") if i % 10 == 0 else (f"func_{i}",)
        user.append(sym(module.start + 16 * i, module, *names, file=f"/src/file{i % 97}.c", line=i))
    kernel = [sym(KERNEL.start + 32 * i, KERNEL, f"kfunc_{i}", kind=FrameKind.KERNEL) for i in range(300)]
    samples = []
    for i in range(n_samples):
        stack = (rng.choice(kernel), rng.choice(kernel), *rng.choices(user, k=depth - 2))
        samples.append(ProfileSample(stack=stack, count=rng.randint(1, 5),
                                     labels=(("comm", f"proc{i % 50}"),), num_labels=(("pid", 1000 + i % 50),)))
    return make_profile(*samples, counters={"samples_taken": n_samples})
