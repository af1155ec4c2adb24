# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE to authentik_ops.backup. It is not a public interface and may change at any time.

"""The age v1 file format (https://age-encryption.org/v1), X25519 recipients only, streaming in constant memory.

Files written here decrypt with ``age -d -i <identity file>`` and files ``age -r age1...`` writes decrypt here.

Layout of a file: a text header (``age-encryption.org/v1``, one ``-> X25519 <share>`` stanza per recipient with the
wrapped file key, ``--- <HMAC>``), then a 16-byte nonce and the payload: the plaintext cut into 64 KiB chunks, each
sealed with ChaCha20-Poly1305 under a key derived from the file key and the nonce; the chunk nonce is an 11-byte
counter and a last-chunk flag, so a truncated or reordered file fails authentication.

Only the ``cryptography`` package is needed, and only when something is encrypted or decrypted.
"""

from __future__ import annotations

import base64
import hmac
import os

from ansible_collections.authentik_ops.backup.plugins.module_utils._errors import BackupError

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError:  # only needed when encrypting or decrypting
    InvalidTag = hashes = X25519PrivateKey = X25519PublicKey = ChaCha20Poly1305 = HKDF = None

MAGIC = b"age-encryption.org/v1"
HEADER_LINE = MAGIC + b"\n"
SUFFIX = ".age"
CHUNK = 64 * 1024
TAG = 16
ENC_CHUNK = CHUNK + TAG
NONCE = 16
MAX_HEADER = 1 << 20
X25519_LABEL = b"age-encryption.org/v1/X25519"
LAST_COUNTER = (1 << 88) - 1


class AgeError(BackupError):
    """The data is not a valid age file, or cannot be decrypted; the message says why."""


class NoIdentityMatch(AgeError):
    """None of the identities given opens the file (wrong key)."""


def crypto_problem():
    """Why age cannot be used on this host, or None. Checked before anything is touched."""
    if ChaCha20Poly1305 is None:
        return ("age encryption needs the Python package 'cryptography' on this host (pip install cryptography, "
                "or the distribution's python3-cryptography)")
    return None


# --- bech32 (BIP 173) for age1... recipients and AGE-SECRET-KEY-1... identities --------------------------------

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values):
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for index in range(5):
            chk ^= _GEN[index] if ((top >> index) & 1) else 0
    return chk


def _hrp_expand(hrp):
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convertbits(data, frombits, tobits, pad):
    acc = bits = 0
    ret = []
    maxv = (1 << tobits) - 1
    for value in data:
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            ret.append((acc >> bits) & maxv)
    if pad:
        if bits:
            ret.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise ValueError("invalid padding")
    return ret


