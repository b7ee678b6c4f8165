"""Data: reading GLDv2 and folder trees, decoding images, class selection and split,
augmentation, and the preprocessing cache."""
from .dataset import ImageDataset, Reject, collate, write_rejects
from .gldv2 import image_path, read_categories, read_queries, read_train, with_paths
from .images import ImageError, load_image, resize_to_width
from .split import select_classes, split_per_class

__all__ = ["ImageDataset", "Reject", "collate", "write_rejects", "with_paths", "image_path", "read_categories", "read_queries",
           "read_train", "ImageError", "load_image", "resize_to_width", "select_classes", "split_per_class"]
