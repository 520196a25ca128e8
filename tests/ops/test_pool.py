import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, strategies as st

from boundgraph.ops import RULES
from tests.helpers import DTYPE, Chain, assert_adjoint, assert_sound_all_methods, perturbations


@st.composite
def pool_configs(draw):
    k = draw(st.integers(1, 3))
    return (k, draw(st.integers(1, 3)), draw(st.integers(0, k // 2)), draw(st.booleans()),
            draw(st.sampled_from([None, 2])), draw(st.integers(k, 7)))


@given(pool_configs(), st.integers(0, 2**16), st.data())
def test_avg_pool2d_is_sound_for_every_method(config, seed, data):
    k, stride, padding, count_include_pad, divisor, size = config
    torch.manual_seed(seed)
    pool = nn.AvgPool2d(k, stride, padding, count_include_pad=count_include_pad, divisor_override=divisor)
    out = pool(torch.zeros(1, 2, size, size)).shape[1:].numel()
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), pool, nn.Flatten(), nn.Linear(out, 2)).to(DTYPE)
    x0 = torch.randn(2, 1, size, size, dtype=DTYPE)
    assert_sound_all_methods(model, x0, data.draw(perturbations(x0)), n=6)


@given(pool_configs(), st.integers(0, 2**16))
def test_avg_pool2d_backward_is_the_transpose(config, seed):
    k, stride, padding, count_include_pad, divisor, size = config
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)
    rule = RULES["avg_pool2d"]
    attrs = dict(kernel_size=(k, k), stride=(stride, stride), padding=(padding, padding),
                 count_include_pad=count_include_pad, divisor_override=divisor)
    out = rule.forward(x, **attrs)
    attrs = rule.specialize(attrs, [tuple(x.shape)], tuple(out.shape))
    assert_adjoint(rule, x, (), attrs, seed=seed)


def test_functional_avg_pool_is_sound():
    from boundgraph import LinfBall
    torch.manual_seed(0)
    model = Chain([nn.Conv2d(1, 2, 3), lambda t: F.avg_pool2d(F.relu(t), 2), nn.Flatten(), nn.Linear(8, 2)])
    assert_sound_all_methods(model.to(DTYPE), torch.randn(2, 1, 6, 6, dtype=DTYPE), LinfBall(0.1))
