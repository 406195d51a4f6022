"""Secure aggregation (Bonawitz et al. 2017): the server learns the sum, not the updates.

Each client ``u`` sends a *masked* input instead of its update ``x_u``::

    y_u = x_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)      (mod 2^32)

``s_uv = s_vu`` is a seed that u and v agree on by Diffie-Hellman, so the pairwise masks
cancel in ``sum_u y_u``; ``b_u`` is a private self-mask. Before masking, every client splits
its DH secret key and ``b_u`` into t-of-n Shamir shares, one per other client, encrypted
for that client and relayed by the server. After the masked inputs arrive the server asks
the survivors, for every client, for exactly one of the two: shares of ``b_u`` if ``u``'s input
arrived (to remove its self-mask), shares of ``u``'s DH key if it dropped out (to remove the
pairwise masks it would have cancelled). The server never gets both for one client, so it
never sees an unmasked ``x_u``; the sum it computes equals ``sum x_u`` exactly.

The teaching version here follows the protocol's four rounds with honest-but-curious
parties, no signatures and no consistency round:

================================  ==============================================================
fixed point                       :func:`encode` / :func:`decode`: ``round(x * scale) mod 2^32``
key agreement                     Diffie-Hellman in the 2048-bit MODP group of RFC 3526 (g = 2)
PRG                               numpy's PCG64 seeded with SHA-256 of the shared secret
secret sharing                    Shamir over the prime 2^521 - 1 (:func:`shamir_share`)
encryption of shares              SHA-256 keystream XOR + HMAC-SHA-256 tag (a stand-in for AES-GCM)
================================  ==============================================================

Everything is seeded: the same seed gives the same keys, masks and sum. It is a model of the
protocol to read and test, not production cryptography (use a vetted library for that).
Chapter 09; Gboard combines it with DP-FTRL (chapter 10).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DH_GENERATOR",
    "DH_PRIME",
    "MODULUS",
    "SHAMIR_PRIME",
    "SecAggClient",
    "SecAggServer",
    "SecureAggregationError",
    "SecureWeightedMean",
    "decode",
    "encode",
    "prg_mask",
    "secure_sum",
    "shamir_reconstruct",
    "shamir_share",
]

#: Arithmetic of the masked inputs: integers modulo 2^32 (uint32 wrap-around).
MODULUS = 2**32
#: RFC 3526 group 14: the 2048-bit MODP prime, generator 2.
DH_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
    "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
DH_GENERATOR = 2
#: A Mersenne prime larger than every secret shared (256-bit keys, 128-bit seeds).
SHAMIR_PRIME = 2**521 - 1


class SecureAggregationError(RuntimeError):
    """The protocol cannot finish (too few survivors for the threshold, overflow, ...)."""


# ------------------------------------------------------------------------- fixed point


def encode(x: np.ndarray, scale: float) -> np.ndarray:
    """Fixed point mod 2^32: ``round(x * scale)`` as two's complement in uint32.

    Raises if a value does not fit in a signed 32-bit integer.
    """
    q = np.rint(np.asarray(x, dtype=np.float64) * scale)
    if q.size and (q.max() > 2**31 - 1 or q.min() < -(2**31)):
        raise SecureAggregationError(
            f"encode: values up to {np.abs(x).max():.4g} times scale {scale} overflow 32 bits"
        )
    return q.astype(np.int64).astype(np.uint32)


def decode(v: np.ndarray, scale: float) -> np.ndarray:
    """Inverse of :func:`encode` (for a sum, as long as it did not wrap): float64."""
    signed = np.asarray(v, dtype=np.uint32).astype(np.int64)
    signed[signed >= 2**31] -= 2**32
    return signed / scale


# ------------------------------------------------------------------------- primitives


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def _seed_from(*parts: int | bytes | str) -> int:
    h = hashlib.sha256()
    for part in parts:
        data = (
            part
            if isinstance(part, bytes)
            else _int_bytes(part)
            if isinstance(part, int)
            else part.encode()
        )
        h.update(len(data).to_bytes(4, "big") + data)
    return int.from_bytes(h.digest()[:16], "big")


def prg_mask(seed: int, size: int) -> np.ndarray:
    """``size`` pseudo-random uint32 values from ``seed`` (PCG64): the mask PRG."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.integers(0, 2**32, size=size, dtype=np.uint64).astype(np.uint32)


