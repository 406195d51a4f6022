"""tinyodl.attacks: what an adversary can do to on-device learning (chapter 11).

The textbook's section 12.6 lists the threats; each has a module here, numpy only, with an
API that users of the Adversarial Robustness Toolbox (ART) or CleverHans will recognise:
attack objects built on an estimator, with ``eps``, ``eps_step``, ``max_iter``, ``norm``,
``targeted``, ``num_random_init`` and ``generate(x, y=None)``.

======================  ===============================================  ===============
threat                  what is here                                     module
======================  ===============================================  ===============
the model, as attacked  :class:`Classifier` (logits, ``dL/dx``,          ``estimator``
                        queries), :class:`BlackBox` (scores or labels)
evasion, white box      :class:`FastGradientMethod` / :class:`FGSM`,     ``evasion``
                        :class:`ProjectedGradientDescent` / :class:`PGD`
evasion, black box      :class:`NES` (also SPSA), :class:`HopSkipJump`   ``blackbox``
on-device models        transfer from the int8/pruned model,             ``transfer``,
                        :class:`TransferPriorAttack`                     ``blackbox``
data poisoning          :func:`flip_labels`, :func:`insert_data`,        ``poisoning``
                        :class:`BackdoorPatch`
federated poisoning     :class:`MaliciousClients` (boosted updates)      ``federated``
model inversion         :func:`mi_face`                                  ``inversion``
gradient inversion      :func:`invert_dense_gradient`, :class:`DLG`      ``inversion``
membership inference    :func:`loss_threshold_attack`,                   ``inference``
                        :class:`ShadowModelAttack`
model extraction        :func:`extract_model`, :func:`agreement`         ``inference``
======================  ===============================================  ===============

Every gradient an attack uses comes from the foundation's ``model.backward(dloss)``, which
returns ``dL/dx``; attacks run the model in evaluation mode with its weights frozen
(:func:`frozen`), so they never touch the weight gradients of a model being trained. The
defenses are in :mod:`tinyodl.defenses`; ``tinyodl bench security`` measures both, and
``tests/test_attacks_art.py`` holds FGSM and PGD equal to ART's.

>>> from tinyodl import models
>>> from tinyodl.attacks import PGD
>>> model = models.lenet5(seed=0)
>>> attack = PGD(model, eps=0.3, eps_step=0.01, max_iter=40, num_random_init=1, seed=0)
>>> # x_adv = attack.generate(x, y)   # x float32 (N, 1, 28, 28) in [0, 1]
"""

from tinyodl.attacks.blackbox import NES, HopSkipJump, TransferPriorAttack, margin
from tinyodl.attacks.estimator import BlackBox, Classifier, as_classifier, frozen
from tinyodl.attacks.evasion import (
    FGSM,
    PGD,
    EvasionAttack,
    FastGradientMethod,
    ProjectedGradientDescent,
    adversarial_accuracy,
    projection,
    random_ball,
)
from tinyodl.attacks.federated import MaliciousClients
from tinyodl.attacks.inference import (
    ShadowModelAttack,
    agreement,
    dp_advantage_bound,
    extract_model,
    loss_threshold_attack,
    max_advantage,
    roc_auc,
)
from tinyodl.attacks.inversion import (
    DLG,
    infer_labels,
    invert_dense_gradient,
    match_reconstructions,
    mi_face,
    model_gradient,
)
from tinyodl.attacks.poisoning import BackdoorPatch, fake_inputs, flip_labels, insert_data
from tinyodl.attacks.transfer import (
    on_device_copy,
    quantize_weights,
    transfer_attack,
    transfer_rate,
)

__all__ = [
    "DLG",
    "FGSM",
    "NES",
    "PGD",
    "BackdoorPatch",
    "BlackBox",
    "Classifier",
    "EvasionAttack",
    "FastGradientMethod",
    "HopSkipJump",
    "MaliciousClients",
    "ProjectedGradientDescent",
    "ShadowModelAttack",
    "TransferPriorAttack",
    "adversarial_accuracy",
    "agreement",
    "as_classifier",
    "dp_advantage_bound",
    "extract_model",
    "fake_inputs",
    "flip_labels",
    "frozen",
    "infer_labels",
    "insert_data",
    "invert_dense_gradient",
    "loss_threshold_attack",
    "margin",
    "match_reconstructions",
    "max_advantage",
    "mi_face",
    "model_gradient",
    "on_device_copy",
    "projection",
    "quantize_weights",
    "random_ball",
    "roc_auc",
    "transfer_attack",
    "transfer_rate",
]
