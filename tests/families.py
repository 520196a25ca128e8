"""Compact definitions of the mainstream vision families, written the way torchvision and timm write them
(modules, functional calls, in-place activations, shape arithmetic), at a width and resolution a CPU test
affords. ``FAMILIES`` maps a name to ``(build, input shape)``; ``tests/test_families.py`` bounds each with
every method, and ``benchmarks/families.py`` reports their widths.

(torchvision itself does not import against the CPU torch of the package index, so its architectures are
re-written here: the same ops in the same order, smaller.)
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def _bn_relu_conv(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


# ---------------------------------------------------------------------------------------------- VGG, AlexNet

def vgg(config=(4, 4, "M", 8, 8, "M"), pool: int = 2, hidden: int = 16, classes: int = 10) -> nn.Module:
    """VGG's pattern: conv3×3 – ReLU layers and 2×2 max pools as ``config`` lists them, adaptive average
    pooling to ``pool``×``pool``, then a classifier with dropout. VGG-11 is ``vgg(VGG11, 7, 4096)``."""
    layers, cin = [], 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(cin, item, 3, padding=1), nn.ReLU(inplace=True)]
            cin = item
    return nn.Sequential(nn.Sequential(*layers), nn.AdaptiveAvgPool2d((pool, pool)), nn.Flatten(),
                         nn.Linear(cin * pool * pool, hidden), nn.ReLU(True), nn.Dropout(),
                         nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(), nn.Linear(hidden, classes))


VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg11(classes: int = 10) -> nn.Module:
    return vgg(VGG11, 7, 4096, classes)


class AlexNet(nn.Module):
    """AlexNet's pattern: a strided conv, overlapping 3×3/2 max pools, adaptive average pooling to a fixed
    grid, ``torch.flatten``."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 5, stride=2, padding=2), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(kernel_size=3, stride=2), nn.Conv2d(6, 8, 3, padding=1),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(8 * 9, 16), nn.ReLU(inplace=True),
                                        nn.Linear(16, classes))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------------------------------------- ResNet

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """ResNet-18's pattern: 7×7/2 stem, BN, ReLU, 3×3/2 max pool, stages of basic blocks (each stage after
    the first opens with a strided block and a 1×1 downsample), adaptive average pool to 1×1,
    ``torch.flatten``, fc. ``ResNet((64, 128, 256, 512), (2, 2, 2, 2))`` is ResNet-18."""

    def __init__(self, widths=(4, 8), blocks=(1, 1), classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages, cin = [], widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks)):
            stage = [BasicBlock(cin, width, stride=1 if i == 0 else 2)]
            stage += [BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            cin = width
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1], classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(classes: int = 10) -> nn.Module:
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), classes)


# ---------------------------------------------------------------------------------------------- DenseNet

class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(2 * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, inputs):
        features = torch.cat(inputs, 1) if isinstance(inputs, list) else inputs
        out = self.conv1(self.relu1(self.norm1(features)))
        return self.conv2(self.relu2(self.norm2(out)))


class DenseNet(nn.Module):
    """DenseNet-121's pattern: every layer sees the concatenation of all before it; transitions halve the
    channels (1×1) and the resolution (2×2 average pool); ``F.relu``, ``F.adaptive_avg_pool2d``."""

    def __init__(self, growth: int = 3, layers: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.dense = nn.ModuleList(DenseLayer(6 + i * growth, growth) for i in range(layers))
        channels = 6 + layers * growth
        self.transition = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                                        nn.Conv2d(channels, channels // 2, 1, bias=False), nn.AvgPool2d(2, 2))
        self.norm = nn.BatchNorm2d(channels // 2)
        self.classifier = nn.Linear(channels // 2, classes)

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.dense:
            features.append(layer(features))
        out = F.relu(self.norm(self.transition(torch.cat(features, 1))), inplace=True)
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


# ---------------------------------------------------------------------------------------------- Inception, SqueezeNet

class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """GoogLeNet's block: 1×1, 1×1→3×3, 1×1→3×3 (the "5×5"), 3×3/1 max pool (ceil_mode)→1×1, concatenated."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, c3r, kernel_size=1), BasicConv2d(c3r, c3, kernel_size=3,
                                                                                       padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, c5r, kernel_size=1), BasicConv2d(c5r, c5, kernel_size=3,
                                                                                       padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(cin, pool, kernel_size=1))

    def forward(self, x):
        outputs = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(outputs, 1)


def googlenet(classes: int = 10) -> nn.Module:
    return nn.Sequential(BasicConv2d(3, 6, kernel_size=3, stride=2, padding=1),
                         nn.MaxPool2d(3, stride=2, ceil_mode=True), Inception(6, 2, 2, 3, 1, 2, 2),
                         nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Dropout(0.2), nn.Linear(9, classes))


class Fire(nn.Module):
    """SqueezeNet's block: squeeze 1×1, then expand 1×1 and 3×3 side by side, concatenated."""

    def __init__(self, cin: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze, self.squeeze_activation = nn.Conv2d(cin, squeeze, 1), nn.ReLU(inplace=True)
        self.expand1x1, self.expand1x1_activation = nn.Conv2d(squeeze, e1, 1), nn.ReLU(inplace=True)
        self.expand3x3, self.expand3x3_activation = nn.Conv2d(squeeze, e3, 3, padding=1), nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))],
                         1)


def squeezenet(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.ReLU(inplace=True),
                         nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True), Fire(6, 3, 4, 4),
                         nn.Dropout(0.5), nn.Conv2d(8, classes, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)),
                         nn.Flatten())


