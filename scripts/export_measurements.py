"""Chapter 13's numbers: onnxruntime and LiteRT against tinyodl, the round trip, sizes.

    OMP_NUM_THREADS=1 python scripts/export_measurements.py --out benchmarks/results/export.json

Needs the ``deploy`` extra, ``ai-edge-litert`` and (for the round trip) ``torch``. Uses the
shipped ``mcunet_tiny`` of task A, PTQ on 256 calibration images, the shipped test split
(2,000 images).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from tinyodl.data import load_mnist, to_float
    from tinyodl.export import (
        apply_diff,
        compress,
        compute_diff,
        from_onnx,
        save_training_checkpoint,
        tflite_compatible,
        to_c_array,
        to_onnx,
        to_onnx_int8,
        to_tflite,
    )
    from tinyodl.quantization import quantize_model
    from tinyodl.tasks import calibration_images, load_task, pretrained

    def session(proto):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        return ort.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    out: dict = {"command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv)}
    images, _ = load_mnist("test")
    x = to_float(images)
    model = pretrained("A")
    q = quantize_model(model, calibration_images("A", 256))
    # ONNX float
    proto = to_onnx(model, (1, 1, 28, 28))
    got, want = session(proto).run(None, {"input": x})[0], model.forward(x, train=False)
    out["onnx_float"] = {
        "bytes": len(proto.SerializeToString()),
        "max_abs_diff": float(np.max(np.abs(got - want))),
        "max_rel_diff": float(np.max(np.abs(got - want)) / np.max(np.abs(want))),
    }
    # ONNX int8 against both roundings
    out["onnx_int8"] = {}
    for rounding in ("double", "single"):
        qq = copy.deepcopy(q).set_rounding(rounding)
        p = to_onnx_int8(qq, (1, 1, 28, 28))
        yq, y = session(p).run(None, {"input": x})
        ref = qq.forward_int(qq.quantize_input(x))
        d = yq.astype(np.int64) - ref
        out["onnx_int8"][rounding] = {
            "bytes": len(p.SerializeToString()),
            "max_abs_diff_int8": int(np.abs(d).max()),
            "fraction_off": float(np.mean(d != 0)),
            "fraction_off_by_more_than_1": float(np.mean(np.abs(d) > 1)),
            "max_abs_diff_float_logits": float(np.max(np.abs(y - qq.dequantize_output(ref)))),
            "top1_agreement": float(np.mean(y.argmax(1) == ref.argmax(1))),
        }
    # TFLite with LiteRT, three resolvers
    data = to_tflite(q, (1, 1, 28, 28))
    twin = tflite_compatible(q)
    xq = twin.quantize_input(x)
    ref = twin.forward_int(xq)
    out["tflite"] = {"bytes": len(data), "c_array_cc_bytes": len(to_c_array(data)[1])}
    for kind in ("BUILTIN_REF", "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "AUTO"):
        interp = Interpreter(
            model_content=data, experimental_op_resolver_type=getattr(OpResolverType, kind)
        )
        interp.resize_tensor_input(0, (len(xq), 28, 28, 1))
        interp.allocate_tensors()
        interp.set_tensor(
            interp.get_input_details()[0]["index"], np.ascontiguousarray(xq.transpose(0, 2, 3, 1))
        )
        interp.invoke()
        o = interp.get_tensor(interp.get_output_details()[0]["index"]).astype(np.int64)
        out["tflite"][kind] = {
            "mismatches": int(np.sum(o != ref)),
            "of": int(ref.size),
            "max_abs_diff": int(np.abs(o - ref).max()),
        }
    fc_double = tflite_compatible(q).set_rounding("double", "double").forward_int(xq)
    out["tflite"]["fc_double_vs_reference_mismatches"] = int(np.sum(fc_double != ref))
    out["tflite"]["float64_scales_model_vs_file_mismatches"] = int(
        np.sum(q.for_runtime("tflite").forward_int(xq) != ref)
    )
    # round trip: torch export -> import -> fine-tune on task A -> export -> onnxruntime
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import torch_models

    from tinyodl import nn
    from tinyodl.nn.torch_interop import torch_state_dict
    from tinyodl.train import fit

    module = torch_models.mcunet_tiny()
    module.load_state_dict(torch_state_dict(model))
    module.eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 1, 28, 28),), f, dynamo=True, opset_version=18)
    imported = from_onnx(f.getvalue())
    base = copy.deepcopy(imported)
    task = load_task("A")
    rt = {"torch_onnx_bytes": len(f.getvalue()), "accuracy_before": task.accuracy(imported)}
    head = imported.names()[-1]
    imported.replace(head, nn.Linear(160, 10, seed=0))
    base.replace(head, copy.deepcopy(imported[head]))
    t0 = time.perf_counter()
    fit(
        imported,
        nn.SGD(imported, lr=0.01, momentum=0.9),
        task.x_train,
        task.y_train,
        epochs=3,
        batch_size=32,
        seed=0,
        progress=False,
    )
    rt["finetune_seconds_shared_machine"] = time.perf_counter() - t0
    rt["accuracy_after"] = task.accuracy(imported)
    p = to_onnx(imported, (1, 1, 28, 28))
    got, want = (
        session(p).run(None, {"input": task.x_test})[0],
        imported.forward(task.x_test, train=False),
    )
    rt["onnx_max_abs_diff"] = float(np.max(np.abs(got - want)))
    rt["onnx_accuracy"] = float(np.mean(got.argmax(1) == task.y_test))
    rt["finetuned_onnx_bytes"] = len(p.SerializeToString())
    out["round_trip"] = rt
    # artifacts and differences
    with tempfile.TemporaryDirectory() as folder:
        npz, js = save_training_checkpoint(
            Path(folder) / "ckpt", imported, None, step=1, rng=np.random.default_rng(0), qmodel=q
        )
        out["artifact"] = {"npz_bytes": npz.stat().st_size, "json_bytes": js.stat().st_size}
    diff = compute_diff(base, imported)
    exact = apply_diff(base, diff)
    same = all(np.array_equal(exact.state_dict()[k], v) for k, v in imported.state_dict().items())
    out["diff"] = {
        "float32_bytes": diff.nbytes(),
        "exact": same,
        "fixups": sum(len(i) for i, _ in diff.exact.values()),
    }
    for method, kw in (("int8", {}), ("topk", {"k_fraction": 0.01})):
        c = compress(diff, method, **kw)
        approx = apply_diff(base, c)
        out["diff"][method] = {"bytes": c.nbytes(), "accuracy": task.accuracy(approx)}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
