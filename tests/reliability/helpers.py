"""Helpers of the reliability battery: Linux process/socket inspection (its ONNX models: `support.synthetic`)."""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

_TCP_LISTEN = "0A"


# --------------------------------------------------------------------------------------------------------
# processes and sockets (Linux /proc; psutil is not a dependency)
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    cmdline: tuple[str, ...]


def process_info(pid: int) -> ProcessInfo | None:
    """The parent pid and command line of `pid`, or None when it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw_cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    ppid = int(stat.rsplit(")", 1)[1].split()[1])
    return ProcessInfo(pid, ppid, tuple(part.decode(errors="replace") for part in raw_cmdline.split(b"\0") if part))


def descendants(root_pid: int) -> list[ProcessInfo]:
    """Every live process whose ancestry reaches `root_pid` (children, grandchildren, ...)."""
    infos = [
        info
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        if (info := process_info(int(entry.name))) is not None
    ]
    children: dict[int, list[ProcessInfo]] = {}
    for info in infos:
        children.setdefault(info.ppid, []).append(info)
    found: list[ProcessInfo] = []
    stack = [root_pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child.pid)
    return found


def stub_processes(server_pid: int, model: str) -> list[ProcessInfo]:
    """The python-backend stub processes serving `model` among the server's descendants.

    The stub's command line is `triton_python_backend_stub <model dir>/<version>/model.py <shm region> ...
    <instance name> ...`; the instance name is `<model>_<group>_<index>`.
    """
    stubs = []
    for info in descendants(server_pid):
        if not info.cmdline or not info.cmdline[0].endswith("triton_python_backend_stub"):
            continue
        if any(f"/{model}/" in part for part in info.cmdline[1:2]):
            stubs.append(info)
    return stubs


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _decode_address(hex_address: str) -> tuple[str, int]:
    host_hex, port_hex = hex_address.split(":")
    port = int(port_hex, 16)
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(host_hex, 16))), port
    words = struct.unpack("<4I", raw)  # IPv6: four little-endian 32-bit words
    return socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words)), port


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """`(address, port)` of every TCP socket in LISTEN state that process `pid` holds (IPv4 and IPv6)."""
    inodes = _socket_inodes(pid)
    found: set[tuple[str, int]] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _TCP_LISTEN and fields[9] in inodes:
                found.add(_decode_address(fields[1]))
    return found
