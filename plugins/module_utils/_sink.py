# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""The atomic file sink: every byte of a backup goes through it.

Data is compressed (none, gzip or zstd), hashed (sha256 of the bytes on disk) and counted while it streams into
``.<name>.<random>.partial`` next to the destination, created 0600. ``commit()`` flushes, fsyncs, renames the file
to its final name and fsyncs the directory; ``abort()`` (or leaving the ``with`` block with an exception) removes
the partial file, so a failed run never leaves a file that looks like a backup.
"""

from __future__ import annotations

import collections
import hashlib
import os
import tempfile
import zlib

try:
    import zstandard
except ImportError:  # only needed for compression=zstd
    zstandard = None

SUFFIXES = {"none": "", "gzip": ".gz", "zstd": ".zst"}
DEFAULT_LEVELS = {"gzip": 6, "zstd": 3}
TAIL_BYTES = 64 * 1024


class SinkError(Exception):
    pass


def compression_problem(compression):
    """Why a codec cannot be used on this host, or None. Checked before anything is touched."""
    if compression == "zstd" and zstandard is None:
        return ("compression=zstd needs the Python package 'zstandard' on this host "
                "(pip install zstandard, or the distribution's python3-zstandard); "
                "install it or choose compression=gzip")
    if compression not in SUFFIXES:
        return f"unknown compression {compression!r}; choose one of none, gzip, zstd"
    return None


class _FileWriter:
    """Hashes and counts what the compressor emits, then writes it to the file descriptor."""

    def __init__(self, fd):
        self.fd = fd
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data):
        if not data:
            return 0
        self.sha.update(data)
        view = memoryview(data)
        total = len(view)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.size += total
        return total

    def flush(self):
        pass


class _Identity:
    def __init__(self, out):
        self.out = out

    def write(self, data):
        self.out.write(data)

    def finish(self):
        pass


class _Gzip:
    def __init__(self, out, level):
        self.out = out
        self.obj = zlib.compressobj(level, zlib.DEFLATED, 31)

    def write(self, data):
        self.out.write(self.obj.compress(data))

    def finish(self):
        self.out.write(self.obj.flush())


class _Zstd:
    def __init__(self, out, level, threads):
        params = dict(level=level, write_checksum=True, write_content_size=False)
        if threads:
            params["threads"] = threads
        self.writer = zstandard.ZstdCompressor(**params).stream_writer(out, write_size=1 << 20, closefd=False)

    def write(self, data):
        self.writer.write(data)

    def finish(self):
        self.writer.flush(zstandard.FLUSH_FRAME)
        self.writer.close()


class AtomicSink:
    """Write a stream atomically to ``dest``; see the module docstring."""

    def __init__(self, dest, compression="none", level=None, threads=0, mode=0o600):
        problem = compression_problem(compression)
        if problem:
            raise SinkError(problem)
        self.dest = os.path.abspath(dest)
        self.compression = compression
        directory, name = os.path.split(self.dest)
        fd, self.partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=directory)
        self._closed = False
        try:
            os.fchmod(fd, mode)
            self._file = _FileWriter(fd)
            if level is None:
                level = DEFAULT_LEVELS.get(compression, 0)
            if compression == "gzip":
                self._codec = _Gzip(self._file, level)
            elif compression == "zstd":
                self._codec = _Zstd(self._file, level, -1 if threads == 0 else threads)
            else:
                self._codec = _Identity(self._file)
        except BaseException:
            os.close(fd)
            os.unlink(self.partial)
            raise
        self.raw_size = 0
        self._tail = collections.deque()
        self._tail_len = 0

    # streaming -------------------------------------------------------------------------------------------------
    def write(self, data):
        """Take the next raw bytes of the stream (bytes; the sink keeps a reference for the tail)."""
        if not data:
            return
        self.raw_size += len(data)
        self._codec.write(data)
        self._tail.append(data)
        self._tail_len += len(data)
        while self._tail_len - len(self._tail[0]) >= TAIL_BYTES:
            self._tail_len -= len(self._tail.popleft())

    def tail(self, size=TAIL_BYTES):
        """The last ``size`` raw (uncompressed) bytes written, for trailer checks."""
        return b"".join(bytes(chunk) for chunk in self._tail)[-size:]

    # ending ----------------------------------------------------------------------------------------------------
    def commit(self):
        """Finish the file and move it into place. Returns size, sha256 and raw_size."""
        self._codec.finish()
        os.fsync(self._file.fd)
        os.close(self._file.fd)
        self._closed = True
        os.replace(self.partial, self.dest)
        fsync_dir(os.path.dirname(self.dest))
        return dict(dest=self.dest, size=self._file.size, sha256=self._file.sha.hexdigest(),
                    raw_size=self.raw_size, compression=self.compression)

    def abort(self):
        """Drop everything written so far. Safe to call more than once."""
        if not self._closed:
            self._closed = True
            try:
                os.close(self._file.fd)
            except OSError:
                pass
        try:
            os.unlink(self.partial)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path, chunk=1 << 20):
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            sha.update(block)
    return sha.hexdigest()


def open_decompressed(path, compression=None):
    """A binary file object yielding the raw bytes of a file written by the sink (codec from the suffix)."""
    if compression is None:
        compression = "zstd" if path.endswith(".zst") else "gzip" if path.endswith(".gz") else "none"
    if compression == "gzip":
        import gzip

        return gzip.open(path, "rb")
    if compression == "zstd":
        problem = compression_problem("zstd")
        if problem:
            raise SinkError(problem)
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_size=1 << 20, closefd=True)
    return open(path, "rb")