# ---------------------------------------------------------------------------------------------- MobileNet, MNASNet

class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expand, BN, ReLU6, 3×3 depthwise, BN, ReLU6, 1×1 project, BN (+ input)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        self.conv = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                                  nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                                  nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                                  nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def mobilenet_v2(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU6(inplace=True),
                         InvertedResidual(4, 4, 1, 2), InvertedResidual(4, 6, 2, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(6, classes))


class SqueezeExcitation(nn.Module):
    """torchvision's ``SqueezeExcitation``: global average pool, 1×1 reduce, activation, 1×1 expand, a gate
    (sigmoid, or hard sigmoid in MobileNetV3) that scales the input: a product of two perturbed tensors."""

    def __init__(self, channels: int, squeeze: int, activation=nn.ReLU, gate=nn.Sigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.activation, self.scale_activation = activation(), gate()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class MobileNetV3Block(nn.Module):
    """MobileNetV3's block: 1×1 expand, Hardswish, 5×5 depthwise, Hardswish, squeeze-excite with a hard-sigmoid
    gate, 1×1 project."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        hidden = 2 * cin
        self.block = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish(),
                                   nn.Conv2d(hidden, hidden, 5, stride, 2, groups=hidden, bias=False),
                                   nn.BatchNorm2d(hidden), nn.Hardswish(),
                                   SqueezeExcitation(hidden, 2, gate=nn.Hardsigmoid),
                                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x):
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


def mobilenet_v3(classes: int = 10) -> nn.Module:
    """MobileNetV3-small's stem, blocks (squeeze-excite included) and head."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.Hardswish(),
                         MobileNetV3Block(4, 4, 1), MobileNetV3Block(4, 6, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, 12), nn.Hardswish(inplace=True), nn.Dropout(0.2), nn.Linear(12, classes))


class StochasticDepth(nn.Module):
    """torchvision's ``StochasticDepth`` ("row" mode): identity in eval mode, as its function says."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class MBConv(nn.Module):
    """EfficientNet's block: 1×1 expand, SiLU, 3×3 depthwise, SiLU, squeeze-excite (SiLU, sigmoid gate), 1×1
    project, stochastic depth, + input."""

    def __init__(self, channels: int, p: float) -> None:
        super().__init__()
        hidden = 2 * channels
        self.block = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU(inplace=True),
                                   nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False),
                                   nn.BatchNorm2d(hidden), nn.SiLU(inplace=True),
                                   SqueezeExcitation(hidden, 2, activation=nn.SiLU),
                                   nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.stochastic_depth = StochasticDepth(p)

    def forward(self, x):
        return self.stochastic_depth(self.block(x)) + x


def efficientnet(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.SiLU(inplace=True),
                         MBConv(4, 0.2), MBConv(4, 0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(4, classes))


# ---------------------------------------------------------------------------------------------- ShuffleNet, RegNet

def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, num_channels, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit: ``x.chunk(2, dim=1)``, one half through 1×1 – depthwise 3×3 – 1×1, ``cat``, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch2 = nn.Sequential(nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                                     nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False), nn.BatchNorm2d(half),
                                     nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((x1, self.branch2(x2)), dim=1), 2)


def shufflenet(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1), ShuffleUnit(4), ShuffleUnit(4), nn.Conv2d(4, 8, 1),
                         nn.ReLU(inplace=True), _GlobalMean(), nn.Linear(8, classes))


class _GlobalMean(nn.Module):
    def forward(self, x):
        return x.mean([2, 3])  # ShuffleNetV2's global pool


class RegNetBlock(nn.Module):
    """RegNet's X block: 1×1, grouped 3×3 (group width 2), 1×1, + projected input."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                               nn.Conv2d(cout, cout, 3, stride, 1, groups=cout // 2, bias=False), nn.BatchNorm2d(cout),
                               nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.activation(self.proj(x) + self.f(x))


def regnet(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                         RegNetBlock(4, 6, 2), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(6, classes))


# ---------------------------------------------------------------------------------------------- dense prediction

class DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                         nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.double_conv(x)


class Up(nn.Module):
    """U-Net's up step: upsample (bilinear, or a transposed conv), pad to the skip's size from the shapes'
    difference, concatenate, double conv."""

    def __init__(self, cin: int, cout: int, bilinear: bool) -> None:
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        else:
            self.up = nn.ConvTranspose2d(cin // 2, cin // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(cin, cout)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        diffY = x2.size()[2] - x1.size()[2]
        diffX = x2.size()[3] - x1.size()[3]
        x1 = F.pad(x1, [diffX // 2, diffX - diffX // 2, diffY // 2, diffY - diffY // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class UNet(nn.Module):
    """U-Net (milesial's layout) at two levels, on an input whose odd size makes the pad do work."""

    def __init__(self, bilinear: bool, classes: int = 2) -> None:
        super().__init__()
        self.inc = DoubleConv(3, 4)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(4, 4))
        self.up1 = Up(8, 4, bilinear)
        self.outc = nn.Conv2d(4, classes, kernel_size=1)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        return self.outc(self.up1(x2, x1))


def dcgan_generator(nz: int = 8, ngf: int = 2) -> nn.Module:
    """DCGAN's generator: transposed convolutions (4×4, stride 2) with BN and ReLU, tanh at the end."""
    return nn.Sequential(nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
                         nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2),
                         nn.ReLU(True), nn.ConvTranspose2d(ngf * 2, 3, 4, 2, 1, bias=False), nn.Tanh())


class ESPCN(nn.Module):
    """ESPCN super-resolution: conv 5×5, tanh, conv 3×3, tanh, conv 3×3 to r² channels, pixel shuffle."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.first_part = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1),
                                        nn.Tanh())
        self.last_part = nn.Sequential(nn.Conv2d(3, scale ** 2, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x):
        return self.last_part(self.first_part(x))


class TransformerNetLite(nn.Module):
    """The fast style-transfer net's pattern (reflection padding before each conv, a residual block, nearest
    upsampling), with batch norm where the original has instance norm ("Arbitrary models, part 2")."""

    def __init__(self) -> None:
        super().__init__()
        self.pad1, self.conv1, self.norm1 = nn.ReflectionPad2d(2), nn.Conv2d(3, 4, 5), nn.BatchNorm2d(4)
        self.pad2, self.conv2, self.norm2 = nn.ReflectionPad2d(1), nn.Conv2d(4, 6, 3, stride=2), nn.BatchNorm2d(6)
        self.res = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(6, 6, 3), nn.BatchNorm2d(6), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.pad3, self.conv3 = nn.ReflectionPad2d(2), nn.Conv2d(6, 3, 5)

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(self.pad1(x))))
        y = F.relu(self.norm2(self.conv2(self.pad2(y))))
        y = y + self.res(y)
        return self.conv3(self.pad3(self.up(y)))


FAMILIES: dict[str, tuple[Callable[[], nn.Module], tuple]] = {
    "vgg": (vgg, (3, 16, 16)),
    "alexnet": (AlexNet, (3, 24, 24)),
    "resnet": (ResNet, (3, 16, 16)),
    "densenet": (DenseNet, (3, 12, 12)),
    "googlenet": (googlenet, (3, 16, 16)),
    "squeezenet": (squeezenet, (3, 16, 16)),
    "mobilenet_v2": (mobilenet_v2, (3, 12, 12)),
    "mobilenet_v3": (mobilenet_v3, (3, 12, 12)),
    "efficientnet": (efficientnet, (3, 12, 12)),
    "shufflenet": (shufflenet, (3, 16, 16)),
    "regnet": (regnet, (3, 12, 12)),
    "unet": (lambda: UNet(bilinear=True), (3, 11, 13)),
    "unet_transposed": (lambda: UNet(bilinear=False), (3, 10, 12)),
    "dcgan": (dcgan_generator, (8, 1, 1)),
    "espcn": (ESPCN, (1, 8, 8)),
    "style_transfer": (TransformerNetLite, (3, 12, 12)),
}


def build(name: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[nn.Module, torch.Tensor]:
    """The family's model in eval mode with random batch-norm statistics, and an example batch of two."""
    make, shape = FAMILIES[name]
    torch.manual_seed(seed)
    model = make()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    x = torch.rand(2, *shape, generator=g, dtype=dtype)
    return model.to(dtype).eval(), x
