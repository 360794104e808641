"""h2spec's "hpack" group: decoding errors in header blocks are COMPRESSION_ERROR (RFC 7541).

Each case appends (or prepends) a hand-made representation to a valid request block.
"""

from __future__ import annotations

import pytest
from tests.conformance.h2spec.peer import (
    COMPRESSION_ERROR,
    HEADER_TABLE_SIZE,
    Peer,
    expect_connection_error,
)


def _size_update(size: int) -> bytes:
    """A dynamic table size update (RFC 7541 §6.3): 5-bit prefix integer, pattern 001."""
    if size < 31:
        return bytes([0x20 | size])
    out = bytearray([0x20 | 31])
    size -= 31
    while size >= 128:
        out.append(0x80 | (size & 0x7F))
        size >>= 7
    out.append(size)
    return bytes(out)


APPENDED = {
    # 2.3.3: index 70 is past the static table and the (empty) dynamic table.
    "2_3_3_1_indexed_field_with_invalid_index": b"\xc6",
    "2_3_3_2_literal_with_invalid_name_index": b"\x7f\x07\x00",
    # 4.2: a size update must come first in a block.
    "4_2_1_size_update_at_end_of_block": b"\x21",
    # 5.2: Huffman padding longer than 7 bits, padding not made of 1s, the EOS symbol.
    "5_2_1_huffman_padding_over_7_bits": b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x49\x50\x9f\xff",
    "5_2_2_huffman_padded_by_zero": b"\x00\x85\xf2\xb2\x4a\x84\xff\x83\x49\x50\x90",
    "5_2_3_huffman_with_eos": b"\x00\x85\xf2\xb2\x4a\x84\xff\x87\x49\x51\xff\xff\xff\xfa\x7f",
    # 6.1: index 0 is not used.
    "6_1_1_indexed_field_with_index_0": b"\x80",
}


@pytest.mark.parametrize("case", list(APPENDED), ids=list(APPENDED))
def test_broken_representation(peer: Peer, case: str) -> None:
    peer.headers(1, peer.encode(peer.request_headers()) + APPENDED[case])
    expect_connection_error(peer, COMPRESSION_ERROR)


def test_6_3_1_size_update_over_the_settings_limit(peer: Peer) -> None:
    limit = peer.settings.get(HEADER_TABLE_SIZE, 4096)
    peer.headers(1, _size_update(limit + 1) + peer.encode(peer.request_headers()))
    expect_connection_error(peer, COMPRESSION_ERROR)
