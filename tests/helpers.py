"""Small real models for tests that need a whole pipeline but not a trained network."""

from torch import nn

from qcore.models import LoadedModel, ModelSpec, finish_loading, get_spec


def tiny_fashion_model() -> LoadedModel:
    """A 4-channel conv net on Fashion-MNIST inputs, registered like a user model."""
    base = get_spec("fm_resnet")
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 10))
    spec = ModelSpec("tiny", "user", "tiny conv net", (1, 28, 28), base.preprocess, base.class_names,
                     "fashion-mnist", "test", lambda: net)
    return finish_loading(spec, net)
