"""The papers' networks for MNIST-sized images, plus a small ResNet to show gates on residual models."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from gatelab.errors import check_choice


def mlp(in_features: int = 784, hidden: tuple[int, ...] = (300, 100), num_classes: int = 10) -> nn.Sequential:
    """The 784-300-100 MLP of Louizos et al. and L0-ARM."""
    layers: dict[str, nn.Module] = {"flatten": nn.Flatten()}
    sizes = (in_features, *hidden)
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        layers[f"fc{i}"] = nn.Linear(a, b)
        layers[f"relu{i}"] = nn.ReLU()
    layers[f"fc{len(sizes)}"] = nn.Linear(sizes[-1], num_classes)
    return nn.Sequential(OrderedDict(layers))


def lenet5_caffe(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """LeNet-5-Caffe: conv 20 and conv 50 (5x5, max-pooled), then 800-500-10."""
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, 20, 5),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(20, 50, 5),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(800, 500),
            relu3=nn.ReLU(),
            fc2=nn.Linear(500, num_classes),
        )
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a residual connection."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A three-stage ResNet (one BasicBlock a stage) for 28x28 images."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        self.stage1 = BasicBlock(widths[0], widths[0])
        self.stage2 = BasicBlock(widths[0], widths[1], stride=2)
        self.stage3 = BasicBlock(widths[1], widths[2], stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x):
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


MODELS = {"mlp": mlp, "lenet5": lenet5_caffe, "resnet": SmallResNet}


def authors_init_(model: nn.Module) -> nn.Module:
    """Re-initialise ``model``'s Linear and Conv2d layers as the L0 and L0-ARM authors' code does (in place).

    Their layers call ``kaiming_normal_(mode="fan_out")`` on their own weight
    layouts: Linear weights stored (in, out), so the spread is sqrt(2 / in);
    convolutions (out, in, kh, kw), so sqrt(2 / (out kh kw)). Biases start at 0.
    PyTorch's default (uniform, about sqrt(1 / (3 in))) starts Linear weights 2.4
    times smaller.
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            mode = "fan_in" if isinstance(module, nn.Linear) else "fan_out"
            nn.init.kaiming_normal_(module.weight, mode=mode)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


WEIGHT_INITS = ("torch", "authors")


def build_model(name: str, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """One of the named networks: ``mlp``, ``lenet5`` or ``resnet``."""
    check_choice("model", name, MODELS)
    if name == "mlp":
        return mlp(in_features=784 * in_channels, num_classes=num_classes)
    return MODELS[name](in_channels=in_channels, num_classes=num_classes)
