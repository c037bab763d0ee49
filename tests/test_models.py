"""Model registry: every arch builds at every size, takes [0,1] input, and normalises inside."""

import pytest
import torch

from medgrid import models
from medgrid.errors import UserError


@pytest.mark.parametrize("arch", list(models.MODELS))
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 64)])
def test_build_and_forward(arch, channels, size):
    model = models.build(arch, channels, 5, size).eval()
    x = torch.rand(2, channels, size, size)
    assert model(x).shape == (2, 5)
    assert model.features(x).shape[1] == model.head.in_features


def test_resnet18_stem_depends_on_size():
    small = models.build("resnet18", 3, 2, 28)
    large = models.build("resnet18", 3, 2, 224)
    assert small.body.conv1.stride == (1, 1) and isinstance(small.body.maxpool, torch.nn.Identity)
    assert large.body.conv1.stride == (2, 2) and not isinstance(large.body.maxpool, torch.nn.Identity)
    assert large(torch.rand(1, 3, 224, 224)).shape == (1, 2)


def test_normalisation_is_fitted_and_saved():
    model = models.build("cnn-small", 3, 2, 28)
    images = torch.randint(0, 128, (50, 3, 28, 28), dtype=torch.uint8)
    model.normalize.fit(images)
    expected = images.float().div(255).mean(dim=(0, 2, 3))
    torch.testing.assert_close(model.normalize.mean.flatten(), expected)
    assert "normalize.mean" in model.state_dict() and "normalize.std" in model.state_dict()


def test_unknown_arch_lists_valid_names():
    with pytest.raises(UserError, match="cnn-small.*resnet18"):
        models.build("vgg", 1, 2, 28)


def test_eval_mode_restores_each_submodule_as_it_was():
    """A training-mode wrapper around an eval-mode model: both come back as they were (not all in training)."""
    inner = models.build("cnn-small", 1, 4, 28).eval()
    wrapper = torch.nn.Sequential(inner)
    assert wrapper.training and not inner.training
    with models.eval_mode(wrapper):
        assert not any(m.training for m in wrapper.modules())
    assert wrapper.training and not inner.training and not any(m.training for m in inner.modules())
