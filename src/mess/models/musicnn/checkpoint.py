"""A numpy-only reader for TensorFlow 1 checkpoints (``.index`` + ``.data-00000-of-00001``).

The ``.index`` file is an uncompressed LevelDB-style table: a 48-byte footer points at an
index block whose values are handles of data blocks; every data-block record maps a tensor
name to a ``BundleEntryProto`` (dtype, shape, byte offset and size in the data shard).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode one base-128 varint at ``pos``; return (value, next position)."""
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Split a serialized protobuf message into (field number, value) pairs."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(buf[pos : pos + size], "little"), pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


def _block_entries(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """Decode the prefix-compressed (key, value) records of one table block."""
    block = data[offset : offset + size]
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 * (num_restarts + 1)
    entries: list[tuple[bytes, bytes]] = []
    key, pos = b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def _handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    """Decode a BlockHandle (offset, size) at ``pos``; return (offset, size, next position)."""
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _number(field: int | bytes) -> int:
    """A varint or fixed-width field's value."""
    if not isinstance(field, int):
        raise ValueError("malformed checkpoint index: a length-delimited field where a number belongs")
    return field


def _message(field: int | bytes) -> bytes:
    """A length-delimited field's bytes (a nested message)."""
    if not isinstance(field, bytes):
        raise ValueError("malformed checkpoint index: a number where a message belongs")
    return field


def _entry(value: bytes) -> tuple[type, tuple[int, ...], int, int]:
    """Decode a BundleEntryProto into (numpy dtype, shape, data offset, byte size)."""
    dtype, shape, offset, size = 0, [], 0, 0
    for number, field in _proto_fields(value):
        if number == 1:
            dtype = _number(field)
        elif number == 2:
            dims = [dict(_proto_fields(_message(d))) for n, d in _proto_fields(_message(field)) if n == 2]
            shape = [int(d.get(1, 0)) for d in dims]
        elif number == 3 and field != 0:
            raise ValueError("multi-shard checkpoints are not supported")
        elif number == 4:
            offset = _number(field)
        elif number == 5:
            size = _number(field)
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported TensorFlow dtype enum {dtype}")
    return _DTYPES[dtype], tuple(shape), offset, size


def read_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Read every tensor of the TF1 checkpoint at ``prefix`` (paths ``prefix + '.index'`` etc.)."""
    prefix = str(prefix)
    index = Path(prefix + ".index").read_bytes()
    shard = Path(prefix + ".data-00000-of-00001").read_bytes()
    footer = index[-_FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != _MAGIC:
        raise ValueError(f"{prefix}.index is not a TensorFlow table (bad magic number)")
    _, _, pos = _handle(footer)  # metaindex handle, unused
    index_offset, index_size, _ = _handle(footer, pos)
    tensors: dict[str, np.ndarray] = {}
    for _, block_handle in _block_entries(index, index_offset, index_size):
        offset, size, _ = _handle(block_handle)
        for key, value in _block_entries(index, offset, size):
            if not key:  # the BundleHeaderProto record
                continue
            dtype, shape, start, nbytes = _entry(value)
            little = np.dtype(dtype).newbyteorder("<")
            array = np.frombuffer(shard, little, count=nbytes // little.itemsize, offset=start)
            tensors[key.decode()] = array.reshape(shape).astype(dtype)
    return tensors
