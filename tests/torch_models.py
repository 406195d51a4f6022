"""PyTorch twins of tinyodl's four models, with the same module names (test oracles).

Only imported by tests that have already called ``pytest.importorskip("torch")``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from tinyodl.models import MCUNET_TINY_BLOCKS


def _seq(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict((str(i), layer) for i, layer in enumerate(layers)))


def _model(features: nn.Module, classifier: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict(features=features, classifier=classifier))


def mlp_2nn() -> nn.Sequential:
    return _model(
        _seq(nn.Flatten(), nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU()),
        _seq(nn.Linear(200, 10)),
    )


def cnn_mcmahan() -> nn.Sequential:
    return _model(
        _seq(
            nn.Conv2d(1, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        ),
        _seq(nn.Linear(7 * 7 * 64, 512), nn.ReLU(), nn.Linear(512, 10)),
    )


def lenet5() -> nn.Sequential:
    return _model(
        _seq(
            nn.Conv2d(1, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        ),
        _seq(nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)),
    )


class InvertedResidual(nn.Sequential):
    """MobileNetV2 block with tinyodl's child names; adds the input when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, k: int = 3) -> None:
        hidden = cin * expand
        layers = OrderedDict()
        if expand != 1:
            layers["expand"] = nn.Conv2d(cin, hidden, 1, bias=False)
            layers["expand_bn"] = nn.BatchNorm2d(hidden)
            layers["expand_act"] = nn.ReLU6()
        layers["depthwise"] = nn.Conv2d(
            hidden, hidden, k, stride, k // 2, groups=hidden, bias=False
        )
        layers["depthwise_bn"] = nn.BatchNorm2d(hidden)
        layers["depthwise_act"] = nn.ReLU6()
        layers["project"] = nn.Conv2d(hidden, cout, 1, bias=False)
        layers["project_bn"] = nn.BatchNorm2d(cout)
        super().__init__(layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y + x if self.use_residual else y


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def mcunet_tiny() -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU6(),
    ]
    channels = 16
    for expand, out, stride in MCUNET_TINY_BLOCKS:
        layers.append(InvertedResidual(channels, out, stride, expand))
        channels = out
    layers += [nn.Conv2d(channels, 160, 1, bias=False), nn.BatchNorm2d(160), nn.ReLU6()]
    layers.append(GlobalAvgPool())
    return _model(_seq(*layers), _seq(nn.Linear(160, 10)))


BUILDERS = {
    "mlp_2nn": mlp_2nn,
    "cnn_mcmahan": cnn_mcmahan,
    "lenet5": lenet5,
    "mcunet_tiny": mcunet_tiny,
}


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Give every batchnorm non-trivial affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                c = module.num_features
                module.weight.copy_(0.5 + torch.rand(c, generator=gen))
                module.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                module.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                module.num_batches_tracked.fill_(7)
