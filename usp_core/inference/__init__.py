"""Running a network: images in, Features out.

detector: KeypointDetector and DetectorConfig (input handling, inference size, the call into a backend);
selection: point selection shared by the backends; features: Features, the one numpy keypoint type
(torch-free); backends/: torch, OpenVINO, ONNX Runtime; export: TorchScript, ONNX, compact weights;
graph_cache: exported graphs on disk; weights: the one place that loads a network by path or name.

The names below are imported at first use, so that ``usp_core.inference.features`` stays torch-free.
"""
from __future__ import annotations

__all__ = ["KeypointDetector", "DetectorConfig", "inference_size", "Features", "load_network", "resolve_weights",
           "BUNDLED_WEIGHTS"]


def __getattr__(name: str):
    """``usp_core.inference.KeypointDetector`` and the other names of ``__all__``, from their modules."""
    if name in ("KeypointDetector", "DetectorConfig", "inference_size"):
        from usp_core.inference import detector as module
    elif name in ("load_network", "resolve_weights", "BUNDLED_WEIGHTS"):
        from usp_core.inference import weights as module
    elif name == "Features":
        from usp_core.inference import features as module
    else:
        raise AttributeError(f"module 'usp_core.inference' has no attribute {name!r}")
    return getattr(module, name)
