# Copyright (c) authentik_ops.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The age v1 implementation (_age.py) and its use by the sink: round trips, chunk boundaries, wrong keys, tampering,
truncation, and interoperability with the reference `age` binary (Debian package `age`: tests/testbed/bootstrap.sh
installs it; without it these tests fail, they never skip)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess

import pytest

from ansible_collections.authentik_ops.backup.plugins.module_utils import _age
from ansible_collections.authentik_ops.backup.plugins.module_utils._age import (
    CHUNK,
    ENC_CHUNK,
    AgeError,
    AgeReader,
    NoIdentityMatch,
)
from ansible_collections.authentik_ops.backup.plugins.module_utils._sink import (
    AtomicSink,
    SinkError,
    open_decompressed,
)

AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")


@pytest.fixture(scope="module")
def age_binary():
    """The reference implementation is a prerequisite of the test suite, not an option."""
    if AGE is None or AGE_KEYGEN is None:
        pytest.fail("the reference age binaries (age, age-keygen) are not installed: run sudo tests/testbed/bootstrap.sh"
                    " (Debian package age)")


needs_age = pytest.mark.usefixtures("age_binary")

# A key pair made by the reference `age-keygen` (known answer: `age-keygen -y` printed this recipient).
SPEC_IDENTITY = "AGE-SECRET-KEY-1ME24KKQC57RMAGFNCG2QNKZ9PKSGYEZK8MPSPHLZ2L4PQF59Z5HSX6FQ8X"
SPEC_RECIPIENT = "age1mtnrhvru3uqmlgw7qnhh2mw42nlh4jj47wzduhewaxdpwdar2v0s6mfnja"

SIZES = [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7]


@pytest.fixture(scope="module")
def pair():
    return _age.generate_identity()


def _header_end(sealed):
    return sealed.index(b"\n", sealed.index(b"\n--- ") + 1) + 1


def _ids(identity):
    return _age.parse_identities(identity)


