"""The drift -> trigger -> adapt scenario on task B's writer shift.

A device runs the shipped ``mcunet_tiny`` pretrained on clean digits (task B's model,
:mod:`tinyodl.tasks`). Its input stream is the device's own training images in a seeded
order; at a seeded step ``switch`` the writer changes (:class:`tinyodl.tasks.WriterShift`,
task B's new writer). Labels arrive ``label_delay`` steps after their image (a user
correcting the device, say). Each *policy* decides when to adapt:

==================  ===============================================================
``never``           the pretrained model forever
``schedule``        adapt every ``schedule_every`` steps on the buffer's last labels
``oracle``          one alarm exactly at the switch (the best any detector can do)
``page_hinkley``    Page–Hinkley (mode "down") on the model's confidence (no labels)
``mmd``             MMD permutation test, windows of penultimate features vs reference
``ks``              per-feature KS tests with Holm's correction, same windows
``ddm``             DDM on the 0/1 errors, as the late labels arrive
``adwin``           ADWIN on the same errors
==================  ===============================================================

A detector's alarm arms :class:`~tinyodl.lifecycle.policy.TriggerPolicy`; the device adapts
once ``min_examples`` labels have arrived after it (the buffer holds at most
``storage_bytes`` of images), with the method :func:`~tinyodl.lifecycle.policy.choose_method`
picks under ``memory_budget`` among the methods this loop runs (:data:`LOOP_METHODS`, the
demo's float methods, with the demo's learning rates, batch size 1). After adapting, the
detectors restart on the new model (the two-sample tests take the next ``reference`` steps
as their new reference).

Energy (:mod:`tinyodl.energy`): each adaptation's compute energy is the counts of one
training step of the model it actually trained (MACs from ``describe()``, the analytic
bytes of :func:`~tinyodl.energy.training_step_counts`, batch size 1, SGD with momentum)
times the optimizer steps it actually ran. The device sends nothing (0 J of radio); for
comparison, ``cloud_radio_joules`` is what uploading each adaptation's buffered samples as
raw images (one byte a pixel plus a label byte, as the demo's cloud row) and downloading
the retrained model (its float32 parameters) would cost over ``ScenarioConfig.radio``.

Measured per policy: the detection delay (first alarm at or after the switch, minus the
switch, in steps -- label-based detectors include the label delay), false alarms per
10,000 steps before the switch, the adaptations, the accuracy on the stream after the
switch (what the device's user saw), and the final model's accuracy on held-out test
images of the new writer and of clean digits.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tinyodl.lifecycle.detectors import ADWIN, DDM, PageHinkley
from tinyodl.lifecycle.policy import LabelBuffer, TriggerPolicy, choose_method, demo_costs
from tinyodl.lifecycle.two_sample import WindowDetector

__all__ = [
    "DETECTORS",
    "FLOAT_METHODS",
    "INT8_METHODS",
    "LOOP_METHODS",
    "POLICIES",
    "ScenarioConfig",
    "Stream",
    "adapt",
    "adapt_counted",
    "deployed_model",
    "make_stream",
    "model_signals",
    "run_policy",
    "run_scenario",
]

DETECTORS = ("page_hinkley", "mmd", "ks", "ddm", "adwin")
POLICIES = ("never", "schedule", "oracle", *DETECTORS)
#: The demo's float methods (the default candidates of the scenario).
FLOAT_METHODS = ("fp32_full", "fp32_last_layer", "tinytl_bias", "tinytl_lite_residual")
#: The demo's int8 methods: the device then runs task B's model quantized (PTQ on clean
#: calibration images) and adapts it with the demo's int8 recipe of that method.
INT8_METHODS = ("int8_full", "int8_full_qas", "sparse_update", "sparse_update_engine", "tinytrain")
#: Every demo method this loop can run.
LOOP_METHODS = FLOAT_METHODS + INT8_METHODS


@dataclass(frozen=True)
class ScenarioConfig:
    """The scenario's knobs (every random choice is seeded by ``seed``)."""

    n_stream: int = 4000
    switch_range: tuple[float, float] = (0.4, 0.6)
    label_delay: int = 50
    reference: int = 300
    window: int = 100
    alpha: float = 0.01
    ph_delta: float = 0.01
    ph_threshold: float = 5.0
    storage_bytes: int = 64 * 1024
    bits: int = 4
    min_examples: int = 150
    memory_budget: int = 256 * 1024
    schedule_every: int = 1000
    epochs: int = 3
    n_test: int | None = 1000
    seed: int = 0
    radio: str = "ble"
    methods: tuple[str, ...] = FLOAT_METHODS
    policies: tuple[str, ...] = POLICIES
    costs: dict[str, dict[str, Any]] | None = field(default=None)


