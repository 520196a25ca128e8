"""ONNX models in (``boundgraph/onnx.py``), where ``onnx`` and ``onnx2torch`` are installed: torch models
exported to ONNX load back with the outputs of the original and of onnxruntime, and bound as the original
does; old opsets are upgraded; a trailing softmax can be dropped; an unreadable file is an error naming it."""
import pytest
import torch
import torch.nn as nn

onnx = pytest.importorskip("onnx")
from boundgraph.onnx import OnnxError, _onnx2torch, load  # noqa: E402

try:
    _onnx2torch()
except ImportError as error:
    pytest.skip(f"onnx2torch is not installed ({error})", allow_module_level=True)

from boundgraph import BoundedModule, LinfBall  # noqa: E402
from tests.helpers import assert_sound  # noqa: E402


class Sign(nn.Module):
    def forward(self, x):
        return torch.sign(x)


def models():
    torch.manual_seed(0)
    return {
        "mlp": (nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3)),
                (1, 4, 4)),
        "cnn": (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
                              nn.Flatten(), nn.Linear(4 * 2 * 2, 10), nn.ReLU(), nn.Linear(10, 3)), (1, 6, 6)),
        "prelu": (nn.Sequential(nn.Conv2d(1, 3, 3), nn.PReLU(3, init=0.2), nn.Flatten(), nn.Linear(3 * 4 * 4, 6),
                                nn.PReLU(init=-0.3), nn.Linear(6, 3)), (1, 6, 6)),
        "bn-pool": (nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                                  nn.Flatten(), nn.Linear(4 * 3 * 3, 3)), (2, 6, 6)),
        # SiLU is exported as x * sigmoid(x): it loads as SiLU again; ONNX's Sign is the sign rule's
        "swish-sign": (nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.SiLU(), nn.Linear(8, 8), Sign(),
                                     nn.Linear(8, 3)), (1, 4, 4)),
        # GELU is exported as x·(1 + erf(x / 1.4142135))·0.5: it loads as GELU again (ops/arithmetic._erf_gelu)
        "gelu": (nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.GELU(), nn.Linear(8, 3)), (1, 4, 4)),
    }


def assert_same_bounds(loaded, model, x, ptb, rtol, atol):
    """IBP's and CROWN's bounds of the loaded model are the original's, to ``rtol``/``atol``."""
    for method in ("ibp", "crown"):
        with torch.no_grad():
            ours = BoundedModule(loaded, x).bounds(x, ptb, method)
            expected = BoundedModule(model, x).bounds(x, ptb, method)
        torch.testing.assert_close(tuple(ours), tuple(expected), rtol=rtol, atol=atol, msg=method)


def assert_bounds_within(bm, original, x, ptb, crown_within, samples=16):
    """The loaded model's IBP bounds are the original's (to 1e-6 of their widths), its CROWN bounds within
    ``crown_within`` of their widths (the exported pieces may relax a little differently), and both hold on sampled
    points."""
    for method, within in (("ibp", 1e-6), ("crown", crown_within)):
        with torch.no_grad():
            ours, expected = bm.bounds(x, ptb, method), original.bounds(x, ptb, method)
        width = expected.upper - expected.lower
        for found, wanted in zip(ours, expected):
            assert ((found - wanted).abs() <= within * width).all(), method
        assert_sound(bm, x, ptb, method, n=samples)


def export(model, shape, path, opset=17, softmax=False):
    model = nn.Sequential(model, nn.Softmax(dim=1)) if softmax else model
    x = torch.rand(1, *shape)
    torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, opset_version=opset, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})


@pytest.mark.parametrize("name", list(models()))
@pytest.mark.parametrize("opset", [11, 17])
def test_an_exported_model_loads_with_the_originals_outputs_and_bounds(tmp_path, name, opset):
    model, shape = models()[name]
    model.eval()
    if isinstance(model[1], nn.BatchNorm2d):
        with torch.no_grad():
            model[1].running_mean.uniform_(-0.3, 0.3)
            model[1].running_var.uniform_(0.5, 2.0)
    export(model, shape, tmp_path / "m.onnx", opset)
    loaded = load(tmp_path / "m.onnx")
    x = torch.rand(5, *shape)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    torch.testing.assert_close(loaded(x).detach(), torch.from_numpy(session.run(None, {"x": x.numpy()})[0]),
                               rtol=1e-5, atol=1e-5)
    ptb = LinfBall(0.05, clip=(0, 1))
    assert_same_bounds(loaded, model, x, ptb, rtol=1e-4, atol=1e-4)


