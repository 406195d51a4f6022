"""``tinyodl.energy``: the cost model's arithmetic, its counters and the federated hook."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl import energy, nn
from tinyodl.energy import StepCounts

C = energy.DEFAULT


# ------------------------------------------------------------------------------ constants


def test_mac_energies_are_a_multiply_and_an_accumulate():
    assert C.int8_mac == pytest.approx(C.int8_mult + C.int32_add)
    assert C.fp32_mac == pytest.approx(C.fp32_mult + C.fp32_add)
    assert C.int8_mac < C.fp32_mac  # the point of int8 training (chapter 03)


def test_radio_constants_follow_their_derivation():
    # BLE 1M PHY: 244 application bytes + 17 bytes of framing on air at 1 Mb/s
    airtime = (244 + 17) * 8 / 1e6
    assert energy.ble_j_per_byte(7.1e-3) == pytest.approx(3.0 * 7.1e-3 * airtime / 244)
    assert C.ble_tx_per_byte == pytest.approx(energy.ble_j_per_byte(7.1e-3))
    # Wi-Fi: V * I * 8 bits / goodput
    assert C.wifi_tx_per_byte == pytest.approx(3.3 * 0.19 * 8 / 20e6)
    assert C.wifi_rx_per_byte == pytest.approx(3.3 * 0.095 * 8 / 20e6)
    # LoRa: power times the time on air of payload + framing, per payload byte
    toa = energy.lora_time_on_air(222 + 13)
    assert C.lora_tx_per_byte == pytest.approx(3.3 * 29e-3 * toa / 222)
    assert C.lora_tx_per_byte > C.ble_tx_per_byte > 0  # long range costs airtime
    assert set(energy.SOURCES) == {f for f in C.to_dict()}  # every constant has a source


def test_lora_time_on_air_is_the_datasheet_formula():
    # SF7, 125 kHz, CR 4/5, 8 preamble symbols, explicit header, CRC, PL = 235 bytes
    t_sym = 2**7 / 125e3
    n = 8 + math.ceil((8 * 235 - 4 * 7 + 28 + 16) / (4 * 7)) * 5
    assert energy.lora_time_on_air(235) == pytest.approx((8 + 4.25) * t_sym + n * t_sym)
    # SF12: T_sym = 32.8 ms > 16 ms turns the low data rate optimisation on (SF - 2)
    t12 = 2**12 / 125e3
    n12 = 8 + math.ceil((8 * 20 - 48 + 28 + 16) / (4 * 10)) * 5
    assert energy.lora_time_on_air(20, sf=12) == pytest.approx((12.25 + n12) * t12)
    assert energy.lora_time_on_air(100) > energy.lora_time_on_air(10)


def test_with_constants_replaces_one_field_and_checks_input():
    c = energy.with_constants(flash_per_byte=1e-9)
    assert c.flash_per_byte == 1e-9 and c.sram_per_byte == C.sram_per_byte
    assert C.flash_per_byte != 1e-9  # the default is untouched (frozen)
    with pytest.raises(ValueError, match="unknown constants.*flsh"):
        energy.with_constants(flsh_per_byte=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        energy.with_constants(sram_per_byte=-1.0)
    with pytest.raises(ValueError, match="unknown radio"):
        C.radio("zigbee")
    with pytest.raises(ValueError, match="unknown radio"):
        energy.EnergyHook(StepCounts(), radio="zigbee")
    # the figures no source confirmed say so
    for name in ("flash_per_byte", "lora_tx_per_byte", "wifi_tx_per_byte"):
        assert "assumption" in energy.SOURCES[name]


# ------------------------------------------------------------------------------ counters


def _mlp():
    return nn.Sequential(
        [nn.Flatten(), nn.Linear(4, 3, seed=0), nn.ReLU(), nn.Linear(3, 2, seed=1)]
    )


def test_layer_costs_of_a_tiny_mlp_by_hand():
    costs = energy.layer_costs(_mlp(), (4,))
    by = {c.name: c for c in costs}
    assert by["1"].macs == 4 * 3 and by["3"].macs == 3 * 2 and by["2"].macs == 0
    assert (by["1"].weights, by["1"].biases, by["1"].weight_bytes) == (12, 3, 4 * 15)
    assert (by["2"].in_elems, by["2"].out_elems) == (3, 3)


def test_training_step_counts_by_hand():
    model = _mlp()
    costs = energy.layer_costs(model, (4,))
    counts = energy.training_step_counts(costs, energy.trainable_from_model(model), 2)
    # forward 18 MACs an example; backward: input gradient of the top layer only (6), the
    # weight gradients of both (12 + 6); batch 2
    assert counts.macs_fp32 == 2 * (18 + 6 + 18) and counts.macs_int8 == 0
    assert counts.flash_bytes == 0  # nothing frozen
    p = counts.parts
    # activations: every leaf reads its input and writes its output (fp32), and the two
    # linear layers read their saved input again
    acts = 2 * 4 * ((4 + 4) + (4 + 3) + (3 + 3) + (3 + 2)) + 2 * 4 * (4 + 3)
    assert p["activation_bytes"] == acts
    # update: 23 values, each: read grad, r/w value, r/w momentum (5 fp32 accesses)
    assert p["update_bytes"] == 23 * 5 * 4
    # the head only: no backward below it, the lower layer's weights come from flash
    model.freeze("1")
    head = energy.training_step_counts(costs, energy.trainable_from_model(model), 2)
    assert head.macs_fp32 == 2 * (18 + 6) and head.flash_bytes == 4 * 15
    assert head.parts["update_bytes"] == 8 * 5 * 4


def test_compute_energy_is_the_sum_of_its_terms():
    counts = StepCounts(macs_int8=1000, macs_fp32=300, sram_bytes=4096, flash_bytes=512)
    e = energy.compute_energy(counts)
    assert e["mac_int8"] == pytest.approx(1000 * (0.2e-12 + 0.1e-12))
    assert e["mac_fp32"] == pytest.approx(300 * (3.7e-12 + 0.9e-12))
    assert e["sram"] == pytest.approx(4096 * C.sram_per_byte)
    assert e["flash"] == pytest.approx(512 * C.flash_per_byte)
    assert e["total"] == pytest.approx(sum(v for k, v in e.items() if k != "total"))
    assert energy.radio_energy(100, 50, "lora") == pytest.approx(
        100 * C.lora_tx_per_byte + 50 * C.lora_rx_per_byte
    )


def test_unknown_layers_are_refused():
    costs = energy.layer_costs(_mlp(), (4,))
    with pytest.raises(ValueError, match="no layer named.*nope"):
        energy.training_step_counts(costs, {"nope": (1.0, True)})


@pytest.fixture(scope="module")
def task_models():
    from tinyodl import demo

    task, model, qmodel, _, _ = demo._setup(0, 2, 32, 20)
    return task, model, qmodel


def test_macs_match_describe_counters_float_and_int8(task_models):
    from tinyodl import tinytrain
    from tinyodl.pruning.cost import count_macs

    task, model, qmodel = task_models
    shape = task.x_train.shape[1:]
    fc, qc = energy.layer_costs(model, shape), energy.layer_costs(qmodel, shape)
    assert sum(c.macs for c in fc) == count_macs(model, shape)
    stats = tinytrain.layer_stats(qmodel, shape)
    q_by = {c.name: c for c in qc}
    for name, s in stats.items():
        assert q_by[name].macs == s["macs"] and q_by[name].weights == s["params"]
    assert sum(c.macs for c in fc) == sum(c.macs for c in qc)  # the same network
    assert sum(c.weight_bytes for c in qc) == qmodel.nbytes()


def test_sparse_scheme_costs_less_than_full_int8(task_models):
    from tinyodl import demo
    from tinyodl import sparse_update as su

    task, _, qmodel = task_models
    costs = energy.layer_costs(qmodel, task.x_train.shape[1:])
    full = {n: (1.0, True) for n in su.layer_names(qmodel)}
    sparse = energy.trainable_from_scheme(qmodel, demo.SCHEME)
    assert sparse["classifier.0"] == (1.0, True)
    a = energy.training_step_counts(costs, full)
    b = energy.training_step_counts(costs, sparse)
    assert a.macs_int8 == b.macs_int8 == sum(c.macs for c in costs)  # the same forward
    assert b.macs_fp32 < a.macs_fp32 and b.sram_bytes < a.sram_bytes
    assert energy.compute_energy(b)["total"] < energy.compute_energy(a)["total"]


# ------------------------------------------------------------------------------ properties


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.sampled_from(["macs_int8", "macs_fp32", "sram_bytes", "flash_bytes"]),
    st.integers(1, 10**6),
)
def test_energy_is_monotone_in_every_count(m8, m32, sram, flash, field, extra):
    base = StepCounts(m8, m32, sram, flash)
    more = StepCounts(m8, m32, sram, flash)
    setattr(more, field, getattr(more, field) + extra)
    assert energy.compute_energy(more)["total"] > energy.compute_energy(base)["total"]


_TERM = {
    "int8_mult": "mac_int8",
    "int32_add": "mac_int8",
    "fp32_mult": "mac_fp32",
    "fp32_add": "mac_fp32",
    "sram_per_byte": "sram",
    "flash_per_byte": "flash",
}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(_TERM)), st.floats(0.0, 1e-9), st.integers(1, 10**8))
def test_overriding_a_constant_changes_exactly_its_term(name, value, n):
    counts = StepCounts(n, 2 * n, 3 * n, 4 * n)
    a = energy.compute_energy(counts)
    b = energy.compute_energy(counts, energy.with_constants(**{name: value}))
    for term in ("mac_int8", "mac_fp32", "sram", "flash"):
        if term != _TERM[name]:
            assert b[term] == a[term]
    per = {"mac_int8": counts.macs_int8, "mac_fp32": counts.macs_fp32}
    per.update(sram=counts.sram_bytes, flash=counts.flash_bytes)
    delta = (value - getattr(C, name)) * per[_TERM[name]]
    assert b[_TERM[name]] - a[_TERM[name]] == pytest.approx(delta, rel=1e-9, abs=1e-18)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(energy.RADIOS),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.floats(1e-10, 1e-3),
)
def test_radio_overrides_change_only_their_radio(radio, up, down, value):
    c = energy.with_constants(**{f"{radio}_tx_per_byte": value})
    assert energy.radio_energy(up, down, radio, c) == pytest.approx(
        up * value + down * C.radio(radio, "rx")
    )
    for other in set(energy.RADIOS) - {radio}:
        assert energy.radio_energy(up, down, other, c) == energy.radio_energy(up, down, other)


# ------------------------------------------------------------------------------ federated


@pytest.fixture(scope="module")
def fed_data():
    from tinyodl.data import load_mnist, to_float

    images, labels = load_mnist("train")
    return to_float(images[:600]), labels[:600].astype(np.int64)


def _fed(fed_data, compressor=None, radio="ble"):
    from tinyodl.federated import (
        FederatedServer,
        LocalSGD,
        RandomSelection,
        iid_partition,
        make_clients,
    )

    x, y = fed_data
    model = nn.Sequential([nn.Flatten(), nn.Linear(784, 16, seed=0), nn.ReLU(),
                           nn.Linear(16, 10, seed=1)])  # fmt: skip
    clients = make_clients(iid_partition(len(y), 6, seed=0), seed=0)
    costs = energy.layer_costs(model, x.shape[1:])
    step = energy.training_step_counts(costs, energy.trainable_from_model(model), 10)
    hook = energy.EnergyHook(step, radio=radio)
    server = FederatedServer(
        model, x, y, clients, LocalSGD(2, 10, 0.1), selection=RandomSelection(0.5),
        compressor=compressor, hooks=[hook], seed=0,
    )  # fmt: skip
    server.run(rounds=1, progress=False)
    return server, step


def test_energy_hook_uses_the_rounds_byte_accounting(fed_data):
    from tinyodl.federated import Int8Quantization, TopK

    records = {}
    for name, comp in (("float32", None), ("int8", Int8Quantization()), ("topk", TopK(0.1))):
        server, step = _fed(fed_data, comp)
        rec = server.history_[-1]
        e = rec["energy"]
        k = len(rec["reported"])
        assert e["radio_up"] == pytest.approx(rec["bytes_up"] / k * C.ble_tx_per_byte)
        assert e["radio_down"] == pytest.approx(server.download_bytes * C.ble_rx_per_byte)
        n = np.mean([server.clients[c].num_examples for c in rec["reported"]])
        steps = 2 * math.ceil(n / 10)  # equal clients: the mean's steps
        assert e["compute"] == pytest.approx(energy.compute_energy(step)["total"] * steps)
        assert e["total"] == pytest.approx(e["compute"] + e["radio_up"] + e["radio_down"])
        records[name] = rec
    up = {n: r["energy"]["radio_up"] for n, r in records.items()}
    assert up["int8"] < up["float32"] and up["topk"] < up["float32"]
    ratio = records["int8"]["bytes_up"] / records["float32"]["bytes_up"]
    assert up["int8"] / up["float32"] == pytest.approx(ratio)


def test_engine_plan_traffic_covers_every_planned_buffer(task_models):
    import copy

    from tinyodl import demo, engine, tinytrain

    task, _, qmodel = task_models
    model = tinytrain.apply(copy.deepcopy(qmodel), demo.SCHEME)
    plan = engine.compile_training(
        model, (1, *task.x_train.shape[1:]), scheme=demo.SCHEME, lr=0.003, momentum=0.9, qas=True
    )
    traffic = energy.plan_traffic(plan)
    # every planned buffer is written once and read at least once
    written = sum(b.nbytes for b in plan.memory_plan.buffers)
    assert traffic >= 2 * written - sum(
        b.nbytes for b in plan.memory_plan.buffers if b.kind in ("weight_grad", "bias_grad")
    )
    from tinyodl.federated import EnergyHook

    assert EnergyHook is energy.EnergyHook


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 12), min_size=3, max_size=6),
    st.data(),
    st.integers(1, 4),
)
def test_training_more_never_computes_or_moves_less(sizes, data, batch):
    model = nn.Sequential([nn.Linear(a, b, seed=i) for i, (a, b) in
                           enumerate(zip(sizes[:-1], sizes[1:], strict=True))])  # fmt: skip
    costs = energy.layer_costs(model, (sizes[0],))
    names = [c.name for c in costs]
    chosen = data.draw(st.lists(st.sampled_from(names), unique=True))
    extra = data.draw(st.sampled_from(names))
    small = {n: (1.0, True) for n in chosen}
    big = {**small, extra: (1.0, True)}
    a = energy.training_step_counts(costs, small, batch)
    b = energy.training_step_counts(costs, big, batch)
    assert b.macs_fp32 >= a.macs_fp32
    assert b.sram_bytes + b.flash_bytes >= a.sram_bytes + a.flash_bytes
    if extra not in small:
        assert b.macs_fp32 > a.macs_fp32  # at least its weight gradient


@pytest.mark.parametrize(
    "method", ["finetune_full", "feature_extraction", "tinytl_bias", "tinytl_lite_residual"]
)
def test_float_counts_agree_with_the_memory_model(task_models, method):
    """Parameter gradients and momentum: the bytes tinyodl.memory's replay allocates."""
    import copy

    from tinyodl import transfer
    from tinyodl.memory import analytic_training_memory

    task, model, _ = task_models
    model = transfer.prepare(copy.deepcopy(model), method, seed=0)
    shape = task.x_train.shape[1:]
    mem = analytic_training_memory(model, shape, 1, optimizer="sgd_momentum")
    counts = energy.training_step_counts(
        energy.layer_costs(model, shape), energy.trainable_from_model(model), 1
    )
    assert counts.parts["param_grad_bytes"] == mem.gradients == mem.optimizer_state
    # the update reads the gradient and reads and writes the value and the momentum
    assert counts.parts["update_bytes"] == 5 * mem.gradients