@dataclass
class Stream:
    """The device's stream: float32 images (T, 1, 28, 28), labels (T,), the switch step."""

    x: np.ndarray
    y: np.ndarray
    switch: int
    x_test_new: np.ndarray
    y_test_new: np.ndarray
    x_test_old: np.ndarray
    y_test_old: np.ndarray


def make_stream(cfg: ScenarioConfig) -> Stream:
    """Shipped training images in a seeded order; task B's writer from a seeded step on."""
    from tinyodl.data import load_mnist, to_float
    from tinyodl.tasks import WriterShift

    images, labels = load_mnist("train")
    if not 2 * cfg.reference < cfg.n_stream <= len(labels):
        raise ValueError(
            f"make_stream: n_stream must be in ({2 * cfg.reference}, {len(labels)}], "
            f"got {cfg.n_stream}"
        )
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(labels))[: cfg.n_stream]
    lo, hi = (int(f * cfg.n_stream) for f in cfg.switch_range)
    switch = int(rng.integers(max(lo, cfg.reference + 1), max(hi, cfg.reference + 2)))
    writer = WriterShift()
    raw = images[order].copy()
    raw[switch:] = writer(raw[switch:])
    x_te, y_te = load_mnist("test")
    keep = np.sort(rng.permutation(len(y_te))[: cfg.n_test or len(y_te)])
    x_te, y_te = x_te[keep], y_te[keep].astype(np.int64)
    return Stream(
        to_float(raw),
        labels[order].astype(np.int64),
        switch,
        to_float(writer(x_te)),
        y_te,
        to_float(x_te),
        y_te,
    )


def model_signals(model: Any, x: np.ndarray, batch_size: int = 500) -> dict[str, np.ndarray]:
    """Penultimate features (N, F), predictions (N,) and confidence (max softmax, N,).

    ``model``: a float ``Sequential`` with ``"features"`` and ``"classifier"``, or a
    :class:`~tinyodl.quantization.QuantizedModel` (features: the int8 input of its last
    operation, as float).
    """
    from tinyodl.nn import softmax

    feats, preds, conf = [], [], []
    int8 = not hasattr(model, "named_layers")  # a QuantizedModel
    for s in range(0, len(x), batch_size):
        xb = x[s : s + batch_size]
        if int8:  # the int8 features before the last QConv (an affine map of the real ones)
            h = model.quantize_input(xb)
            for op in model.ops[:-1]:
                h = op.forward(h)
            f = h.reshape(len(xb), -1).astype(np.float32)
            p = softmax(model.dequantize_output(model.ops[-1].forward(h)).reshape(len(xb), -1))
        else:
            f = model["features"].forward(xb, train=False).reshape(len(xb), -1)
            p = softmax(model["classifier"].forward(f, train=False))
        feats.append(f)
        preds.append(p.argmax(1))
        conf.append(p.max(1))
    return {
        "features": np.concatenate(feats),
        "pred": np.concatenate(preds),
        "confidence": np.concatenate(conf).astype(np.float64),
    }


