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
import queue
import tempfile
import threading
import zlib

try:
    import zstandard
except ImportError:  # only needed for compression=zstd
    zstandard = None

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import SinkError
from ansible_collections.authentik_ops.backup.plugins.module_utils._fsutil import fsync_dir
from ansible_collections.authentik_ops.backup.plugins.module_utils._age import (
    HEADER_LINE as AGE_HEADER_LINE,
    SUFFIX as AGE_SUFFIX,
    AgeError,
    AgeReader,
    Encryptor,
    registered_identities,
)

SUFFIXES = {"none": "", "gzip": ".gz", "zstd": ".zst"}
DEFAULT_LEVELS = {"gzip": 6, "zstd": 3}
TAIL_BYTES = 64 * 1024
QUEUE_DEPTH = 4  # chunks between the reader and the writer thread (each at most about 1 MiB)
COALESCE = 1 << 20  # small writes (a WebSocket frame, a pipe read) are gathered into chunks of this size


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
    """Hashes and counts what the compressor emits, then writes it to the file descriptor.

    With ``recipients`` (age public keys) every byte is first sealed with age (:class:`_age.Encryptor`): only
    ciphertext reaches the disk, and ``sha``/``size`` are those of the encrypted file. ``finish`` seals the last chunk.
    """

    def __init__(self, fd, recipients=None):
        self.fd = fd
        self.sha = hashlib.sha256()
        self.size = 0
        self.encryption = None
        self._encryptor = None
        if recipients:
            try:
                self._encryptor = Encryptor(_DiskWrites(self._to_disk), recipients)
            except AgeError as exc:
                raise SinkError(f"encrypt_recipients: {exc}") from None
            self.encryption = dict(scheme="age", recipients=[str(r).strip() for r in recipients])

    def write(self, data):
        if self._encryptor is not None:
            return self._encryptor.write(data)
        return self._to_disk(data)

    def finish(self):
        if self._encryptor is not None:
            self._encryptor.finish()

    def _to_disk(self, data):
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


class _DiskWrites:
    def __init__(self, write):
        self.write = write


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


ZSTD_JOB_SIZE = 4 << 20  # multi-threaded zstd: input per job. The default (4 x the window, 8 MiB at level 3)
# doubles the codec's buffers for no measured gain in speed (docs/performance.md).


class _Zstd:
    def __init__(self, out, level, threads):
        if threads:
            params = zstandard.ZstdCompressionParameters.from_level(
                level, threads=threads, job_size=ZSTD_JOB_SIZE, write_checksum=1, write_content_size=0)
            compressor = zstandard.ZstdCompressor(compression_params=params)
        else:
            compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=False)
        self.writer = compressor.stream_writer(out, write_size=1 << 20, closefd=False)

    def write(self, data):
        self.writer.write(data)

    def finish(self):
        self.writer.flush(zstandard.FLUSH_FRAME)
        self.writer.close()


