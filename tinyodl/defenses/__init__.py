"""tinyodl.defenses: protecting on-device learning (chapter 11, textbook section 12.6.5-6).

====================  ==============================================  ===========================
defense               against                                         here
====================  ==============================================  ===========================
adversarial training  evasion (FGSM, PGD): FGSM with a random start   :func:`adversarial_fit`,
                      (Wong et al. 2020) or PGD (Madry et al. 2018)   :func:`robust_cnn`
defensive             gradient-based evasion -- gradient masking      :func:`defensive_distillation`
distillation          only (the notebook breaks it)
input validation      inserted noise/garbage, off-distribution        :class:`InputValidator`
                      inputs; rejected inputs are quarantined
anomaly detection     poisoned training batches (label flipping,      :class:`StreamGuard`,
                      backdoors): class-conditional PCA + CUSUM,      :class:`PCADetector`,
                      batches dropped before the update               :class:`CUSUM`
robust aggregation    malicious federated clients                     ``tinyodl.federated``
differential privacy  membership inference (advantage <= e^eps - 1)   ``tinyodl.privacy``
similarity unpairing  transfer attacks from the on-device model       :func:`similarity_unpairing`
====================  ==============================================  ===========================

Robust aggregation (coordinate median, trimmed mean, Krum) and DP-SGD are not repeated here:
they are the aggregators of :mod:`tinyodl.federated` and the mechanisms of
:mod:`tinyodl.privacy`, and ``tinyodl bench security`` measures them against the attacks of
:mod:`tinyodl.attacks`.
"""

from tinyodl.defenses.adversarial_training import (
    METHODS,
    OneCycle,
    adversarial_fit,
    make_training_attack,
    robust_cnn,
)
from tinyodl.defenses.detection import (
    CUSUM,
    InputValidator,
    PCADetector,
    StreamGuard,
    flatten_features,
    model_features,
    train_on_stream,
)
from tinyodl.defenses.distillation import defensive_distillation, temperature_loss
from tinyodl.defenses.unpairing import (
    cosine_penalty,
    gradient_similarity,
    similarity_unpairing,
    unpairing_penalty,
)

__all__ = [
    "CUSUM",
    "METHODS",
    "InputValidator",
    "OneCycle",
    "PCADetector",
    "StreamGuard",
    "adversarial_fit",
    "cosine_penalty",
    "defensive_distillation",
    "flatten_features",
    "gradient_similarity",
    "make_training_attack",
    "model_features",
    "robust_cnn",
    "similarity_unpairing",
    "temperature_loss",
    "train_on_stream",
    "unpairing_penalty",
]
