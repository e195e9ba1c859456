"""`model_data.h` / `model_data.cc`: the model as an aligned const array the firmware links into flash.

The .cc is streamed: the model is read and formatted in fixed-size chunks with numpy, so a 4 MB
model costs a few MB of memory and well under a second, and the text depends only on the bytes,
the name and the section (same input, byte-identical output).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError

BYTES_PER_LINE = 12
CHUNK_LINES = 8192  # ~100 KB of model per formatting step
ALIGNMENT = 16  # TFLM requires 16-byte aligned model data for its flatbuffer reads

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECTION = re.compile(r"^\.[A-Za-z0-9_.$]+$")
# C and C++ keywords an identifier may not take (Python's keyword list is not enough).
_C_KEYWORDS = frozenset(
    """alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t
    char32_t class compl concept const consteval constexpr constinit const_cast continue co_await
    co_return co_yield decltype default delete do double dynamic_cast else enum explicit export extern
    false float for friend goto if inline int long mutable namespace new noexcept not not_eq nullptr
    operator or or_eq private protected public register reinterpret_cast requires restrict return short
    signed sizeof static static_assert static_cast struct switch template this thread_local throw true
    try typedef typeid typename union unsigned using virtual void volatile wchar_t while xor xor_eq
    _Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary _Noreturn _Static_assert
    _Thread_local""".split()
)

# One "0xNN, " token per byte value, as a (256, 6) uint8 table for vectorised formatting.
_TOKENS = np.frombuffer(b"".join(f"0x{b:02x}, ".encode() for b in range(256)), dtype=np.uint8).reshape(256, 6)


@dataclass(frozen=True)
class ModelData:
    header: Path
    source: Path
    name: str
    size_bytes: int
    crc32: int


def check_identifier(name: str) -> str:
    """A name usable as a C and C++ identifier at global scope, or EdgeportError."""
    if not _IDENTIFIER.match(name) or name in _C_KEYWORDS:
        raise EdgeportError(
            f"--name {name!r} is not a C identifier",
            "use letters, digits and underscores, not starting with a digit, and not a C/C++ keyword",
        )
    if name.startswith("__") or re.match(r"^_[A-Z]", name):
        raise EdgeportError(
            f"--name {name!r} is reserved for the compiler (leading __ or _ and a capital)",
            "choose a name like g_model",
        )
    return name


def check_section(section: str) -> str:
    if not _SECTION.match(section):
        raise EdgeportError(
            f"--section {section!r} is not a linker section name",
            "give a name starting with a dot, e.g. .model_data",
        )
    return section


def crc32_of(path: Path) -> int:
    """zlib's CRC-32 (IEEE 802.3, reflected, init/xorout 0xFFFFFFFF), the one main.cc recomputes."""
    crc = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            crc = zlib.crc32(block, crc)
    return crc & 0xFFFFFFFF


def _format_lines(chunk: bytes) -> bytes:
    """Format bytes as '  0x.., 0x.., ...\\n' lines of BYTES_PER_LINE values."""
    data = np.frombuffer(chunk, dtype=np.uint8)
    full = len(data) // BYTES_PER_LINE * BYTES_PER_LINE
    out = []
    if full:
        tokens = _TOKENS[data[:full]].reshape(-1, BYTES_PER_LINE * 6)
        rows = np.empty((tokens.shape[0], 2 + BYTES_PER_LINE * 6), dtype=np.uint8)
        rows[:, :2] = ord(" ")
        rows[:, 2:] = tokens
        rows[:, -1] = ord("\n")  # the trailing space of the last token becomes the newline
        out.append(rows.tobytes())
    if full < len(data):
        tail = _TOKENS[data[full:]].tobytes()
        out.append(b"  " + tail[:-1] + b"\n")
    return b"".join(out)


def write_model_data(
    model_path: Path, outdir: Path, name: str, section: str | None, banner: str
) -> ModelData:
    """Write outdir/model_data.h and outdir/model_data.cc for the model file."""
    check_identifier(name)
    if section is not None:
        check_section(section)
    size = model_path.stat().st_size
    crc = crc32_of(model_path)
    guard = f"EDGEPORT_{name.upper()}_MODEL_DATA_H_"
    # GCC's section attribute goes after the declarator; alignas leads the declaration (standard C++).
    attribute = f' __attribute__((section("{section}")))' if section else ""
    header = outdir / "model_data.h"
    header.write_text(
        "\n".join(
            [
                f"// {banner}",
                f"// {size} bytes, CRC-32 0x{crc:08x} (zlib polynomial): check it on the device to know",
                "// which model a board was flashed with.",
                f"#ifndef {guard}",
                f"#define {guard}",
                "",
                "#include <stdint.h>",
                "",
                "// 16-byte aligned because TFLite Micro reads the flatbuffer in place.",
                f"alignas({ALIGNMENT}) extern const unsigned char {name}[];",
                f"constexpr unsigned int {name}_len = {size}u;",
                f"constexpr uint32_t {name}_crc32 = 0x{crc:08x}u;",
                "",
                f"#endif  // {guard}",
                "",
            ]
        )
    )
    source = outdir / "model_data.cc"
    with open(model_path, "rb") as src, open(source, "wb") as dst:
        dst.write(f"// {banner}\n".encode())
        dst.write(b'#include "model_data.h"\n\n')
        dst.write(f"alignas({ALIGNMENT}) const unsigned char {name}[]{attribute} = {{\n".encode())
        for block in iter(lambda: src.read(BYTES_PER_LINE * CHUNK_LINES), b""):
            dst.write(_format_lines(block))
        dst.write(b"};\n")
        dst.write(f'static_assert(sizeof({name}) == {name}_len, "model_data.h and .cc disagree");\n'.encode())
    return ModelData(header=header, source=source, name=name, size_bytes=size, crc32=crc)
