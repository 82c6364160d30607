import math

import torch

from imgrec.data.augment import Augment, cutout, random_crop, random_hflip, random_rotation, rotate


def coordinate_images(n: int = 64, c: int = 2, size: int = 8) -> torch.Tensor:
    """Pixel value encodes its position (row * size + col + 1), so shifts are visible; 0 is padding."""
    grid = torch.arange(size * size, dtype=torch.float32).view(size, size) + 1
    return grid.expand(n, c, size, size).clone()


def test_crop_with_zero_padding_is_identity():
    images = coordinate_images()
    assert torch.equal(random_crop(images, 0), images)


def test_crop_is_a_translation_within_the_padding():
    torch.manual_seed(0)
    images, pad, size = coordinate_images(), 2, 8
    out = random_crop(images, pad)
    assert out.shape == images.shape
    shifts = set()
    for img in out[:, 0]:
        # any visible pixel's value says where it came from, hence the shift (dy, dx)
        r, c = divmod(int(img.nonzero()[0, 0]) * size + int(img.nonzero()[0, 1]), size)
        r0, c0 = divmod(int(img[r, c]) - 1, size)
        dy, dx = r - r0, c - c0
        assert -pad <= dy <= pad and -pad <= dx <= pad
        expected = torch.zeros(size, size)
        expected[max(dy, 0) : size + min(dy, 0), max(dx, 0) : size + min(dx, 0)] = images[
            0, 0, max(-dy, 0) : size + min(-dy, 0), max(-dx, 0) : size + min(-dx, 0)
        ]
        assert torch.equal(img, expected)
        shifts.add((dy, dx))
    assert len(shifts) > 5  # shifts differ per sample
    assert torch.equal(out[:, 0], out[:, 1])  # all channels move together


def test_hflip_mirrors_about_half_the_batch():
    torch.manual_seed(0)
    images = coordinate_images(n=200)
    out = random_hflip(images)
    flipped = (out == images.flip(3)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert torch.all(flipped ^ kept)
    assert 60 < int(flipped.sum()) < 140


def test_cutout_zeroes_a_square_of_at_most_the_given_size():
    torch.manual_seed(0)
    images = coordinate_images(size=16)
    out = cutout(images, 4)
    zeros = (out[:, 0] == 0).flatten(1).sum(1)
    assert int(zeros.max()) == 16 and int(zeros.min()) >= 4  # full square inside, clipped at borders
    assert torch.equal(out[:, 0] == 0, out[:, 1] == 0)


def test_augment_is_reproducible_under_a_seed():
    aug = Augment(crop_padding=2, hflip=True, cutout=3)
    images = coordinate_images()
    torch.manual_seed(1)
    a = aug(images)
    torch.manual_seed(1)
    assert torch.equal(a, aug(images))


def test_rotation_by_a_quarter_turn_is_rot90_and_by_zero_is_the_identity():
    images = torch.randn(3, 2, 8, 8)
    assert torch.allclose(rotate(images, torch.zeros(3)), images, atol=1e-5)
    assert torch.allclose(rotate(images, torch.full((3,), math.pi / 2)), torch.rot90(images, -1, (2, 3)), atol=1e-5)


def test_random_rotation_keeps_shape_and_range_and_draws_per_image():
    torch.manual_seed(0)
    images = torch.rand(64, 3, 16, 16) + 0.5  # in [0.5, 1.5]: the zeros brought in from outside stand apart
    rotated = random_rotation(images, degrees=30)
    assert rotated.shape == images.shape
    assert rotated.min() >= 0 and rotated.max() <= images.max() + 1e-6  # bilinear: within what it mixes
    assert random_rotation(images, degrees=0) is images
    corners_zeroed = (rotated[:, :, 0, 0] == 0).float().mean()
    assert 0 < corners_zeroed < 1  # some images turned far enough to leave a corner empty, not all the same way
    assert (rotated[:, :, 4:12, 4:12] > 0.4).all()  # the centre stays inside the frame
