"""A small Vision Transformer for 28-32 pixel images: Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"
(arXiv 2010.11929), at CIFAR scale.

The image is cut into `patch` x `patch` patches (a strided conv embeds each into `dim` features), a learned
class token is put in front, learned position embeddings are added, and `depth` pre-norm transformer encoder
layers (`heads`-head self-attention through torch's scaled_dot_product_attention, a GELU MLP of
`mlp_ratio` x dim) follow; the class token's final LayerNorm-ed features feed one Linear. The position
embeddings are learned for the training image size and resized (bicubic, as timm does) for another size.
Transformers need their own recipe: conf/experiment/vit.yaml (AdamW, warm-up then cosine, label smoothing).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from imgrec.models.layers import DropPath, drop_path_rates


class EncoderLayer(nn.TransformerEncoderLayer):
    """torch's pre-norm encoder layer with stochastic depth on its two residual branches (the parameters, and so the
    checkpoints, are torch's layer's)."""

    def __init__(self, *args, drop_path: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.drop_path = DropPath(drop_path)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal=False):
        return self.drop_path(super()._sa_block(x, attn_mask, key_padding_mask, is_causal=is_causal))

    def _ff_block(self, x):
        return self.drop_path(super()._ff_block(x))


class ViT(nn.Module):
    def __init__(self, in_shape: Sequence[int], num_classes: int, patch: int = 4, dim: int = 192, depth: int = 6,
                 heads: int = 3, mlp_ratio: float = 2.0, dropout: float = 0.0, drop_path: float = 0.0):
        """`drop_path`: stochastic depth, the last layer's rate (linear in depth from 0)."""
        super().__init__()
        channels, height, width = in_shape
        if patch < 1 or height % patch or width % patch:
            raise ValueError(f"model=vit takes images whose sides are multiples of model.patch={patch} (e.g. "
                             f"{max(patch, height // patch * patch)}x{max(patch, width // patch * patch)}), got "
                             f"{height}x{width}: set data.image_size or model.patch")
        if dim % heads:
            raise ValueError(f"model.dim must be a multiple of model.heads, got dim={dim} and heads={heads}")
        if depth < 1:
            raise ValueError(f"model.depth must be >= 1, got {depth}")
        self.patch = patch
        self.grid = (height // patch, width // patch)
        self.embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = EncoderLayer(dim, heads, int(dim * mlp_ratio), dropout, activation="gelu", batch_first=True,
                             norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)  # copies `layer` depth times
        for encoder_layer, rate in zip(self.encoder.layers, drop_path_rates(drop_path, depth)):
            encoder_layer.drop_path.p = rate
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)  # the last Linear: transfer replaces it

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == self.grid:
            return self.pos_embed
        cls, patches = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patches = patches.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([cls, patches.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x)  # (N, dim, H / patch, W / patch)
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1) + self.position_embedding(grid)
        return self.classifier(self.norm(self.encoder(tokens)[:, 0]))
