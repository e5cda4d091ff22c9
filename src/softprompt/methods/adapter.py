"""Adapters (Houlsby et al., ICML 2019, "Parameter-Efficient Transfer Learning for NLP"): a small
bottleneck added to the output of a frozen block's sub-modules.

Each adapter reads the output ``h [batch, T, dim]`` of one block's attention or feed-forward
sub-module (where :meth:`~softprompt.backbones.base.Backbone.blocks` points: its output before
the residual add, as Houlsby et al. and Hyperformer place it) and returns

    ``h + up(act(down(LN(h))))``,   ``down: dim -> bottleneck``, ``up: bottleneck -> dim``,

``LN`` an optional layer norm with its own learnt scale and shift (Hyperformer's
``add_layer_norm_before_adapter``). ``up`` starts at zero, so a fresh adapter leaves the model's
outputs exactly as they were. Adapters enter the model as the conditioning kind ``layer_hooks``
(:class:`~softprompt.conditioning.LayerHook`), one per block and site, on every family whose
backbone gives its blocks (causal, seq2seq: encoder and decoder, masked).

:func:`bottleneck` is the computation alone, on weights given as tensors: the Hyperformer
(:mod:`softprompt.methods.hyperformer`) runs it on weights its hypernetwork generates.
In a multi-task run one adapter set serves every task (the "shared adapter" baseline);
single-task adapters are one run per task.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import opt
from ..conditioning import SITES, Conditioning, LayerHook, RowWeights
from ..errors import ConfigError, ModelMismatchError, PromptFileError
from .base import Method, MethodConfig, register_method

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu, "tanh": torch.tanh}
"""The adapter's non-linearity by name (Hyperformer's default: swish)."""


SITE_CHOICES = {"both": SITES, "attention": ("attention",), "feed_forward": ("feed_forward",)}
"""``sites`` option values -> the block sub-modules an adapter follows."""


def parse_sites(spec: str, who: str) -> tuple[str, ...]:
    """``"both"`` -> ``("attention", "feed_forward")``, ``"attention"`` -> ``("attention",)``, ...
    (:data:`SITE_CHOICES`); :class:`ConfigError` naming ``who`` for another value."""
    if spec not in SITE_CHOICES:
        raise ConfigError(f"{who}: sites must be one of {', '.join(SITE_CHOICES)}, got {spec!r}")
    return SITE_CHOICES[spec]


def check_positive(who: str, **values) -> None:
    """:class:`ConfigError` unless every value is a whole number >= 1."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{who}: {name} must be a whole number >= 1, got {value!r}")


def check_activation(who: str, name: str) -> None:
    if name not in ACTIVATIONS:
        raise ConfigError(f"{who}: activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")


