"""tinyodl.attacks (placeholder while the chapter is written)."""

from tinyodl.attacks.estimator import BlackBox, Classifier, as_classifier, frozen
from tinyodl.attacks.evasion import (
    FGSM,
    PGD,
    FastGradientMethod,
    ProjectedGradientDescent,
    adversarial_accuracy,
    projection,
    random_ball,
)
