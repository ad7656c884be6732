"""The TCP ports a cluster's nodes open to the world: SSH and the task's ``ports``."""

from __future__ import annotations

SSH_PORT = 22


def port_ranges(ports: tuple[int, ...] | list[int]) -> list[tuple[int, int]]:
    """Merge ports (SSH included) into as few (first, last) TCP ranges as they allow."""
    ranges: list[tuple[int, int]] = []
    for port in sorted({SSH_PORT, *ports}):
        if ranges and port == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], port)
        else:
            ranges.append((port, port))
    return ranges