def adapt(model: Any, method: str, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> Any:
    """Adapt a copy of ``model`` with one of the demo's float methods (batch size 1)."""
    return adapt_counted(model, method, x, y, epochs, seed)[0]


def adapt_counted(
    model: Any, method: str, x: np.ndarray, y: np.ndarray, epochs: int, seed: int
) -> tuple[Any, Any, int, dict | None]:
    """:func:`adapt`, and what it cost: ``(model, step_counts, steps_run, scheme)``.

    ``step_counts`` (:class:`tinyodl.energy.StepCounts`): one SGD step (batch 1, momentum)
    of the prepared model that was trained, from its ``describe()`` rows and trainable
    flags; ``steps_run``: the optimizer steps the run actually took (counted); ``scheme``:
    the int8 methods' update scheme as a dict (TinyTrain's has its ``channels``), else None.
    """
    from tinyodl import energy, nn, schedules, transfer
    from tinyodl.demo import _PREPARE, LR
    from tinyodl.train import fit

    if method not in LOOP_METHODS:
        raise ValueError(f"adapt: method must be one of {LOOP_METHODS}, got {method!r}")
    int8 = not hasattr(model, "named_layers")
    if int8 != (method in INT8_METHODS):
        kind = "an int8 (QuantizedModel)" if int8 else "a float"
        raise ValueError(f"adapt: method {method!r} cannot adapt {kind} model")
    if int8:
        return _adapt_int8(model, method, x, y, epochs, seed)
    work = transfer.prepare(copy.deepcopy(model), _PREPARE[method], seed=seed)
    counts = energy.training_step_counts(
        energy.layer_costs(work, x.shape[1:]), energy.trainable_from_model(work), 1, momentum=True
    )
    opt = nn.SGD(work, lr=LR[method], momentum=0.9)
    taken = [0]
    step = opt.step

    def counted_step(*args, **kwargs):
        taken[0] += 1
        return step(*args, **kwargs)

    opt.step = counted_step
    steps = epochs * len(x)
    fit(work, opt, x, y, epochs=epochs, batch_size=1, seed=seed,
        schedule=schedules.Cosine(LR[method], steps), progress=False)  # fmt: skip
    return work.eval(), counts, taken[0], None


def _adapt_int8(
    qmodel: Any, method: str, x: np.ndarray, y: np.ndarray, epochs: int, seed: int
) -> tuple[Any, Any, int, dict]:
    """The demo's int8 recipes (:mod:`tinyodl.demo`) at batch size 1 on the buffer:
    ``int8_full`` (plain SGD-M on the integers) and ``int8_full_qas`` train every layer,
    ``sparse_update`` the demo's :data:`~tinyodl.demo.SCHEME` (with QAS);
    ``sparse_update_engine`` runs that scheme and ``tinytrain`` TinyTrain's selection on the
    buffer (budget :data:`~tinyodl.demo.BUDGET_BYTES`) with chapter 12's compiled engine.
    Returns ``(model, step_counts, steps_run, scheme)`` (steps: the losses the loop
    returned)."""
    from tinyodl import energy, engine, schedules, tinytrain
    from tinyodl import sparse_update as su
    from tinyodl.demo import BUDGET_BYTES, LR, SCHEME, _full_scheme
    from tinyodl.qas import fit_int8

    lr, steps = LR[method], epochs * len(x)
    if method in ("int8_full", "int8_full_qas"):
        scheme = _full_scheme(qmodel)
    elif method == "tinytrain":
        scheme = tinytrain.select(qmodel, x, y, BUDGET_BYTES, batch_size=1, momentum=True)
    else:
        scheme = SCHEME
    if method in ("sparse_update_engine", "tinytrain"):
        work = tinytrain.apply(copy.deepcopy(qmodel), scheme)
        plan = engine.compile_training(
            work, (1, *x.shape[1:]), scheme=scheme, lr=lr, momentum=0.9, qas=True
        )
        losses = engine.fit(plan, x, y, epochs=epochs, seed=seed,
                            schedule=schedules.Cosine(lr, steps))  # fmt: skip
    else:
        work = su.apply_scheme(copy.deepcopy(qmodel), scheme)
        opt = su.SparseInt8Optimizer(work, "sgd", lr=lr, momentum=0.9, qas=method != "int8_full")
        cosine = schedules.Cosine(lr, steps)
        losses = fit_int8(work, opt, x, y, epochs=epochs, batch_size=1, seed=seed,
                          schedule=cosine, step_fn=su.sparse_train_step)  # fmt: skip
    counts = energy.training_step_counts(
        energy.layer_costs(qmodel, x.shape[1:]),
        energy.trainable_from_scheme(qmodel, scheme),
        1,
        momentum=True,
    )
    return work, counts, len(losses), scheme.to_dict()


def deployed_model(method: str, calibration: int = 128) -> Any:
    """Task B's pretrained model as the device runs it for ``method``: float, or int8 (PTQ
    on ``calibration`` clean images, :func:`tinyodl.tasks.calibration_images`)."""
    from tinyodl.tasks import calibration_images, pretrained

    model = pretrained("B")
    if method not in INT8_METHODS:
        return model
    from tinyodl.quantization import quantize_model

    return quantize_model(model, calibration_images("B", calibration))


def _model_bytes(model: Any) -> int:
    """Bytes of the model a cloud would send back: int8 graph or float32 parameters."""
    return int(model.nbytes()) if hasattr(model, "nbytes") else 4 * model.num_params()


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    from tinyodl.train import evaluate

    return float(evaluate(model, x, y, batch_size=500)[1])


class _Monitor:
    """One detector (or none) watching the current model's signals."""

    def __init__(self, policy: str, cfg: ScenarioConfig, stream: Stream) -> None:
        self.policy, self.cfg, self.stream = policy, cfg, stream
        self.reference_until = 0
        self.start(0, None)

    def start(self, t0: int, sig: dict | None) -> None:
        """(Re)start at step ``t0``; two-sample tests take the next steps as reference."""
        cfg = self.cfg
        self.pending: list[tuple[int, float]] = []  # (arrival step, error) for late labels
        if self.policy == "page_hinkley":
            self.det = PageHinkley(cfg.ph_delta, cfg.ph_threshold, alpha=1.0, mode="down")
        elif self.policy == "ddm":
            self.det = DDM()
        elif self.policy == "adwin":
            self.det = ADWIN()
        else:
            self.det = None
        self.reference_until = t0 + cfg.reference if self.policy in ("mmd", "ks") else t0

    def step(self, t: int, sig: dict, t_sig: int) -> bool:
        """Feed step ``t`` (signals of the current model start at step ``t_sig``)."""
        cfg, i = self.cfg, t - t_sig
        if self.policy == "oracle":
            return t == self.stream.switch
        if self.policy in ("mmd", "ks"):
            if t < self.reference_until:
                return False
            if self.det is None:
                lo = self.reference_until - cfg.reference - t_sig
                ref = sig["features"][lo : lo + cfg.reference]
                self.det = WindowDetector(ref, self.policy, cfg.window, cfg.alpha, seed=cfg.seed)
            return self.det.update(sig["features"][i])
        if self.policy == "page_hinkley":
            return self.det.update(sig["confidence"][i])
        if self.policy in ("ddm", "adwin"):
            error = float(sig["pred"][i] != self.stream.y[t])
            self.pending.append((t + cfg.label_delay, error))
            alarm = False
            while self.pending and self.pending[0][0] <= t:
                alarm |= self.det.update(self.pending.pop(0)[1])
            return alarm
        return False


def run_policy(
    policy: str,
    model: Any,
    method: str | None,
    stream: Stream,
    cfg: ScenarioConfig,
    base: dict[str, Any] | None = None,
    keep_correct: bool = False,
    constants: Any = None,
) -> dict[str, Any]:
    """Run one policy over the stream; returns its row of the scenario table.

    ``base`` (optional, to share work between policies): the starting model's
    :func:`model_signals` on the stream and its test accuracies (``"signals"``,
    ``"test_new"``, ``"test_clean"``). ``keep_correct``: add the per-step 0/1 ``"correct"``.
    ``constants``: :class:`tinyodl.energy.EnergyConstants` (default
    :data:`tinyodl.energy.DEFAULT`) of the energy columns.
    """
    from tinyodl import energy

    c = energy.DEFAULT if constants is None else constants
    if policy not in POLICIES:
        raise ValueError(f"run_policy: policy must be one of {POLICIES}, got {policy!r}")
    if base is None:
        base = {
            "signals": model_signals(model, stream.x),
            "test_new": _accuracy(model, stream.x_test_new, stream.y_test_new),
            "test_clean": _accuracy(model, stream.x_test_old, stream.y_test_old),
        }
    T, switch, delay = len(stream.y), stream.switch, cfg.label_delay
    buffer = LabelBuffer(cfg.storage_bytes, bits=cfg.bits)
    trigger = TriggerPolicy(min(cfg.min_examples, buffer.capacity), buffer.capacity)
    monitor = _Monitor(policy, cfg, stream)
    sig, t_sig = base["signals"], 0
    preds = np.empty(T, dtype=np.int64)
    alarms, adaptations, costs = [], [], []
    for t in range(T):
        preds[t] = sig["pred"][t - t_sig]
        alarm = monitor.step(t, sig, t_sig)
        if alarm:
            alarms.append(t)
        arrived = t - delay  # the label of step t - delay arrives now
        new = 0
        if arrived >= 0:
            if alarm and policy != "schedule":
                buffer.clear()
            buffer.add(stream.x[arrived], int(stream.y[arrived]))
            new = 1
        if policy == "schedule":
            go = (t + 1) % cfg.schedule_every == 0 and len(buffer) >= trigger.min_examples
        elif policy == "never":
            go = False
        else:
            go = trigger.step(alarm, new)
        if go and t + 1 < T:
            x, y = buffer.data()
            model, counts, steps, scheme = adapt_counted(
                model, method, x, y, cfg.epochs, cfg.seed + len(adaptations)
            )
            adaptations.append(t)
            up = len(y) * (int(np.prod(x.shape[1:])) + 1)  # raw uint8 pixels + a label byte
            down = _model_bytes(model)  # the retrained model
            costs.append(
                {
                    "method": method,
                    "scheme": scheme,
                    "examples": len(y),
                    "steps": steps,
                    "step_macs_int8": counts.macs_int8,
                    "step_macs_fp32": counts.macs_fp32,
                    "step_sram_bytes": counts.sram_bytes,
                    "step_flash_bytes": counts.flash_bytes,
                    "step_joules": energy.compute_energy(counts, c)["total"],
                    "joules": energy.compute_energy(counts.scaled(steps), c)["total"],
                    "cloud_bytes_up": up,
                    "cloud_bytes_down": down,
                    "cloud_radio_joules": energy.radio_energy(up, down, cfg.radio, c),
                }
            )
            trigger.adapted()
            buffer.clear()
            sig, t_sig = model_signals(model, stream.x[t + 1 :]), t + 1
            monitor.start(t + 1, sig)
    alarms = np.array(alarms, dtype=np.int64)
    after = alarms[alarms >= switch]
    false_alarms = int(np.sum(alarms < switch))
    right = preds == stream.y
    first_adapt = next((a for a in adaptations if a >= switch), None)
    row = {
        "policy": policy,
        "switch": switch,
        "detection_delay": int(after[0] - switch) if len(after) else None,
        "false_alarms": false_alarms,
        "false_alarms_per_10k": 1e4 * false_alarms / switch,
        "alarms": alarms.tolist(),
        "adaptations": adaptations,
        "n_adaptations": len(adaptations),
        "adaptation_delay": None if first_adapt is None else int(first_adapt - switch),
        "stream_accuracy_before_switch": float(right[:switch].mean()),
        "stream_accuracy_after_switch": float(right[switch:].mean()),
        "stream_accuracy_last_quarter": float(right[T - (T - switch) // 4 :].mean()),
        "test_accuracy_new_writer": _accuracy(model, stream.x_test_new, stream.y_test_new)
        if adaptations
        else base["test_new"],
        "test_accuracy_clean": _accuracy(model, stream.x_test_old, stream.y_test_old)
        if adaptations
        else base["test_clean"],
    }
    total = float(sum(a["joules"] for a in costs))
    row.update(
        adaptation_costs=costs,
        adaptation_steps_run=int(sum(a["steps"] for a in costs)),
        energy_per_adaptation_joules=total / len(costs) if costs else None,
        energy_joules=total,
        radio_joules=0.0,  # the device uploads nothing
        cloud_radio_joules=float(sum(a["cloud_radio_joules"] for a in costs)),
        cloud_radio_up_joules=float(
            sum(energy.radio_energy(a["cloud_bytes_up"], 0, cfg.radio, c) for a in costs)
        ),
    )
    if keep_correct:
        row["correct"] = right.astype(np.int8).tolist()
    return row


def run_scenario(
    cfg: ScenarioConfig, progress: bool = True, keep_correct: bool = False, constants: Any = None
) -> dict[str, Any]:
    """Every policy of ``cfg`` on one seeded stream; returns ``{"config", "info", "rows"}``.

    ``constants``: the energy model's (:class:`tinyodl.energy.EnergyConstants`).
    """
    from tqdm.auto import tqdm

    costs = cfg.costs if cfg.costs is not None else demo_costs()
    bad = sorted(set(cfg.methods) - set(LOOP_METHODS))
    if bad:
        raise ValueError(f"run_scenario: unknown methods {bad}; the loop runs {LOOP_METHODS}")
    runnable = {m: c for m, c in costs.items() if m in cfg.methods}
    method = choose_method(runnable, cfg.memory_budget)
    if method is None:
        raise ValueError(
            f"run_scenario: no method of {sorted(runnable)} fits a training-memory budget of "
            f"{cfg.memory_budget} bytes"
        )
    stream = make_stream(cfg)
    model = deployed_model(method)
    base = {
        "signals": model_signals(model, stream.x),
        "test_new": _accuracy(model, stream.x_test_new, stream.y_test_new),
        "test_clean": _accuracy(model, stream.x_test_old, stream.y_test_old),
    }
    rows = []
    for policy in tqdm(cfg.policies, disable=not progress, desc=f"seed {cfg.seed}"):
        rows.append(run_policy(policy, model, method, stream, cfg, base, keep_correct, constants))
    info = {
        "method": method,
        "method_peak_bytes": costs[method]["peak_bytes"],
        "best_fitting_any_method": choose_method(costs, cfg.memory_budget),
        "buffer_capacity": LabelBuffer(cfg.storage_bytes, bits=cfg.bits).capacity,
        "switch": stream.switch,
        "accuracy_before_adaptation_new_writer": base["test_new"],
        "accuracy_before_adaptation_clean": base["test_clean"],
        # Each policy's compute energy over the stream (joules; details in its row).
        "energy_joules": {r["policy"]: r["energy_joules"] for r in rows},
        "radio": cfg.radio,
    }
    config = {k: v for k, v in asdict(cfg).items() if k != "costs"}
    return {"config": config, "info": info, "rows": rows}


def _nan_mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarise(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds of each policy's numbers (delays over the seeds that detected)."""
    out = []
    for policy in docs[0]["config"]["policies"]:
        rows = [next(r for r in d["rows"] if r["policy"] == policy) for d in docs]
        pre = sum(r["switch"] for r in rows)
        row = {
            "policy": policy,
            "seeds": len(rows),
            "detected": sum(r["detection_delay"] is not None for r in rows),
            "detection_delay": _nan_mean([r["detection_delay"] for r in rows]),
            "adaptation_delay": _nan_mean([r["adaptation_delay"] for r in rows]),
            "false_alarms_per_10k": 1e4 * sum(r["false_alarms"] for r in rows) / pre,
            "n_adaptations": float(np.mean([r["n_adaptations"] for r in rows])),
            # per adaptation: over all the seeds' adaptations; totals: mean over seeds
            "energy_per_adaptation_joules": _nan_mean(
                [a["joules"] for r in rows for a in r["adaptation_costs"]]
            ),
            "energy_joules": float(np.mean([r["energy_joules"] for r in rows])),
            "radio_joules": float(np.mean([r["radio_joules"] for r in rows])),
            "cloud_radio_joules": float(np.mean([r["cloud_radio_joules"] for r in rows])),
            "cloud_radio_up_joules": float(np.mean([r["cloud_radio_up_joules"] for r in rows])),
        }
        for key in (
            "stream_accuracy_before_switch",
            "stream_accuracy_after_switch",
            "stream_accuracy_last_quarter",
            "test_accuracy_new_writer",
            "test_accuracy_clean",
        ):
            row[key] = float(np.mean([r[key] for r in rows]))
        out.append(row)
    return out


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of :func:`summarise`'s rows (accuracies in %).

    Columns: seeds whose stream raised an alarm at or after the switch; mean detection delay
    (steps); false alarms per 10,000 steps before the switch; adaptations per stream; mean
    steps from the switch to the first adaptation after it ("at +"); stream accuracy before
    the switch, after it and on the last quarter; final test accuracy, new writer and clean;
    compute energy per adaptation and over the stream (mJ; the device sends nothing), and
    the radio energy of sending the adaptations' buffers to a cloud instead ("cloud mJ").
    """

    def mj(v):
        return None if v is None else 1e3 * v

    def num(v, fmt):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    head = (
        f"{'policy':<14}{'detected':>9}{'delay':>8}{'FA/10k':>8}{'adapt.':>7}{'at +':>6}"
        f"{'stream before':>14}{'after':>7}{'last 1/4':>9}{'test new':>9}{'clean':>7}"
        f"{'mJ/adapt':>9}{'mJ total':>9}{'cloud mJ':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['policy']:<14}{r['detected']:>5}/{r['seeds']:<3}"
            f"{num(r['detection_delay'], '.0f'):>8}"
            f"{num(r['false_alarms_per_10k'], '.1f'):>8}{r['n_adaptations']:>7.1f}"
            f"{num(r['adaptation_delay'], '.0f'):>6}"
            f"{100 * r['stream_accuracy_before_switch']:>14.1f}"
            f"{100 * r['stream_accuracy_after_switch']:>7.1f}"
            f"{100 * r['stream_accuracy_last_quarter']:>9.1f}"
            f"{100 * r['test_accuracy_new_writer']:>9.1f}{100 * r['test_accuracy_clean']:>7.1f}"
            f"{num(mj(r.get('energy_per_adaptation_joules')), '.2f'):>9}"
            f"{num(mj(r.get('energy_joules')), '.2f'):>9}"
            f"{num(mj(r.get('cloud_radio_joules')), '.1f'):>9}"
        )
    return "\n".join(lines)
