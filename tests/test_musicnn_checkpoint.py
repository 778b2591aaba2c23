"""The TF1 checkpoint reader against the table and tensor-bundle formats as written down, not as it reads them.

The index is parsed here from LevelDB's table format (table_format.md: a footer of two block handles and a magic
number; blocks of prefix-compressed records, then restart offsets) and TensorFlow's ``BundleEntryProto`` is decoded
by protobuf itself; TensorFlow's own masked CRC-32C of each tensor's bytes, stored in its entry, says whether the
bytes found are the ones it wrote. Checkpoints written here from the same formats (several data blocks, every
dtype the reader knows, a scalar) must read back as the arrays written.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from mess.models.musicnn.checkpoint import read_checkpoint
from mess.models.musicnn.model import checkpoint_prefix

pytest.importorskip("musicnn.configuration", reason="pip install --no-deps musicnn==0.1.0")

TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB's table magic number, little-endian in the footer's last 8 bytes
# tensorflow/core/framework/types.proto: DT_FLOAT 1, DT_DOUBLE 2, DT_INT32 3, DT_STRING 7, DT_INT64 9
TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}


def _bundle_entry_class() -> type:
    """tensorflow/core/protobuf/tensor_bundle.proto's BundleEntryProto (the fields a one-shard bundle uses)."""
    file = descriptor_pb2.FileDescriptorProto(name="mess_test_bundle.proto", package="mess_test", syntax="proto3")
    shape = file.message_type.add(name="TensorShapeProto")
    dim = shape.nested_type.add(name="Dim")
    dim.field.add(name="size", number=1, type=3, label=1)  # int64
    dim.field.add(name="name", number=2, type=9, label=1)  # string
    shape.field.add(name="dim", number=2, type=11, label=3, type_name=".mess_test.TensorShapeProto.Dim")
    shape.field.add(name="unknown_rank", number=3, type=8, label=1)  # bool
    entry = file.message_type.add(name="BundleEntryProto")
    entry.field.add(name="dtype", number=1, type=5, label=1)  # the DataType enum: a varint, as int32
    entry.field.add(name="shape", number=2, type=11, label=1, type_name=".mess_test.TensorShapeProto")
    entry.field.add(name="shard_id", number=3, type=5, label=1)  # int32
    entry.field.add(name="offset", number=4, type=3, label=1)  # int64
    entry.field.add(name="size", number=5, type=3, label=1)  # int64
    entry.field.add(name="crc32c", number=6, type=7, label=1)  # fixed32
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("mess_test.BundleEntryProto"))


BundleEntry = _bundle_entry_class()


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli's polynomial, reflected
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    """CRC-32C (RFC 3720) of ``data``, masked as TensorFlow stores it (rotated right by 15, plus 0xa282ead8)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        value |= (buf[pos] & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not buf[pos - 1] & 0x80:
            return value, pos


def _records(index: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of the table block at ``offset`` (table_format.md)."""
    block = index[offset:offset + size]
    restarts = int.from_bytes(block[-4:], "little")
    end, pos, key, out = len(block) - 4 - 4 * restarts, 0, b"", []
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        out.append((key, block[pos + unshared:pos + unshared + length]))
        pos += unshared + length
    return out


def _entries(prefix: Path) -> dict[str, object]:
    """Tensor name -> its decoded BundleEntryProto, from the ``.index`` table."""
    index = (prefix / ".index").read_bytes()
    assert int.from_bytes(index[-8:], "little") == TABLE_MAGIC
    footer = index[-48:]
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)  # the metaindex handle
    offset, pos = _varint(footer, pos)
    size, _ = _varint(footer, pos)
    entries = {}
    for _, handle in _records(index, offset, size):
        block_offset, pos = _varint(handle, 0)
        block_size, _ = _varint(handle, pos)
        for key, value in _records(index, block_offset, block_size):
            if key:  # the empty key holds the BundleHeaderProto
                entries[key.decode()] = BundleEntry.FromString(value)
    return entries


