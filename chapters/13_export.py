# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 13 — Deployment: ONNX and TFLite out, ONNX in, artifacts and differences
#
# A model trained with tinyodl has to leave it: to a phone (ONNX Runtime, LiteRT), to a
# microcontroller (TFLite Micro reads a `.tflite` file compiled into the firmware), or back
# to a server after training on the device. ONNX Runtime's on-device-training story is the
# plan of this chapter: take an inference model, train it on the device, hand back an
# inference-ready model -- and for a federated round only the *difference*.
#
# 1. Float export to ONNX, checked by onnxruntime.
# 2. Int8 export to ONNX (`QLinearConv`), and why it cannot be bit-exact: rounding.
# 3. Int8 export to TFLite, written byte by byte from the schema (no TensorFlow), run by
#    LiteRT **bit-exactly** -- and the C array a microcontroller embeds.
# 4. ONNX import: a graph becomes a trainable model; fine-tune it; export it again.
# 5. The training artifact (arrays + manifest with checksums) and model differences.
#
# Everything here needs the `deploy` extra: `pip install 'tinyodl[deploy]'` (LiteRT and
# PyTorch are only used to check, and are optional).

# %%
import copy
import io
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import onnxruntime as ort
from threadpoolctl import threadpool_limits

from tinyodl import nn, tasks
from tinyodl.data import load_mnist, to_float
from tinyodl.export import (
    apply_diff,
    compress,
    compute_diff,
    from_onnx,
    load_training_checkpoint,
    save_training_checkpoint,
    tflite_compatible,
    to_c_array,
    to_onnx,
    to_onnx_int8,
    to_onnx_int8_exact,
    to_tflite,
)
from tinyodl.quantization import quantize_model
from tinyodl.train import fit

QUICK = os.environ.get("TINYODL_QUICK") == "1"  # smaller runs under test; same code paths
N_TEST = 300 if QUICK else 2000  # shipped test images used for the comparisons
threadpool_limits(1)
start = time.perf_counter()
workdir = Path(tempfile.mkdtemp(prefix="tinyodl-ch13-"))


