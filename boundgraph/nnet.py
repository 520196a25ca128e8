"""NNet networks in (the format of the ACAS Xu, HorizontalCAS and VerticalCAS networks; Julian et al.).

A ``.nnet`` file is text: ``//`` comment lines, then comma-separated lines

1. ``layers, inputs, outputs, widest``: the number of weight layers, the input and output sizes, the widest layer;
2. the ``layers + 1`` layer sizes, input first;
3. a flag (unused, 0);
4. the inputs' minima, 5. maxima (the domain the network was trained on);
6. the means and 7. the ranges of the inputs' normalisation, each followed by the outputs' (one number for all);
8. for each layer, its weight matrix row by row (one line per output neuron), then its biases (one per line).

The network is ``y = range_out·f((x − mean)/range) + mean_out`` with ``f`` the layers, ReLU after each but the
last. ``load`` folds the input normalisation into the first layer (``W/range``, ``b − W·(mean/range)``) and the
output de-normalisation into the last (``range_out·W``, ``range_out·b + mean_out``), so the module is plain
``Linear``/``ReLU`` layers, and returns the domain as a ``Box``. The reference implementation clips inputs to the
domain first; the module does not, so it equals the reference on the domain, where bounds are meant to be taken.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import nn

from .perturbation import Box


class NNetError(ValueError):
    """A file that is not a well-formed NNet network; the message names the file and the line."""


def _numbers(path: Path, number: int, text: str) -> list[float]:
    try:
        return [float(value) for value in text.replace(",", " ").split()]
    except ValueError as error:
        raise NNetError(f"{path}, line {number}: not a list of numbers ({error}): {text.strip()[:80]!r}") from None


def load(path: Union[str, Path], dtype: torch.dtype = torch.float64) -> tuple[nn.Sequential, Box]:
    """The network in the NNet file ``path`` as ``nn.Sequential`` of ``Linear`` and ``ReLU`` (normalisation folded
    in, parameters in ``dtype``), and its input domain as a ``Box`` of shape ``(inputs,)``."""
    path = Path(path)
    lines = [(number, line) for number, line in enumerate(path.read_text().splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("//")]
    rows = iter(lines)

    def take(count: int | None, what: str) -> list[float]:
        try:
            number, text = next(rows)
        except StopIteration:
            raise NNetError(f"{path}: ends before {what}") from None
        values = _numbers(path, number, text)
        if count is not None and len(values) != count:
            raise NNetError(f"{path}, line {number}: {what} needs {count} numbers, found {len(values)}")
        return values

    header = take(None, "the header (layers, inputs, outputs, widest layer)")
    if len(header) < 3 or any(v != int(v) or v < 1 for v in header[:3]):
        raise NNetError(f"{path}: the header must start with three positive integers (layers, inputs, outputs), "
                        f"found {header}")
    layers, inputs, outputs = (int(v) for v in header[:3])
    sizes = [int(v) for v in take(layers + 1, "the layer sizes")]
    if sizes[0] != inputs or sizes[-1] != outputs or min(sizes) < 1:
        raise NNetError(f"{path}: layer sizes {sizes} do not start with {inputs} inputs and end with {outputs} outputs")
    take(None, "the flag line")
    minima, maxima = take(inputs, "the input minima"), take(inputs, "the input maxima")
    means, ranges = take(inputs + 1, "the means"), take(inputs + 1, "the ranges")
    if any(r <= 0 for r in ranges):
        raise NNetError(f"{path}: every normalisation range must be positive, found {ranges}")
    modules: list[nn.Module] = []
    for index in range(layers):
        fan_in, fan_out = sizes[index], sizes[index + 1]
        weight = torch.tensor([take(fan_in, f"row {row + 1} of layer {index + 1}'s weights") for row in range(fan_out)],
                              dtype=torch.float64)
        bias = torch.tensor([take(1, f"bias {row + 1} of layer {index + 1}")[0] for row in range(fan_out)],
                            dtype=torch.float64)
        if index == 0:  # x_n = (x − mean)/range
            mean, scale = torch.tensor(means[:-1], dtype=torch.float64), torch.tensor(ranges[:-1], dtype=torch.float64)
            bias = bias - weight @ (mean / scale)
            weight = weight / scale
        if index == layers - 1:  # y = range_out·y_n + mean_out
            weight, bias = ranges[-1] * weight, ranges[-1] * bias + means[-1]
        linear = nn.Linear(fan_in, fan_out, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        modules += [linear] + ([nn.ReLU()] if index < layers - 1 else [])
    extra = next(rows, None)
    if extra is not None:
        raise NNetError(f"{path}, line {extra[0]}: more numbers than the {layers} layers hold")
    lower, upper = torch.tensor(minima, dtype=dtype), torch.tensor(maxima, dtype=dtype)
    if bool((lower > upper).any()):
        raise NNetError(f"{path}: an input minimum exceeds its maximum ({minima} vs {maxima})")
    return nn.Sequential(*modules).eval(), Box(lower, upper)