@pytest.mark.parametrize("full", [False, True])
def test_int8_counts_agree_with_the_engine_plan(task_models, full):
    """The engine keeps an fp32 shadow and a momentum per trained value: 2 x the gradients."""
    import copy

    from tinyodl import demo, engine, tinytrain

    task, _, qmodel = task_models
    scheme = demo._full_scheme(qmodel) if full else demo.SCHEME
    model = tinytrain.apply(copy.deepcopy(qmodel), scheme)
    shape = task.x_train.shape[1:]
    plan = engine.compile_training(
        model, (1, *shape), scheme=scheme, lr=0.003, momentum=0.9, qas=True
    )
    counts = energy.training_step_counts(
        energy.layer_costs(qmodel, shape), energy.trainable_from_scheme(qmodel, scheme), 1
    )
    assert plan.memory_plan.state_bytes == 2 * counts.parts["param_grad_bytes"]


def test_energy_hook_fedsgd_is_one_step_per_epoch(fed_data):
    from tinyodl.federated import (
        FederatedServer,
        LocalSGD,
        RandomSelection,
        iid_partition,
        make_clients,
    )

    x, y = fed_data
    model = nn.Sequential([nn.Flatten(), nn.Linear(784, 10, seed=0)])
    clients = make_clients(iid_partition(len(y), 6, seed=0), seed=0)
    full = len(y) // 6  # every client's full batch
    step = energy.training_step_counts(
        energy.layer_costs(model, x.shape[1:]), energy.trainable_from_model(model), full
    )
    server = FederatedServer(model, x, y, clients, LocalSGD(3, None, 0.1),
                             selection=RandomSelection(0.5), hooks=[energy.EnergyHook(step)],
                             seed=0)  # fmt: skip
    server.run(1, progress=False)
    e = server.history_[-1]["energy"]
    assert e["compute"] == pytest.approx(3 * energy.compute_energy(step)["total"])
