"""The helper's hand-over protocol: fds and their descriptions arrive together, and a
helper's error becomes one BpfLoadError line (pipes stand in for BPF objects)."""

from __future__ import annotations

import os
import socket

import pytest

from agent.bpf_handover import LoadOptions, receive, send, send_error
from agent.errors import BpfLoadError


def test_fds_arrive_with_their_names_and_sizes() -> None:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        # GIVEN a helper that sends one "map" and one "program" (two ends of a pipe)
        send(child, {"counts0": (r, 40, 8, 16384)}, {"on_cpu_sample": w})
        # WHEN the agent receives them
        loaded = receive(parent)
        # THEN they are new fds onto the same objects, described as sent
        m = loaded.maps["counts0"]
        assert (m.key_size, m.value_size, m.max_entries) == (40, 8, 16384)
        os.write(loaded.programs["on_cpu_sample"], b"x")
        assert os.read(m.fd, 1) == b"x"
        loaded.close()
        assert not loaded.maps and not loaded.programs
    finally:
        for fd in (r, w):
            os.close(fd)
        parent.close()
        child.close()


def test_a_helper_error_is_one_line() -> None:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with parent, child:
        send_error(child, "BPF program failed to compile: x.c:1: error: nope")
        with pytest.raises(BpfLoadError, match="failed to compile"):
            receive(parent)


def test_a_helper_that_died_silently_is_an_error() -> None:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child.close()
    with parent, pytest.raises(BpfLoadError, match="without an answer"):
        receive(parent)


def test_options_survive_the_command_line() -> None:
    options = LoadOptions(frequency_hz=49, pids=(1, 2), stack_map_size=1024)
    assert LoadOptions.from_json(options.to_json()) == options
