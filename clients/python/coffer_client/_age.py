"""The age recipient an export is encrypted to, from what ``--recipient`` names: a recipient itself, a
recipients file (one ``age1…`` or ``ssh-ed25519 …`` a line, ``#`` comments), or the identity file
``age-keygen -o key.txt`` writes (comments, then ``AGE-SECRET-KEY-1…``), whose public key is derived here.

The derivation is X25519 (RFC 7748) and Bech32 (BIP 173), as age defines its keys, in plain Python so the
client needs no native package. An identity is a private key: no message here ever contains one, or a line
of the file it came from.
"""

from __future__ import annotations

from pathlib import Path

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_P = 2**255 - 19
_A24 = 121665
_IDENTITY_HRP = "age-secret-key-"
#: the file sizes worth reading: a recipients or identity file is a few hundred bytes
_MAX_FILE = 64 * 1024


class RecipientError(ValueError):
    """``--recipient`` names nothing an export can be encrypted to (the message never holds a key)."""


def _polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert(data: list[int] | bytes, from_bits: int, to_bits: int, pad: bool) -> list[int] | None:
    acc, bits, out, maxv = 0, 0, [], (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad and bits:
        out.append((acc << (to_bits - bits)) & maxv)
    elif not pad and (bits >= from_bits or (acc << (to_bits - bits)) & maxv):
        return None
    return out


def bech32_decode(text: str) -> tuple[str, bytes] | None:
    """``(hrp, data)`` of a Bech32 string (any case, not mixed), or None if it is not one."""
    if text.lower() != text and text.upper() != text:
        return None
    text = text.lower()
    hrp, sep, rest = text.rpartition("1")
    if not sep or not hrp or len(rest) < 6 or any(c not in _BECH32 for c in rest):
        return None
    values = [_BECH32.index(c) for c in rest]
    if _polymod(_hrp_expand(hrp) + values) != 1:
        return None
    data = _convert(values[:-6], 5, 8, pad=False)
    return None if data is None else (hrp, bytes(data))


def bech32_encode(hrp: str, data: bytes) -> str:
    values = _convert(data, 8, 5, pad=True) or []
    poly = _polymod(_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32[v] for v in values + checksum)


def x25519_base(scalar: bytes) -> bytes:
    """X25519(scalar, 9): the public key of a private key (RFC 7748 §5, the Montgomery ladder)."""
    k = bytearray(scalar)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    n = int.from_bytes(k, "little")
    x1, x2, z2, x3, z3, swap = 9, 1, 0, 9, 1, 0
    for t in reversed(range(255)):
        bit = (n >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = (x2 + z2) % _P, (x2 - z2) % _P
        aa, bb = a * a % _P, b * b % _P
        e = (aa - bb) % _P
        c, d = (x3 + z3) % _P, (x3 - z3) % _P
        da, cb = d * a % _P, c * b % _P
        x3, z3 = (da + cb) ** 2 % _P, x1 * (da - cb) ** 2 % _P
        x2, z2 = aa * bb % _P, e * (aa + _A24 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def public_key(identity: str) -> str:
    """The ``age1…`` recipient of an ``AGE-SECRET-KEY-1…`` identity."""
    decoded = bech32_decode(identity.strip())
    if decoded is None or decoded[0] != _IDENTITY_HRP or len(decoded[1]) != 32:
        raise RecipientError("not a valid age identity (AGE-SECRET-KEY-1…)")
    return bech32_encode("age", x25519_base(decoded[1]))


def _is_recipient(text: str) -> bool:
    if text.startswith("ssh-ed25519 "):
        return True
    decoded = bech32_decode(text)
    return decoded is not None and decoded[0] == "age" and len(decoded[1]) == 32


def recipients_in(text: str, source: str) -> list[str]:
    """Every recipient ``text`` names, identities turned into their public keys, in order, once each.

    A ``# public key: age1…`` comment (as age-keygen writes) must agree with the identity it describes."""
    found: list[str] = []
    stated: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line.startswith("#"):
            comment = line[1:].strip()
            if comment.lower().startswith("public key:"):
                stated.append(comment.split(":", 1)[1].strip())
            continue
        if not line:
            continue
        if line.upper().startswith("AGE-SECRET-KEY-1"):
            try:
                found.append(public_key(line))
            except RecipientError:
                raise RecipientError(f"line {number} of {source} is not a valid age identity "
                                     "(AGE-SECRET-KEY-1…)") from None
        elif _is_recipient(line):
            found.append(line)
        else:
            raise RecipientError(f"line {number} of {source} is neither an age recipient (age1…), an "
                                 "ssh-ed25519 public key, nor an age identity (AGE-SECRET-KEY-1…)")
    for public in stated:
        if public not in found:
            raise RecipientError(f"{source} says '# public key: {public[:80]}', which is not the public key of "
                                 "the identity it holds: is the file intact?")
    return list(dict.fromkeys(found))


def recipient_from(value: str) -> str:
    """The one recipient ``--recipient VALUE`` names: VALUE itself, or the file at VALUE."""
    value = value.strip()
    if value.upper().startswith("AGE-SECRET-KEY-"):
        raise RecipientError("that is an age identity (a private key): it must not be on the command line, "
                             "where ps and shell history keep it; give the file that holds it (key.txt)")
    path = Path(value).expanduser()
    if not path.is_file():
        if value.startswith(("age1", "ssh-")):
            return value  # a recipient itself: the server says whether it is one
        raise RecipientError(f"{value}: no such file, and not a recipient (age1…, ssh-ed25519 …)")
    if path.stat().st_size > _MAX_FILE:
        raise RecipientError(f"{value} is larger than {_MAX_FILE // 1024} KiB: not a key or recipients file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipientError(f"cannot read {value}: {getattr(exc, 'strerror', None) or 'not a text file'}") from None
    found = recipients_in(text, value)
    if not found:
        raise RecipientError(f"{value} holds no recipient and no identity")
    if len(found) > 1:
        raise RecipientError(f"{value} names {len(found)} recipients; an export is encrypted to one: give a file "
                             "with one, or the recipient itself")
    return found[0]
