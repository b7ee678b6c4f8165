"""Models: one specification, one factory over timm backbones with registered heads, freezing,
checkpoints, and the runtimes that run them (eager PyTorch, ONNX Runtime).

Names are imported on first use, so ``landmark.models.spec`` (the specification) loads without torch.
"""
from .._lazy import lazy_exports

_EXPORTS = {
    "LandmarkNet": "factory", "backbone_layers": "factory", "create_model": "factory", "list_heads": "factory",
    "load_model": "factory", "read_checkpoint": "factory", "register_head": "factory",
    "save_checkpoint": "factory", "GeM": "heads", "Head": "heads", "gem": "heads",
    "ArcMarginHead": "margin", "dynamic_margins": "margin", "ModelSpec": "spec",
    "OFFLINE_IMAGENET": "weights", "WeightsError": "weights", "create_backbone": "weights",
    "Runtime": "runtime", "load_runtime": "runtime",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
