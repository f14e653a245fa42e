"""A fast header scan for the common DICOM file (preamble, little-endian, explicit or implicit
VR, no undefined-length sequence before the pixel data): the wanted elements' raw bytes.

pydicom's dcmread builds a Dataset of every element and costs ~1-2 ms a file; a cohort reads
tens of thousands of headers and needs about 40 values, so this scan walks the element headers
with struct and keeps only those. Anything unusual (big-endian, deflated, undefined lengths,
sequences a cohort needs, a header longer than the bytes read) returns None: pydicom reads it.
"""

from __future__ import annotations

import struct
from collections.abc import Collection

IMPLICIT_LE = "1.2.840.10008.1.2"
# big-endian, deflated, JPIP referenced deflate
NOT_SCANNED = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"}
PIXEL_DATA = 0x7FE00010
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
            b"UV"}
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


def _elements(buf: bytes, pos: int, explicit: bool, wanted: Collection[int],
              stop: Collection[int], found: dict[int, bytes]) -> int | None:
    """Walk elements from `pos`, keeping wanted values; the position of the pixel data (or of
    the end of group 0002 in the file meta), or None when the scan must give up."""
    end = len(buf)
    meta = pos == 132
    while pos + 8 <= end:
        group, element = _TAG.unpack_from(buf, pos)
        tag = group << 16 | element
        if tag == PIXEL_DATA or (meta and group != 2):
            return pos
        if tag in stop:
            return None
        if explicit or meta:
            vr = buf[pos + 4:pos + 6]
            if not (vr.isalpha() and vr.isupper()):  # not a VR: implicit data in an explicit
                return None  # file, or a damaged header -> pydicom decides
            if vr in LONG_VRS:
                if pos + 12 > end:
                    return None
                length, start = _U32.unpack_from(buf, pos + 8)[0], pos + 12
            else:
                length, start = _U16.unpack_from(buf, pos + 6)[0], pos + 8
        else:
            length, start = _U32.unpack_from(buf, pos + 4)[0], pos + 8
        if length == 0xFFFFFFFF or start + length > end:
            return None
        if tag in wanted:
            found[tag] = buf[start:start + length]
        pos = start + length
    return None


def scan_header(buf: bytes, wanted: Collection[int], stop: Collection[int]) -> \
        tuple[dict[int, bytes], int, str] | None:
    """Raw values of the `wanted` tags of a file's first bytes `buf`, the byte offset of its
    pixel data and its transfer syntax; None when pydicom must read the file (see module doc)."""
    if buf[128:132] != b"DICM":
        return None
    meta: dict[int, bytes] = {}
    start = _elements(buf, 132, True, {0x00020010}, (), meta)
    syntax = meta.get(0x00020010, b"").decode("ascii", "replace").strip("\x00 ")
    if start is None or not syntax or syntax in NOT_SCANNED:
        return None
    found: dict[int, bytes] = {}
    pixels = _elements(buf, start, syntax != IMPLICIT_LE, wanted, stop, found)
    if pixels is None:
        return None
    return found, pixels, syntax
