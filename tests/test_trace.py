import pytest
import torch
import torch.nn as nn

from boundgraph import BoundedModule, LinfBall, UnsupportedOpError
from boundgraph.trace import trace, user_source
from tests.helpers import DTYPE, METHODS, assert_sound


class ControlFlow(nn.Module):
    """fx cannot trace Python control flow on the batch size (a Proxy while tracing); torch.export specialises it."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 5), nn.Linear(5, 2)

    def forward(self, x):
        if x.size(0) > 0:
            x = x.flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


def test_models_fx_cannot_trace_are_retried_with_torch_export():
    torch.manual_seed(0)
    model = ControlFlow().to(DTYPE)
    x = torch.randn(2, 1, 2, 2, dtype=DTYPE)
    assert trace(model, (x,)).how == "export"
    bm = BoundedModule(model, x)
    assert [n.op for n in bm.graph if n.op not in ("param",)] == ["input", "reshape", "linear", "relu", "linear"]
    for method in METHODS:
        assert_sound(bm, x, LinfBall(0.2), method)
    with torch.no_grad():
        model.fc1.weight.mul_(2)  # live parameters through export too
    assert_sound(bm, x, LinfBall(0.2), "crown")


class ControlFlowCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)
        self.drop, self.pool, self.fc = nn.Dropout(0.3), nn.AvgPool2d(2), nn.Linear(8, 2)

    def forward(self, x):
        if x.shape[0] > 0:
            x = self.pool(self.drop(torch.relu(self.bn(self.conv(x)))))
        return self.fc(x.flatten(1) * 2 - 1)


def test_exported_models_keep_every_op_of_the_set():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = ControlFlowCNN().to(DTYPE)
    from tests.helpers import randomize_bn
    randomize_bn(model.bn, g)
    model.eval()
    x = torch.randn(2, 1, 6, 6, dtype=DTYPE)
    bm = BoundedModule(model, x)
    assert trace(model, (x,)).how == "export"
    assert {"conv2d", "relu", "identity", "avg_pool", "mul", "add", "linear"} <= {n.op for n in bm.graph}
    for method in METHODS:
        assert_sound(bm, x, LinfBall(0.1), method)


def test_a_model_neither_tracer_handles_gets_a_clear_error():
    class DataDependent(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x
            return -x

    with pytest.raises(UnsupportedOpError, match="torch.fx could not trace"):
        BoundedModule(DataDependent(), torch.randn(1, 3))


def test_user_source_skips_torch_frames():
    stack = ('File "/home/me/model.py", line 12, in forward\n    y = self.fc(x)\n'
             f'  File "{torch.__file__}", line 3, in create_node\n    inner()\n')
    assert user_source(stack) == "model.py:12: y = self.fc(x)"
    assert user_source(None) == ""


def test_an_expression_of_buffers_alone_is_read_live_not_frozen_at_trace_time():
    class Table(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.register_buffer("table", torch.rand(4, 4))

        def forward(self, x):
            return self.fc(x) + self.table[0] * 2

    model = Table().to(DTYPE)
    x = torch.randn(2, 3, dtype=DTYPE)
    bm = BoundedModule(model, x)
    assert not [name for name in vars(model) if name.startswith("_tensor_constant")]  # fx's leftovers removed
    model.load_state_dict({**model.state_dict(), "table": torch.full((4, 4), 7.0, dtype=DTYPE)})
    torch.testing.assert_close(bm.bounds(x, LinfBall(0.0), "ibp").lower, model(x))
    for method in METHODS:
        assert_sound(bm, x, LinfBall(0.1), method)


def test_source_lines_in_packages_beside_torch_are_the_users_not_torchs():
    import os
    site = os.path.dirname(os.path.dirname(torch.__file__))
    trace_text = (f'  File "{site}/torchvision/models/resnet.py", line 93, in forward\n    out = self.relu(out)\n'
                  f'  File "{site}/torch/nn/modules/module.py", line 1700, in _call_impl\n    return forward_call(x)\n')
    assert user_source(trace_text) == "resnet.py:93: out = self.relu(out)"
