"""GAN augmentation: extra training samples from a trained class-conditional generator.

    data.synthetic.generator=runs:/<run_id>   (or a .ckpt path, or models:/<name>@<alias>)
    data.synthetic.fraction=0.5               (0.5 x batch size generated images per batch)

Generated images carry the labels they were generated for, drawn uniformly over the classes.
"""

import torch

from imgrec.errors import ConfigError
from imgrec.tracking.checkpoints import load_net, resolve_checkpoint


class SyntheticSamples:
    def __init__(self, generator: str, fraction: float, tracking_uri: str | None = None):
        if not 0.0 < fraction:
            raise ConfigError(f"data.synthetic.fraction must be > 0 when a generator is set, got {fraction}")
        self.uri, self.fraction, self.tracking_uri = generator, fraction, tracking_uri
        self.generator = None

    def load(self, in_shape: tuple[int, ...], num_classes: int) -> None:
        """Load the generator and check it makes this data's images and classes."""
        path = resolve_checkpoint(self.uri, self.tracking_uri, key="data.synthetic.generator")
        net, spec = load_net(path)
        if not getattr(net, "conditional", False):
            raise ConfigError(f"data.synthetic.generator: {self.uri} is not a class-conditional generator "
                              "(train one with model=dcgan model.conditional=true)")
        if tuple(spec["in_shape"]) != tuple(in_shape) or spec["num_classes"] != num_classes:
            raise ConfigError(f"data.synthetic.generator: {self.uri} makes {spec['num_classes']} classes of "
                              f"{spec['in_shape']} images; this data has {num_classes} classes of {list(in_shape)}")
        self.generator = net.generator.eval().requires_grad_(False)

    def sample(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(images in [0, 1], labels) for round(fraction * batch_size) generated samples."""
        self.generator.to(device)
        n = max(1, round(self.fraction * batch_size))
        labels = torch.randint(0, self.generator.num_classes, (n,), device=device)
        images = self.generator.sample(n, labels)
        return (images + 1) / 2, labels
