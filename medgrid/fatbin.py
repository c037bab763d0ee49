"""The GPU code compiled into a shared library: the targets of the fat binaries in its ``.nv_fatbin`` section.

nvcc embeds one fat binary per ``.cu`` file: a 16-byte header (magic ``0xBA55ED50``, version 1, header size,
size of the entries) and entries, each with its own header (kind: 1 PTX, 2 ELF cubin; header size; payload
size; at byte 28 the target's compute capability as major * 10 + minor) and payload. cuobjdump reads the same
headers; it is not always installed (the CUDA pip wheels lack it), so ``medgrid info`` and the tests read them
here. Plain Python, no torch.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import NamedTuple

FATBIN_MAGIC = 0xBA55ED50
KINDS = {1: "ptx", 2: "cubin"}


class Target(NamedTuple):
    kind: str  # "cubin" (device code for one GPU family) or "ptx" (compiled by the driver for newer GPUs)
    arch: str  # "9.0", "12.0"

    def __str__(self) -> str:
        digits = self.arch.replace(".", "")
        return f"sm_{digits}" if self.kind == "cubin" else f"compute_{digits} (PTX)"


def _section(data: bytes, name: str) -> bytes | None:
    """The bytes of an ELF64 little-endian section by name, None when the file has no such section (or is not
    such a file, or is cut short)."""
    try:
        return _find_section(data, name)
    except (struct.error, ValueError):
        return None


def _find_section(data: bytes, name: str) -> bytes | None:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if not shoff or shstrndx >= shnum:
        return None

    def header(i):  # (name offset, file offset, size)
        base = shoff + i * shentsize
        return struct.unpack_from("<I", data, base)[0], *struct.unpack_from("<QQ", data, base + 0x18)

    _, names_at, _ = header(shstrndx)
    wanted = name.encode()
    for i in range(shnum):
        name_at, offset, size = header(i)
        start = names_at + name_at
        if data[start:data.index(b"\0", start)] == wanted:
            return data[offset:offset + size]
    return None


def parse(blob: bytes) -> list[Target]:
    """The targets of every fat binary in ``blob`` (the ``.nv_fatbin`` section), in file order."""
    targets, pos = [], 0
    while pos + 16 <= len(blob):
        magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", blob, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # fat binaries are 8-byte aligned in the section
            continue
        entry, end = pos + header_size, min(pos + header_size + fat_size, len(blob))  # a cut-short one: what is there
        while entry + 32 <= end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", blob, entry)
            arch, = struct.unpack_from("<I", blob, entry + 28)
            if entry_header == 0:
                break
            if kind in KINDS:
                targets.append(Target(KINDS[kind], f"{arch // 10}.{arch % 10}"))
            entry += entry_header + payload
        pos = max(end, pos + 16)
    return targets


def targets(path: str | Path | None) -> list[Target]:
    """The distinct GPU targets compiled into a library, sorted (cubins first); [] for a CPU-only one."""
    if path is None:
        return []
    blob = _section(Path(path).read_bytes(), ".nv_fatbin")
    found = set(parse(blob)) if blob else set()
    return sorted(found, key=lambda t: (t.kind != "cubin", tuple(map(int, t.arch.split(".")))))


def runs_on(found: list[Target], capability: tuple[int, int]) -> str | None:
    """Which of ``found`` a GPU of compute capability ``capability`` runs: the cubin of its major version with
    the highest minor version not above its own, else PTX of a capability not above its own (compiled by the
    driver when the kernel first loads); None when nothing runs on it."""
    major, minor = capability
    cubins = [t for t in found if t.kind == "cubin" and int(t.arch.split(".")[0]) == major
              and int(t.arch.split(".")[1]) <= minor]
    if cubins:
        return str(max(cubins, key=lambda t: int(t.arch.split(".")[1])))
    ptx = [t for t in found if t.kind == "ptx" and tuple(map(int, t.arch.split("."))) <= capability]
    if ptx:
        return str(max(ptx, key=lambda t: tuple(map(int, t.arch.split(".")))))
    return None
