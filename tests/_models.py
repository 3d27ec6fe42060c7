"""Small random-weight models shared by the tests."""
import timm
import torch
from torch import nn


def tiny_vit(seed: int = 0, **kwargs) -> nn.Module:
    """A seeded 3-block timm ViT: 16 px, patch 4, width 32, d_ff 64, 5 classes, eval mode."""
    torch.manual_seed(seed)
    cfg = dict(img_size=16, patch_size=4, depth=3, embed_dim=32, num_heads=2, mlp_ratio=2.0, num_classes=5)
    cfg.update(kwargs)
    return timm.create_model("vit_tiny_patch16_224", **cfg).eval()
