import pytest
import torch
from torch import nn


def tiny_net(num_classes: int = 4) -> nn.Module:
    """conv-BN-ELU-pool-linear: the small VGG's layer types at a size the CPU tests can afford."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ELU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, num_classes))


@pytest.fixture
def tiny_task():
    """A random 8×8 RGB, 4-class problem and a small untrained model."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 3, 8, 8, generator=g)
    y = torch.randint(0, 4, (60,), generator=g)
    torch.manual_seed(0)
    return tiny_net(4).eval(), x, y
