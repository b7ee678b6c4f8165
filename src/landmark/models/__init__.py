"""Models: one factory over timm backbones with GeM or FC heads, freezing, checkpoints."""
from .factory import LandmarkNet, backbone_layers, create_model, load_model, save_checkpoint
from .heads import GeM, gem
from .weights import OFFLINE_IMAGENET, WeightsError, create_backbone

__all__ = ["LandmarkNet", "backbone_layers", "create_model", "load_model", "save_checkpoint", "GeM", "gem",
           "OFFLINE_IMAGENET", "WeightsError", "create_backbone"]
