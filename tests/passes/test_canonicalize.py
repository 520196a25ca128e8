import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from boundgraph import BoundedModule, LinfBall, UnsupportedOpError
from boundgraph.passes import canonicalize, eliminate_dead_nodes
from boundgraph.trace import trace
from tests.helpers import DTYPE, METHODS, Chain, assert_sound


def canonical_ops(model, x):
    return [n.op for n in eliminate_dead_nodes(canonicalize(trace(model, (x,)), model))]


def test_every_relu_spelling_becomes_one_canonical_relu():
    model = Chain([nn.ReLU(), F.relu, torch.relu, lambda t: t.relu(), lambda t: F.relu(t, inplace=True)])
    assert canonical_ops(model, torch.randn(2, 3)) == ["input"] + ["relu"] * 5


def test_subtraction_and_negation_become_add_and_mul():
    graph = canonicalize(trace(Chain([lambda t: t - 1.0, lambda t: -t]), (torch.randn(2, 3),)), None)
    sub, neg = [n for n in graph if n.op != "input"]
    assert (sub.op, sub.attrs["alpha"]) == ("add", -1)
    assert (neg.op, neg.operands[1]) == ("mul", -1.0)


def test_linear_module_becomes_linear_with_live_parameter_operands():
    model = nn.Sequential(nn.Linear(3, 2))
    graph = canonicalize(trace(model, (torch.randn(1, 3),)), model)
    params = [n for n in graph if n.op == "param"]
    assert sorted(p.attrs["path"] for p in params) == ["0.bias", "0.weight"]
    assert [n.op for n in graph if n.op not in ("param", "input")] == ["linear"]


def test_constant_subgraphs_are_frozen_and_shape_queries_dropped():
    class Net(nn.Module):
        def forward(self, x):
            scale = torch.ones(3) * 2  # depends on nothing: frozen once
            return (x * scale).view(x.size(0), -1)

    graph = eliminate_dead_nodes(canonicalize(trace(Net(), (torch.randn(2, 3),)), Net()))
    ops = [n.op for n in graph]
    assert ops == ["input", "constant", "mul", "reshape"]
    assert torch.equal(graph[[n.name for n in graph if n.op == "constant"][0]].attrs["value"], torch.full((3,), 2.0))


def test_parameter_only_computations_become_constant_calls():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 2))

        def forward(self, x):
            return F.linear(x, self.w.t())

    graph = canonicalize(trace(Net(), (torch.randn(2, 3),)), Net())
    call = next(n for n in graph if n.op == "call")
    assert call.attrs["fn"] == "t"


def test_source_lines_point_at_the_users_code():
    class Net(nn.Module):
        def forward(self, x):
            return torch.relu(x)  # the line

    graph = canonicalize(trace(Net(), (torch.randn(2, 3),)), Net())
    relu = next(n for n in graph if n.op == "relu")
    assert relu.source.startswith("test_canonicalize.py:") and "torch.relu(x)  # the line" in relu.source


class InPlaceReused(nn.Module):
    """``h`` is written by an in-place ReLU and read again: ``relu(h) + h`` is ``2·relu(h)``."""

    def __init__(self, spelling):
        super().__init__()
        self.fc, self.spelling = nn.Linear(3, 4), spelling
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.fc(x)
        if self.spelling == "module":
            a = self.act(h)
        elif self.spelling == "method":
            a = h.relu_()
        else:
            a = F.relu(h, inplace=True)
        return a + h


@pytest.mark.parametrize("spelling", ["module", "method", "function"])
def test_reads_after_an_in_place_op_see_what_it_wrote_even_where_it_was_a_no_op_on_the_example(spelling):
    model = InPlaceReused(spelling).to(DTYPE)
    with torch.no_grad():
        model.fc.bias.fill_(10.0)  # the example's pre-activations are all positive: the ReLU changes nothing
    bm = BoundedModule(model, torch.randn(2, 3, dtype=DTYPE))
    with torch.no_grad():
        model.fc.bias.fill_(-0.5)  # now it does
    x = torch.randn(3, 3, dtype=DTYPE)
    for method in METHODS:
        assert_sound(bm, x, LinfBall(0.3), method)
    torch.testing.assert_close(bm.bounds(x, LinfBall(0.0), "ibp").lower, 2 * torch.relu(model.fc(x)))


