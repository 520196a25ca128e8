"""Compact models where perturbed tensors meet, written as their reference implementations write them: a
BERT-style encoder on embeddings (the peer's Transformer example shape: hidden 64, 4 heads, 2 layers), a
minGPT-style causal decoder block, a small ViT, LSTM and GRU classifiers on sequential MNIST rows (28 steps
× 28 features), a squeeze-excite block, a ConvNeXt block, and ``batch_first=False`` modules. ``MODELS`` maps a name to ``(build, input shape,
size)``: ``"test"`` sizes run in CI, ``"full"`` sizes are the issue's (``benchmarks/sequence.py``)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class EncoderLayer(nn.Module):
    """Post-norm Transformer encoder layer (BERT): multi-head self-attention with a padding mask, residual,
    LayerNorm, GELU feed-forward, residual, LayerNorm."""

    def __init__(self, hidden: int, heads: int, ff: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, ff), nn.GELU(), nn.Linear(ff, hidden))
        self.dropout = nn.Dropout(0.1)

    def forward(self, x, padding):
        attended, _ = self.attention(x, x, x, key_padding_mask=padding, need_weights=False)
        x = self.norm1(x + self.dropout(attended))
        return self.norm2(x + self.dropout(self.ff(x)))


class Bert(nn.Module):
    """A BERT-style classifier on embeddings (``inputs_embeds``: the perturbed input) and an integer attention
    mask (1: token, 0: padding): position embeddings added, encoder layers, the first token's state, a head."""

    def __init__(self, hidden: int = 64, heads: int = 4, layers: int = 2, length: int = 32, classes: int = 2) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.randn(1, length, hidden) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, 2 * hidden) for _ in range(layers))
        self.pooler = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, embeddings, attention_mask):
        x = embeddings + self.position[:, :embeddings.shape[1]]
        padding = attention_mask == 0
        for layer in self.layers:
            x = layer(x, padding)
        return self.classifier(self.pooler(x[:, 0]))


class CausalSelfAttention(nn.Module):
    """minGPT's attention: one linear for q, k, v, split, heads by view/transpose, ``q @ kᵀ / √d`` masked by a
    causal buffer with ``masked_fill(-inf)``, softmax, ``@ v``, heads merged, a projection."""

    def __init__(self, hidden: int, heads: int, length: int) -> None:
        super().__init__()
        self.c_attn, self.c_proj = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.n_head = heads
        self.register_buffer("bias", torch.tril(torch.ones(length, length)).view(1, 1, length, length))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class GPTBlock(nn.Module):
    """minGPT's pre-norm block and a language-model head on it."""

    def __init__(self, hidden: int = 32, heads: int = 4, length: int = 8, vocabulary: int = 10) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads, length)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(approximate="tanh"), nn.Linear(4 * hidden, hidden))
        self.head = nn.Linear(hidden, vocabulary)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return self.head(x[:, -1])


