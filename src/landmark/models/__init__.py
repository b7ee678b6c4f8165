"""Models: one factory over timm backbones with GeM or FC heads, freezing, checkpoints."""
from .factory import LandmarkNet, backbone_layers, create_model, load_model, save_checkpoint
from .heads import GeM, gem
from .margin import ArcMarginHead, dynamic_margins
from .weights import OFFLINE_IMAGENET, WeightsError, create_backbone

__all__ = ["LandmarkNet", "backbone_layers", "create_model", "load_model", "save_checkpoint", "GeM", "gem",
           "ArcMarginHead", "dynamic_margins", "OFFLINE_IMAGENET", "WeightsError", "create_backbone"]
