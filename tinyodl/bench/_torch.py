"""PyTorch baselines for the benchmarks (used only when torch is installed; never required).

The same layer or model as tinyodl's, built in PyTorch, so both can be timed in one process:

* :func:`fbgemm_linear` / :func:`fbgemm_conv` -- quantized ``Linear`` / ``Conv2d`` of
  ``torch.ao.nn.quantized`` on the FBGEMM engine (per-channel int8 weights, quint8
  activations in channels-last layout), the int8 reference point of the issue;
* :func:`torch_model` -- the float model of :mod:`tinyodl.models` layer for layer, and
  :func:`torch_step` -- one SGD training step of it.

tinyodl itself never imports this module.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def torch_or_none() -> Any:
    """The ``torch`` module, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run PyTorch's intra-op parallelism on ``n`` threads inside the block."""
    torch = torch_or_none()
    if torch is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _engine(torch: Any) -> None:
    if "fbgemm" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "fbgemm"


def _qweight(torch: Any, w: np.ndarray) -> Any:
    """Per-output-channel qint8 weights holding exactly the int8 values of ``w``."""
    f = w.shape[0]
    return torch.quantize_per_channel(
        torch.from_numpy(w.astype(np.float32) * 0.01), torch.full((f,), 0.01, dtype=torch.double),
        torch.zeros(f, dtype=torch.long), 0, torch.qint8,
    )  # fmt: skip


def _qinput(torch: Any, x: np.ndarray) -> Any:
    """quint8 activations x + 128 (same values as the int8 x with its zero point moved)."""
    return torch.quantize_per_tensor(
        torch.from_numpy((x.astype(np.float32) + 128.0) * 0.02), 0.02, 0, torch.quint8
    )


def fbgemm_linear(x: np.ndarray, w: np.ndarray) -> Callable[[], Any]:
    """A call of PyTorch's quantized ``Linear`` on int8 data shaped like ``linear_s8``'s.

    ``x`` (N, K) int8 becomes a quint8 tensor (x + 128, same scale), ``w`` (F, K) int8
    per-channel qint8 weights; the output is requantized to quint8, as tinyodl's is to int8.
    (torch 2.13 warns that this API is deprecated; the warnings are silenced here.)
    """
    torch = torch_or_none()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _engine(torch)
        f, k = w.shape
        layer = torch.ao.nn.quantized.Linear(k, f)
        layer.set_weight_bias(_qweight(torch, w), torch.zeros(f))
        layer.scale, layer.zero_point = 1.0, 128
        xq = _qinput(torch, x)
    return lambda: layer(xq)


def fbgemm_conv(
    x: np.ndarray, w: np.ndarray, stride: int, padding: int, groups: int
) -> Callable[[], Any]:
    """A call of PyTorch's quantized ``Conv2d`` (FBGEMM, channels-last input) on the layer."""
    torch = torch_or_none()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _engine(torch)
        f, _, kh, kw = w.shape
        layer = torch.ao.nn.quantized.Conv2d(x.shape[1], f, (kh, kw), stride, padding,
                                             groups=groups)  # fmt: skip
        layer.set_weight_bias(_qweight(torch, w), torch.zeros(f))
        layer.scale, layer.zero_point = 0.5, 128
        xq = _qinput(torch, x).contiguous(memory_format=torch.channels_last)
    return lambda: layer(xq)


# ---------------------------------------------------------------------------------------
# float models and their training step
# ---------------------------------------------------------------------------------------


def torch_model(name: str, seed: int = 0) -> Any:
    """The PyTorch twin of ``tinyodl.models.<name>`` (same layers, shapes and defaults)."""
    torch = torch_or_none()
    nn = torch.nn
    torch.manual_seed(seed)
    if name == "mlp_2nn":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, 10),
        )  # fmt: skip
    if name == "cnn_mcmahan":
        return nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(7 * 7 * 64, 512), nn.ReLU(), nn.Linear(512, 10),
        )  # fmt: skip
    if name == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        )  # fmt: skip
    if name == "mcunet_tiny":
        return _mcunet_tiny(torch)
    raise ValueError(f"torch_model: no PyTorch twin for {name!r}")


def _mcunet_tiny(torch: Any) -> Any:
    from tinyodl.models import MCUNET_TINY_BLOCKS

    nn = torch.nn

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            layers: list[Any] = []
            if expand != 1:
                layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                           nn.ReLU6()]  # fmt: skip
            layers += [
                nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                nn.BatchNorm2d(hidden), nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            ]  # fmt: skip
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: Any) -> Any:
            y = self.body(x)
            return x + y if self.residual else y

    layers: list[Any] = [nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()]
    channels = 16
    for expand, out, stride in MCUNET_TINY_BLOCKS:
        layers.append(InvertedResidual(channels, out, stride, expand))
        channels = out
    layers += [
        nn.Conv2d(channels, 160, 1, bias=False), nn.BatchNorm2d(160), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(160, 10),
    ]  # fmt: skip
    return nn.Sequential(*layers)


def torch_step(name: str, x: np.ndarray, y: np.ndarray, seed: int = 0) -> Callable[[], None]:
    """One training step (forward, cross-entropy, backward, SGD momentum 0.9) of the twin."""
    torch = torch_or_none()
    model = torch_model(name, seed)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(tx), ty).backward()
        opt.step()

    return step
