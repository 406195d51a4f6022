"""Pruning: fewer weights, fewer channels, smaller storage (chapter 02).

Trained networks are over-parameterised: most weights can be removed with little loss of
accuracy if the network is fine-tuned afterwards (LeCun et al. 1990, "Optimal brain
damage"; Han et al. 2015). Two kinds:

* **unstructured** (:mod:`~tinyodl.pruning.magnitude`): zero individual weights of smallest
  magnitude, per layer or with one global threshold; masks keep them zero during
  fine-tuning (:class:`MaskedOptimizer`), and a gradual cubic schedule (Zhu & Gupta 2018,
  :mod:`~tinyodl.pruning.schedule`) prunes during training. The weights can then be stored
  as a bitmask or in CSR form (:mod:`~tinyodl.pruning.storage`); dense kernels still do
  every multiply.
* **structured** (:mod:`~tinyodl.pruning.structured`): remove whole channels (filters) so
  that layers physically shrink -- fewer parameters and multiply-accumulates
  (:func:`count_macs`) and a faster forward pass with the same dense kernels
  (:func:`inference_time`). Batchnorm after a convolution and the layer that reads the
  channels shrink with it; residual additions are respected.

:func:`sensitivity_scan` prunes one layer at a time to see which layers tolerate it.
The notebook (``chapters/02_pruning.py``) and ``tinyodl bench pruning`` prune the 2NN of
McMahan et al. to 90% sparsity within a point of its dense accuracy, plot accuracy against
sparsity for both kinds, and measure the speed-up of channel pruning.
"""

from tinyodl.pruning.cost import count_macs, inference_time, speedup
from tinyodl.pruning.magnitude import (
    MaskedOptimizer,
    apply_masks,
    layer_sparsities,
    magnitude_masks,
    prunable_weights,
    sparsity,
)
from tinyodl.pruning.schedule import GradualPruner, gradual_sparsity, prune_and_finetune
from tinyodl.pruning.sensitivity import sensitivity_scan
from tinyodl.pruning.storage import (
    BitmaskTensor,
    CSRTensor,
    model_storage,
    storage_bytes,
    to_bitmask,
    to_csr,
)
from tinyodl.pruning.structured import (
    ChannelGroup,
    channel_groups,
    channel_prune,
    channel_scores,
    get_layer,
    prune_group,
)

__all__ = [
    "BitmaskTensor",
    "CSRTensor",
    "ChannelGroup",
    "GradualPruner",
    "MaskedOptimizer",
    "apply_masks",
    "channel_groups",
    "channel_prune",
    "channel_scores",
    "count_macs",
    "get_layer",
    "gradual_sparsity",
    "inference_time",
    "layer_sparsities",
    "magnitude_masks",
    "model_storage",
    "prunable_weights",
    "prune_and_finetune",
    "prune_group",
    "sensitivity_scan",
    "sparsity",
    "speedup",
    "storage_bytes",
    "to_bitmask",
    "to_csr",
]