def bech32_encode(hrp, data):
    values = _convertbits(data, 8, 5, True)
    checksum_in = _hrp_expand(hrp) + values + [0] * 6
    mod = _polymod(checksum_in) ^ 1
    checksum = [(mod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in values + checksum)


def bech32_decode(text):
    """(hrp, bytes) of a bech32 string (all lower or all upper case); raises ValueError."""
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise ValueError("no separator or checksum")
    hrp, rest = text[:pos], text[pos + 1:]
    if any(c not in _CHARSET for c in rest) or any(ord(c) < 33 or ord(c) > 126 for c in hrp):
        raise ValueError("invalid character")
    values = [_CHARSET.find(c) for c in rest]
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise ValueError("bad checksum")
    return hrp, bytes(_convertbits(values[:-6], 5, 8, False))


# --- keys -------------------------------------------------------------------------------------------------------

def parse_recipient(text):
    """The X25519 public key of an ``age1...`` recipient string; raises AgeError naming what is wrong."""
    problem = crypto_problem()
    if problem:
        raise AgeError(problem)
    value = str(text).strip()
    try:
        hrp, data = bech32_decode(value)
    except ValueError as exc:
        raise AgeError(f"{value!r} is not an age recipient (age1... public key): {exc}") from None
    if hrp != "age" or len(data) != 32 or value != value.lower():
        raise AgeError(f"{value!r} is not an age X25519 recipient (a lower-case age1... public key of 32 bytes)")
    return X25519PublicKey.from_public_bytes(data)


def recipient_problem(text):
    """Why ``text`` is not a usable age recipient, or None (never raises)."""
    try:
        parse_recipient(text)
    except AgeError as exc:
        return str(exc)
    return None


def parse_identity(text):
    """The X25519 private key of an ``AGE-SECRET-KEY-1...`` string. The message of an error never shows the key."""
    problem = crypto_problem()
    if problem:
        raise AgeError(problem)
    value = str(text).strip()
    try:
        hrp, data = bech32_decode(value)
    except ValueError:
        raise AgeError("the identity is not an age secret key (AGE-SECRET-KEY-1...)") from None
    if hrp != "age-secret-key-" or len(data) != 32:
        raise AgeError("the identity is not an age X25519 secret key (AGE-SECRET-KEY-1... of 32 bytes)")
    return X25519PrivateKey.from_private_bytes(data)


def parse_identities(text):
    """Every identity of an age identity file's text (``#`` comments and blank lines ignored)."""
    keys = []
    for number, line in enumerate(str(text).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(parse_identity(line))
        except AgeError as exc:
            raise AgeError(f"line {number}: {exc}") from None
    if not keys:
        raise AgeError("no AGE-SECRET-KEY-1... identity found")
    return keys


def identity_to_string(key):
    raw = key.private_bytes_raw()
    return bech32_encode("age-secret-key-", raw).upper()


def public_of(key):
    """The ``age1...`` recipient string of a private key."""
    return bech32_encode("age", key.public_key().public_bytes_raw())


def generate_identity():
    """A new (identity string, recipient string) pair."""
    key = X25519PrivateKey.generate()
    return identity_to_string(key), public_of(key)


# --- primitives -------------------------------------------------------------------------------------------------

def _hkdf(ikm, salt, info, length=32):
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _b64(data):
    return base64.b64encode(data).rstrip(b"=")


def _unb64(data):
    """Strict unpadded standard base64 (age's canonical encoding)."""
    if b"=" in data or b"\r" in data:
        raise AgeError("malformed base64 in the header")
    try:
        out = base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except ValueError:
        raise AgeError("malformed base64 in the header") from None
    if _b64(out) != data:
        raise AgeError("non-canonical base64 in the header")
    return out


def _chunk_nonce(counter, last):
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _wrap_body(body):
    """Stanza body lines: 64 columns, the last line always shorter (possibly empty)."""
    encoded = _b64(body)
    lines = [encoded[i:i + 64] for i in range(0, len(encoded), 64)]
    if not lines or len(lines[-1]) == 64:
        lines.append(b"")
    return b"\n".join(lines) + b"\n"


# --- encryption -------------------------------------------------------------------------------------------------

def build_header(file_key, recipients):
    """The header bytes for ``file_key`` wrapped to each X25519 public key of ``recipients``."""
    out = [HEADER_LINE]
    for recipient in recipients:
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(recipient)
        if shared == bytes(32):
            raise AgeError("a recipient is a low-order point")
        wrap_key = _hkdf(shared, share + recipient.public_bytes_raw(), X25519_LABEL)
        body = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
        out.append(b"-> X25519 " + _b64(share) + b"\n" + _wrap_body(body))
    out.append(b"---")
    header = b"".join(out)
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, "sha256").digest()
    return header + b" " + _b64(mac) + b"\n"


class Encryptor:
    """Encrypt a stream to age recipients, writing the ciphertext to ``out`` (any object with ``write``).

    The header goes out at once; ``write`` seals each full 64 KiB chunk as soon as the next byte proves it is not
    the last; ``finish`` seals the last chunk (possibly a full one; empty only for an empty stream). Memory: one chunk.
    """

    def __init__(self, out, recipients):
        problem = crypto_problem()
        if problem:
            raise AgeError(problem)
        keys = [r if isinstance(r, X25519PublicKey) else parse_recipient(r) for r in recipients]
        if not keys:
            raise AgeError("no recipients")
        self.out = out
        file_key = os.urandom(16)
        nonce = os.urandom(NONCE)
        self.out.write(build_header(file_key, keys))
        self.out.write(nonce)
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._pending = bytearray()
        self._finished = False

    def _seal(self, data, last):
        if self._counter > LAST_COUNTER:
            raise AgeError("stream too long")
        self.out.write(self._aead.encrypt(_chunk_nonce(self._counter, last), bytes(data), None))
        self._counter += 1

    def write(self, data):
        if self._finished:
            raise AgeError("write after finish")
        view = memoryview(data)
        if self._pending:
            take = min(CHUNK - len(self._pending), len(view))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) == CHUNK and len(view):
                self._seal(self._pending, False)
                self._pending = bytearray()
        while len(view) > CHUNK:
            self._seal(view[:CHUNK], False)
            view = view[CHUNK:]
        if len(view):
            self._pending += view
        return len(data)

    def finish(self):
        if not self._finished:
            self._finished = True
            self._seal(self._pending, True)
            self._pending = bytearray()

    def flush(self):
        pass


def encrypt_bytes(data, recipients):
    """Encrypt ``data`` at once (tests and small files)."""
    out = bytearray()

    class _Buffer:
        @staticmethod
        def write(block):
            out.extend(block)

    encryptor = Encryptor(_Buffer(), recipients)
    encryptor.write(data)
    encryptor.finish()
    return bytes(out)