class _Worker(threading.Thread):
    """Runs the codec chain (compress, encrypt, hash, write) beside the stream's reader.

    Compression, sha256 and os.write release the GIL on large buffers, so the next chunk of the stream is read
    while the last one is processed. The queue is bounded (QUEUE_DEPTH chunks), so memory stays constant. An error
    of the chain is raised to the reader at its next write or at commit.
    """

    def __init__(self, codec):
        super().__init__(daemon=True)
        self.codec = codec
        self.queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self.error = None

    def run(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is None:
                try:
                    self.codec.write(item)
                except BaseException as exc:  # handed to the reader
                    self.error = exc

    def put(self, data):
        self.check()
        self.queue.put(data)

    def check(self):
        if self.error is not None:
            raise SinkError(f"writing the backup file failed: {self.error}") from self.error

    def stop(self):
        if self.is_alive():
            self.queue.put(None)
            self.join()


class AtomicSink:
    """Write a stream atomically to ``dest``; see the module docstring."""

    def __init__(self, dest, compression="none", level=None, threads=0, mode=0o600, recipients=None):
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
            self._file = _FileWriter(fd, recipients)  # age header written now: the file never holds plaintext
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
        self._pending = bytearray()
        self._tail = collections.deque()
        self._tail_len = 0
        self._worker = _Worker(self._codec)
        self._worker.start()

    # streaming -------------------------------------------------------------------------------------------------
    def write(self, data):
        """Take the next raw bytes of the stream (bytes; the sink keeps a reference for the tail)."""
        if not data:
            return
        size = len(data)
        self.raw_size += size
        # One queue slot per small write would make the writer thread's queue only a few frames deep, so small
        # writes are gathered; no chunk grows past COALESCE (or the size of one large write), which bounds memory.
        if self._pending and len(self._pending) + size > COALESCE:
            self._flush_pending()
        if not self._pending and size >= COALESCE // 4:
            self._worker.put(data)
        else:
            self._pending += data
            if len(self._pending) >= COALESCE:
                self._flush_pending()
        self._tail.append(data)
        self._tail_len += len(data)
        while self._tail_len - len(self._tail[0]) >= TAIL_BYTES:
            self._tail_len -= len(self._tail.popleft())

    def _flush_pending(self):
        if self._pending:
            self._worker.put(bytes(self._pending))
            self._pending.clear()

    def tail(self, size=TAIL_BYTES):
        """The last ``size`` raw (uncompressed) bytes written, for trailer checks."""
        return b"".join(bytes(chunk) for chunk in self._tail)[-size:]

    # ending ----------------------------------------------------------------------------------------------------
    def commit(self):
        """Finish the file and move it into place. Returns size, sha256 and raw_size."""
        self._flush_pending()
        self._worker.stop()
        self._worker.check()
        self._codec.finish()
        self._file.finish()
        os.fsync(self._file.fd)
        os.close(self._file.fd)
        self._closed = True
        os.replace(self.partial, self.dest)
        fsync_dir(os.path.dirname(self.dest))
        stats = dict(dest=self.dest, size=self._file.size, sha256=self._file.sha.hexdigest(),
                     raw_size=self.raw_size, compression=self.compression)
        if self._file.encryption:
            stats["encryption"] = self._file.encryption
        return stats

    def abort(self):
        """Drop everything written so far. Safe to call more than once."""
        self._worker.stop()
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


def open_encrypted(path, identities=None):
    """The file ``path`` opened for reading; an age file (known by its header) is decrypted while it is read, with
    ``identities`` or else the identities the module registered (``_age.register_identities``)."""
    handle = open(path, "rb")
    try:
        if handle.read(len(AGE_HEADER_LINE)) != AGE_HEADER_LINE:
            handle.seek(0)
            return handle
        handle.seek(0)
        keys = registered_identities() if identities is None else list(identities)
        if not keys:
            raise SinkError(f"{path} is encrypted with age; give the identity (decrypt_identity or "
                            "decrypt_identity_file) of one of its recipients")
        reader = AgeReader(handle, keys)
        reader.open_header()
        return reader
    except AgeError as exc:
        handle.close()
        raise SinkError(f"{path}: {exc}") from None
    except BaseException:
        handle.close()
        raise


class _GzipOver:
    """gzip over another file object, closing both."""

    def __init__(self, inner):
        import gzip

        self.inner = inner
        self.gzip = gzip.GzipFile(fileobj=inner, mode="rb")
        self.read = self.gzip.read

    def close(self):
        try:
            self.gzip.close()
        finally:
            self.inner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_decompressed(path, compression=None, identities=None):
    """A binary file object yielding the raw bytes of a file written by the sink (codec from the suffix).

    An age-encrypted file is decrypted on the fly (see :func:`open_encrypted`); nothing is written anywhere.
    """
    name = path[:-len(AGE_SUFFIX)] if path.endswith(AGE_SUFFIX) else path
    if compression is None:
        compression = "zstd" if name.endswith(".zst") else "gzip" if name.endswith(".gz") else "none"
    if compression == "zstd":
        problem = compression_problem("zstd")
        if problem:
            raise SinkError(problem)
    raw = open_encrypted(path, identities)
    if compression == "gzip":
        if isinstance(raw, AgeReader):
            return _GzipOver(raw)
        raw.close()
        import gzip

        return gzip.open(path, "rb")
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_size=1 << 20, closefd=True)
    return raw
