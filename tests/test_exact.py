"""Exact oracles. Nets without nonlinearity: CROWN is exact. Tiny ReLU nets: the exact range comes
from enumerating activation patterns; every method's bounds must contain it, and where theory orders
the methods (one hidden layer, fixed lower slopes) CROWN-IBP must be at least as tight as IBP."""
import itertools

import torch
import torch.nn as nn
from hypothesis import given, strategies as st

from boundgraph import Box, BoundedModule, LinfBall
from tests.helpers import DTYPE, METHODS


def linear_net(draw, d):
    layers, width = [], d
    for _ in range(draw(st.integers(1, 3))):
        new = draw(st.integers(1, 5))
        layers.append(nn.Linear(width, new))
        width = new
    return nn.Sequential(*layers).to(DTYPE)


@given(st.data(), st.integers(1, 5), st.integers(0, 2**16), st.floats(0.01, 1.0))
def test_crown_is_exact_on_nets_without_nonlinearity(data, d, seed, eps):
    torch.manual_seed(seed)
    model = linear_net(data.draw, d)
    x0 = torch.randn(2, d, dtype=DTYPE)
    jacobian = torch.autograd.functional.jacobian(lambda x: model(x).sum(0), x0)[:, 0, :]  # (out, d)
    centre = model(x0)
    exact_low = centre - eps * jacobian.abs().sum(1)
    exact_high = centre + eps * jacobian.abs().sum(1)
    bm = BoundedModule(model, x0)
    crown = bm.bounds(x0, LinfBall(eps), method="crown")
    crown_ibp = bm.bounds(x0, LinfBall(eps), method="crown-ibp")
    ibp = bm.bounds(x0, LinfBall(eps), method="ibp")
    torch.testing.assert_close(tuple(crown), (exact_low, exact_high))
    torch.testing.assert_close(tuple(crown_ibp), tuple(crown))
    assert (ibp.lower <= exact_low + 1e-9).all() and (ibp.upper >= exact_high - 1e-9).all()


def exact_range(model: nn.Sequential, lower: torch.Tensor, upper: torch.Tensor):
    """Exact min and max of each output of a Linear/ReLU net over a box in 1 or 2 dimensions, by
    enumerating activation patterns: on each pattern's region the net is affine, so its extremes lie at
    the region's vertices, which are intersections of ``d`` of the region's boundary hyperplanes."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    d = lower.numel()
    hidden = sum(l.out_features for l in linears[:-1])
    candidates = []
    for pattern in itertools.product([0.0, 1.0], repeat=hidden):
        G, h = [], []  # constraints G x <= h
        for i in range(d):
            row = torch.zeros(d, dtype=DTYPE)
            row[i] = 1
            G += [row, -row]
            h += [upper[i], -lower[i]]
        W_eff, b_eff, k = torch.eye(d, dtype=DTYPE), torch.zeros(d, dtype=DTYPE), 0
        for layer in linears[:-1]:
            W_eff, b_eff = layer.weight @ W_eff, layer.weight @ b_eff + layer.bias
            mask = torch.tensor(pattern[k:k + layer.out_features], dtype=DTYPE)
            k += layer.out_features
            for j in range(layer.out_features):  # active: z >= 0 (-z <= 0); inactive: z <= 0
                sign = -1.0 if mask[j] else 1.0
                G.append(sign * W_eff[j])
                h.append(-sign * b_eff[j])
            W_eff, b_eff = mask[:, None] * W_eff, mask * b_eff
        G, h = torch.stack(G), torch.stack([torch.as_tensor(v, dtype=DTYPE) for v in h])
        for rows in itertools.combinations(range(len(G)), d):
            M = G[list(rows)]
            if abs(torch.linalg.det(M)) < 1e-10:
                continue
            x = torch.linalg.solve(M, h[list(rows)])
            if (G @ x <= h + 1e-9).all():
                candidates.append(x)
    with torch.no_grad():
        values = model(torch.stack(candidates))
    return values.min(0).values, values.max(0).values


def tiny_relu_net(draw, d):
    layers, width, budget = [], d, 8
    for _ in range(draw(st.integers(1, 2))):
        new = draw(st.integers(1, min(4, budget)))
        budget -= new
        layers += [nn.Linear(width, new), nn.ReLU()]
        width = new
        if budget == 0:
            break
    layers.append(nn.Linear(width, 2))
    return nn.Sequential(*layers).to(DTYPE)


@given(st.data(), st.integers(1, 2), st.integers(0, 2**16), st.floats(0.05, 1.5))
def test_bounds_contain_the_exact_range_found_by_enumerating_activation_patterns(data, d, seed, eps):
    torch.manual_seed(seed)
    model = tiny_relu_net(data.draw, d)
    x0 = torch.randn(1, d, dtype=DTYPE)
    low, high = exact_range(model, x0[0] - eps, x0[0] + eps)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-eps, eps, 41, dtype=DTYPE)] * d, indexing="ij"), -1)
    with torch.no_grad():
        on_grid = model(x0[0] + grid.reshape(-1, d))
    assert (low <= on_grid.min(0).values + 1e-9).all() and (high >= on_grid.max(0).values - 1e-9).all()
    bm = BoundedModule(model, x0)
    for method in METHODS:
        for ptb in (LinfBall(eps), Box(x0 - eps, x0 + eps)):
            lb, ub = bm.bounds(x0, ptb, method=method)
            assert (lb[0] <= low + 1e-9).all() and (ub[0] >= high - 1e-9).all(), method


@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 2**16), st.floats(0.01, 1.0))
def test_crown_ibp_is_at_least_as_tight_as_ibp_with_one_hidden_layer_and_zero_slopes(d, width, seed, eps):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, 3)).to(DTYPE)
    x0 = torch.randn(3, d, dtype=DTYPE)
    bm = BoundedModule(model, x0)
    ibp = bm.bounds(x0, LinfBall(eps), method="ibp")
    for method in ("crown-ibp", "crown"):
        tight = bm.bounds(x0, LinfBall(eps), method=method, lines="zero")
        assert (tight.lower >= ibp.lower - 1e-9).all() and (tight.upper <= ibp.upper + 1e-9).all()
