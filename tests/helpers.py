"""Small real models for tests that need a whole pipeline but not a trained network."""

import torch
from torch import nn

from qcore.analysis.reports import CalibrationStudy, StudyRow
from qcore.runtime.reports import DeployReport, PathScore
from qcore.zoo.models import LoadedModel, ModelSpec, finish_loading, get_spec


def tiny_fashion_model() -> LoadedModel:
    """A 4-channel conv net on Fashion-MNIST inputs, registered like a user model."""
    base = get_spec("fm_resnet")
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 10))
    spec = ModelSpec("tiny", "user", "tiny conv net", (1, 28, 28), base.preprocess, base.class_names,
                     "fashion-mnist", "test", lambda: net)
    return finish_loading(spec, net)


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BN layers non-trivial statistics so folding has something to do."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


# Reports as the engine makes them, for history tests (stored, listed, compared).
DEPLOY = DeployReport(
    model="fm_resnet", model_id="abc123", data="fashion-mnist", seed=0, calib_size=512, isa={}, scored_by="labels",
    quantized_layers=["stem.0", "fc"], float_layers=[], random_weights=False,
    backend="ort_u8s8", config={"default": {"weight_bits": 8}}, int8_scheme="weights use the full 8 bits", fp32_accuracy=0.93, simulation_accuracy=0.93,
    int8_accuracy=0.929, agreement_with_simulation=0.999, logit_sqnr_db_vs_simulation=30.0, eval_images=1000,
    paths={"ort_u8s8": PathScore("int8", 1000, 0.999, 0.99, 30.0, 0.929)},
    latency_ms={"batch_1": {"ort_fp32": {"median_ms": 1.2, "p10_ms": 1.1, "p90_ms": 1.3, "runs": 30},
                            "ort_u8s8": {"median_ms": 0.75, "p10_ms": 0.7, "p90_ms": 0.8, "runs": 30}}},
    fastest_fp32="ort_fp32", speedup_vs_fastest_fp32=1.6, speedup_by_path={"ort_u8s8": 1.6},
    speedup_vs_fastest_fp32_by_batch={"1": 1.6}, best_int8="ort_u8s8", int8_paths={}, size_bytes={}, macs=80_000_000,
    threads=2, iters=30, machine={}, notes=[], seconds=12.5)
STUDY = CalibrationStudy(
    model="fm_gelunet", model_id="def456", data="fashion-mnist", seed=1, calib_size=512, isa={}, scored_by="labels",
    quantized_layers=["stem.0", "fc"], float_layers=[], eval_size=2000,
    fp32_accuracy=0.93, methods=["max", "mse"], act_bits=[8, 4], weight_bits=8, granularity="channel", symmetric=False,
    weight_range="full",
    accuracy=[StudyRow("max", 8, 0.92, 0.98), StudyRow("mse", 4, 0.85, 0.9)], ranges={}, layer_sqnr_db={}, points=[],
    weights={"x": {"min": [1] * 5}}, stats_pass_seconds=0.9, unsupported_layers=[])
