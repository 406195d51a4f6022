"""Secure aggregation: exact sums with and without dropouts; the server sees only masks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl.federated import ClientUpdate, WeightedMean
from tinyodl.federated.secure import (
    SecAggClient,
    SecureAggregationError,
    SecureWeightedMean,
    decode,
    encode,
    prg_mask,
    secure_sum,
    shamir_reconstruct,
    shamir_share,
)


def _inputs(n=5, d=64, seed=0):
    rng = np.random.default_rng(seed)
    return {u: encode(rng.normal(0, 0.5, d), 2**16) for u in range(n)}


def _plain_sum(inputs, users):
    total = np.zeros(len(next(iter(inputs.values()))), dtype=np.uint32)
    for u in users:
        total += inputs[u]
    return total


def test_fixed_point_round_trip_and_overflow():
    x = np.array([0.5, -0.25, 1e-5, -3.0])
    np.testing.assert_allclose(decode(encode(x, 2**16), 2**16), x, atol=2**-17)
    assert encode(np.array([-1.0]), 1.0)[0] == 2**32 - 1  # two's complement
    with pytest.raises(SecureAggregationError, match="overflow"):
        encode(np.array([1e6]), 2**16)


@settings(max_examples=20, deadline=None)
@given(secret=st.integers(0, 2**256), t=st.integers(1, 5), seed=st.integers(0, 1000))
def test_shamir_any_t_shares_recover_the_secret(secret, t, seed):
    rng = np.random.default_rng(seed)
    ids = list(range(6))
    shares = shamir_share(secret, t, ids, rng)
    pick = rng.choice(6, size=t, replace=False)
    assert shamir_reconstruct({int(i): shares[int(i)] for i in pick}) == secret
    if t > 1:  # t - 1 shares give (with overwhelming probability) something else
        fewer = {int(i): shares[int(i)] for i in pick[: t - 1]}
        assert shamir_reconstruct(fewer) != secret


def test_sum_is_exact_without_dropouts():
    inputs = _inputs()
    total, _ = secure_sum(inputs, threshold=3, seed=1)
    np.testing.assert_array_equal(total, _plain_sum(inputs, inputs))


@pytest.mark.parametrize(
    "before_input, before_unmask", [([1], []), ([], [4]), ([0, 3], [2]), ([4], [0])]
)
def test_sum_is_exact_with_dropouts(before_input, before_unmask):
    inputs = _inputs(n=6)
    total, _ = secure_sum(
        inputs, 3, seed=2, drop_before_input=before_input, drop_before_unmask=before_unmask
    )
    arrived = [u for u in inputs if u not in before_input]
    np.testing.assert_array_equal(total, _plain_sum(inputs, arrived))


def test_the_server_never_holds_an_unmasked_update():
    inputs = _inputs(n=5, d=256)
    total, server = secure_sum(inputs, 3, seed=3, drop_before_input=[2])
    kinds = {k for k, _, _ in server.received}
    assert kinds == {"advertise", "share", "masked_input", "unmask"}
    raw = {u: inputs[u].tobytes() for u in inputs}
    revealed: dict[int, set[str]] = {}
    for kind, sender, value in server.received:
        if kind == "masked_input":
            x = inputs[sender]
            # y - x is a mask: uniform mod 2^32, so (nearly) no coordinate of y equals x
            assert np.mean(value == x) < 0.01
            assert np.mean(value == _plain_sum(inputs, [sender])) < 0.01
            for other in inputs:  # nor does it equal any other user's input
                assert np.mean(value == inputs[other]) < 0.01
        elif kind == "share":
            assert isinstance(value, bytes)
            for r in raw.values():  # ciphertexts hold no update bytes
                assert r[:16] not in value
        elif kind == "unmask":
            for v in value["b"]:
                revealed.setdefault(v, set()).add("b")
            for v in value["s_sk"]:
                revealed.setdefault(v, set()).add("s_sk")
    assert all(len(kinds) == 1 for kinds in revealed.values()), revealed
    assert revealed[2] == {"s_sk"} and revealed[0] == {"b"}
    # and yet the sum is exact
    np.testing.assert_array_equal(total, _plain_sum(inputs, [0, 1, 3, 4]))


def test_masked_input_alone_is_not_the_input_plus_a_known_mask():
    """Removing the self-mask is impossible without b_u; removing only pairwise masks fails."""
    inputs = _inputs(n=3, d=32)
    total, server = secure_sum(inputs, 2, seed=4)
    y0 = next(v for k, s, v in server.received if k == "masked_input" and s == 0)
    assert not np.array_equal(y0, inputs[0])


def test_too_few_survivors_is_a_clear_error():
    with pytest.raises(SecureAggregationError, match="threshold 4"):
        secure_sum(_inputs(n=5), 4, seed=0, drop_before_input=[0, 1])


def test_clients_refuse_to_reveal_both_shares():
    client = SecAggClient(0, seed=0)
    with pytest.raises(SecureAggregationError, match="both"):
        client.unmask([1, 2], [2])


def test_prg_is_deterministic_uint32():
    a, b = prg_mask(123, 10), prg_mask(123, 10)
    assert a.dtype == np.uint32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, prg_mask(124, 10))


def test_secure_weighted_mean_matches_the_plain_one():
    rng = np.random.default_rng(5)
    ups = [
        ClientUpdate(k, rng.normal(0, 0.01, 40).astype(np.float32), int(rng.integers(5, 60)))
        for k in range(4)
    ]

    class Ctx:
        round = 1

    secure = SecureWeightedMean(scale=2**20).aggregate(ups, Ctx())
    plain = WeightedMean().aggregate(ups, Ctx())
    np.testing.assert_allclose(secure, plain, atol=len(ups) * 2**-21)
