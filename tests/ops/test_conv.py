import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, strategies as st

from boundgraph.ops import RULES
from tests.helpers import DTYPE, assert_adjoint, assert_sound_all_methods, perturbations


@st.composite
def conv_configs(draw):
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k = draw(st.integers(1, 4))
    stride, padding, dilation = draw(st.integers(1, 3)), draw(st.integers(0, 2)), draw(st.integers(1, 2))
    size = draw(st.integers(dilation * (k - 1) + 1, 9))
    return cin, cout, k, stride, padding, dilation, groups, size, draw(st.booleans())


@given(conv_configs(), st.integers(0, 2**16), st.data())
def test_conv2d_bounds_contain_every_sampled_output(config, seed, data):
    cin, cout, k, stride, padding, dilation, groups, size, bias = config
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=bias)
    out = conv(torch.zeros(1, cin, size, size)).shape
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(out[1:].numel(), 2)).to(DTYPE)
    x0 = torch.randn(2, cin, size, size, dtype=DTYPE)
    assert_sound_all_methods(model, x0, data.draw(perturbations(x0)), n=6)


@given(conv_configs(), st.integers(0, 2**16))
def test_conv2d_backward_is_the_transpose(config, seed):
    cin, cout, k, stride, padding, dilation, groups, size, bias = config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cin, size, size, generator=g, dtype=DTYPE)
    weight = torch.randn(cout, cin // groups, k, k, generator=g, dtype=DTYPE)
    b = torch.randn(cout, generator=g, dtype=DTYPE) if bias else None
    rule = RULES["conv2d"]
    out = F.conv2d(x, weight, b, stride, padding, dilation, groups)
    attrs = rule.specialize(dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
                            [tuple(x.shape), tuple(weight.shape)], tuple(out.shape))
    assert_adjoint(rule, x, (weight, b), attrs, seed=seed)


def test_conv2d_same_and_valid_padding_strings_are_sound():
    from boundgraph import LinfBall
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding="same"), nn.ReLU(), nn.Conv2d(2, 2, 3, padding="valid"),
                          nn.Flatten(), nn.Linear(2 * 4 * 4, 2)).to(DTYPE)
    x0 = torch.randn(2, 1, 6, 6, dtype=DTYPE)
    assert_sound_all_methods(model, x0, LinfBall(0.1))


@pytest.mark.parametrize("channels, out_channels, kernel, stride, padding, dilation, groups", [
    (1, 4, 3, 1, 0, 1, 1), (2, 6, 4, 2, 1, 1, 1), (4, 4, 3, 1, 2, 2, 2), (3, 6, 3, 3, 0, 1, 3), (1, 2, 2, 1, 1, 1, 1),
    (1, 16, 4, 2, 0, 1, 1), (2, 4, 3, 2, 1, 1, 2), (3, 5, 5, 3, 2, 1, 1), (2, 3, 2, 2, 0, 1, 1), (1, 3, 1, 2, 0, 1, 1)])
def test_every_way_of_transposing_a_convolution_is_the_transposed_convolution(channels, out_channels, kernel, stride,
                                                                             padding, dilation, groups):
    """``transpose_conv2d`` picks the fastest of its ways by measurement; each must equal ``conv_transpose2d``
    (values and gradients), whichever is picked."""
    from boundgraph.ops.conv import _FASTEST, _transpose_ways, transpose_conv2d

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(out_channels, channels // groups, kernel, kernel, generator=g, dtype=DTYPE, requires_grad=True)
    x = torch.randn(2, channels, 9, 8, generator=g, dtype=DTYPE)
    y = torch.nn.functional.conv2d(x, weight, None, stride, padding, dilation, groups)
    A = torch.randn(6, *y.shape[1:], generator=g, dtype=DTYPE, requires_grad=True)
    options = ((stride,) * 2, (padding,) * 2, (dilation,) * 2, groups)
    output_padding = tuple(s - ((a - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1)
                           for s, a in zip(x.shape[2:], y.shape[2:]))
    expected = torch.nn.functional.conv_transpose2d(A, weight, None, stride, padding, output_padding, groups, dilation)
    ways = _transpose_ways(A, weight, *options, output_padding)
    for name, way in ways.items():
        out = way()
        torch.testing.assert_close(out, expected, msg=name)
        grads = torch.autograd.grad((out * expected.detach()).sum(), (A, weight))
        reference = torch.autograd.grad((expected * expected.detach()).sum(), (A, weight), retain_graph=True)
        for a, b in zip(grads, reference):
            torch.testing.assert_close(a, b, msg=name)
    torch.testing.assert_close(transpose_conv2d(A, weight, *options, output_padding), expected)
    assert any(key[0] == tuple(A.shape) and key[1] == tuple(weight.shape) for key in _FASTEST) or len(ways) == 1