@pytest.mark.parametrize("dataset, arch", [("MSD", "musicnn"), ("MTT", "vgg")])
def test_every_tensor_is_the_bytes_tensorflow_checksummed(dataset: str, arch: str) -> None:
    prefix = checkpoint_prefix(dataset, arch)
    entries = _entries(prefix)
    shard = (prefix / ".data-00000-of-00001").read_bytes()
    small = [e for e in entries.values() if e.size <= 4096]  # a pure-Python CRC: the small tensors only
    assert len(small) > 50
    for entry in small:
        assert _masked_crc32c(shard[entry.offset:entry.offset + entry.size]) == entry.crc32c
    spans = sorted((e.offset, e.offset + e.size) for e in entries.values())  # the tensors tile the shard
    assert spans[0][0] == 0 and spans[-1][1] == len(shard)
    assert all(end == start for (_, end), (start, _) in zip(spans[:-1], spans[1:], strict=True))
    tensors = read_checkpoint(f"{prefix}/")
    assert sorted(tensors) == sorted(entries)
    for name, entry in entries.items():
        dtype = np.dtype(TF_DTYPES[entry.dtype])
        expected = np.frombuffer(shard[entry.offset:entry.offset + entry.size], dtype.newbyteorder("<"))
        assert tensors[name].dtype == dtype
        assert tensors[name].shape == tuple(d.size for d in entry.shape.dim)
        np.testing.assert_array_equal(tensors[name].ravel(), expected)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _block(records: list[tuple[bytes, bytes]], restart_every: int) -> bytes:
    """A table block of ``records``, keys prefix-compressed between restart points."""
    body, restarts, last = bytearray(), [], b""
    for i, (key, value) in enumerate(records):
        shared = 0
        if i % restart_every:
            while shared < min(len(key), len(last)) and key[shared] == last[shared]:
                shared += 1
        else:
            restarts.append(len(body))
        body += _encode_varint(shared) + _encode_varint(len(key) - shared) + _encode_varint(len(value))
        body += key[shared:] + value
        last = key
    return bytes(body) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def _write_checkpoint(prefix: Path, arrays: dict[str, np.ndarray], per_block: int = 2, shard_id: int = 0,
                      dtype_of: dict[str, int] | None = None, appended: dict[str, bytes] | None = None,
                      unknown: bytes = b"") -> None:
    """A one-shard TF1 bundle of ``arrays`` (names sorted, as a table needs), ``per_block`` tensors a data block;
    each block is followed by table_format.md's 5-byte trailer (compression type, CRC: unchecked here).
    ``dtype_of`` overrides a tensor's dtype enum, ``appended`` adds raw fields to its entry (``unknown`` to the
    others)."""
    enums = {np.dtype(v): k for k, v in TF_DTYPES.items()}
    shard, records = bytearray(), [(b"", b"\x08\x01")]  # the header record: num_shards 1
    for name in sorted(arrays):
        array = arrays[name].astype(arrays[name].dtype.newbyteorder("<"))  # (ascontiguousarray makes a scalar [1])
        entry = BundleEntry(dtype=(dtype_of or {}).get(name, enums[array.dtype.newbyteorder("=")]),
                            shard_id=shard_id, offset=len(shard), size=array.nbytes,
                            crc32c=_masked_crc32c(array.tobytes()))
        for size in array.shape:
            entry.shape.dim.add(size=size)
        shard += array.tobytes()
        records.append((name.encode(), entry.SerializeToString() + (appended or {}).get(name, unknown)))
    index, handles = bytearray(b"\x00" * 7), []  # data blocks need not start at 0
    for first in range(0, len(records), per_block):
        block = _block(records[first:first + per_block], restart_every=3)
        handles.append((records[first:first + per_block][-1][0], _encode_varint(len(index)) +
                        _encode_varint(len(block))))
        index += block + b"\x00" * 5
    meta = _block([], 1)
    meta_handle = _encode_varint(len(index)) + _encode_varint(len(meta))
    index += meta + b"\x00" * 5
    top = _block(handles, 1)
    top_handle = _encode_varint(len(index)) + _encode_varint(len(top))
    index += top + b"\x00" * 5
    footer = (meta_handle + top_handle).ljust(40, b"\x00") + struct.pack("<Q", TABLE_MAGIC)
    (prefix.parent / (prefix.name + ".index")).write_bytes(bytes(index + footer))
    (prefix.parent / (prefix.name + ".data-00000-of-00001")).write_bytes(bytes(shard))


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "conv/kernel": rng.standard_normal((3, 2, 1, 4)).astype(np.float32),
        "conv/kernel/Adam": rng.standard_normal((3, 2, 1, 4)).astype(np.float32),
        "conv/kernel/Adam_1": rng.standard_normal(300).astype(np.float64),  # a long value: 2-byte length varint
        "counts": np.arange(-5, 7, dtype=np.int32).reshape(3, 4),
        "global_step": np.array(2**40 + 3, dtype=np.int64),  # a scalar: a shape of no dims
        "layer_with_a_much_longer_name_than_the_others/beta": np.linspace(-1, 1, 129, dtype=np.float32),
        "layer_with_a_much_longer_name_than_the_others/gamma": np.array([1.5e-38, -0.0, 3e38], np.float32),
        "steps": np.array([-(2**62), 0, 2**62], dtype=np.int64),
        "zero": np.zeros((0, 3), np.float32),  # a dim of size 0: proto3 writes no size field for it
    }