def shamir_share(
    secret: int, threshold: int, ids: Sequence[int], rng: np.random.Generator
) -> dict[int, int]:
    """t-of-n shares of ``secret``: the values at x = id + 1 of a random degree t-1 polynomial
    over GF(2^521 - 1) whose constant term is the secret."""
    if not 0 <= secret < SHAMIR_PRIME:
        raise ValueError("shamir_share: the secret must be in [0, 2^521 - 1)")
    if not 1 <= threshold <= len(ids):
        raise ValueError(f"shamir_share: threshold {threshold} must be in [1, {len(ids)}]")
    coeffs = [secret] + [
        int.from_bytes(rng.bytes(66), "big") % SHAMIR_PRIME for _ in range(threshold - 1)
    ]
    shares = {}
    for i in ids:
        x, y = i + 1, 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % SHAMIR_PRIME
        shares[i] = y
    return shares


def shamir_reconstruct(shares: dict[int, int]) -> int:
    """The secret from at least t shares ``{id: value}`` (Lagrange interpolation at 0)."""
    secret = 0
    xs = {i: i + 1 for i in shares}
    for i, y in shares.items():
        num, den = 1, 1
        for j in shares:
            if j != i:
                num = num * (-xs[j]) % SHAMIR_PRIME
                den = den * (xs[i] - xs[j]) % SHAMIR_PRIME
        secret = (secret + y * num * pow(den, -1, SHAMIR_PRIME)) % SHAMIR_PRIME
    return secret


def _keystream(key: bytes, length: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(key + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:length])


def _encrypt(key: int, plaintext: bytes) -> bytes:
    k = hashlib.sha256(b"enc" + _int_bytes(key)).digest()
    body = bytes(a ^ b for a, b in zip(plaintext, _keystream(k, len(plaintext)), strict=True))
    tag = hmac.new(hashlib.sha256(b"mac" + _int_bytes(key)).digest(), body, "sha256").digest()
    return body + tag


def _decrypt(key: int, ciphertext: bytes) -> bytes:
    body, tag = ciphertext[:-32], ciphertext[-32:]
    expected = hmac.new(hashlib.sha256(b"mac" + _int_bytes(key)).digest(), body, "sha256").digest()
    if not hmac.compare_digest(tag, expected):
        raise SecureAggregationError("decrypt: authentication tag mismatch")
    k = hashlib.sha256(b"enc" + _int_bytes(key)).digest()
    return bytes(a ^ b for a, b in zip(body, _keystream(k, len(body)), strict=True))


def _pack(*values: int) -> bytes:
    return b"".join(v.to_bytes(66, "big") for v in values)


def _unpack(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 66], "big") for i in range(0, len(data), 66)]


# ------------------------------------------------------------------------- the parties


