"""imgrec's batched corruptions against the reference that made CIFAR-10-C (tests/corruption_reference.py restates
it), number by number on real Fashion-MNIST images and colour photographs at 32 px, where imgrec's size scaling
reduces to the reference's own constants. Tolerance: one level of 255; JPEG exact."""

from pathlib import Path

import numpy as np
import pytest
import torch

from imgrec.data import corruptions
from tests import corruption_reference as reference

pytestmark = pytest.mark.skipif(not Path(reference.FASHION_MNIST).exists(),
                                reason="Fashion-MNIST's Debian package (make setup installs it)")
SEVERITIES = (1, 2, 3, 4, 5)
ONE_LEVEL = 1 + 1e-9  # of 255, float rounding above it


@pytest.fixture(scope="module")
def image_sets():
    return reference.image_sets()


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", sorted(reference.DETERMINISTIC))
def test_each_deterministic_corruption_is_the_references(image_sets, name, severity):
    for kind, images in image_sets.items():
        if name in corruptions.COLOUR_ONLY and images.shape[3] == 1:
            with pytest.raises(ValueError, match="RGB"):
                reference.imgrec_255(corruptions.CORRUPTIONS[name], images, severity)
            continue
        ours = reference.imgrec_255(corruptions.CORRUPTIONS[name], images, severity)
        theirs = reference.reference_255(name, images, severity)
        if name == "jpeg_compression":
            assert np.array_equal(ours.round(), theirs), kind
        else:
            assert np.abs(ours - theirs).max() <= ONE_LEVEL, f"{kind}: max |difference| {np.abs(ours - theirs).max():.3f}"
        if not (name == "saturate" and kind == "grey RGB" and severity <= 3):  # no saturation to scale, none added
            assert np.abs(theirs - images).mean() > 0.05, f"{kind}: severity {severity} left the images unchanged"


def draws_of(generator_seed: int):
    return torch.Generator().manual_seed(generator_seed)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_glass_blur_is_the_references_given_the_same_draws(image_sets, severity):
    iterations = [1, 1, 1, 2, 2][severity - 1]
    for kind, images in image_sets.items():
        ours = reference.imgrec_255(corruptions.glass_blur, images[:1], severity, draws_of(7))
        generator = draws_of(7)  # the same draws, in imgrec's order: (dy, dx) per iteration for the inner pixels
        draws = [torch.randint(-1, 1, (2, 1, 30, 30), generator=generator)[:, 0].numpy() for _ in range(iterations)]
        theirs = reference.glass_blur(images[0], severity, draws)
        assert np.abs(ours[0] - theirs).max() <= ONE_LEVEL, kind


@pytest.mark.parametrize("severity", SEVERITIES)
def test_fog_is_the_references_given_the_same_draws(image_sets, severity):
    for kind, images in image_sets.items():
        ours = reference.imgrec_255(corruptions.fog, images[:1], severity, draws_of(3))
        generator = draws_of(3)

        def uniforms(shape, generator=generator):
            return torch.rand((1, *shape), generator=generator, dtype=torch.float64)[0].numpy()

        theirs = reference.fog(images[0], severity, uniforms)
        assert np.abs(ours[0] - theirs).max() <= ONE_LEVEL, kind


@pytest.mark.parametrize("severity", SEVERITIES)
def test_elastic_transform_moves_pixels_as_the_reference_does_given_the_same_draws(image_sets, severity):
    # imgrec resamples once through the affine and the displacement together, the reference twice (one bilinear
    # interpolation after the other): the same motion, slightly less smoothing; held to the reference's strength
    for kind, images in image_sets.items():
        ours = reference.imgrec_255(corruptions.elastic_transform, images, severity, draws_of(5))
        generator = draws_of(5)
        jitter = torch.rand(len(images), 3, 2, generator=generator, dtype=torch.float64) * 2 - 1
        fields = torch.rand(len(images), 2, 32, 32, generator=generator, dtype=torch.float64) * 2 - 1
        theirs = np.stack([reference.elastic_transform(image, severity, jitter[i].numpy(), fields[i].numpy())
                           for i, image in enumerate(images)])
        change_ours, change_theirs = np.abs(ours - images).mean(), np.abs(theirs - images).mean()
        assert change_ours == pytest.approx(change_theirs, rel=0.15), kind
        assert np.abs(ours - theirs).mean() < 0.35 * change_theirs, kind


NOISES = {"gaussian_noise": lambda x, c, rng: x + rng.normal(size=x.shape, scale=c),
          "shot_noise": lambda x, c, rng: rng.poisson(x * c) / c,
          "speckle_noise": lambda x, c, rng: x + x * rng.normal(size=x.shape, scale=c)}
NOISE_LEVELS = {"gaussian_noise": [0.04, 0.06, .08, .09, .10], "shot_noise": [500, 250, 100, 75, 50],
                "impulse_noise": [.01, .02, .03, .05, .07], "speckle_noise": [.06, .1, .12, .16, .2]}


@pytest.mark.parametrize("name", sorted(NOISE_LEVELS))
def test_each_noise_is_as_strong_as_the_references(image_sets, name):
    import skimage as sk

    rng = np.random.default_rng(0)
    for severity in SEVERITIES:
        c = NOISE_LEVELS[name][severity - 1]
        for kind, images in image_sets.items():
            images = np.repeat(images, 64, 0)  # enough values that the statistic, not the draw, is compared
            ours = reference.imgrec_255(corruptions.CORRUPTIONS[name], images, severity, draws_of(severity))
            x = images / 255.
            if name == "impulse_noise":
                theirs = sk.util.random_noise(x, mode="s&p", amount=c, rng=rng)
            else:
                theirs = NOISES[name](x, c, rng)
            theirs = np.clip(theirs, 0, 1) * 255
            strength_ours, strength_theirs = np.abs(ours - images).mean(), np.abs(theirs - images).mean()
            assert strength_ours == pytest.approx(strength_theirs, rel=0.05), (kind, severity)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_motion_blur_is_imagemagicks(image_sets, severity):
    pytest.importorskip("wand.image", reason="Wand with ImageMagick's library (.ci/run installs it)")
    generator = draws_of(11)
    angles = corruptions.uniform(generator, (4,), -45, 45, "cpu")
    for kind, images in image_sets.items():
        ours = reference.imgrec_255(corruptions.motion_blur, images, severity, draws_of(11))
        theirs = np.stack([reference.motion_blur(image, severity, float(angles[i])) for i, image in enumerate(images)])
        assert np.abs(ours - theirs).max() <= ONE_LEVEL, f"{kind}: max |difference| {np.abs(ours - theirs).max():.2f}"