# fields a later TensorFlow might add, which a reader must step over: a fixed64 (field 14), a fixed32 (field 15)
# and a varint (field 13), after the fixed32 CRC
UNKNOWN_FIELDS = b"\x71" + (2**63 + 5).to_bytes(8, "little") + b"\x7d" + (7).to_bytes(4, "little") + b"\x68\x2a"


@pytest.mark.parametrize(("per_block", "unknown"), [(1, b""), (3, UNKNOWN_FIELDS), (20, b"")])
def test_a_checkpoint_written_to_the_format_reads_back_as_written(tmp_path: Path, per_block: int,
                                                                  unknown: bytes) -> None:
    arrays = _arrays()
    _write_checkpoint(tmp_path / "model", arrays, per_block=per_block, unknown=unknown)
    tensors = read_checkpoint(tmp_path / "model")
    assert sorted(tensors) == sorted(arrays)
    for name, array in arrays.items():
        assert tensors[name].dtype == array.dtype and tensors[name].shape == array.shape, name
        np.testing.assert_array_equal(tensors[name], array)


def test_checkpoints_the_reader_cannot_read_are_refused_in_words(tmp_path: Path) -> None:
    arrays = _arrays()
    _write_checkpoint(tmp_path / "sharded", arrays, shard_id=1)
    with pytest.raises(ValueError, match="multi-shard"):
        read_checkpoint(tmp_path / "sharded")
    _write_checkpoint(tmp_path / "strings", arrays, dtype_of={"counts": 7})  # DT_STRING
    with pytest.raises(ValueError, match="dtype enum 7"):
        read_checkpoint(tmp_path / "strings")
    _write_checkpoint(tmp_path / "invalid", arrays, dtype_of={"counts": 0})  # DT_INVALID: proto3 writes no field
    with pytest.raises(ValueError, match="dtype enum 0"):
        read_checkpoint(tmp_path / "invalid")
    for name, field in (("offset", b"\x22\x01\x00"), ("shape", b"\x10\x05")):  # a message where a number belongs
        _write_checkpoint(tmp_path / name, arrays, appended={"steps": field})  # and a number where a message does
        with pytest.raises(ValueError, match="malformed checkpoint index"):
            read_checkpoint(tmp_path / name)
    _write_checkpoint(tmp_path / "wire", arrays, appended={"steps": b"\x0b"})  # wire type 3, a group's start
    with pytest.raises(ValueError, match="wire type 3"):
        read_checkpoint(tmp_path / "wire")
    _write_checkpoint(tmp_path / "flipped", arrays)
    index = bytearray((tmp_path / "flipped.index").read_bytes())
    index[-1] ^= 0x01
    (tmp_path / "flipped.index").write_bytes(bytes(index))
    with pytest.raises(ValueError, match="not a TensorFlow table"):
        read_checkpoint(tmp_path / "flipped")


def test_an_index_of_many_blocks_with_short_records_is_read_to_its_last_record(tmp_path: Path) -> None:
    """The index block's restart array (one restart a record here) ends its records: the last, short, record
    (a 3-byte key's handle) is read, not taken for part of the array."""
    arrays = {f"t{i:02d}": np.full(2, i, np.float32) for i in range(40)}
    _write_checkpoint(tmp_path / "model", arrays, per_block=1)
    tensors = read_checkpoint(tmp_path / "model")
    assert sorted(tensors) == sorted(arrays)
    assert all(np.array_equal(tensors[name], array) for name, array in arrays.items())