def test_a_trailing_softmax_is_dropped_on_request_and_only_then(tmp_path):
    model, shape = models()["mlp"]
    export(model, shape, tmp_path / "s.onnx", softmax=True)
    x = torch.rand(3, *shape)
    with torch.no_grad():
        torch.testing.assert_close(load(tmp_path / "s.onnx", drop_softmax=True)(x), model.eval()(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(load(tmp_path / "s.onnx")(x), model(x).softmax(1), rtol=1e-5, atol=1e-5)
    export(model, shape, tmp_path / "n.onnx")
    with pytest.raises(OnnxError, match=r"n.onnx: drop_softmax: the output 'y' is not computed by a Softmax \(Gemm\)"):
        load(tmp_path / "n.onnx", drop_softmax=True)


def test_a_file_that_is_not_onnx_is_an_error_naming_it(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(OnnxError, match=r"bad.onnx: not a readable ONNX model"):
        load(tmp_path / "bad.onnx")


def test_the_verifier_takes_an_onnx_model_its_inputs_flattened_and_its_softmax_dropped(tmp_path, capsys):
    from boundgraph.verify import main

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    export(model, (1, 4, 4), tmp_path / "m.onnx", softmax=True)
    declared = "".join(f"(declare-const X_{i} Real)" for i in range(16)) + "(declare-const Y_0 Real)(declare-const Y_1 Real)"
    box = "".join(f"(assert (>= X_{i} 0.4)) (assert (<= X_{i} 0.6))" for i in range(16))
    with torch.no_grad():
        logits = model.eval()(torch.full((1, 1, 4, 4), 0.5))[0]
    (tmp_path / "p.vnnlib").write_text(declared + box + f"(assert (>= Y_0 {float(logits[0]) + 100!r}))")
    assert main([str(tmp_path / "m.onnx"), str(tmp_path / "p.vnnlib"), "--timeout", "30"]).result == "unsat"
    (tmp_path / "q.vnnlib").write_text(declared + box + f"(assert (>= Y_0 {float(logits[0]) - 0.01!r}))")  # logits
    verdict = main([str(tmp_path / "m.onnx"), str(tmp_path / "q.vnnlib"), "--timeout", "30"])
    assert verdict.result == "sat" and float(verdict.y[0]) >= float(logits[0]) - 0.01
    assert capsys.readouterr().out.endswith(")\n")


def test_an_acas_style_graph_of_matmuls_by_constants_bounds_soundly_and_runs_as_onnxruntime(tmp_path):
    """ONNX writes most verification MLPs as ``MatMul`` by an initializer and ``Add`` (ACAS Xu, TLL, nn4sys)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper


    rng = np.random.default_rng(0)
    sizes, nodes, weights, last = [5, 16, 16, 5], [], [], "x"
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weights += [numpy_helper.from_array(rng.standard_normal((fan_in, fan_out)).astype(np.float32), f"W{i}"),
                    numpy_helper.from_array(rng.standard_normal(fan_out).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [last, f"W{i}"], [f"h{i}"]), helper.make_node("Add", [f"h{i}", f"b{i}"],
                                                                                            [f"a{i}"])]
        last = f"a{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [last], [f"r{i}"]))
            last = f"r{i}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "acas", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "acas.onnx"))
    model = load(tmp_path / "acas.onnx")
    x = torch.rand(1, 5)
    ort = pytest.importorskip("onnxruntime")
    expected = ort.InferenceSession(str(tmp_path / "acas.onnx")).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(model(x), torch.from_numpy(expected), rtol=1e-5, atol=1e-5)
    model = model.double()
    bm = BoundedModule(model, x.double())
    for method in ("ibp", "crown", "alpha-crown"):
        assert_sound(bm, x.double(), LinfBall(0.1), method, n=16)


@pytest.mark.filterwarnings("ignore:For linear and cubic interpolation")  # onnx2torch's caveat; the outputs are checked
@pytest.mark.filterwarnings("ignore:Constant folding")  # torch's exporter, on the reflection pads' reversed slices
@pytest.mark.parametrize("name", ["shufflenet", "unet", "unet_transposed", "style_transfer", "resnet", "efficientnet"])
def test_families_whose_export_computes_shapes_load_with_the_originals_outputs_and_bounds(tmp_path, name):
    """The exporter writes channel shuffles, skip-connection crops, pads and upsampling with shapes computed from
    the input's ``Shape``: ``load`` builds those constants in (``_with_constant_operands``), at any batch.
    EfficientNet's SiLU is exported as ``x * sigmoid(x)``: it bounds as SiLU again (the same IBP bounds)."""
    from tests.families import build

    model, x = build(name, dtype=torch.float32)
    export(model, x.shape[1:], tmp_path / "m.onnx")
    loaded = load(tmp_path / "m.onnx")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)
        ptb = LinfBall(0.01)
        ours, original = BoundedModule(loaded, x).bounds(x, ptb, "ibp"), BoundedModule(model, x).bounds(x, ptb, "ibp")
    torch.testing.assert_close(tuple(ours), tuple(original), rtol=1e-3, atol=1e-4)


def test_alexnet_at_a_size_its_adaptive_pooling_exports_at_loads_with_the_originals_outputs_and_bounds(tmp_path):
    """The exporter writes adaptive average pooling only where the output divides the input: AlexNet's family
    size (24×24) ends its features at 2×2 before a 3×3 pool and does not export; at 32×32 they end at 3×3."""
    from tests.families import AlexNet

    torch.manual_seed(0)
    model, x = AlexNet().eval(), torch.rand(2, 3, 32, 32)
    export(model, x.shape[1:], tmp_path / "m.onnx")
    loaded = load(tmp_path / "m.onnx")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-6)
        assert_same_bounds(loaded, model, x, LinfBall(0.01), rtol=1e-4, atol=1e-5)


def test_convnext_exported_with_erf_and_a_power_by_a_constant_loads_and_bounds_as_the_original(tmp_path):
    """ConvNeXt's block as the exporter writes it: GELU as ``x·(1 + erf(x/√2))/2`` (GELU's rule again) and its
    channels-first layer norm in pieces, with ``Pow`` by a constant 2 (built in as ``x ** 2``): the loaded model
    gives the original's outputs, its IBP bounds (9x wider while GELU was bounded as a product) and, within 1% of
    their widths, its CROWN bounds (the layer norm's pieces relax a little differently from its rule: 2.6e-5 wider
    on average); they hold on sampled points."""
    from tests.sequence_models import build

    model, (x,) = build("convnext", dtype=torch.float32)
    export(model, x.shape[1:], tmp_path / "m.onnx")
    loaded = load(tmp_path / "m.onnx")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)
    loaded, x = loaded.double(), x.double()
    bm, original = BoundedModule(loaded, x), BoundedModule(model.double(), x)
    assert {"erf", "pow"} <= {n.op for n in bm.graph}
    assert_bounds_within(bm, original, x, LinfBall(0.01), crown_within=1e-2, samples=8)