def bottleneck(h: Tensor, down: Tensor, down_bias: Tensor, up: Tensor, up_bias: Tensor, activation: str,
               norm: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """One adapter: ``h + up(act(down(LN(h))))`` for ``h [..., dim]``, computed in the weights' dtype
    and returned in ``h``'s. ``down [bottleneck, dim]``, ``down_bias [bottleneck]``, ``up [dim,
    bottleneck]``, ``up_bias [dim]``; ``norm``: the layer norm's ``(scale [dim], shift [dim])``, or
    None for none (Houlsby et al. 2019; Karimi Mahabadi et al. 2021)."""
    x = h.to(down.dtype)
    z = F.layer_norm(x, (x.shape[-1],), norm[0], norm[1]) if norm is not None else x
    out = x + F.linear(ACTIVATIONS[activation](F.linear(z, down, down_bias)), up, up_bias)
    return out.to(h.dtype)


def row_bottleneck(activation: str):
    """:func:`bottleneck` with each row's own weights, for a mixed batch
    (:class:`~softprompt.conditioning.RowWeights`): ``fn(h [batch, T, dim], down [batch,
    bottleneck, dim], down_bias [batch, bottleneck], up [batch, dim, bottleneck], up_bias [batch,
    dim], scale, shift [batch, dim] or None)``, row ``b`` as :func:`bottleneck` computes it with
    its weights ``[b]``, through batched products (``torch.baddbmm``). One function object per
    activation, so hooks of one activation merge."""
    return _ROW_BOTTLENECKS[activation]


def _row_bottleneck(h: Tensor, down: Tensor, down_bias: Tensor, up: Tensor, up_bias: Tensor, scale: Tensor | None,
                    shift: Tensor | None, activation: str) -> Tensor:
    x = h.to(down.dtype)
    z = x
    if scale is not None:
        z = F.layer_norm(x, (x.shape[-1],)) * scale[:, None] + shift[:, None]
    hidden = ACTIVATIONS[activation](torch.baddbmm(down_bias[:, None], z, down.transpose(1, 2)))
    return (x + torch.baddbmm(up_bias[:, None], hidden, up.transpose(1, 2))).to(h.dtype)


_ROW_BOTTLENECKS = {name: (lambda name: lambda h, *w: _row_bottleneck(h, *w, activation=name))(name) for name in ACTIVATIONS}


def adapter_hook(layer: int, site: str, weights: tuple, activation: str) -> LayerHook:
    """A :class:`LayerHook` running :func:`bottleneck` with ``weights = (down, down_bias, up,
    up_bias, scale, shift)`` (``scale``/``shift`` None for no layer norm) at block ``layer``'s
    ``site``; it carries its weights (:class:`RowWeights`), so rows with other adapters of the same
    shapes share its forward pass."""
    down, down_bias, up, up_bias, scale, shift = weights
    norm = None if scale is None else (scale, shift)
    return LayerHook(layer, site, lambda h: bottleneck(h, down, down_bias, up, up_bias, activation, norm),
                     tuple(w for w in weights if w is not None), RowWeights(row_bottleneck(activation), tuple(weights)))


@dataclass
class AdapterConfig(MethodConfig):
    bottleneck: int = opt(64, "adapter: width of the bottleneck (Houlsby et al.: 8 to 256)")
    activation: str = opt("swish", "adapter: non-linearity, relu, gelu, swish or tanh (Hyperformer: swish)")
    sites: str = opt("both", "adapter: after which sub-module of each block, attention, feed_forward or both (Houlsby, Hyperformer: both)")
    layer_norm: bool = opt(True, "adapter: a learnt layer norm before each adapter's down-projection")

    def __post_init__(self) -> None:
        check_positive("adapter", bottleneck=self.bottleneck)
        check_activation("adapter", self.activation)
        parse_sites(self.sites, "adapter")
        if not isinstance(self.layer_norm, bool):
            raise ConfigError(f"adapter: layer_norm must be true or false, got {self.layer_norm!r}")


class Bottleneck(nn.Module):
    """One adapter's weights: ``down [bottleneck, dim]`` (+ bias), ``up [dim, bottleneck]`` (+ bias,
    both zero at start), and a layer norm's ``scale``/``shift [dim]`` when asked for."""

    def __init__(self, dim: int, size: int, layer_norm: bool, generator: torch.Generator):
        super().__init__()
        bound = 1 / math.sqrt(dim)  # nn.Linear's own default range, drawn from the seed
        self.down = nn.Parameter(torch.empty(size, dim).uniform_(-bound, bound, generator=generator))
        self.down_bias = nn.Parameter(torch.zeros(size))
        self.up = nn.Parameter(torch.zeros(dim, size))
        self.up_bias = nn.Parameter(torch.zeros(dim))
        self.scale = nn.Parameter(torch.ones(dim)) if layer_norm else None
        self.shift = nn.Parameter(torch.zeros(dim)) if layer_norm else None

    def weights(self) -> tuple[Tensor | None, ...]:
        """``(down, down_bias, up, up_bias, scale, shift)``, the last two None without a layer norm."""
        return (self.down, self.down_bias, self.up, self.up_bias, self.scale, self.shift)


@register_method("adapter", AdapterConfig)
class Adapter(Method):
    """A bottleneck adapter after each block's attention and feed-forward (see the module docstring)."""

    needs = frozenset({"layer_hooks"})
    default_optimizer = "adam"
    default_lr = 1e-3  # Houlsby et al. tune 3e-5..3e-3 with Adam; Hyperformer uses 3e-4 on T5-base

    def __init__(self, config: AdapterConfig, backbone, task, seed: int = 0, train_rows=None):
        super().__init__(config, backbone, task, seed, train_rows)
        self.sites = parse_sites(config.sites, "adapter")
        self.n_blocks = len(backbone.blocks())
        self.dim = backbone.dim
        gen = torch.Generator().manual_seed(seed)
        self.adapters = nn.ModuleDict({
            f"{layer}_{site}": Bottleneck(backbone.dim, config.bottleneck, config.layer_norm, gen)
            for layer in range(self.n_blocks) for site in self.sites})

    def conditioning(self) -> Conditioning:
        """One :class:`LayerHook` per block and site, each running its :class:`Bottleneck`
        (:func:`adapter_hook`: rows of other adapter runs share its forward pass)."""
        return Conditioning(layer_hooks=tuple(
            adapter_hook(layer, site, self.adapters[f"{layer}_{site}"].weights(), self.config.activation)
            for layer in range(self.n_blocks) for site in self.sites))

    def state_tensors(self):
        """``adapter.{layer}_{site}.{down,down_bias,up,up_bias,scale,shift}`` (float32) and the verbalizer's."""
        return {**super().state_tensors(),
                **{f"adapter.{name}": t.detach().float() for name, t in self.adapters.state_dict().items()}}

    def state_metadata(self):
        return {"dim": self.dim, "adapter": {"bottleneck": self.config.bottleneck, "sites": self.config.sites,
                            "layer_norm": self.config.layer_norm, "blocks": self.n_blocks}}

    @classmethod
    def config_from_saved(cls, config, metadata):
        """The saved shape (bottleneck, sites, layer norm) over the recorded options."""
        saved = metadata.get("adapter") or {}
        return dataclasses.replace(config, bottleneck=saved.get("bottleneck", config.bottleneck),
                                   sites=saved.get("sites", config.sites), layer_norm=saved.get("layer_norm", config.layer_norm))

    def restore_from(self, artifact):
        """Take the saved adapters; a model with other blocks or width is refused."""
        super().restore_from(artifact)
        load_module_tensors(self.adapters, artifact, "adapter.")


def load_module_tensors(module: nn.Module, artifact, prefix: str) -> None:
    """Copy ``artifact``'s tensors named ``prefix + name`` into ``module``'s parameters (every one
    must be there, of the same shape): :class:`PromptFileError` for a missing one,
    :class:`ModelMismatchError` for one of another shape (a model of another width or depth)."""
    own = module.state_dict()
    missing = [n for n in own if prefix + n not in artifact.tensors]
    if missing:
        raise PromptFileError(f"{artifact.path} lacks {prefix}{missing[0]} ({len(missing)} tensors missing): it was "
                              "saved with other options or is damaged; train again")
    for name, t in own.items():
        saved = artifact.tensors[prefix + name]
        if saved.shape != t.shape:
            raise ModelMismatchError(f"{artifact.path}: {prefix}{name} has shape {tuple(saved.shape)} but this model "
                                     f"needs {tuple(t.shape)}: use the model it was trained for "
                                     f"({artifact.metadata.get('model_id', 'unknown')!r})")
    with torch.no_grad():
        for name, t in own.items():
            t.copy_(artifact.tensors[prefix + name])