class SecAggClient:
    """One user of the protocol. ``seed`` makes its keys and masks reproducible."""

    def __init__(self, uid: int, seed: int) -> None:
        self.uid = int(uid)
        self._rng = np.random.default_rng([seed, self.uid, 0x5EC])
        self._c_sk = self._secret()  # encrypts shares
        self._s_sk = self._secret()  # agrees the mask seeds
        self._b = int.from_bytes(self._rng.bytes(16), "big")  # self-mask seed
        self._public: dict[int, tuple[int, int]] = {}
        self._held: dict[int, tuple[int, int]] = {}  # v -> (share of s_sk_v, share of b_v)
        self._agreed: dict[tuple[int, int], int] = {}

    def _agree(self, v: int, which: int) -> int:
        """DH shared secret with user v: which = 0 (encryption key), 1 (mask seed)."""
        if (v, which) not in self._agreed:
            mine = self._c_sk if which == 0 else self._s_sk
            self._agreed[v, which] = pow(self._public[v][which], mine, DH_PRIME)
        return self._agreed[v, which]

    def _secret(self) -> int:
        return int.from_bytes(self._rng.bytes(32), "big") | 1

    def advertise_keys(self) -> tuple[int, int]:
        """Round 0: public keys (g^c_sk, g^s_sk)."""
        return pow(DH_GENERATOR, self._c_sk, DH_PRIME), pow(DH_GENERATOR, self._s_sk, DH_PRIME)

    def share_keys(self, public: dict[int, tuple[int, int]], threshold: int) -> dict[int, bytes]:
        """Round 1: encrypted shares of ``s_sk`` and ``b`` for every other user."""
        self._public = dict(public)
        ids = sorted(public)
        s_shares = shamir_share(self._s_sk, threshold, ids, self._rng)
        b_shares = shamir_share(self._b, threshold, ids, self._rng)
        self._held[self.uid] = (s_shares[self.uid], b_shares[self.uid])
        out = {}
        for v in ids:
            if v != self.uid:
                out[v] = _encrypt(self._agree(v, 0), _pack(self.uid, v, s_shares[v], b_shares[v]))
        return out

    def masked_input(self, x: np.ndarray, ciphertexts: dict[int, bytes]) -> np.ndarray:
        """Round 2: store the shares received, return ``y_u`` (uint32)."""
        for v, ct in ciphertexts.items():
            src, dst, s_share, b_share = _unpack(_decrypt(self._agree(v, 0), ct))
            if (src, dst) != (v, self.uid):
                raise SecureAggregationError(f"client {self.uid}: share {src}->{dst} misrouted")
            self._held[v] = (s_share, b_share)
        y = np.asarray(x, dtype=np.uint32) + prg_mask(self._b, len(x))
        for v in sorted(self._public):
            if v == self.uid:
                continue
            mask = prg_mask(_seed_from(self._agree(v, 1)), len(x))
            y = y + mask if v > self.uid else y - mask  # uint32 wraps: arithmetic mod 2^32
        return y

    def unmask(self, survivors: Sequence[int], dropped: Sequence[int]) -> dict[str, dict[int, int]]:
        """Round 3: shares of ``b_v`` for the survivors, of ``s_sk_v`` for the dropped."""
        overlap = set(survivors) & set(dropped)
        if overlap:
            raise SecureAggregationError(
                f"client {self.uid}: refuses to reveal both shares of users {sorted(overlap)}"
            )
        return {
            "b": {v: self._held[v][1] for v in survivors if v in self._held},
            "s_sk": {v: self._held[v][0] for v in dropped if v in self._held},
        }