def test_squeeze_excite_whose_gate_is_expanded_to_a_computed_shape_bounds_as_the_original(tmp_path):
    """The exporter broadcasts squeeze-excite's gate with ``Expand`` to ``Shape`` of the feature map (computed at run
    time, which no trace follows): it loads as ``x.expand(batch, *shape)`` and bounds exactly as the torch model."""
    from tests.sequence_models import build

    model, (x,) = build("squeeze_excite", dtype=torch.float32)
    export(model, x.shape[1:], tmp_path / "m.onnx")
    loaded = load(tmp_path / "m.onnx")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    loaded, model, x = loaded.double(), model.double(), x.double()
    assert_same_bounds(loaded, model, x, LinfBall(0.01), rtol=1e-9, atol=1e-12)


class ClassToken(nn.Module):
    """A ViT's class token, ``cls.expand(batch, -1, -1)`` (an ``Expand`` to a shape the exporter computes from the
    input's), prepended to the tokens; then ``Unsqueeze``/``Squeeze`` by axes (an input from opset 13 on) and the
    class token's output picked by ``Gather`` with a constant index."""

    def __init__(self):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, 4))
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        return torch.relu(self.lin(tokens)).unsqueeze(1).squeeze(1)[:, 0]


def test_a_class_token_expanded_to_the_batch_a_squeeze_by_axes_and_a_gather_load_and_bound_as_the_original(
        tmp_path):
    torch.manual_seed(0)
    model = ClassToken().eval()
    export(model, (3, 4), tmp_path / "m.onnx")
    loaded = load(tmp_path / "m.onnx")
    assert "Expand_by_batch" in dict(loaded.named_modules())
    x = torch.rand(3, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert_same_bounds(loaded, model, x, LinfBall(0.1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, ops", [("gpt", {"gelu", "where", "softmax_product"}),
                                       ("vit", {"gelu", "conv2d", "softmax_product"})])
def test_transformers_whose_export_computes_masks_and_splits_load_and_bound_as_the_original(tmp_path, name, ops):
    """minGPT's block as the exporter writes it: the causal mask sliced from its buffer to the sequence's length
    (``Shape`` → ``Gather`` → ``Slice`` → ``Equal``, folded into a constant: ``_fold_static_values``) and filled by
    ``Where`` with a ``−inf`` constant (the number, as ``masked_fill`` takes it); GELU's tanh form spelt out with
    float32 constants and ``x·(x·x)`` (GELU's rule again, with the κ they give). The ViT's
    ``qkv.permute(2, 0, 3, 1, 4).unbind(0)`` as ``Transpose``, ``Split`` into ones and ``Squeeze`` (``unbind``
    again: ``_unbind_split_squeezes``), its class token by ``Expand``. The loaded models give the originals'
    outputs and IBP bounds; CROWN's are within 8% of their widths (measured: 3.5% and 6.9%, the loaded models'
    2.4% and 1.8% tighter on average: their linear layers are ``MatMul`` + ``Add``); all hold on sampled points."""
    from tests.sequence_models import build

    model, (x,) = build(name, dtype=torch.float32)
    export(model, x.shape[1:], tmp_path / "m.onnx")
    loaded = load(tmp_path / "m.onnx")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)
    loaded, x = loaded.double(), x.double()
    bm, original = BoundedModule(loaded, x), BoundedModule(model.double(), x)
    found = {n.op for n in bm.program("crown").graph}
    assert ops <= found and not {"product", "tanh", "erf"} & found
    assert_bounds_within(bm, original, x, LinfBall(0.01), crown_within=8e-2)