def test_spec_key_pair():
    assert _age.public_of(_age.parse_identity(SPEC_IDENTITY)) == SPEC_RECIPIENT
    assert _age.identity_to_string(_age.parse_identity(SPEC_IDENTITY)) == SPEC_IDENTITY


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_chunk_boundaries(pair, size):
    identity, recipient = pair
    data = os.urandom(size)
    sealed = _age.encrypt_bytes(data, [recipient])
    chunks = max(1, -(-size // CHUNK))
    header_end = _header_end(sealed)
    assert len(sealed) == header_end + _age.NONCE + size + chunks * _age.TAG
    assert _age.decrypt_bytes(sealed, _ids(identity)) == data


@pytest.mark.parametrize("feed", [1, 7, 4096, ENC_CHUNK, ENC_CHUNK + 1, 1 << 20])
def test_decrypt_any_feed_size(pair, feed):
    identity, recipient = pair
    data = os.urandom(2 * CHUNK + 123)
    sealed = _age.encrypt_bytes(data, [recipient])
    pieces = [sealed[i:i + feed] for i in range(0, len(sealed), feed)]
    assert b"".join(_age.decrypt_chunks(pieces, _ids(identity))) == data


@pytest.mark.parametrize("write", [1, 1000, CHUNK, CHUNK + 1, 5 * CHUNK])
def test_encrypt_any_write_size(pair, write):
    identity, recipient = pair
    data = os.urandom(4 * CHUNK)
    out = io.BytesIO()
    encryptor = _age.Encryptor(out, [recipient])
    for i in range(0, len(data), write):
        encryptor.write(data[i:i + write])
    encryptor.finish()
    assert _age.decrypt_bytes(out.getvalue(), _ids(identity)) == data
    # the same plaintext cut differently gives the same chunking (one full last chunk, no empty chunk)
    assert len(out.getvalue()) == len(_age.encrypt_bytes(data, [recipient]))


def test_several_recipients(pair):
    other_identity, other_recipient = _age.generate_identity()
    sealed = _age.encrypt_bytes(b"secret", [pair[1], other_recipient])
    assert sealed.count(b"\n-> X25519 ") == 2
    assert _age.decrypt_bytes(sealed, _ids(pair[0])) == b"secret"
    assert _age.decrypt_bytes(sealed, _ids(other_identity)) == b"secret"


def test_wrong_identity(pair):
    sealed = _age.encrypt_bytes(b"secret", [pair[1]])
    wrong, _pub = _age.generate_identity()
    with pytest.raises(NoIdentityMatch, match="none of the identities"):
        _age.decrypt_bytes(sealed, _ids(wrong))


def test_error_messages_never_show_the_identity(pair):
    identity = pair[0]
    broken = identity[:-3] + ("QQQ" if not identity.endswith("QQQ") else "PPP")
    with pytest.raises(AgeError) as info:
        _age.parse_identities(f"# comment\n{broken}\n")
    assert broken not in str(info.value) and identity not in str(info.value)
    assert "line 2" in str(info.value)


@pytest.mark.parametrize("bad", ["", "age1", "age1qqqq", SPEC_RECIPIENT.upper(), SPEC_RECIPIENT[:-1] + "x",
                                 "npub1" + SPEC_RECIPIENT[4:],
                                 "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO"])
def test_bad_recipients(bad):
    assert _age.recipient_problem(bad)


@pytest.mark.parametrize("where", ["header", "mac", "nonce", "first chunk", "last chunk", "tag"])
def test_tampered_byte(pair, where):
    identity, recipient = pair
    data = os.urandom(CHUNK + 500)
    sealed = bytearray(_age.encrypt_bytes(data, [recipient]))
    header_end = _header_end(sealed)
    offsets = {"header": sealed.index(b"X25519") + 20, "mac": header_end - 5, "nonce": header_end + 3,
               "first chunk": header_end + _age.NONCE + 100, "last chunk": len(sealed) - 100,
               "tag": len(sealed) - 1}
    sealed[offsets[where]] ^= 0x01
    with pytest.raises(AgeError):
        _age.decrypt_bytes(bytes(sealed), _ids(identity))


@pytest.mark.parametrize("size", [0, 100, CHUNK, 2 * CHUNK + 9])
def test_truncated(pair, size):
    identity, recipient = pair
    sealed = _age.encrypt_bytes(os.urandom(size), [recipient])
    header_end = _header_end(sealed)
    cuts = {len(sealed) - 1, len(sealed) - _age.TAG, header_end + _age.NONCE, header_end, header_end - 3, 10}
    if size > CHUNK:
        cuts.add(header_end + _age.NONCE + ENC_CHUNK)  # at a chunk boundary: the last chunk is missing
    for cut in sorted(cuts):
        with pytest.raises(AgeError):
            _age.decrypt_bytes(sealed[:cut], _ids(identity))


def test_trailing_data_refused(pair):
    sealed = _age.encrypt_bytes(b"x" * 10, [pair[1]])
    with pytest.raises(AgeError):
        _age.decrypt_bytes(sealed + b"more", _ids(pair[0]))


def test_not_age():
    with pytest.raises(AgeError, match="not an age"):
        _age.decrypt_bytes(b"-- PostgreSQL database cluster dump --\n", [_age.parse_identity(SPEC_IDENTITY)])


def test_reader_reads_in_pieces(pair):
    identity, recipient = pair
    data = os.urandom(3 * CHUNK + 17)
    reader = AgeReader(io.BytesIO(_age.encrypt_bytes(data, [recipient])), _ids(identity), read_size=1000)
    reader.open_header()
    got = []
    while True:
        block = reader.read(777)
        if not block:
            break
        got.append(block)
    assert b"".join(got) == data


# --- the sink: compress -> encrypt -> sha256 -> disk --------------------------------------------------------------

@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_sink_encrypts_after_compression(tmp_path, pair, compression):
    identity, recipient = pair
    data = b"CREATE TABLE secret (password_hash text);\n" * 20000
    dest = tmp_path / f"postgres.sql{ {'none': '', 'gzip': '.gz', 'zstd': '.zst'}[compression] }.age"
    with AtomicSink(str(dest), compression, recipients=[recipient]) as sink:
        for i in range(0, len(data), 50_000):
            sink.write(data[i:i + 50_000])
            partials = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
            assert partials and partials[0].read_bytes().startswith(b"age-encryption.org/v1\n")
        stats = sink.commit()
    on_disk = dest.read_bytes()
    assert on_disk.startswith(b"age-encryption.org/v1\n") and b"password_hash" not in on_disk
    assert stats["sha256"] == hashlib.sha256(on_disk).hexdigest() and stats["size"] == len(on_disk)
    assert stats["encryption"] == {"scheme": "age", "recipients": [recipient]}
    plain = _age.decrypt_bytes(on_disk, _ids(identity))
    if compression == "gzip":
        assert gzip.decompress(plain) == data
    elif compression == "none":
        assert plain == data
    with open_decompressed(str(dest), identities=_ids(identity)) as handle:
        assert handle.read() == data
    if compression != "zstd":  # smaller than zstd's frame: the plain sink would differ only by the age layer
        assert len(on_disk) > len(plain)


def test_sink_without_recipients_has_no_encryption(tmp_path):
    dest = tmp_path / "x"
    with AtomicSink(str(dest)) as sink:
        sink.write(b"plain")
        stats = sink.commit()
    assert "encryption" not in stats


def test_sink_bad_recipient_touches_nothing(tmp_path):
    with pytest.raises(SinkError, match="encrypt_recipients"):
        AtomicSink(str(tmp_path / "x.age"), "none", recipients=["age1nope"])
    assert not list(tmp_path.iterdir())


def test_open_decompressed_needs_an_identity(tmp_path, pair):
    dest = tmp_path / "x.gz.age"
    with AtomicSink(str(dest), "gzip", recipients=[pair[1]]) as sink:
        sink.write(b"data")
        sink.commit()
    _age.register_identities([])
    with pytest.raises(SinkError, match="encrypted with age"):
        open_decompressed(str(dest))
    wrong, _pub = _age.generate_identity()
    with pytest.raises(SinkError, match="none of the identities"):
        open_decompressed(str(dest), identities=_ids(wrong))
    _age.register_identities(_ids(pair[0]))
    try:
        with open_decompressed(str(dest)) as handle:
            assert handle.read() == b"data"
    finally:
        _age.register_identities([])


# --- interoperability with the reference implementation ----------------------------------------------------------

@needs_age
@pytest.mark.parametrize("size", [0, 5, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_age_binary_decrypts_ours(tmp_path, pair, size):
    identity, recipient = pair
    key = tmp_path / "key.txt"
    key.write_text(f"# created: test\n# public key: {recipient}\n{identity}\n")
    data = os.urandom(size)
    sealed = tmp_path / "f.age"
    sealed.write_bytes(_age.encrypt_bytes(data, [recipient, _age.generate_identity()[1]]))
    result = subprocess.run([AGE, "-d", "-i", str(key), str(sealed)], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


@needs_age
@pytest.mark.parametrize("size", [0, 5, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_we_decrypt_age_binary(tmp_path, pair, size):
    identity, recipient = pair
    data = os.urandom(size)
    result = subprocess.run([AGE, "-r", recipient, "-r", _age.generate_identity()[1]], input=data,
                            capture_output=True, check=True)
    assert _age.decrypt_bytes(result.stdout, _ids(identity)) == data


@needs_age
def test_age_keygen_identity_file(tmp_path):
    keygen = AGE_KEYGEN
    key = tmp_path / "key.txt"
    subprocess.run([keygen, "-o", str(key)], capture_output=True, check=True)
    recipient = subprocess.run([keygen, "-y", str(key)], capture_output=True, check=True, text=True).stdout.strip()
    (identity,) = _age.parse_identities(key.read_text())
    assert _age.public_of(identity) == recipient


@needs_age
def test_age_binary_refuses_tampered_ours(tmp_path, pair):
    identity, recipient = pair
    key = tmp_path / "key.txt"
    key.write_text(identity + "\n")
    sealed = bytearray(_age.encrypt_bytes(os.urandom(1000), [recipient]))
    sealed[-20] ^= 1
    path = tmp_path / "f.age"
    path.write_bytes(bytes(sealed))
    result = subprocess.run([AGE, "-d", "-i", str(key), str(path)], capture_output=True, check=False)
    assert result.returncode != 0
