"""What on-device learning costs in energy: arithmetic, memory traffic and radio bytes.

An energy model turns three kinds of counts into joules (issue 15; chapters 04, 09):

``E = MACs_int8 * e_mac8 + MACs_fp32 * e_mac32 + B_sram * e_sram + B_flash * e_flash
+ B_tx * e_tx(radio) + B_rx * e_rx(radio)``

The counts come from the run, not from estimates by hand: multiply-accumulates per layer
from the model's :meth:`describe` rows (:func:`layer_costs`, float and int8 graphs), the
bytes a training step moves from the same rows and what the step trains
(:func:`training_step_counts`), and the bytes a federated round sends from chapter 09's
accounting (:func:`round_energy`, :class:`EnergyHook`).

The constants (:class:`EnergyConstants`, every field overridable with :func:`with_constants`)
and their sources:

* **Arithmetic** -- M. Horowitz, "Computing's energy problem (and what we can do about
  it)", ISSCC 2014, the 45 nm / 0.9 V energy table: 8-bit integer multiply 0.2 pJ, 32-bit
  integer add 0.1 pJ, 32-bit float multiply 3.7 pJ, 32-bit float add 0.9 pJ. An int8 MAC is
  an 8-bit multiply plus a 32-bit (accumulator) add, 0.3 pJ; an fp32 MAC a float multiply
  plus a float add, 4.6 pJ.
* **SRAM** -- Horowitz's table: a 64-bit read of a 32 KB cache 20 pJ, so 2.5 pJ a byte
  (the 8 KB row is 10 pJ, the 1 MB row 100 pJ; an MCU's 256-320 KB SRAM is banked: the
  32 KB row is the nearest; *assumption*).
* **DRAM** -- Horowitz's table: 1.3-2.6 nJ per 64-bit access; the low end, 162.5 pJ a byte
  (kept for comparison; an MCU has no DRAM).
* **Flash** -- *assumption*, no datasheet figure was confirmed: 12.5 pJ a byte, the cost
  of Horowitz's 1 MB SRAM row (100 pJ / 64 bit), i.e. 5x the SRAM byte. Override it with
  a measured figure of your board.
* **BLE** -- Nordic nRF52832 Product Specification v1.1, "Current consumption: Radio":
  0 dBm TX at 1 Mb/s 7.1 mA, RX at 1 Mb/s 6.5 mA, at VDD = 3 V. Airtime of a data packet
  with data-length extension: 244 bytes of application data (251-byte link-layer payload
  minus 4 bytes L2CAP and 3 bytes ATT header) + 10 bytes of preamble, access address,
  header and CRC = 261 bytes on air = 2.088 ms at 1 Mb/s. TX: 3 V * 7.1 mA * 2.088 ms /
  244 B = 182.3 nJ a byte (RX 166.9 nJ). A lower bound: ramp-up, inter-frame spaces, the
  empty acknowledgements and the CPU are left out.
* **LoRa** -- Semtech SX1276 datasheet: RX current 9.9 mA (front page); TX current at
  +13 dBm on the RFO pin 29 mA (Table 6 as recalled; *not re-checked in this session*);
  3.3 V supply (*assumption*). Airtime from the datasheet's time-on-air formula
  (:func:`lora_time_on_air`) at SF7, 125 kHz, coding rate 4/5, 8-symbol preamble, explicit
  header, CRC on: 222 bytes of application data + 13 bytes of LoRaWAN framing = 235 bytes
  take 368.9 ms; TX: 3.3 V * 29 mA * 368.9 ms / 222 B = 159.0 uJ a byte. The regional
  duty cycle (1 % in EU868) also limits how many bytes a device may send in an hour.
* **Wi-Fi** -- Espressif ESP32 datasheet, "RF power consumption": TX 802.11g OFDM
  54 Mb/s at +16 dBm 190 mA, RX 95-100 mA (95 mA taken), at 3.3 V. The goodput is an
  *assumption*: 20 Mb/s of application data over the 54 Mb/s link. TX: 3.3 V * 190 mA *
  8 / 20e6 = 250.8 nJ a byte (RX 125.4 nJ). Association and the connection's set-up,
  often the largest cost of a short Wi-Fi transfer, are left out.

Compute energy is the arithmetic and memory traffic only: no leakage, clock tree, CPU
instruction overhead or idle power -- the model compares methods, it does not predict a
board's battery life.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT",
    "RADIOS",
    "SOURCES",
    "EnergyConstants",
    "EnergyHook",
    "LayerCost",
    "StepCounts",
    "ble_j_per_byte",
    "compute_energy",
    "layer_costs",
    "lora_j_per_byte",
    "lora_time_on_air",
    "plan_traffic",
    "radio_energy",
    "round_energy",
    "trainable_from_model",
    "trainable_from_scheme",
    "training_step_counts",
    "wifi_j_per_byte",
    "with_constants",
]

PJ = 1e-12
NJ = 1e-9

# ----------------------------------------------------------------------------- radios


def ble_j_per_byte(
    current_a: float,
    volts: float = 3.0,
    phy_bps: float = 1e6,
    payload_bytes: int = 244,
    overhead_bytes: int = 17,
) -> float:
    """Joules per application byte of a BLE link: ``V * I * airtime / payload``.

    ``overhead_bytes`` (default 17) are what a packet carries beside the application
    data: 1 preamble + 4 access address + 2 header + 3 CRC + 4 L2CAP + 3 ATT.
    """
    airtime = (payload_bytes + overhead_bytes) * 8 / phy_bps
    return volts * current_a * airtime / payload_bytes


def lora_time_on_air(
    payload_bytes: int,
    sf: int = 7,
    bw_hz: float = 125e3,
    cr: int = 1,
    preamble_symbols: int = 8,
    explicit_header: bool = True,
    crc: bool = True,
    low_data_rate_optimize: bool | None = None,
) -> float:
    """Seconds a LoRa packet of ``payload_bytes`` (PHY payload) is on air.

    The SX1276 datasheet's formula: ``T_sym = 2^SF / BW``; preamble ``(n + 4.25) T_sym``;
    payload ``8 + max(ceil((8 PL - 4 SF + 28 + 16 CRC - 20 IH) / (4 (SF - 2 DE))) (CR + 4),
    0)`` symbols, with ``IH = 1`` for an implicit header, ``DE = 1`` when the low data
    rate optimisation is on (by default when ``T_sym`` > 16 ms) and ``cr`` 1..4 for 4/5..4/8.
    """
    t_sym = 2**sf / bw_hz
    de = (t_sym > 16e-3) if low_data_rate_optimize is None else low_data_rate_optimize
    ih = 0 if explicit_header else 1
    num = 8 * payload_bytes - 4 * sf + 28 + 16 * int(crc) - 20 * ih
    n_payload = 8 + max(math.ceil(num / (4 * (sf - 2 * int(de)))) * (cr + 4), 0)
    return (preamble_symbols + 4.25) * t_sym + n_payload * t_sym


def lora_j_per_byte(
    current_a: float, volts: float = 3.3, payload_bytes: int = 222, framing_bytes: int = 13, **phy
) -> float:
    """Joules per application byte of LoRa: ``V * I * ToA(payload + framing) / payload``."""
    return (
        volts * current_a * lora_time_on_air(payload_bytes + framing_bytes, **phy) / payload_bytes
    )


def wifi_j_per_byte(current_a: float, volts: float = 3.3, goodput_bps: float = 20e6) -> float:
    """Joules per application byte of Wi-Fi at a given goodput: ``V * I * 8 / goodput``."""
    return volts * current_a * 8 / goodput_bps


# ----------------------------------------------------------------------------- constants


@dataclass(frozen=True)
class EnergyConstants:
    """Energy per operation, per byte of memory traffic and per radio byte (joules).

    Defaults and their derivations: the module docstring and :data:`SOURCES`. Replace any
    field with :func:`with_constants`.
    """

    int8_mult: float = 0.2 * PJ
    int32_add: float = 0.1 * PJ
    fp32_mult: float = 3.7 * PJ
    fp32_add: float = 0.9 * PJ
    sram_per_byte: float = 20.0 * PJ / 8
    dram_per_byte: float = 1300.0 * PJ / 8
    flash_per_byte: float = 100.0 * PJ / 8
    ble_tx_per_byte: float = ble_j_per_byte(7.1e-3)
    ble_rx_per_byte: float = ble_j_per_byte(6.5e-3)
    lora_tx_per_byte: float = lora_j_per_byte(29e-3)
    lora_rx_per_byte: float = lora_j_per_byte(9.9e-3)
    wifi_tx_per_byte: float = wifi_j_per_byte(190e-3)
    wifi_rx_per_byte: float = wifi_j_per_byte(95e-3)

    @property
    def int8_mac(self) -> float:
        """An int8 multiply with a 32-bit accumulate."""
        return self.int8_mult + self.int32_add

    @property
    def fp32_mac(self) -> float:
        """A float32 multiply and add."""
        return self.fp32_mult + self.fp32_add

    def radio(self, name: str, direction: str = "tx") -> float:
        """Joules per byte of radio ``name`` (:data:`RADIOS`) sent (``tx``) or received."""
        if name not in RADIOS or direction not in ("tx", "rx"):
            raise ValueError(
                f"EnergyConstants.radio: unknown radio {name!r} or direction {direction!r}; "
                f"radios are {RADIOS}, directions ('tx', 'rx')"
            )
        return float(getattr(self, f"{name}_{direction}_per_byte"))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


DEFAULT = EnergyConstants()
RADIOS = ("ble", "lora", "wifi")

#: Where every default of :class:`EnergyConstants` comes from ("assumption" where no
#: source was confirmed).
SOURCES: dict[str, str] = {
    "int8_mult": "Horowitz, ISSCC 2014, 45 nm table: 8-bit integer multiply 0.2 pJ",
    "int32_add": "Horowitz, ISSCC 2014, 45 nm table: 32-bit integer add 0.1 pJ",
    "fp32_mult": "Horowitz, ISSCC 2014, 45 nm table: 32-bit float multiply 3.7 pJ",
    "fp32_add": "Horowitz, ISSCC 2014, 45 nm table: 32-bit float add 0.9 pJ",
    "sram_per_byte": "Horowitz, ISSCC 2014: 32 KB cache, 20 pJ per 64-bit access / 8 "
    "(choice of the 32 KB row for an MCU's banked SRAM: assumption)",
    "dram_per_byte": "Horowitz, ISSCC 2014: DRAM 1.3-2.6 nJ per 64-bit access; low end / 8",
    "flash_per_byte": "assumption (no datasheet figure confirmed): Horowitz's 1 MB SRAM row, "
    "100 pJ per 64 bits / 8",
    "ble_tx_per_byte": "nRF52832 PS v1.1: 0 dBm TX @ 1 Mb/s 7.1 mA, VDD 3 V; 261 B on air "
    "per 244 B of ATT data (DLE) at 1 Mb/s",
    "ble_rx_per_byte": "nRF52832 PS v1.1: RX @ 1 Mb/s 6.5 mA, VDD 3 V; same airtime as TX",
    "lora_tx_per_byte": "SX1276 datasheet: TX +13 dBm (RFO) 29 mA (recalled, not re-checked: "
    "assumption), 3.3 V (assumption); time on air SF7/125 kHz/CR4/5 of 222+13 B",
    "lora_rx_per_byte": "SX1276 datasheet: RX 9.9 mA, 3.3 V (assumption); same airtime",
    "wifi_tx_per_byte": "ESP32 datasheet: TX 802.11g 54 Mb/s +16 dBm 190 mA at 3.3 V; "
    "20 Mb/s goodput (assumption)",
    "wifi_rx_per_byte": "ESP32 datasheet: RX 95-100 mA (95) at 3.3 V; 20 Mb/s goodput (assumption)",
}


def with_constants(base: EnergyConstants = DEFAULT, **changes: float) -> EnergyConstants:
    """A copy of ``base`` with some constants replaced (joules), e.g. a measured flash read.

    Raises ``ValueError`` naming the unknown field or a negative value.
    """
    names = {f.name for f in fields(EnergyConstants)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(f"with_constants: unknown constants {unknown}; known: {sorted(names)}")
    bad = {k: v for k, v in changes.items() if not (float(v) >= 0 and math.isfinite(float(v)))}
    if bad:
        raise ValueError(f"with_constants: constants must be finite and >= 0, got {bad}")
    return replace(base, **{k: float(v) for k, v in changes.items()})


def radio_energy(
    bytes_up: float, bytes_down: float = 0, radio: str = "ble", c: EnergyConstants = DEFAULT
) -> float:
    """Joules a device spends sending ``bytes_up`` and receiving ``bytes_down``."""
    return bytes_up * c.radio(radio, "tx") + bytes_down * c.radio(radio, "rx")


# ----------------------------------------------------------------------------- layer counts


@dataclass(frozen=True)
class LayerCost:
    """One leaf operation of a model, per example (from a :meth:`describe` row).

    ``macs`` (0 for everything but convolutions and linear layers), ``weights`` and
    ``biases`` (counts), ``weight_bytes`` (stored bytes: float32 weights, or int8 weights
    with their int32 biases and requantization parameters), ``in_elems``/``out_elems``
    (activation elements of one example), ``int8`` (an int8-graph operation).
    """

    name: str
    type: str
    macs: int
    weights: int
    biases: int
    weight_bytes: int
    in_elems: int
    out_elems: int
    int8: bool


def _elems(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[1:], dtype=np.int64))


def _float_cost(row: dict[str, Any]) -> LayerCost:
    from tinyodl.nn import LAYER_TYPES, Conv2d, Linear

    kind, cfg = LAYER_TYPES.get(row["type"]), row["config"]
    out_elems = _elems(row["output_shape"])
    macs = 0
    if kind is not None and issubclass(kind, Linear):
        macs = int(cfg["in_features"]) * int(cfg["out_features"])
    elif kind is not None and issubclass(kind, Conv2d):
        cin = int(row["input_shape"][1])
        kh, kw = cfg["kernel_size"]
        groups = int(cfg.get("groups", cin))  # DepthwiseConv2d: one group per channel
        macs = out_elems * (cin // groups) * int(kh) * int(kw)
    params = int(row["num_params"])
    out_ch = int(row["output_shape"][1]) if len(row["output_shape"]) > 1 else 0
    if macs:
        biases = out_ch if cfg.get("bias") else 0
    elif "num_features" in cfg and params == 2 * int(cfg["num_features"]):
        biases = int(cfg["num_features"])  # a batchnorm's beta; its gamma is the "weight"
    else:
        biases = 0
    return LayerCost(
        row["name"], row["type"], macs, params - biases, biases,
        4 * params, _elems(row["input_shape"]), out_elems, False,
    )  # fmt: skip


def _int8_cost(row: dict[str, Any]) -> LayerCost:
    out_elems = _elems(row["output_shape"])
    macs = weights = biases = 0
    if row["type"] == "QConv":
        out_ch = int(row["output_shape"][1])
        biases = out_ch
        weights = int(row["num_params"]) - biases
        positions = out_elems // out_ch
        macs = positions * weights  # each output value: one row of the weight (C/g*KH*KW)
    return LayerCost(
        row["name"], row["type"], macs, weights, biases, int(row.get("nbytes", 0)),
        _elems(row["input_shape"]), out_elems, True,
    )  # fmt: skip


def layer_costs(model: Any, input_shape: tuple[int, ...]) -> list[LayerCost]:
    """Per-example costs of every leaf operation of ``model``, in forward order.

    Parameters
    ----------
    model : tinyodl.nn.Layer or tinyodl.quantization.QuantizedModel
        Read through its ``describe`` rows (containers are skipped).
    input_shape : tuple
        One example's shape without the batch, e.g. ``(1, 28, 28)``.

    A convolution producing F x OH x OW outputs from C channels in ``g`` groups with a
    KH x KW kernel costs ``F * OH * OW * C/g * KH * KW`` MACs; a linear layer ``in * out``.
    """
    rows = model.describe((1, *tuple(int(s) for s in input_shape)))
    if rows and "leaf" in rows[0]:
        return [_float_cost(r) for r in rows if r["leaf"]]
    return [_int8_cost(r) for r in rows if r["type"] != "QResidual"]


def trainable_from_model(model: Any) -> dict[str, tuple[float, bool]]:
    """``{layer: (weight fraction, bias trained)}`` of a float model's trainable flags.

    Layers with nothing trainable are left out; a trainable parameter other than
    ``weight``/``bias`` (a batchnorm's ``gamma``/``beta`` are ``weight``/``bias``) counts
    as the weight.
    """
    out = {}
    for name, layer in model.named_layers():
        params = getattr(layer, "params", {})
        if not params or list(layer.children()):
            continue
        w = any(p.trainable for k, p in params.items() if k != "bias")
        b = bool("bias" in params and params["bias"].trainable)
        if w or b:
            out[name] = (1.0 if w else 0.0, b)
    return out


def trainable_from_scheme(qmodel: Any, scheme: Any) -> dict[str, tuple[float, bool]]:
    """``{layer: (weight fraction, bias trained)}`` of a sparse-update scheme (chapter 04).

    The fraction is ``ceil(ratio * out_channels) / out_channels``; biases of the last
    ``scheme.bias_depth`` layers (:func:`tinyodl.sparse_update.layer_names`) are trained.
    """
    from tinyodl.sparse_update import layer_names

    names = layer_names(qmodel)
    convs = dict(qmodel.named_convs())
    biased = set(names[len(names) - scheme.bias_depth :]) if scheme.bias_depth else set()
    out = {}
    for name in names:
        ratio = float(scheme.weights.get(name, 0.0))
        frac = 0.0
        if ratio > 0:
            oc = int(convs[name].weight.shape[0])
            frac = math.ceil(ratio * oc) / oc
        if frac or name in biased:
            out[name] = (frac, name in biased)
    return out


# ----------------------------------------------------------------------------- a step


@dataclass
class StepCounts:
    """What one training step (batch ``batch_size``) computes and moves.

    ``macs_int8``/``macs_fp32``: multiply-accumulates by arithmetic (the int8 graph's
    forward is int8; every backward product is float32, as the kernels compute it);
    ``sram_bytes``: activations written and read, gradients, trainable weights and
    optimizer state; ``flash_bytes``: frozen weights read. ``parts`` breaks them down
    (``param_grad_bytes``, the parameter gradients written, is included in
    ``gradient_bytes``).
    """

    macs_int8: int = 0
    macs_fp32: int = 0
    sram_bytes: int = 0
    flash_bytes: int = 0
    parts: dict[str, int] | None = None

    def scaled(self, k: float) -> StepCounts:
        """These counts ``k`` times (k steps)."""
        parts = {n: int(round(v * k)) for n, v in (self.parts or {}).items()}
        return StepCounts(
            int(round(self.macs_int8 * k)), int(round(self.macs_fp32 * k)),
            int(round(self.sram_bytes * k)), int(round(self.flash_bytes * k)), parts,
        )  # fmt: skip


def training_step_counts(
    costs: list[LayerCost],
    trainable: dict[str, tuple[float, bool]],
    batch_size: int = 1,
    momentum: bool = True,
) -> StepCounts:
    """MACs and bytes of one SGD step that trains ``trainable`` (forward, backward, update).

    Parameters
    ----------
    costs : list of LayerCost
        :func:`layer_costs` of the model.
    trainable : dict
        ``{layer: (weight fraction, bias trained)}`` (:func:`trainable_from_model`,
        :func:`trainable_from_scheme`). Unknown layer names raise ``ValueError``.
    batch_size : int
    momentum : bool
        SGD with momentum (one more fp32 buffer read and written per trained value).

    The analytic traffic: the forward reads every weight once (frozen ones from flash,
    trained ones from SRAM) and reads its input and writes its output activation; the
    backward runs from the loss down to the earliest trained layer: each operation above it
    reads its output gradient and writes its input gradient (float32), and a
    convolution/linear layer there reads its weights again and costs its forward MACs in
    float32; a trained weight costs ``fraction * MACs`` more (float32) and reads its saved
    input; the update reads the gradient and reads and writes the fp32 value (and the
    momentum) of every trained value (plus the int8 copy of an int8 weight).
    """
    names = [c.name for c in costs]
    unknown = sorted(set(trainable) - set(names))
    if unknown:
        raise ValueError(f"training_step_counts: no layer named {unknown} in the costs")
    if batch_size < 1:
        raise ValueError(f"training_step_counts: batch_size must be >= 1, got {batch_size}")
    trained_idx = [i for i, c in enumerate(costs) if c.name in trainable]
    first = min(trained_idx) if trained_idx else len(costs)
    n = batch_size
    p = dict.fromkeys(
        ("fwd_macs", "bwd_input_macs", "bwd_weight_macs", "activation_bytes",
         "gradient_bytes", "weight_sram_bytes", "weight_flash_bytes", "update_bytes",
         "param_grad_bytes"), 0,
    )  # fmt: skip
    for i, c in enumerate(costs):
        act = 1 if c.int8 else 4
        frac, bias = trainable.get(c.name, (0.0, False))
        w_item = 1 if c.int8 else 4
        trained_w = int(round(frac * c.weights))
        trained_bytes = trained_w * w_item + (4 * c.biases if bias else 0)
        frozen_bytes = max(c.weight_bytes - trained_bytes, 0)
        p["fwd_macs"] += n * c.macs
        p["activation_bytes"] += n * (c.in_elems + c.out_elems) * act
        p["weight_flash_bytes"] += frozen_bytes
        p["weight_sram_bytes"] += trained_bytes
        if i < first:
            continue
        p["gradient_bytes"] += n * c.out_elems * 4  # read the output gradient
        if i > first:  # the input gradient is needed below
            p["gradient_bytes"] += n * c.in_elems * 4
            if c.macs:
                p["bwd_input_macs"] += n * c.macs
                p["weight_flash_bytes"] += frozen_bytes
                p["weight_sram_bytes"] += trained_bytes
        if trained_w:
            p["bwd_weight_macs"] += int(round(n * frac * c.macs))
            p["activation_bytes"] += n * c.in_elems * act  # the saved input
        values = trained_w + (c.biases if bias else 0)
        per_value = 4 + 8 + (8 if momentum else 0)  # read grad; r/w value; r/w momentum
        p["gradient_bytes"] += 4 * values  # the parameter gradient written
        p["param_grad_bytes"] += 4 * values  # (its part of gradient_bytes)
        p["update_bytes"] += values * per_value + (trained_w if c.int8 else 0)
    fwd_int8 = p["fwd_macs"] if costs and costs[0].int8 else 0
    return StepCounts(
        macs_int8=fwd_int8,
        macs_fp32=p["fwd_macs"] - fwd_int8 + p["bwd_input_macs"] + p["bwd_weight_macs"],
        sram_bytes=p["activation_bytes"] + p["gradient_bytes"] + p["weight_sram_bytes"]
        + p["update_bytes"],
        flash_bytes=p["weight_flash_bytes"],
        parts=p,
    )  # fmt: skip


def compute_energy(counts: StepCounts, c: EnergyConstants = DEFAULT) -> dict[str, float]:
    """Joules of ``counts`` by term (``mac_int8``, ``mac_fp32``, ``sram``, ``flash``) and
    their ``total``."""
    out = {
        "mac_int8": counts.macs_int8 * c.int8_mac,
        "mac_fp32": counts.macs_fp32 * c.fp32_mac,
        "sram": counts.sram_bytes * c.sram_per_byte,
        "flash": counts.flash_bytes * c.flash_per_byte,
    }
    out["total"] = sum(out.values())
    return out


# ----------------------------------------------------------------------------- a round


def round_energy(
    step: StepCounts,
    steps: int,
    bytes_up: float,
    bytes_down: float,
    radio: str = "ble",
    c: EnergyConstants = DEFAULT,
) -> dict[str, float]:
    """One client's federated round: ``steps`` local training steps plus its radio bytes.

    Returns joules: ``compute`` (:func:`compute_energy` of ``steps`` steps), ``radio_up``,
    ``radio_down`` and ``total``.
    """
    comp = compute_energy(step.scaled(steps), c)["total"]
    up, down = radio_energy(bytes_up, 0, radio, c), radio_energy(0, bytes_down, radio, c)
    return {"compute": comp, "radio_up": up, "radio_down": down, "total": comp + up + down}


class EnergyHook:
    """A :class:`tinyodl.federated.Hook` that adds each round's energy per client.

    Parameters
    ----------
    step : StepCounts
        One local step at the clients' batch size (:func:`training_step_counts`).
    radio : str
        One of :data:`RADIOS`.
    constants : EnergyConstants

    Each round record gains ``energy``: the mean over reporting clients of ``compute``
    (local steps: ``epochs * ceil(n_k / batch_size)`` of the server's ``LocalSGD``; one
    step per epoch for ``batch_size=None``, FedSGD, where ``step`` must be counted at the
    client's full batch),
    ``radio_up`` (the round's ``bytes_up`` / reporting clients), ``radio_down`` (the
    server's ``download_bytes``) and ``total``, in joules, and ``radio``.
    """

    def __init__(self, step: StepCounts, radio: str = "ble", constants: EnergyConstants = DEFAULT):
        DEFAULT.radio(radio)  # a clear error for an unknown radio
        self.step, self.radio, self.constants = step, radio, constants

    def on_round_start(self, server: Any, ctx: Any) -> None:
        pass

    def on_updates(self, server: Any, ctx: Any, updates: list) -> list:
        return updates

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        pass

    def on_round_end(self, server: Any, record: dict[str, Any]) -> None:
        reported = list(record.get("reported", []))
        if not reported:
            record["energy"] = None
            return
        fn = server.update_fn
        epochs, batch = int(getattr(fn, "epochs", 1)), getattr(fn, "batch_size", None)
        up = record["bytes_up"] / len(reported)
        per = [
            round_energy(
                self.step,
                epochs * (math.ceil(server.clients[cid].num_examples / batch) if batch else 1),
                up,
                server.download_bytes,
                self.radio,
                self.constants,
            )
            for cid in reported
        ]
        energy: dict[str, Any] = {k: float(np.mean([e[k] for e in per])) for k in per[0]}
        energy["radio"] = self.radio
        record["energy"] = energy


def plan_traffic(plan: Any) -> int:
    """Bytes the compiled engine's schedule moves through its planned buffers (chapter 12).

    From the lifetime table ``plan.memory_plan``: every step reads its ``reads``, writes its
    ``allocs`` and reads and writes its ``inplace`` buffers (data bytes, no headers). Weights
    are not planned buffers; add them from :func:`training_step_counts`.
    """
    mp = plan.memory_plan
    size = {b.name: int(b.nbytes) for b in mp.buffers}
    total = 0
    for s in mp.steps:
        total += sum(size.get(n, 0) for n in s.reads) + sum(size.get(n, 0) for n in s.allocs)
        total += 2 * sum(size.get(n, 0) for n in s.inplace)
    return int(total)