# --- decryption -------------------------------------------------------------------------------------------------

def _parse_header(header):
    """(stanzas, mac_input, mac) of a complete header ending in ``--- <mac>\\n``."""
    lines = header.split(b"\n")
    if lines[0] != MAGIC:
        raise AgeError("not an age v1 file (the first line is not age-encryption.org/v1)")
    stanzas = []
    index = 1
    while True:
        if index >= len(lines) - 1:
            raise AgeError("the header ends before its MAC line")
        line = lines[index]
        if line.startswith(b"--- "):
            mac = _unb64(line[4:])
            if len(mac) != 32 or index != len(lines) - 2 or lines[-1] != b"":
                raise AgeError("malformed header MAC line")
            mac_input = b"\n".join(lines[:index]) + b"\n---"
            return stanzas, mac_input, mac
        if not line.startswith(b"-> "):
            raise AgeError("malformed header: expected a stanza or the MAC line")
        args = line[3:].split(b" ")
        if not args or any(not arg for arg in args):
            raise AgeError("malformed stanza line in the header")
        index += 1
        body = []
        while True:
            if index >= len(lines) - 1:
                raise AgeError("the header ends inside a stanza")
            part = lines[index]
            index += 1
            if len(part) > 64:
                raise AgeError("malformed stanza body in the header")
            body.append(part)
            if len(part) < 64:
                break
        stanzas.append((args, _unb64(b"".join(body))))


def _unwrap(stanzas, identities):
    types = [args[0] for args, _body in stanzas]
    if b"scrypt" in types:
        raise AgeError("the file is encrypted with a passphrase (scrypt); only X25519 identities are supported")
    x25519 = [(args, body) for args, body in stanzas if args[0] == b"X25519"]
    if not x25519:
        raise NoIdentityMatch("the file has no X25519 recipient stanza; it was encrypted for a kind of key "
                              f"({', '.join(t.decode('ascii', 'replace') for t in types) or 'none'}) this "
                              "collection does not support")
    for args, body in x25519:
        if len(args) != 2 or len(body) != 32:
            raise AgeError("malformed X25519 stanza in the header")
        share = _unb64(args[1])
        if len(share) != 32:
            raise AgeError("malformed X25519 stanza in the header")
        for identity in identities:
            try:
                shared = identity.exchange(X25519PublicKey.from_public_bytes(share))
            except ValueError:  # cryptography refuses an all-zero shared secret
                shared = bytes(32)
            if shared == bytes(32):
                raise AgeError("the header holds a low-order X25519 share")
            salt = share + identity.public_key().public_bytes_raw()
            try:
                return ChaCha20Poly1305(_hkdf(shared, salt, X25519_LABEL)).decrypt(bytes(12), body, None)
            except InvalidTag:
                continue
    raise NoIdentityMatch(f"none of the identities given is a recipient of the file (it was encrypted for "
                          f"{len(x25519)} X25519 recipient(s)); give the identity that matches one of the "
                          "recipients in the manifest")