def test_an_in_place_op_on_a_tensor_a_live_view_shares_is_refused():
    class ThroughView(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            h = self.fc(x)
            v = h.view(h.shape[0], 2, 2)
            h.relu_()
            return v.flatten(1) + h

    with pytest.raises(UnsupportedOpError, match="shares memory with"):
        BoundedModule(ThroughView(), torch.randn(2, 3))


def test_an_in_place_op_on_a_parameter_is_refused():
    class Drifting(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.register_buffer("offset", torch.zeros(4))

        def forward(self, x):
            self.offset.add_(1.0)
            return self.fc(x) + self.offset

    with pytest.raises(UnsupportedOpError, match="model's own tensor 'offset'"):
        BoundedModule(Drifting(), torch.randn(2, 3))


class ShapeArithmetic(nn.Module):
    """ViT- and U-Net-style shape code: unpacked shapes, products of sizes, a class token expanded to the
    batch, zeros made from the batch size, a parameter reshaped to broadcast."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.randn(3))
        self.cls = nn.Parameter(torch.randn(1, 1, 4))
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        b, c, h, w = x.shape
        n_h, n_w = h // 2, w // 2
        h = x * self.gamma.reshape(1, -1, 1, 1)
        tokens = h.reshape(b, c, n_h * n_w, 4).flatten(1, 2)
        tokens = torch.cat([self.cls.expand(b, -1, -1), tokens], dim=1)
        tokens = self.fc(tokens) + x.new_zeros(b, 1, 4) + torch.zeros(x.size(0), c * n_h * n_w + 1, 4)
        return tokens + torch.zeros_like(tokens)


def test_shape_arithmetic_folds_and_what_depends_on_the_batch_size_follows_it():
    torch.manual_seed(0)
    model = ShapeArithmetic().to(DTYPE)
    x = torch.randn(2, 3, 4, 4, dtype=DTYPE)
    bm = BoundedModule(model, x)
    ops = [n.op for n in bm.graph]
    assert "batch" in ops and "unsupported" not in ops
    for batch in (1, 5):  # other batch sizes than the example's: zeros, expand and cat follow
        x = torch.randn(batch, 3, 4, 4, dtype=DTYPE)
        for method in METHODS:
            assert_sound(bm, x, LinfBall(0.1), method, n=4, pgd=False)


def test_a_parameter_reshaped_to_broadcast_is_a_constant_not_a_batch_error():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.gamma = nn.Parameter(torch.randn(3))

        def forward(self, x):
            return x * self.gamma.reshape(1, -1, 1) + self.gamma[0]

    graph = canonicalize(trace(Scale(), (torch.randn(2, 3, 4),)), Scale())
    assert [n.op for n in graph if n.op not in ("input", "param")] == ["call", "mul", "call", "add"]


def test_an_integer_mask_input_flows_through_any_op_exactly():
    class MaskedMean(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x, mask):
            m = mask.unsqueeze(-1).to(x.dtype)  # ops on the mask alone need no rule
            return self.fc((x * m).sum(1) / m.sum(1).clamp(min=1))

    torch.manual_seed(0)
    model = MaskedMean().to(DTYPE)
    x = torch.randn(2, 5, 4, dtype=DTYPE)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    bm = BoundedModule(model, (x, mask))
    for method in METHODS:
        assert_sound(bm, (x, mask), (LinfBall(0.2), None), method, n=4)
    with pytest.raises(ValueError, match="only floating-point inputs can be perturbed"):
        bm.bounds((x, mask), (LinfBall(0.2), LinfBall(0.2)), "ibp")


def test_optional_forward_arguments_take_their_defaults():
    class WithOptions(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x, attn_mask=None, scale=2.0, *, flag=False):
            if attn_mask is not None:
                x = x * attn_mask
            return self.fc(x) * scale + (1.0 if flag else 0.0)

    model = WithOptions().to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    bm = BoundedModule(model, x)
    assert bm.traced_by == "fx"
    torch.testing.assert_close(bm.bounds(x, LinfBall(0.0), "crown").lower, model(x))


def test_a_python_value_of_a_perturbed_tensor_is_refused_where_it_is_used():
    class ItemScale(nn.Module):
        def forward(self, x):
            return x * x.abs().max().item()

    with pytest.raises(UnsupportedOpError, match="Python value computed from the values of a tensor"):
        BoundedModule(ItemScale(), torch.randn(2, 3))


def test_split_pieces_and_max_values_are_one_node_each():
    def body(t):
        a, b = t.chunk(2, dim=1)
        return torch.cat([b, a.max(dim=2, keepdim=True).values.expand_as(a)], 1)

    ops = canonical_ops(Chain([body]), torch.randn(2, 4, 3))
    assert ops.count("index") == 2 and ops.count("amax") == 1 and "argmax" not in ops


class _RowConv1D(nn.Module):
    """Hugging Face's ``Conv1D``: ``addmm(b, x.view(-1, d), W).view(*x.shape[:-1], n)``, rows that fold the batch."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.n = n
        self.weight = nn.Parameter(torch.randn(d, n, dtype=DTYPE) * 0.4)
        self.bias = nn.Parameter(torch.randn(n, dtype=DTYPE))

    def forward(self, x):
        size = x.size()[:-1] + (self.n,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size)


def test_rows_that_fold_the_batch_are_mapped_on_the_batch_first_tensor_and_unfolded():
    """``x.view(-1, d)`` then a row-wise affine map (addmm, mm, F.linear) then the view back: computed on ``x``
    itself (no node folds the batch), sound for every method, at any batch size."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = _RowConv1D(6, 4), _RowConv1D(3, 6)
            self.w = nn.Parameter(torch.randn(3, 6, dtype=DTYPE))

        def forward(self, x):
            h = torch.tanh(self.a(x))
            linear = F.linear(h.reshape(-1, 6), self.w).view(x.shape[0], x.shape[1], 3)
            product = torch.mm(h.reshape(-1, 6), self.b.weight).reshape(x.shape[0], -1, 3)
            return linear + product + self.b(h)

    x = torch.randn(2, 5, 4, dtype=DTYPE)
    net = Net()
    bm = BoundedModule(net, x)
    assert not [n.name for n in bm.graph if n.shape and n.shape[0] == 10]  # no node has the batch folded (2 × 5)
    for method in METHODS:
        assert_sound(bm, (x,), (LinfBall(0.05),), method, n=2)
    y = torch.randn(3, 5, 4, dtype=DTYPE)
    lower, upper = bm.bounds(y, LinfBall(0.0), "crown")
    torch.testing.assert_close((lower, upper), (net(y), net(y)))


def test_rows_that_fold_the_batch_used_otherwise_are_refused():
    class Mixes(nn.Module):
        def forward(self, x):
            return x.view(-1, x.size(-1)).sum(0, keepdim=True).expand(x.shape[0], -1)

    with pytest.raises(UnsupportedOpError, match="does not keep the batch dimension first"):
        BoundedModule(Mixes(), torch.randn(2, 5, 4, dtype=DTYPE))
