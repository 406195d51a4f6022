"""tinyodl.defenses (placeholder while the chapter is written)."""

from tinyodl.defenses.adversarial_training import (
    METHODS,
    OneCycle,
    adversarial_fit,
    make_training_attack,
    robust_cnn,
)
