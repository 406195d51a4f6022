"""Differential privacy for on-device learning (chapter 10).

Training on a device keeps the raw data there, but the model it sends back (or the updates
of a federated round) can still reveal a record. Differential privacy bounds what any
output reveals about any one record: a randomized algorithm M is (epsilon, delta)-DP if
for neighbouring datasets D, D' and all output sets S,
``P[M(D) in S] <= e^epsilon P[M(D') in S] + delta``. This package builds the toolbox:

* :mod:`~tinyodl.privacy.mechanisms` -- Laplace, Gaussian (classic bound and the analytic
  calibration of Balle & Wang 2018), randomized response;
* :mod:`~tinyodl.privacy.rdp` and :mod:`~tinyodl.privacy.accountant` -- Renyi DP of the
  Poisson-subsampled Gaussian (integer and fractional orders), composition, the two
  conversions to (epsilon, delta), ``epsilon(q=, noise_multiplier=, steps=, delta=)`` and
  its inverses;
* :mod:`~tinyodl.privacy.dpsgd` -- DP-SGD (Abadi et al. 2016): vectorized per-example
  gradients from ``backward(per_example=True)``, clipping, noise, Poisson sampling;
  :mod:`~tinyodl.privacy.training` -- the training loop, averaging of the iterates and
  augmentation multiplicity (De et al. 2022: the mean gradient of K augmented copies of an
  example, clipped once);
* :mod:`~tinyodl.privacy.ghost` and :mod:`~tinyodl.privacy.memory` -- ghost clipping and
  the measured/analytic memory of per-example gradients;
* :mod:`~tinyodl.privacy.ftrl` -- DP-FTRL with tree aggregation (Kairouz et al. 2021);
* :mod:`~tinyodl.privacy.fedavg` -- user-level DP-FedAvg with fixed or adaptive clipping
  (McMahan et al. 2018; Andrew et al. 2021), a plug-in of the chapter 09 engine;
* :mod:`~tinyodl.privacy.pca` -- DP-PCA for the Abadi et al. MNIST pipeline.

The notebook is ``chapters/10_privacy.ipynb``; ``tinyodl bench dpsgd`` reproduces Abadi et
al.'s MNIST figures, ``tinyodl bench dpmemory`` the memory comparison and ``tinyodl bench
dpfedavg`` user-level DP-FedAvg.
"""

from tinyodl.privacy.accountant import (
    CONVERSIONS,
    RDPAccountant,
    epsilon,
    noise_multiplier_for_epsilon,
    rdp_to_delta,
    rdp_to_epsilon,
    steps_for_budget,
)
from tinyodl.privacy.dpsgd import (
    CLIPPING_METHODS,
    DPSGD,
    UnsupportedLayerError,
    clip_and_sum,
    gaussian_noise,
    per_example_gradients,
    poisson_batches,
    poisson_sample,
    validate_model,
)
from tinyodl.privacy.fedavg import (
    DPFedAvg,
    PrivacyHook,
    dpfedavg_epsilon,
    split_noise_multiplier,
)
from tinyodl.privacy.ftrl import (
    DPFTRL,
    TreeAggregator,
    fit_dpftrl,
    ftrl_epsilon,
    ftrl_noise_for_epsilon,
)
from tinyodl.privacy.mechanisms import (
    estimate_frequencies,
    gaussian_delta,
    gaussian_mechanism,
    gaussian_sigma_analytic,
    gaussian_sigma_classic,
    laplace_mechanism,
    laplace_scale,
    randomized_response,
    randomized_response_keep_probability,
)
from tinyodl.privacy.pca import dp_mean, dp_pca
from tinyodl.privacy.rdp import (
    DEFAULT_ORDERS,
    rdp_gaussian,
    rdp_laplace,
    rdp_randomized_response,
    rdp_subsampled_gaussian,
    rdp_tree_aggregation,
)
from tinyodl.privacy.training import DPRun, ParameterAverage, fit_dpsgd

__all__ = [
    "CLIPPING_METHODS",
    "CONVERSIONS",
    "DEFAULT_ORDERS",
    "DPFTRL",
    "DPFedAvg",
    "DPRun",
    "DPSGD",
    "RDPAccountant",
    "ParameterAverage",
    "PrivacyHook",
    "TreeAggregator",
    "UnsupportedLayerError",
    "clip_and_sum",
    "dp_mean",
    "dp_pca",
    "dpfedavg_epsilon",
    "epsilon",
    "estimate_frequencies",
    "fit_dpftrl",
    "fit_dpsgd",
    "ftrl_epsilon",
    "ftrl_noise_for_epsilon",
    "gaussian_delta",
    "gaussian_mechanism",
    "gaussian_noise",
    "gaussian_sigma_analytic",
    "gaussian_sigma_classic",
    "laplace_mechanism",
    "laplace_scale",
    "noise_multiplier_for_epsilon",
    "per_example_gradients",
    "poisson_batches",
    "poisson_sample",
    "randomized_response",
    "randomized_response_keep_probability",
    "rdp_gaussian",
    "rdp_laplace",
    "rdp_randomized_response",
    "rdp_subsampled_gaussian",
    "rdp_to_delta",
    "rdp_to_epsilon",
    "rdp_tree_aggregation",
    "split_noise_multiplier",
    "steps_for_budget",
    "validate_model",
]
