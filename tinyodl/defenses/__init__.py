"""tinyodl.defenses (placeholder while the chapter is written)."""

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