@dataclass
class SecAggServer:
    """The aggregator. ``received`` logs every message, as (round, sender, value)."""

    threshold: int
    received: list[tuple[str, int, Any]] = field(default_factory=list)

    def aggregate(
        self,
        clients: Sequence[SecAggClient],
        inputs: dict[int, np.ndarray],
        drop_before_input: Sequence[int] = (),
        drop_before_unmask: Sequence[int] = (),
    ) -> np.ndarray:
        """Run rounds 0-3 and return ``sum_u x_u mod 2^32`` over the users whose masked input
        arrived. ``inputs`` are the encoded (uint32) updates, used only inside the clients."""
        by_id = {c.uid: c for c in clients}
        public = {}
        for c in clients:  # round 0
            public[c.uid] = c.advertise_keys()
            self.received.append(("advertise", c.uid, public[c.uid]))
        self._need(len(public), "advertise keys")
        mailbox: dict[int, dict[int, bytes]] = {u: {} for u in by_id}
        for c in clients:  # round 1: the server only relays ciphertexts
            for v, ct in c.share_keys(public, self.threshold).items():
                self.received.append(("share", c.uid, ct))
                mailbox[v][c.uid] = ct
        u2 = [u for u in sorted(by_id) if u not in set(drop_before_input)]
        self._need(len(u2), "send masked inputs")
        masked = {}
        for u in u2:  # round 2
            masked[u] = by_id[u].masked_input(inputs[u], mailbox[u])
            self.received.append(("masked_input", u, masked[u].copy()))
        dropped = [u for u in sorted(by_id) if u not in masked]
        u3 = [u for u in u2 if u not in set(drop_before_unmask)]
        self._need(len(u3), "unmask")
        b_shares: dict[int, dict[int, int]] = {u: {} for u in masked}
        s_shares: dict[int, dict[int, int]] = {u: {} for u in dropped}
        for w in u3:  # round 3
            reply = by_id[w].unmask(sorted(masked), dropped)
            self.received.append(("unmask", w, reply))
            for v, share in reply["b"].items():
                b_shares[v][w] = share
            for v, share in reply["s_sk"].items():
                s_shares[v][w] = share
        size = len(next(iter(masked.values())))
        total = np.zeros(size, dtype=np.uint32)
        for u in masked:
            total += masked[u]
        for u in masked:  # remove the self-masks of the users whose input arrived
            total -= prg_mask(shamir_reconstruct(b_shares[u]), size)
        for u in dropped:  # cancel the pairwise masks the dropped users left behind
            s_sk = shamir_reconstruct(s_shares[u])
            for v in masked:
                seed = _seed_from(pow(public[v][1], s_sk, DH_PRIME))
                mask = prg_mask(seed, size)
                total = total - mask if v < u else total + mask  # v added +mask if v < u
        return total

    def _need(self, count: int, stage: str) -> None:
        if count < self.threshold:
            raise SecureAggregationError(
                f"secure aggregation: only {count} users left to {stage}, "
                f"fewer than the threshold {self.threshold}"
            )


def secure_sum(
    inputs: dict[int, np.ndarray],
    threshold: int,
    seed: int = 0,
    drop_before_input: Sequence[int] = (),
    drop_before_unmask: Sequence[int] = (),
) -> tuple[np.ndarray, SecAggServer]:
    """Run the protocol over ``{uid: uint32 vector}``; return (sum mod 2^32, the server)."""
    clients = [SecAggClient(u, seed) for u in sorted(inputs)]
    server = SecAggServer(threshold)
    total = server.aggregate(clients, inputs, drop_before_input, drop_before_unmask)
    return total, server


class SecureWeightedMean:
    """FedAvg's weighted mean computed with secure aggregation (an :class:`Aggregator`).

    Each client encodes ``n_k delta_k`` in fixed point (``scale``); the protocol returns
    the exact sum mod 2^32; the server divides by ``sum n_k`` (the example counts are public).
    ``threshold`` defaults to a majority of the round's reporters. In this simulation the
    deltas pass through the engine before masking; :class:`SecAggServer` is the part that
    models what a real server would see.
    """

    def __init__(self, scale: float = 2.0**16, threshold: int | None = None, seed: int = 0) -> None:
        self.scale, self.threshold, self.seed = scale, threshold, seed
        self.last_server_: SecAggServer | None = None

    def aggregate(self, updates, ctx):
        inputs = {u.cid: encode(u.num_examples * u.delta, self.scale) for u in updates}
        t = self.threshold or len(inputs) // 2 + 1
        total, self.last_server_ = secure_sum(inputs, t, seed=self.seed * 1_000_003 + ctx.round)
        count = sum(u.num_examples for u in updates)
        return (decode(total, self.scale) / count).astype(np.float32)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def __repr__(self) -> str:
        return f"SecureWeightedMean(scale={self.scale})"