class ViT(nn.Module):
    """A small ViT: a patchifying convolution, flatten and transpose to tokens, a class token expanded to the
    batch, position embeddings, pre-norm encoder layers with ``F.scaled_dot_product_attention``, a head on the
    class token."""

    def __init__(self, image: int = 8, patch: int = 4, hidden: int = 16, heads: int = 2, layers: int = 1,
                 classes: int = 10) -> None:
        super().__init__()
        self.patchify = nn.Conv2d(1, hidden, patch, stride=patch)
        tokens = (image // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.pos_embedding = nn.Parameter(torch.randn(1, tokens + 1, hidden) * 0.02)
        self.blocks = nn.ModuleList(_ViTBlock(hidden, heads) for _ in range(layers))
        self.norm, self.head = nn.LayerNorm(hidden), nn.Linear(hidden, classes)

    def forward(self, x):
        x = self.patchify(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


class _ViTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv, self.proj = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        x = x + self.proj(attended)
        return x + self.mlp(self.norm2(x))


class RowsRNN(nn.Module):
    """Sequential MNIST: the image's 28 rows as 28 steps of 28 features, an LSTM or GRU, the last state."""

    def __init__(self, kind: str = "lstm", hidden: int = 16, rows: int = 28, classes: int = 10) -> None:
        super().__init__()
        self.kind = kind
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(rows, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, image):
        rows = image.squeeze(1)
        if self.kind == "lstm":
            _, (h, _) = self.rnn(rows)
        else:
            _, h = self.rnn(rows)
        return self.fc(h[-1])


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) after a convolution: ``x * sigmoid(fc(relu(fc(mean(x)))))``."""

    def __init__(self, channels: int = 8, reduction: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels), nn.Sigmoid())
        self.head = nn.Linear(channels, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))
        b, c, _, _ = x.size()
        y = self.fc(x.mean((2, 3))).view(b, c, 1, 1)
        return self.head((x * y.expand_as(x)).mean((2, 3)))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block: 7×7 depthwise conv, permute to channels-last, LayerNorm, Linear, GELU, Linear, a
    layer scale, permute back, residual; then a channels-first LayerNorm written out (mean, var, rsqrt)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-1 * torch.ones(dim))
        self.weight, self.bias = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.stem(x)
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = shortcut + (self.gamma * x).permute(0, 3, 1, 2)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + 1e-6)
        x = self.weight[:, None, None] * x + self.bias[:, None, None]
        return self.head(x.mean((-2, -1)))


class SequenceFirst(nn.Module):
    """The older PyTorch layout: modules built with ``batch_first=False`` on ``x.transpose(0, 1)`` of a batch-first
    input (attention, then a 2-layer LSTM on its output, and a bidirectional GRU on the input), the last step of the
    LSTM's output by ``out[-1]``, the GRU's output transposed back, ``h_n[-1]``."""

    def __init__(self, features: int = 8, hidden: int = 5) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(features, 2)
        self.lstm = nn.LSTM(features, hidden, num_layers=2)
        self.gru = nn.GRU(features, hidden, bidirectional=True)
        self.head = nn.Linear(4 * hidden, 3)

    def forward(self, x):
        t = x.transpose(0, 1)
        attended, _ = self.attention(t, t, t, need_weights=False)
        out, (h, _) = self.lstm(attended)
        both, h_gru = self.gru(t)
        pooled = both.transpose(0, 1).mean(1)[:, :self.lstm.hidden_size]
        return self.head(torch.cat([out[-1], h[-1], pooled, h_gru[-1]], 1))


MODELS = {
    "bert": {"test": (lambda: Bert(hidden=16, heads=4, layers=2, length=6), (6, 16)),
             "full": (lambda: Bert(hidden=64, heads=4, layers=2, length=32), (32, 64))},
    "gpt": {"test": (lambda: GPTBlock(hidden=16, heads=2, length=5), (5, 16)),
            "full": (lambda: GPTBlock(hidden=64, heads=4, length=32), (32, 64))},
    "vit": {"test": (lambda: ViT(image=8, patch=4, hidden=8, heads=2), (1, 8, 8)),
            "full": (lambda: ViT(image=28, patch=7, hidden=64, heads=4, layers=2), (1, 28, 28))},
    "lstm": {"test": (lambda: RowsRNN("lstm", hidden=4, rows=6), (1, 6, 6)),
             "full": (lambda: RowsRNN("lstm", hidden=32, rows=28), (1, 28, 28))},
    "gru": {"test": (lambda: RowsRNN("gru", hidden=4, rows=6), (1, 6, 6)),
            "full": (lambda: RowsRNN("gru", hidden=32, rows=28), (1, 28, 28))},
    "squeeze_excite": {"test": (SqueezeExcite, (3, 6, 6)), "full": (SqueezeExcite, (3, 32, 32))},
    "convnext": {"test": (ConvNeXtBlock, (3, 8, 8)), "full": (lambda: ConvNeXtBlock(32), (3, 32, 32))},
    "sequence_first": {"test": (lambda: SequenceFirst(4, 3), (3, 4)),
                       "full": (lambda: SequenceFirst(64, 32), (32, 64))},
}


def build(name: str, size: str = "test", seed: int = 0, batch: int = 2, dtype: torch.dtype = torch.float64):
    """The model in eval mode and its example inputs: ``(x,)``, or ``(embeddings, mask)`` for BERT (the second
    example's last two tokens padding)."""
    make, shape = MODELS[name][size]
    torch.manual_seed(seed)
    model = make().to(dtype).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *shape, generator=g, dtype=dtype)
    if name == "bert":
        x = torch.randn(batch, *shape, generator=g, dtype=dtype) * 0.5
        mask = torch.ones(batch, shape[0], dtype=torch.long)
        mask[-1, -2:] = 0
        return model, (x, mask)
    return model, (x,)
