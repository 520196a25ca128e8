"""Bad input gets a clear error naming what is wrong, never a wrong bound."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from boundgraph import Box, BoundedModule, L2Ball, LinfBall, UnsupportedOpError


class WithSin(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        h = self.fc(x)
        return torch.sin(h)


def test_an_unsupported_op_names_the_node_the_op_the_source_line_and_how_to_register():
    with pytest.raises(UnsupportedOpError) as error:
        BoundedModule(WithSin(), torch.randn(1, 3))
    message = str(error.value)
    assert "'sin'" in message and "sin" in error.value.op
    assert "test_errors.py:" in message and "return torch.sin(h)" in message
    assert "@rule(" in message


def test_an_unsupported_module_and_an_unsupported_function_are_refused():
    with pytest.raises(UnsupportedOpError, match="torch.nn.modules.activation.Hardshrink"):
        BoundedModule(nn.Sequential(nn.Linear(2, 2), nn.Hardshrink()), torch.randn(1, 2))

    class Floor(nn.Module):
        def forward(self, x):
            return torch.floor(x)

    with pytest.raises(UnsupportedOpError, match="floor"):
        BoundedModule(Floor(), torch.randn(1, 2))


@pytest.fixture
def bm():
    return BoundedModule(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), torch.randn(1, 3))


def test_wrong_input_shape_or_count(bm):
    with pytest.raises(ValueError, match=r"shape \(2, 4\).*\(batch, 3\)"):
        bm.bounds(torch.randn(2, 4), LinfBall(0.1))
    with pytest.raises(ValueError, match="takes 1 input"):
        bm.bounds((torch.randn(2, 3), torch.randn(2, 3)), LinfBall(0.1))


@pytest.mark.parametrize("make", [lambda: LinfBall(-0.1), lambda: L2Ball(float("nan")), lambda: LinfBall(float("inf")),
                                  lambda: LinfBall(torch.tensor([0.1, -0.2])), lambda: Box(torch.ones(3), torch.zeros(3))])
def test_invalid_perturbations_are_refused(make):
    with pytest.raises(ValueError):
        make()


def test_nan_or_infinite_input(bm):
    for bad in (float("nan"), float("inf")):
        x = torch.randn(2, 3)
        x[1, 2] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            bm.bounds(x, LinfBall(0.1))


def test_per_example_radii_of_the_wrong_length(bm):
    with pytest.raises(ValueError, match="3 per-example radii for a batch of 2"):
        bm.bounds(torch.randn(2, 3), LinfBall(torch.full((3,), 0.1)))


def test_input_outside_the_clip_domain(bm):
    with pytest.raises(ValueError, match="outside the clip domain"):
        bm.bounds(torch.full((1, 3), 2.0), LinfBall(0.1, clip=(0, 1)))


@pytest.mark.parametrize("C", [torch.randn(3, 2, 2), torch.randn(2, 2, 5), torch.randn(2, 2),
                               torch.full((2, 1, 2), float("nan"))])
def test_mismatched_specification(bm, C):
    with pytest.raises(ValueError, match="C"):
        bm.bounds(torch.randn(2, 3), LinfBall(0.1), C=C)


def test_unknown_method_or_line_strategy(bm):
    with pytest.raises(ValueError, match="unknown method"):
        bm.bounds(torch.randn(1, 3), LinfBall(0.1), method="crown-ipb")
    with pytest.raises(ValueError, match="unknown line strategy"):
        bm.bounds(torch.randn(1, 3), LinfBall(0.1), lines="optimal")


def test_dropout_in_training_mode():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.2), nn.Linear(4, 2))
    bm = BoundedModule(model, torch.randn(2, 3))
    with pytest.raises(ValueError, match="Dropout in training mode"):
        bm.bounds(torch.randn(2, 3), LinfBall(0.1))
    model[2].eval()  # batch norm may stay in training mode: bounds use the clean batch's statistics
    bm.bounds(torch.randn(2, 3), LinfBall(0.1))


def test_functional_dropout_in_training_mode_is_refused_at_construction():
    class Net(nn.Module):
        def forward(self, x):
            return F.dropout(x, 0.5, training=True)

    with pytest.raises(UnsupportedOpError, match="dropout in training mode"):
        BoundedModule(Net(), torch.randn(1, 3))


def test_models_returning_several_tensors_are_refused():
    class Net(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(UnsupportedOpError, match="single tensor"):
        BoundedModule(Net(), torch.randn(1, 3))


def test_a_reshape_that_mixes_the_batch_dimension_is_refused():
    class Net(nn.Module):
        def forward(self, x):
            return x.reshape(-1)

    with pytest.raises(UnsupportedOpError, match="batch dimension"):
        BoundedModule(Net(), torch.randn(2, 3))


def test_an_example_without_a_batch_dimension_is_refused():
    with pytest.raises(ValueError, match="batch on dimension 0"):
        BoundedModule(nn.Linear(4, 2), torch.rand(4))


def test_a_broadcast_that_moves_the_batch_off_dimension_0_is_refused():
    class Broadcast(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.register_buffer("table", torch.randn(2, 1, 3))

        def forward(self, x):
            return self.fc(x) + self.table

    with pytest.raises(ValueError, match="node 'add'.*does not keep the batch on dimension 0"):
        BoundedModule(Broadcast(), torch.randn(3, 4))


def test_nan_in_the_example_and_a_random_forward_are_named_as_such():
    x = torch.randn(2, 3)
    x[0, 1] = float("nan")
    with pytest.raises(ValueError, match="example input 0 contains NaN"):
        BoundedModule(nn.Linear(3, 2), x)

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x) + torch.randn(2)

    with pytest.raises(ValueError, match="not deterministic"):
        BoundedModule(Noisy(), torch.randn(2, 3))


def test_inputs_and_specifications_of_another_dtype_are_refused(bm):
    with pytest.raises(ValueError, match="input 0 is torch.float64; the model was compiled for torch.float32"):
        bm.bounds(torch.randn(2, 3, dtype=torch.float64), LinfBall(0.1))
    with pytest.raises(ValueError, match="C is torch.float64"):
        bm.bounds(torch.randn(2, 3), LinfBall(0.1), C=torch.randn(2, 2, 2, dtype=torch.float64))


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown", "lbp", "crown-lbp", "alpha-crown"])
def test_an_empty_batch_or_a_specification_without_rows_is_refused(bm, method):
    with pytest.raises(ValueError, match="empty batch"):
        bm.bounds(torch.randn(0, 3), LinfBall(0.1), method)
    with pytest.raises(ValueError, match="no specification rows"):
        bm.bounds(torch.randn(2, 3), LinfBall(0.1), method, C=torch.zeros(2, 0, 2))


@pytest.mark.parametrize("make", [lambda: L2Ball(0.1, clip=(0.3, 1)), lambda: LinfBall(0.1, clip=(1, 0)),
                                  lambda: LinfBall(True), lambda: LinfBall(0.1, clip=(float("nan"), 1))])
def test_empty_or_meaningless_perturbation_sets_are_refused(bm, make):
    with pytest.raises(ValueError, match="empty|boolean|NaN"):
        bm.bounds(torch.full((2, 3), 0.24), make())  # L2: within 0.1 of the box per coordinate, √3·0.06 ≈ 0.104 away


def test_a_box_for_another_batch_size_is_refused(bm):
    with pytest.raises(ValueError, match=r"Box bounds of shapes \(4, 3\).*input's shape \(1, 3\)"):
        bm.bounds(torch.zeros(1, 3), Box(torch.zeros(4, 3) - 1, torch.zeros(4, 3) + 1))


def test_the_forward_path_refuses_what_bounds_refuses(bm):
    x = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="not sound bounds"):
        bm(x, perturbation=LinfBall(1.0), method="singleprop")
    with pytest.raises(ValueError, match="unknown line strategy 'alpha'"):
        bm(x, perturbation=LinfBall(1.0), method="crown", lines="alpha")
    with pytest.raises(ValueError, match="unknown method"):
        bm(x, perturbation=LinfBall(1.0), method="crown-ipb")


def test_every_unsupported_op_is_reported_at_once_with_its_module_path():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return torch.sin(self.conv(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(Block(), nn.Hardshrink())
            self.head = nn.Linear(2 * 4 * 4, 2)

        def forward(self, x):
            h = self.features(x).flatten(1)
            return self.head(torch.cos(h))

    with pytest.raises(UnsupportedOpError) as error:
        BoundedModule(Net(), torch.randn(2, 1, 6, 6))
    message = str(error.value)
    assert "cannot bound 3 nodes" in message and len(error.value.errors) == 3
    assert "in features.0 (Block) at test_errors.py:" in message and "torch.sin(self.conv(x))" in message
    assert "in features.1 (Hardshrink)" in message and "torch.cos(h)" in message
    assert "from boundgraph.ops import rule" in message


def test_a_model_only_torch_export_could_trace_says_why_fx_failed():
    class Branchy(nn.Module):
        def forward(self, x):
            if x.size(0) > 0:  # control flow on the batch size: fx cannot trace it
                x = torch.sin(x)
            return x

    with pytest.raises(UnsupportedOpError, match="torch.fx could not trace the model.*torch.export traced it"):
        BoundedModule(Branchy(), torch.randn(2, 3))


def test_a_maximum_of_two_perturbed_tensors_is_refused_when_the_model_is_compiled():
    class Max(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            h = self.conv(x)
            return torch.maximum(h, h.flip(-1))  # both depend on x

    with pytest.raises(UnsupportedOpError, match=r"node 'maximum'.*torch.maximum\(h, h.flip.*two perturbed tensors"):
        BoundedModule(Max(), torch.randn(2, 1, 5, 5))
