import pytest
import torch

from imgrec.models.cnn import ConvNet
from imgrec.models.mlp import MLP

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("in_shape", SHAPES)
@pytest.mark.parametrize("factory", [ConvNet, MLP])
def test_logits_shape_follows_the_data(factory, in_shape):
    net = factory(in_shape, num_classes=7)
    assert net(torch.randn(5, *in_shape)).shape == (5, 7)


def test_keras_and_tensorflow_tutorial_nets_have_their_published_sizes():
    keras = ConvNet((1, 28, 28), 10, channels=[32, 64], padding="valid", batch_norm=False, fc=[128])
    tf_cifar = ConvNet(
        (3, 32, 32), 10, channels=[32, 64, 64], padding="valid", pool=[True, True, False], batch_norm=False, fc=[64]
    )
    assert n_params(keras) == 225_034  # Keras MNIST convnet with Dense(128)
    assert n_params(tf_cifar) == 122_570  # tensorflow.org/tutorials/images/cnn model.summary()


def test_kernel_stride_and_padding_change_the_architecture():
    small = ConvNet((1, 28, 28), 10, kernel_size=3, stride=1)
    strided = ConvNet((1, 28, 28), 10, kernel_size=5, stride=2)
    assert strided.features[0].kernel_size == (5, 5) and strided.features[0].stride == (2, 2)
    assert n_params(strided) < n_params(small)  # stride 2 shrinks the flattened features


def test_a_stack_that_shrinks_the_image_to_nothing_is_a_clear_value_error():
    with pytest.raises(ValueError, match="shrinks a 1x8x8 input"):
        ConvNet((1, 8, 8), 10, channels=[8, 8, 8, 8])


def test_per_layer_lists_must_match_the_number_of_convs():
    with pytest.raises(ValueError, match="kernel_size"):
        ConvNet((1, 28, 28), 10, channels=[8, 8], kernel_size=[3, 3, 3])


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match="relu"):
        MLP((1, 8, 8), 10, activation="swishy")


def test_feature_probe_leaves_batch_norm_statistics_untouched():
    """The size probe pushes a blank image through the convs; in training mode it would move the running
    variance (a blank batch has variance 0) and count a batch."""
    net = ConvNet((1, 28, 28), 10, batch_norm=True)
    bn = net.features[1]
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    assert bn.num_batches_tracked.item() == 0 and net.training