class StackedRecurrent(nn.Module):
    """A 2-layer LSTM (one ONNX node a layer, joined by ``Squeeze``; its final states a ``Concat``) whose last step
    and first layer's final state are read, and a bidirectional GRU (``Transpose`` and ``Reshape`` of ``Y``) averaged
    over time."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 4, num_layers=2, batch_first=True)
        self.gru = nn.GRU(6, 3, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(4 + 4 + 6, 3)

    def forward(self, x):
        out, (h, _) = self.lstm(x)
        both, _ = self.gru(x)
        return self.fc(torch.cat([out[:, -1], h[0], both.mean(1)], 1))


@pytest.mark.parametrize("name", ["lstm", "gru", "stacked"])
def test_recurrent_layers_load_as_torch_modules_and_bound_as_the_original(tmp_path, name):
    """ONNX ``LSTM`` / ``GRU`` nodes (no onnx2torch converter: ``boundgraph/onnx_recurrent.py``) load as
    ``nn.LSTM`` / ``nn.GRU`` with the gates reordered and the biases split, their all-zero initial states as none,
    and the exporter's reshapes of ``Y`` and stacks of ``Y_h`` read as the torch module's outputs: the loaded model
    gives the original's (and onnxruntime's) outputs at two batch sizes and the original's IBP and CROWN bounds."""
    from tests.sequence_models import build

    if name == "stacked":
        torch.manual_seed(0)
        model, x = StackedRecurrent().eval(), torch.rand(2, 5, 6)
    else:
        model, (x,) = build(name, dtype=torch.float32)
    export(model, x.shape[1:], tmp_path / "m.onnx")
    loaded = load(tmp_path / "m.onnx")
    for batch in (x, torch.rand(3, *x.shape[1:])):
        with torch.no_grad():
            torch.testing.assert_close(loaded(batch), model(batch), rtol=1e-5, atol=1e-6)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    torch.testing.assert_close(loaded(x).detach(), torch.from_numpy(session.run(None, {"x": x.numpy()})[0]),
                               rtol=1e-5, atol=1e-5)
    loaded, model, x = loaded.double(), model.double(), x.double()
    assert_same_bounds(loaded, model, x, LinfBall(0.05), rtol=1e-9, atol=1e-12)