class Decryptor:
    """Incremental age decryption: ``feed(ciphertext) -> plaintext``, then ``finish() -> plaintext``.

    The header is parsed, the file key unwrapped with ``identities`` and the header MAC checked as soon as enough
    bytes came; every chunk is authenticated before any of its plaintext is returned. ``finish`` fails on a
    truncated stream. Memory: one chunk plus the header.
    """

    def __init__(self, identities):
        problem = crypto_problem()
        if problem:
            raise AgeError(problem)
        self.identities = list(identities)
        self._buffer = bytearray()
        self._aead = None
        self._counter = 0
        self._done = False
        self.header_size = None

    def _try_header(self):
        if self._buffer[:len(HEADER_LINE)] != HEADER_LINE[:len(self._buffer)]:
            raise AgeError("not an age v1 file (it does not start with age-encryption.org/v1)")
        pos = self._buffer.find(b"\n---")
        while pos >= 0:
            end = self._buffer.find(b"\n", pos + 1)
            if end < 0:
                break
            if self._buffer[pos + 4:pos + 5] == b" ":
                header = bytes(self._buffer[:end + 1])
                stanzas, mac_input, mac = _parse_header(header)
                file_key = _unwrap(stanzas, self.identities)
                expected = hmac.new(_hkdf(file_key, b"", b"header"), mac_input, "sha256").digest()
                if not hmac.compare_digest(expected, mac):
                    raise AgeError("the header MAC does not match: the header was changed or is corrupt")
                if len(self._buffer) < end + 1 + NONCE:
                    return False
                nonce = bytes(self._buffer[end + 1:end + 1 + NONCE])
                self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
                self.header_size = end + 1 + NONCE
                del self._buffer[:self.header_size]
                return True
            pos = self._buffer.find(b"\n---", pos + 1)
        if len(self._buffer) > MAX_HEADER:
            raise AgeError("no end of the age header within 1 MiB")
        return False

    def _open(self, data, last):
        try:
            return self._aead.decrypt(_chunk_nonce(self._counter, last), data, None)
        except InvalidTag:
            return None

    def feed(self, data):
        if self._done:
            if data:
                raise AgeError("data after the last chunk")
            return b""
        self._buffer += data
        if self._aead is None and not self._try_header():
            return b""
        out = []
        offset = 0
        # a full chunk followed by more bytes is not the last one
        while len(self._buffer) - offset > ENC_CHUNK:
            sealed = bytes(self._buffer[offset:offset + ENC_CHUNK])
            plain = self._open(sealed, False)
            if plain is None:
                if self._open(sealed, True) is not None:
                    raise AgeError("data after the last chunk")
                raise AgeError(f"chunk {self._counter} fails authentication: the file was changed or is corrupt")
            out.append(plain)
            self._counter += 1
            offset += ENC_CHUNK
        if offset:
            del self._buffer[:offset]
        return b"".join(out)

    def finish(self):
        if self._done:
            return b""
        if self._aead is None:
            raise AgeError("the file ends inside the age header (it is truncated or not an age file)")
        if len(self._buffer) < TAG:
            raise AgeError("the file is truncated (the last chunk is missing)")
        sealed = bytes(self._buffer)
        plain = self._open(sealed, True)
        if plain is None:
            if len(sealed) == ENC_CHUNK and self._open(sealed, False) is not None:
                raise AgeError("the file is truncated (it ends at a chunk boundary without its last chunk)")
            raise AgeError(f"chunk {self._counter} fails authentication: the file was changed, is corrupt or "
                           "truncated")
        if not plain and self._counter > 0:
            raise AgeError("the file ends with an empty last chunk (not a valid age file)")
        self._done = True
        self._buffer = bytearray()
        return plain


def decrypt_chunks(chunks, identities):
    """Yield the plaintext of the ciphertext ``chunks`` (an iterable of bytes)."""
    decryptor = Decryptor(identities)
    for block in chunks:
        plain = decryptor.feed(block)
        if plain:
            yield plain
    last = decryptor.finish()
    if last:
        yield last


def decrypt_bytes(data, identities):
    return b"".join(decrypt_chunks([data], identities))


class AgeReader:
    """A read-only binary file object with the plaintext of an age file (for gzip / zstd readers on top)."""

    def __init__(self, fileobj, identities, read_size=1 << 20):
        self._file = fileobj
        self._decryptor = Decryptor(identities)
        self._read_size = read_size
        self._plain = b""
        self._pos = 0
        self._eof = False
        self.closed = False

    def open_header(self):
        """Read until the header is checked (wrong identity, corrupt header: raise now, before anything else)."""
        while self._decryptor.header_size is None and not self._eof:
            self._more()
        if self._decryptor.header_size is None:
            self._decryptor.finish()

    def _more(self):
        block = self._file.read(self._read_size)
        if block:
            self._plain = self._plain[self._pos:] + self._decryptor.feed(block)
        else:
            self._plain = self._plain[self._pos:] + self._decryptor.finish()
            self._eof = True
        self._pos = 0

    def read(self, size=-1):
        if size is None or size < 0:
            parts = []
            while True:
                block = self.read(CHUNK * 16)
                if not block:
                    return b"".join(parts)
                parts.append(block)
        while len(self._plain) - self._pos < size and not self._eof:
            self._more()
        data = self._plain[self._pos:self._pos + size]
        self._pos += len(data)
        return data

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    @staticmethod
    def readable():
        return True

    @staticmethod
    def seekable():
        return False

    @staticmethod
    def writable():
        return False

    def close(self):
        if not self.closed:
            self.closed = True
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# --- the identities of this module run -------------------------------------------------------------------------

_REGISTERED = []


def register_identities(keys):
    """Make ``keys`` the identities every reader of this process decrypts with (a module registers the user's
    identity once, before it reads a set; see ``_common.prepare_decryption``)."""
    _REGISTERED[:] = list(keys)


def registered_identities():
    return list(_REGISTERED)


def is_age_file(path):
    """Whether ``path`` starts with the age v1 header line."""
    with open(path, "rb") as handle:
        return handle.read(len(HEADER_LINE)) == HEADER_LINE


def check_identities(path, identities):
    """Open the header of the age file ``path`` with ``identities``; raises AgeError / NoIdentityMatch."""
    with AgeReader(open(path, "rb"), identities, read_size=64 * 1024) as reader:
        reader.open_header()