def session(model_proto):
    """An onnxruntime session on one thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


images, labels = load_mnist("test")
x_test, y_test = to_float(images[:N_TEST]), labels[:N_TEST]
model = tasks.pretrained("A")  # mcunet_tiny pretrained on digits 0-4

# %% [markdown]
# ## 1. Float model -> ONNX
#
# ONNX is a graph of standard operators with the weights inside. tinyodl's layouts are
# already ONNX's (NCHW images, conv weights `(F, C/groups, KH, KW)`, linear `(out, in)`), so
# export is a walk over the layers: one `Conv`, `BatchNormalization`, `Clip(0, 6)`, `Add`,
# `GlobalAveragePool`, `Gemm` per layer. The graph computes the evaluation-mode function.

# %%
proto = to_onnx(model, (1, 1, 28, 28), workdir / "mcunet_tiny.onnx")
ops_used = sorted({node.op_type for node in proto.graph.node})
print(f"opset {proto.opset_import[0].version}, {len(proto.graph.node)} nodes: {ops_used}")
got = session(proto).run(None, {"input": x_test})[0]
want = model.forward(x_test, train=False)
rel = np.max(np.abs(got - want)) / np.max(np.abs(want))
print(f"onnxruntime vs tinyodl: max |diff| {np.max(np.abs(got - want)):.2e} ({rel:.1e} relative)")
assert rel <= 1e-5

# %% [markdown]
# ## 2. Int8 model -> ONNX, and the rounding of a requantization
#
# Chapter 03's integer model maps to ONNX's quantized operators: `QLinearConv` holds int8
# weights with one scale per output channel, an int32 bias, and the scales and zero points
# of its input and output. The integer sums are identical. The **requantization** is not:
#
# * tinyodl (like TFLite, TFLite Micro, CMSIS-NN) multiplies the int32 accumulator by a
#   fixed-point `M0 * 2^shift` and rounds twice (`"double"` rounding, GUIDE section 3);
# * ONNX defines `round(acc * s_x s_w / s_y)` with ties to even, computed by onnxruntime in
#   float -- the exact product, rounded once. tinyodl's `"single"` rounding (XNNPACK's) is
#   the closest to it.
#
# The export targets ONNX's semantics. Each layer alone differs in a few outputs by one
# step; through 25 layers those steps add up.

# %%
q = quantize_model(model, tasks.calibration_images("A", 256))
rows = []
for rounding in ("double", "single"):
    qq = copy.deepcopy(q).set_rounding(rounding)
    yq, y = session(to_onnx_int8(qq, (1, 1, 28, 28))).run(None, {"input": x_test})
    ref = qq.forward_int(qq.quantize_input(x_test))
    d = yq.astype(np.int64) - ref
    agree = np.mean(y.argmax(1) == ref.argmax(1))
    rows.append((rounding, np.mean(d != 0), np.abs(d).max(), agree))
    print(
        f"tinyodl rounding {rounding!r:9}: int8 logits off in {np.mean(d != 0):6.2%} "
        f"(max {np.abs(d).max()} steps); same top-1 on {agree:.1%} of the images"
    )
assert rows[1][1] <= 0.01  # single rounding: at most 1% of the logits differ

# %% [markdown]
# Is rounding really the only difference? `to_onnx_int8_exact` writes the same model with
# ONNX's *integer* operators -- `ConvInteger` for the sums, int64 `Mul`, `Mod` and `Div` for
# MultiplyByQuantizedMultiplier, step by step -- and onnxruntime then agrees bit for bit.

# %%
exact = to_onnx_int8_exact(q, (1, 1, 28, 28))
xq_test = q.quantize_input(x_test)
got = session(exact).run(None, {"input_q": xq_test})[0]
mismatches = int(np.sum(got != q.forward_int(xq_test)))
print(f"{len(exact.graph.node)} integer nodes; int8 logits that differ: {mismatches}")
assert mismatches == 0

# %% [markdown]
# ## 3. Int8 model -> TFLite, bit-exact -- and a C array for a microcontroller
#
# A `.tflite` file is a FlatBuffer of TFLite's schema: tensors (shape, type, quantization),
# buffers (the weights), operators. `to_tflite` writes it with the `flatbuffers` package and
# the code `flatc` generated from `schema.fbs` (the `tflite` package) -- no TensorFlow.
# Three things must agree with TFLite's kernels for the result to be bit-exact:
#
# * **Scales are float32 in the file** and TFLite derives the multipliers from them:
#   `tflite_compatible(q)` is the same model with float32 scales.
# * **Padding**: TFLite has only SAME and VALID; SAME with stride 2 on an even input pads
#   bottom/right only. The stem conv pads 1 on every side, so it becomes an explicit `PAD`
#   (with the input zero point) before a VALID conv.
# * **Fully connected**: TFLite's reference per-channel FULLY_CONNECTED requantizes in double
#   precision, not in fixed point: tinyodl's `rounding="float"` mode for linear layers
#   (`for_runtime("tflite")`).

# %%
data = to_tflite(q, (1, 1, 28, 28), workdir / "mcunet_tiny.tflite")
twin = tflite_compatible(q)
xq = twin.quantize_input(x_test)
ref = twin.forward_int(xq)
print(f"mcunet_tiny.tflite: {len(data):,} bytes (int8 weights: {q.nbytes():,} bytes)")
try:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
except ImportError:
    print("ai-edge-litert is not installed: skipping the LiteRT check")
else:
    for kind in ("BUILTIN_REF", "BUILTIN_WITHOUT_DEFAULT_DELEGATES"):
        resolver = getattr(OpResolverType, kind)
        interp = Interpreter(
            model_content=data, experimental_op_resolver_type=resolver, num_threads=1
        )
        index = interp.get_input_details()[0]["index"]
        interp.resize_tensor_input(index, (len(xq), 28, 28, 1))
        interp.allocate_tensors()
        interp.set_tensor(index, np.ascontiguousarray(xq.transpose(0, 2, 3, 1)))
        interp.invoke()
        out = interp.get_tensor(interp.get_output_details()[0]["index"])
        print(f"LiteRT {kind}: {np.sum(out != ref)} of {ref.size} int8 logits differ")
        if kind == "BUILTIN_REF":
            assert np.array_equal(out, ref)  # TFLite's reference kernels: bit-exact
    fc_fixed = tflite_compatible(q).set_rounding("double", "double").forward_int(xq)
    print(f"with fixed-point FC requantization instead: {np.sum(fc_fixed != ref)} differ")

header, source = to_c_array(data, "g_model")
print(header)
print(source[:230] + " ...")

# %% [markdown]
# The reference kernels (what TFLite Micro is ported from) agree with tinyodl bit for bit;
# LiteRT's *optimized* x86 kernels round some residual sums and projections differently --
# the same model, another runtime's arithmetic (docs/architecture.md lists which mode matches
# which runtime).
#
# ## 4. ONNX in: a graph becomes a trainable model
#
# `from_onnx` walks an ONNX graph from its input and turns every node into a tinyodl layer
# (a tensor read twice that meets again in an `Add` becomes a residual block). Here the
# graph comes from PyTorch's exporter when PyTorch is installed, else from our own export.
# Then the device fine-tunes it on task A (new classes 5-9) and exports the result again.

# %%
try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    import sys

    import tinyodl

    sys.path.insert(0, str(Path(tinyodl.__file__).resolve().parents[1] / "tests"))
    try:
        import torch_models

        from tinyodl.nn.torch_interop import torch_state_dict

        module = torch_models.mcunet_tiny()
        module.load_state_dict(torch_state_dict(model))
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), (torch.zeros(1, 1, 28, 28),), buffer, dynamo=False)
        graph, source_name = buffer.getvalue(), "torch.onnx.export"
    except ImportError:
        torch = None
if torch is None:
    graph, source_name = proto, "tinyodl.export.to_onnx"
imported = from_onnx(graph)
n_params = sum(p.data.size for p in imported.parameters())
print(f"imported from {source_name}: {len(imported)} layers, {n_params:,} trainable parameters")

task = tasks.load_task("A", per_class=40 if QUICK else 100)
base = copy.deepcopy(imported)
head = imported.names()[-1]
imported.replace(head, nn.Linear(160, 10, seed=0))  # new classes: a new head
base.replace(head, copy.deepcopy(imported[head]))
before = task.accuracy(imported)
fit(
    imported,
    nn.SGD(imported, lr=0.01, momentum=0.9),
    task.x_train,
    task.y_train,
    epochs=2 if QUICK else 3,
    batch_size=16,
    seed=0,
    progress=False,
)
after = task.accuracy(imported)
finetuned = to_onnx(imported, (1, 1, 28, 28), workdir / "finetuned.onnx")
got = session(finetuned).run(None, {"input": task.x_test})[0]
print(f"task A accuracy: {before:.1%} with a fresh head -> {after:.1%} after fine-tuning")
print(f"exported again: onnxruntime accuracy {np.mean(got.argmax(1) == task.y_test):.1%}")
assert np.max(np.abs(got - imported.forward(task.x_test, train=False))) < 1e-4
assert after > before

# %% [markdown]
# ## 5. The training artifact, and only the difference for the server
#
# A training checkpoint must survive a power cut and a bad flash cell: the arrays go to an
# `.npz` (no pickle), a JSON manifest beside it holds the version, the step, the random
# generator's state, the quantization parameters, a SHA-256 per array and per file, and one
# over its own content (so an edited step or generator state is caught too). Both are
# written atomically; the loader checks everything before it returns anything.
#
# For a federated round the device sends `trained - base`. Uncompressed, applying it
# reproduces the trained model exactly; int8 (one scale per tensor) or top-k (the 1% largest
# entries) make it 4x to ~50x smaller, approximately.

# %%
npz, manifest = save_training_checkpoint(
    workdir / "ckpt", imported, step=1, rng=np.random.default_rng(0), qmodel=q
)
ckpt = load_training_checkpoint(manifest)
print(f"checkpoint: {npz.stat().st_size:,} B arrays + {manifest.stat().st_size:,} B manifest")
damaged = bytearray(npz.read_bytes())
damaged[len(damaged) // 2] ^= 1
npz.write_bytes(bytes(damaged))
try:
    load_training_checkpoint(manifest)
except Exception as err:  # CheckpointError
    print("one flipped bit:", str(err)[:110], "...")

diff = compute_diff(base, imported)
rebuilt = apply_diff(base, diff)
exact = all(np.array_equal(rebuilt.state_dict()[k], v) for k, v in imported.state_dict().items())
print(f"uncompressed difference: {diff.nbytes():,} B, reproduces the model exactly: {exact}")
assert exact
sizes = {"float32": diff.nbytes()}
accuracy = {"float32": task.accuracy(rebuilt)}
for method, kw in (("int8", {}), ("top-1%", {"k_fraction": 0.01})):
    c = compress(diff, "int8" if method == "int8" else "topk", **kw)
    sizes[method] = c.nbytes()
    accuracy[method] = task.accuracy(apply_diff(base, c))
    print(f"{method:7}: {c.nbytes():>9,} B, task A accuracy {accuracy[method]:.1%}")

fig, ax = plt.subplots(1, 2, figsize=(9, 3))
ax[0].bar(list(sizes), [v / 1024 for v in sizes.values()])
ax[0].set_ylabel("KiB sent")
ax[1].bar(list(accuracy), list(accuracy.values()))
ax[1].set_ylabel("task A accuracy")
fig.suptitle("What a device sends back after fine-tuning")
fig.tight_layout()
plt.show()
shutil.rmtree(workdir)  # the files of this chapter were written to a temporary folder
print(f"chapter ran in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## What to remember
#
# * Export is a change of *container*; the arithmetic must come along. Float ONNX matches to
#   1e-5; int8 matches bit for bit only when the runtime rounds as you do (TFLite's reference
#   kernels here) -- ONNX's exact-product rounding differs from fixed point by one step.
# * TFLite's SAME padding is asymmetric for stride 2 on even inputs: tinyodl's conv kernels
#   and layers (float and int8) accept `(top, bottom, left, right)`, so an imported SAME conv
#   (or PyTorch's `ZeroPad2d` + conv) runs natively; symmetric padding exports as `PAD` + VALID.
# * A model can go out, be trained on the device, and come back as an inference model or as
#   a small difference. Commands: `tinyodl export MODEL.npz --format onnx|onnx-int8|tflite|
#   c-array --out FILE`; the numbers of the README come from
#   `OMP_NUM_THREADS=1 python scripts/export_measurements.py --out benchmarks/results/export.json`.