def test_a_rewrite_that_breaks_another_batch_is_an_error_naming_the_file(tmp_path, monkeypatch):
    """The rewritten graph is checked against the original's outputs at batch 1 and 2, computed before any rewrite
    (the check once compared the rewritten graph with itself at batch 2). Here the reshape of a bidirectional GRU's
    sequence-first ``Y`` is kept and built in the old way, with the batch first, which holds at batch 1 only: ``load``
    refuses the file, naming it, rather than return a model that is wrong at every other batch."""
    import boundgraph.onnx as onnx_in
    import boundgraph.onnx_layout as layout_in
    import boundgraph.onnx_recurrent as recurrent_in

    torch.manual_seed(0)
    export(StackedRecurrent().eval(), (5, 6), tmp_path / "m.onnx")
    monkeypatch.setattr(onnx_in, "_batch_free", lambda once, twice: (-1,) + once[1:])
    monkeypatch.setattr(recurrent_in, "sequence_outputs", lambda module: False)  # the reshape stays
    monkeypatch.setattr(layout_in, "lift_off_batch", lambda module, static: False)  # and is not run per example
    with pytest.raises(OnnxError, match=r"m\.onnx: building the constant shape operands .* at batch 2"):
        load(tmp_path / "m.onnx")


@pytest.mark.parametrize("name", ["bert", "sequence_first"])
def test_sequence_first_attention_runs_per_example_and_bounds_as_the_original(tmp_path, name):
    """``nn.MultiheadAttention`` as the exporter writes it keeps the sequence first, the batch on dimension 1 or
    merged with the heads (``(L, B·H, d)``) or the sequence (``(L·B, E)``): those ops load as their per-example ops
    on ``(B, *S)`` stacks (``boundgraph/onnx_layout.py``), the LSTM and GRU after it (``SequenceFirst``) as they are.
    BERT also has a second, integer input (the attention mask), whose ``−inf`` fill reaches the scores as a
    constant added before the softmax (made ``−max/4``, as the attention rules make masks). The loaded models give
    the originals' outputs, their IBP bounds, CROWN's within 2% of their widths (measured: 1.4% and 0.03%), and hold
    on sampled points."""
    from tests.sequence_models import build

    model, inputs = build(name, dtype=torch.float32)
    names = ["x", "mask"][:len(inputs)]
    torch.onnx.export(model, inputs, str(tmp_path / "m.onnx"), dynamo=False, opset_version=17, input_names=names,
                      output_names=["y"], dynamic_axes={**{n: {0: "batch"} for n in names}, "y": {0: "batch"}})
    loaded = load(tmp_path / "m.onnx")
    with torch.no_grad():
        torch.testing.assert_close(loaded(*inputs), model(*inputs), rtol=1e-5, atol=1e-6)
    inputs = (inputs[0].double(),) + inputs[1:]
    loaded, model = loaded.double(), model.double()
    arg, ptb = (inputs, (LinfBall(0.01), None)) if len(inputs) > 1 else (inputs[0], LinfBall(0.01))
    bm, original = BoundedModule(loaded, arg), BoundedModule(model, arg)
    assert_bounds_within(bm, original, arg, ptb, crown_within=2e-2)
