from __future__ import annotations

import gzip
import hashlib
import os
import random
import stat

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils import _sink
from ansible_collections.authentik_ops.backup.plugins.module_utils._sink import AtomicSink, open_decompressed


def _chunks(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_round_trip_hash_and_mode(tmp_path, compression):
    data = os.urandom(300_000) + b"text\n" * 50_000
    dest = tmp_path / f"out{_sink.SUFFIXES[compression]}"
    with AtomicSink(str(dest), compression) as sink:
        for chunk in _chunks(data, 65_537):
            sink.write(chunk)
        stats = sink.commit()
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    on_disk = dest.read_bytes()
    assert stats["size"] == len(on_disk)
    assert stats["sha256"] == hashlib.sha256(on_disk).hexdigest()
    assert stats["raw_size"] == len(data)
    with open_decompressed(str(dest)) as handle:
        assert handle.read() == data
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]


def test_gzip_is_standard_gzip(tmp_path):
    dest = tmp_path / "x.gz"
    with AtomicSink(str(dest), "gzip") as sink:
        sink.write(b"hello\n")
        sink.commit()
    assert gzip.decompress(dest.read_bytes()) == b"hello\n"


def test_failure_leaves_no_file(tmp_path):
    dest = tmp_path / "postgres.sql.zst"
    with pytest.raises(RuntimeError):
        with AtomicSink(str(dest), "zstd") as sink:
            sink.write(b"partial data" * 1000)
            raise RuntimeError("stream broke")
    assert list(tmp_path.iterdir()) == []


def test_partial_name_is_hidden_and_marked(tmp_path):
    dest = tmp_path / "postgres.sql"
    sink = AtomicSink(str(dest))
    try:
        name = os.path.basename(sink.partial)
        assert name.startswith(".postgres.sql.") and name.endswith(".partial")
        assert not dest.exists()
    finally:
        sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_tail_keeps_last_bytes(tmp_path):
    sink = AtomicSink(str(tmp_path / "x"))
    try:
        for i in range(200):
            sink.write(bytes([i % 256]) * 1000)
        tail = sink.tail(2500)
        assert tail == bytes([197]) * 500 + bytes([198]) * 1000 + bytes([199]) * 1000
    finally:
        sink.abort()


def test_missing_zstandard_is_reported(monkeypatch):
    monkeypatch.setattr(_sink, "zstandard", None)
    assert "zstandard" in _sink.compression_problem("zstd")
    assert _sink.compression_problem("gzip") is None
    with pytest.raises(_sink.SinkError):
        AtomicSink("/nonexistent/x", "zstd")


class _Failing:
    def write(self, data):
        raise OSError(28, "No space left on device")

    def finish(self):
        pass


def test_write_error_of_the_writer_thread_reaches_the_caller_and_leaves_no_file(tmp_path):
    dest = tmp_path / "postgres.sql"
    with pytest.raises(_sink.SinkError, match="No space left"):
        with AtomicSink(str(dest)) as sink:
            sink._worker.codec = _Failing()
            for _i in range(100):
                sink.write(b"x" * 65536)
            sink.commit()
    assert list(tmp_path.iterdir()) == []


def test_small_and_large_writes_keep_their_order(tmp_path):
    """Small writes are gathered into chunks for the writer thread, large ones pass alone: the file keeps the order."""
    rnd = random.Random(7)
    pieces = []
    for i in range(400):
        size = rnd.choice([1, 17, 4096, 65536, 300_000, 1 << 20, (1 << 20) + 5])
        pieces.append(bytes([i % 256]) * size)
    dest = tmp_path / "ordered.bin"
    with AtomicSink(str(dest)) as sink:
        for piece in pieces:
            sink.write(piece)
        stats = sink.commit()
    assert dest.read_bytes() == b"".join(pieces)
    assert stats["raw_size"] == sum(len(p) for p in pieces)
    assert sink.tail(10) == b"".join(pieces)[-10:]
