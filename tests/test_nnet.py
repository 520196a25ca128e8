"""The NNet reader (``boundgraph/nnet.py``): a network written in the format, read back, equals the format's
reference evaluation on its domain (normalisation folded into the first and last layers), bounds soundly over
the domain it returns, and a malformed file is an error naming the file and the line."""
import pytest
import torch

from boundgraph import BoundedModule
from boundgraph.nnet import NNetError, load
from tests.helpers import assert_sound


def random_network(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    layers = [(torch.randn(o, i, generator=g, dtype=torch.float64), torch.randn(o, generator=g, dtype=torch.float64))
              for i, o in zip(sizes[:-1], sizes[1:])]
    n = sizes[0]
    minima = -torch.rand(n, generator=g, dtype=torch.float64) * 3
    maxima = torch.rand(n, generator=g, dtype=torch.float64) * 2 + 0.5
    means = torch.randn(n + 1, generator=g, dtype=torch.float64)
    ranges = torch.rand(n + 1, generator=g, dtype=torch.float64) * 5 + 0.5
    return layers, minima, maxima, means, ranges


def write_nnet(path, sizes, layers, minima, maxima, means, ranges):
    row = lambda values: ",".join(repr(float(v)) for v in values) + ",\n"  # noqa: E731  the format's trailing comma
    text = "// a test network\n// written by tests/test_nnet.py\n"
    text += row([len(sizes) - 1, sizes[0], sizes[-1], max(sizes)]) + row(sizes) + "0,\n"
    text += row(minima) + row(maxima) + row(means) + row(ranges)
    for weight, bias in layers:
        text += "".join(row(w) for w in weight) + "".join(row([b]) for b in bias)
    path.write_text(text)


def reference(x, layers, minima, maxima, means, ranges):
    """The format's own evaluation: clip to the domain, normalise, the layers, de-normalise."""
    z = (torch.maximum(torch.minimum(x, maxima), minima) - means[:-1]) / ranges[:-1]
    for index, (weight, bias) in enumerate(layers):
        z = z @ weight.T + bias
        if index < len(layers) - 1:
            z = z.clamp_min(0)
    return z * ranges[-1] + means[-1]


@pytest.mark.parametrize("sizes", [[5, 50, 50, 50, 5], [3, 7, 2], [2, 1]])
def test_a_read_network_equals_the_formats_reference_on_its_domain_and_bounds_soundly_over_it(tmp_path, sizes):
    network = random_network(sizes)
    write_nnet(tmp_path / "net.nnet", sizes, *network)
    model, domain = load(tmp_path / "net.nnet")
    _, minima, maxima, _, _ = network
    assert torch.equal(domain.lower, minima) and torch.equal(domain.upper, maxima)
    x = minima + (maxima - minima) * torch.rand(64, sizes[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(x), reference(x, *network), rtol=1e-12, atol=1e-12)
    corners = torch.where(torch.rand(8, sizes[0], dtype=torch.float64) < 0.5, minima, maxima)
    torch.testing.assert_close(model(corners), reference(corners, *network), rtol=1e-12, atol=1e-12)
    bm = BoundedModule(model, x[:2])
    for method in ("ibp", "crown", "alpha-crown"):
        assert_sound(bm, x[:2], domain, method, n=16)


def test_a_malformed_file_is_an_error_naming_the_file_and_the_line(tmp_path):
    sizes = [3, 4, 2]
    write_nnet(tmp_path / "net.nnet", sizes, *random_network(sizes))
    lines = (tmp_path / "net.nnet").read_text().splitlines()
    (tmp_path / "short.nnet").write_text("\n".join(lines[:-1]))
    with pytest.raises(NNetError, match=r"short.nnet: ends before bias 2 of layer 2"):
        load(tmp_path / "short.nnet")
    (tmp_path / "row.nnet").write_text("\n".join(lines[:9] + ["1.0, 2.0"] + lines[10:]))
    with pytest.raises(NNetError, match=r"row.nnet, line 10: row 1 of layer 1's weights needs 3 numbers, found 2"):
        load(tmp_path / "row.nnet")
    (tmp_path / "text.nnet").write_text("\n".join(lines[:5] + ["1.0, x, 3"] + lines[6:]))
    with pytest.raises(NNetError, match=r"text.nnet, line 6: not a list of numbers"):
        load(tmp_path / "text.nnet")
    (tmp_path / "long.nnet").write_text("\n".join(lines + ["7.0,"]))
    with pytest.raises(NNetError, match=r"long.nnet, line \d+: more numbers than the 2 layers hold"):
        load(tmp_path / "long.nnet")
