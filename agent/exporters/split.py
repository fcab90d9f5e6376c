"""Splitting a profile that is over a server's limits into parts that are not.

In: a ``Profile`` and the limits (Pyroscope's defaults: 16 000 samples, 4 MiB uncompressed).
Out: the parts' uncompressed pprof bytes; every sample lands in exactly one part, so the
parts add up to the whole.
"""

from __future__ import annotations

from dataclasses import replace

from agent.model import Profile
from agent.pprof import build_pprof_raw

MAX_SAMPLES = 16_000
MAX_UNCOMPRESSED_BYTES = 4 * 2**20


def split_samples(profile: Profile, max_samples: int = MAX_SAMPLES) -> list[Profile]:
    """Parts of at most ``max_samples`` samples (for formats that do not need the pprof's size)."""
    samples = profile.samples
    if len(samples) <= max_samples:
        return [profile]
    return [replace(profile, samples=samples[i:i + max_samples]) for i in range(0, len(samples), max_samples)]


def split_profile(profile: Profile, max_samples: int = MAX_SAMPLES,
                  max_bytes: int = MAX_UNCOMPRESSED_BYTES) -> list[tuple[Profile, bytes]]:
    """(part, its raw pprof) for each part, in sample order; one part when within the limits."""
    samples = profile.samples
    if len(samples) > max_samples:
        parts = []
        for start in range(0, len(samples), max_samples):
            chunk = replace(profile, samples=samples[start:start + max_samples])
            parts.extend(split_profile(chunk, max_samples, max_bytes))
        return parts
    raw = build_pprof_raw(profile)
    if len(raw) <= max_bytes or len(samples) <= 1:
        return [(profile, raw)]
    half = len(samples) // 2
    return (split_profile(replace(profile, samples=samples[:half]), max_samples, max_bytes)
            + split_profile(replace(profile, samples=samples[half:]), max_samples, max_bytes))
