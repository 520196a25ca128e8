"""HuggingFace ``transformers`` models, bounded from their embeddings (optional: skipped without transformers).

Tiny random-weight models built from configs (no downloads), in eval mode and float64, each wrapped to take
the perturbed float tensor (and an integer attention mask) and return one tensor:

- BERT (``BertForSequenceClassification``) on ``inputs_embeds`` with a padding mask, eager and SDPA attention;
- GPT-2 (``GPT2Model``, the last position's hidden state) on ``inputs_embeds`` with a padding mask, eager and
  SDPA attention, as shipped: its ``Conv1D`` is ``torch.addmm`` on ``x.view(-1, d)``, rows that fold the batch,
  which the canonicaliser computes on the batch-first tensor;
- ViT (``ViTForImageClassification``) on ``pixel_values``, SDPA attention (eager attention computes softmax in
  float32 and converts back, ``softmax(..., dtype=torch.float32).to(query.dtype)``, refused in float64).

For IBP, CROWN-IBP and CROWN: every one of 20 uniformly random points of an L∞ ball has its output inside the
bounds (for IBP and CROWN-IBP, ``boundgraph.check`` also compares every intermediate value on a few points),
and at ε = 0 the bounds are the model's output."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn

transformers = pytest.importorskip("transformers")

from boundgraph import BoundedModule, LinfBall  # noqa: E402
from tests.helpers import assert_sound  # noqa: E402

METHODS = ("ibp", "crown-ibp", "crown")
DTYPE = torch.float64
BATCH, LENGTH, HIDDEN = 2, 5, 16
EPS = 0.01
SMALL = dict(num_hidden_layers=2, num_attention_heads=4, intermediate_size=32)


class FromEmbeddings(nn.Module):
    """``model(inputs_embeds=e, attention_mask=mask)``: the logits, or the hidden state at ``position``."""

    def __init__(self, model: nn.Module, position: int | None = None) -> None:
        super().__init__()
        self.model, self.position = model, position

    def forward(self, embeds, mask):
        out = self.model(inputs_embeds=embeds, attention_mask=mask, return_dict=False, **self.extra)[0]
        return out if self.position is None else out[:, self.position]

    @property
    def extra(self) -> dict:
        return {"use_cache": False} if self.position is not None else {}


class FromPixels(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels):
        return self.model(pixel_values=pixels, return_dict=False)[0]


def _text_inputs(seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(BATCH, LENGTH, dtype=torch.long)
    mask[1, -2:] = 0  # the second sequence is padded
    return torch.randn(BATCH, LENGTH, HIDDEN, generator=g, dtype=DTYPE), mask


def bert(attn: str):
    config = transformers.BertConfig(vocab_size=50, hidden_size=HIDDEN, max_position_embeddings=16, num_labels=3,
                                     attn_implementation=attn, **SMALL)
    return FromEmbeddings(transformers.BertForSequenceClassification(config)), _text_inputs(1)


def gpt2(attn: str):
    config = transformers.GPT2Config(n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=16, vocab_size=50,
                                     bos_token_id=0, eos_token_id=0, attn_implementation=attn)
    return FromEmbeddings(transformers.GPT2Model(config), position=-1), _text_inputs(2)


def vit(attn: str):
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=HIDDEN, num_labels=3,
                                    attn_implementation=attn, **SMALL)
    g = torch.Generator().manual_seed(3)
    return FromPixels(transformers.ViTForImageClassification(config)), (torch.rand(BATCH, 1, 8, 8, generator=g,
                                                                                   dtype=DTYPE),)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread here: float64 exp/erf on these tiny tensors stall for milliseconds a call at two threads
    when the other core is busy (BERT's tests: minutes instead of seconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def compiled(build, attn: str):
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the random weights
        wrapper, inputs = build(attn)
    wrapper = wrapper.to(DTYPE).eval()  # the wrapper too: a module left in training mode is retraced as trained
    return wrapper, BoundedModule(wrapper, inputs), inputs


def assert_bounds_sound_and_exact(build, attn: str, method: str) -> None:
    model, bm, inputs = compiled(build, attn)
    rest = (None,) * (len(inputs) - 1)
    x = inputs[0]
    with torch.no_grad():
        reference = model(*inputs)
        bounds = bm.bounds(inputs, (LinfBall(EPS),) + rest, method)
        assert bounds.lower.shape == reference.shape and torch.isfinite(bounds.upper - bounds.lower).all()
        g = torch.Generator().manual_seed(4)
        for _ in range(20):
            point = x + (torch.rand(x.shape, generator=g, dtype=DTYPE) * 2 - 1) * EPS
            y = model(point, *inputs[1:])
            assert (bounds.lower <= y + 1e-9).all() and (y <= bounds.upper + 1e-9).all(), method
        exact = bm.bounds(inputs, (LinfBall(0.0),) + rest, method)
    torch.testing.assert_close(exact.lower, reference, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(exact.upper, reference, rtol=1e-9, atol=1e-12)
    if method != "crown":  # boundgraph.check on CROWN costs seconds a model here
        assert_sound(bm, inputs, (LinfBall(EPS),) + rest, method, n=3, pgd=False)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_bert_classifier_bounds_from_embeddings_with_padding_mask_are_sound_and_exact_at_zero(attn, method):
    assert_bounds_sound_and_exact(bert, attn, method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_gpt2_with_conv1d_as_linear_bounds_from_embeddings_are_sound_and_exact_at_zero(attn, method):
    assert_bounds_sound_and_exact(gpt2, attn, method)


@pytest.mark.parametrize("method", METHODS)
def test_vit_sdpa_classifier_bounds_from_pixels_are_sound_and_exact_at_zero(method):
    assert_bounds_sound_and_exact(vit, "sdpa", method)
