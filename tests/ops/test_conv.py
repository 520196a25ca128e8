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
