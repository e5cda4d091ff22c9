"""What a method adds to a frozen model: one typed object, :class:`Conditioning`.

A method hands the backbone a :class:`Conditioning` (or, for a batch whose rows differ, a
:class:`PerRow` of them); the backbone decides how each kind enters its family's model. The kinds
(:data:`KINDS`):

* ``input_vectors`` ``[length, dim]``: vectors placed before the text, after the lead special
  token (prompt tuning, Lester et al. 2021; in-context demonstrations' embeddings);
* ``layer_kv``: keys and values before the text in every layer (prefix tuning, Li & Liang 2021),
  a :class:`LayerKV`;
* ``virtual_tokens``: ``name -> [count, dim]``, vectors put at the template's ``{soft:name}``
  slots, inside the text (OpenPrompt's ``MixedTemplate``; P-tuning, Liu et al. 2021);
* ``answer_vectors`` ``[n_answers, dim]``: scored at the answer slot in place of vocabulary
  rows (WARP, Hambardzumyan et al. 2021);
* ``layer_hooks``: functions that change a block's attention or feed-forward output
  (adapters, Houlsby et al. 2019; AdapterHub's forward hooks), :class:`LayerHook`. A hook that
  says how it is computed from weights (:class:`RowWeights`) can share one forward pass with
  rows whose hooks have other weights (:func:`row_hooks`): one batch, a different adapter per row.

A backbone declares the kinds it supports (:attr:`softprompt.backbones.base.Backbone.supports`)
and refuses the others before any work. :func:`as_conditioning` turns what older code passes (a
tensor, a :class:`LayerKV`, None, a per-row list) into these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .errors import ConfigError

KINDS = ("input_vectors", "layer_kv", "virtual_tokens", "answer_vectors", "layer_hooks")
"""The kinds of conditioning, in the order of :class:`Conditioning`'s fields."""

SITES = ("attention", "feed_forward")
"""Where a :class:`LayerHook` acts: a block's attention or feed-forward sub-module."""


@dataclass(eq=False)
class LayerKV:
    """A prefix given as keys and values: ``layers[i] = (key, value)``, each
    ``[1, kv_heads, length, head_dim]``, for every layer of a decoder-only model.

    It occupies ``length`` positions before the text. Keys are stored as the model caches them
    (after its rotary embedding, if it has one), so they belong to positions
    ``len(lead) .. len(lead) + length - 1``.
    """

    layers: tuple[tuple[Tensor, Tensor], ...]

    @property
    def length(self) -> int:
        """Positions the prefix occupies."""
        return self.layers[0][0].shape[2]

    @property
    def shape(self) -> tuple[int, ...]:
        """``(length, n_layers, 2, kv_heads, head_dim)`` (layer 0's heads): length first, like a
        prompt's ``[length, dim]`` (kept for code written before :class:`Conditioning`)."""
        k = self.layers[0][0]
        return (k.shape[2], len(self.layers), 2, k.shape[1], k.shape[3])

    @property
    def layer_shapes(self) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Per layer, ``((kv_heads, head_dim) of the key, (kv_heads, head_dim) of the value)``."""
        return [((k.shape[1], k.shape[3]), (v.shape[1], v.shape[3])) for k, v in self.layers]

    @property
    def version(self) -> tuple[int, ...]:
        """Version counters of all tensors: changes on any in-place update (a cache key)."""
        return tuple(t._version for kv in self.layers for t in kv)

    _version = version  # the name a tensor's counter has, for code that keys on either

    def detach(self) -> "LayerKV":
        return LayerKV(tuple((k.detach(), v.detach()) for k, v in self.layers))

    def to(self, *args, **kwargs) -> "LayerKV":
        """Every tensor moved/cast as ``Tensor.to(*args, **kwargs)``."""
        return LayerKV(tuple((k.to(*args, **kwargs), v.to(*args, **kwargs)) for k, v in self.layers))


PrefixKV = LayerKV
"""The name :class:`LayerKV` had before it moved here (``backbones/causal.py``)."""


@dataclass(frozen=True, eq=False)
class RowWeights:
    """How a :class:`LayerHook` computes its change from weights, so that rows of one batch can
    each have their own: ``fn(h [batch, T, dim], *weights) -> [batch, T, dim]``, each weight
    given with a leading batch axis (row ``b``'s weights at ``[b]``; None stays None), and
    ``weights`` this hook's own (without that axis). ``fn(h, *(w[None] for w in weights))`` must
    equal the hook's own ``fn(h)`` for a one-row ``h``; ``fn`` is a module-level function, the
    same object for every hook it can be merged with (:func:`row_hooks`)."""

    fn: Callable[..., Tensor]
    weights: tuple[Tensor | None, ...]

    @property
    def signature(self) -> tuple:
        """``(fn, shape/dtype/device of each weight)``: hooks of equal signatures merge."""
        return (self.fn, tuple(None if w is None else (tuple(w.shape), w.dtype, w.device) for w in self.weights))


@dataclass(frozen=True, eq=False)
class LayerHook:
    """A change to one block's output, installed as a forward hook for one backbone call.

    ``layer``: the block's index in :meth:`~softprompt.backbones.base.Backbone.blocks`;
    ``site``: ``"attention"`` or ``"feed_forward"``, the sub-module whose output ``fn`` replaces;
    ``fn``: hidden ``[batch, T, dim] -> [batch, T, dim]`` (for a sub-module that returns a tuple,
    its first element); ``tensors``: what ``fn`` reads, so caches see their in-place updates;
    ``rows``: the same change as weights and a batched function (:class:`RowWeights`), or None
    (then rows with other hooks are run apart). Raises :class:`ConfigError` for an unknown site
    or a negative layer.
    """

    layer: int
    site: str
    fn: Callable[[Tensor], Tensor]
    tensors: tuple[Tensor, ...] = ()
    rows: RowWeights | None = None

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise ConfigError(f"layer hook site {self.site!r} is not one of {SITES}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise ConfigError(f"layer hook layer must be a block index >= 0, got {self.layer!r}")

    @property
    def version(self) -> tuple:
        """``(layer, site, fn, versions of tensors)``: equal while the hook computes the same."""
        return (self.layer, self.site, self.fn, tuple(t._version for t in self.tensors))


@dataclass(eq=False)
class Conditioning:
    """Everything a method adds to a frozen model for one row (or a whole batch); empty by default.

    ``input_vectors [length, dim]``; ``layer_kv`` (:class:`LayerKV`); ``virtual_tokens``
    (``name -> [count, dim]``); ``answer_vectors [n_answers, dim]``; ``layer_hooks``
    (:class:`LayerHook` s). See the module docstring for what each does. Raises
    :class:`ConfigError` for a tensor of the wrong rank.
    """

    input_vectors: Tensor | None = None
    layer_kv: LayerKV | None = None
    virtual_tokens: dict[str, Tensor] = field(default_factory=dict)
    answer_vectors: Tensor | None = None
    layer_hooks: tuple[LayerHook, ...] = ()

    def __post_init__(self) -> None:
        for name in ("input_vectors", "answer_vectors"):
            t = getattr(self, name)
            if t is not None and (not isinstance(t, Tensor) or t.dim() != 2):
                raise ConfigError(f"conditioning {name} must be a [n, dim] tensor, got {_describe(t)}")
        if self.layer_kv is not None and not isinstance(self.layer_kv, LayerKV):
            raise ConfigError(f"conditioning layer_kv must be a LayerKV, got {_describe(self.layer_kv)}")
        for name, t in self.virtual_tokens.items():
            if not isinstance(t, Tensor) or t.dim() != 2:
                raise ConfigError(f"virtual tokens {name!r} must be a [count, dim] tensor, got {_describe(t)}")
        self.layer_hooks = tuple(self.layer_hooks)
        for h in self.layer_hooks:
            if not isinstance(h, LayerHook):
                raise ConfigError(f"layer_hooks must hold LayerHook objects, got {_describe(h)}")

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds this conditioning uses (a subset of :data:`KINDS`)."""
        return frozenset(k for k in KINDS if getattr(self, k) not in (None, {}, ()))

    @property
    def length(self) -> int:
        """Positions before the text: input vectors plus layer keys/values."""
        n = 0 if self.input_vectors is None else self.input_vectors.shape[0]
        return n + (0 if self.layer_kv is None else self.layer_kv.length)

    @property
    def version(self) -> tuple:
        """Version counters of every tensor (and the hooks' functions): changes on any in-place update."""
        return (
            None if self.input_vectors is None else self.input_vectors._version,
            None if self.layer_kv is None else self.layer_kv.version,
            tuple((n, t._version) for n, t in sorted(self.virtual_tokens.items())),
            None if self.answer_vectors is None else self.answer_vectors._version,
            tuple(h.version for h in self.layer_hooks),
        )

    def joined(self, other: "Conditioning") -> "Conditioning":
        """This conditioning and ``other`` together (e.g. a method's prompt and its verbalizer's
        answer vectors): ``self`` itself when ``other`` is empty. Virtual tokens and hooks are
        pooled; a kind both set otherwise (or a virtual-token name both use) raises
        :class:`ConfigError`."""
        if not other.kinds:
            return self
        if not self.kinds:
            return other
        clash = [k for k in ("input_vectors", "layer_kv", "answer_vectors")
                 if getattr(self, k) is not None and getattr(other, k) is not None]
        clash += [f"virtual token {n!r}" for n in self.virtual_tokens if n in other.virtual_tokens]
        if clash:
            raise ConfigError(f"two parts of one method both set {', '.join(clash)}: give each kind from one part")
        pick = lambda k: getattr(self, k) if getattr(self, k) is not None else getattr(other, k)  # noqa: E731
        return Conditioning(input_vectors=pick("input_vectors"), layer_kv=pick("layer_kv"),
                            virtual_tokens={**self.virtual_tokens, **other.virtual_tokens},
                            answer_vectors=pick("answer_vectors"), layer_hooks=self.layer_hooks + other.layer_hooks)

    def detach(self) -> "Conditioning":
        """The same conditioning with every tensor detached from the graph (hooks kept as they are)."""
        return Conditioning(
            input_vectors=None if self.input_vectors is None else self.input_vectors.detach(),
            layer_kv=None if self.layer_kv is None else self.layer_kv.detach(),
            virtual_tokens={n: t.detach() for n, t in self.virtual_tokens.items()},
            answer_vectors=None if self.answer_vectors is None else self.answer_vectors.detach(),
            layer_hooks=self.layer_hooks,
        )


@dataclass(eq=False)
class PerRow:
    """A mixed batch: ``items[b]`` is row ``b``'s :class:`Conditioning` (rows may share one)."""

    items: tuple[Conditioning, ...]

    def __post_init__(self) -> None:
        self.items = tuple(as_conditioning(c) for c in self.items)
        if any(isinstance(c, PerRow) for c in self.items):
            raise ConfigError("a PerRow cannot hold another PerRow: give one Conditioning per row")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def kinds(self) -> frozenset[str]:
        """Every kind any row uses."""
        return frozenset().union(*(c.kinds for c in self.items))


def row_hooks(items: Sequence[Conditioning]) -> tuple[LayerHook, ...] | None:
    """The hooks of a mixed batch's rows (``items[b]``: row ``b``'s) as one set that applies each
    row its own weights in one forward pass, or None when they cannot be merged: a row without a
    hook another row has at the same layer and site, or a hook without :class:`RowWeights` (or
    of another signature) there. Per layer and site the merged hook stacks the distinct weights
    once (``[n distinct, ...]``) and gathers each row's at call time (``[batch, ...]``), for
    :attr:`RowWeights.fn`. Rows that share a hook object share its weights."""
    sites = [{(h.layer, h.site): h for h in c.layer_hooks} for c in items]
    if not items or any(len(s) != len(c.layer_hooks) or s.keys() != sites[0].keys() for s, c in zip(sites, items)):
        return None
    merged = []
    for key in sites[0]:
        hooks = [s[key] for s in sites]
        if any(h.rows is None or h.rows.signature != hooks[0].rows.signature for h in hooks):
            return None
        distinct: dict[int, int] = {}
        for h in hooks:
            distinct.setdefault(id(h), len(distinct))
        firsts = list({id(h): h for h in hooks}.values())
        index = torch.tensor([distinct[id(h)] for h in hooks])
        stacked = tuple(None if ws[0] is None else torch.stack(ws)
                        for ws in zip(*(h.rows.weights for h in firsts)))
        merged.append(LayerHook(key[0], key[1], _gathering(hooks[0].rows.fn, stacked, index),
                                tuple(t for h in firsts for t in h.tensors)))
    return tuple(merged)


def _gathering(fn: Callable[..., Tensor], stacked: tuple[Tensor | None, ...], index: Tensor) -> Callable[[Tensor], Tensor]:
    """``h -> fn(h, *each weight's rows picked by index)`` (``stacked[i] [n distinct, ...]``)."""
    def run(h: Tensor) -> Tensor:
        if h.shape[0] != index.numel():
            raise ConfigError(f"per-row layer hooks for {index.numel()} rows ran on {h.shape[0]}: a model call over "
                              "a part of the batch cannot take them; score the rows of each conditioning apart")
        idx = index.to(h.device)
        return fn(h, *(None if w is None else w.index_select(0, idx) for w in stacked))

    return run


def as_conditioning(x: Any) -> Conditioning | PerRow:
    """Coerce what callers pass into a :class:`Conditioning` or :class:`PerRow`.

    ``None`` -> empty; a tensor ``[length, dim]`` -> input vectors; a :class:`LayerKV` -> layer
    keys/values; a :class:`Conditioning` or :class:`PerRow` -> itself; a list or tuple -> a
    :class:`PerRow` of its items coerced. Raises :class:`ConfigError` for anything else.
    """
    if isinstance(x, (Conditioning, PerRow)):
        return x
    if x is None:
        return Conditioning()
    if isinstance(x, Tensor):
        return Conditioning(input_vectors=x)
    if isinstance(x, LayerKV):
        return Conditioning(layer_kv=x)
    if isinstance(x, (list, tuple)):
        return PerRow(tuple(x))
    raise ConfigError(f"cannot condition a model on {_describe(x)}: give a Conditioning, a [length, dim] tensor, "
                      "a LayerKV, None, or a list of those (one per row)")


def _describe(x: Any) -> str:
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


__all__ = ["KINDS", "SITES", "LayerKV", "PrefixKV", "RowWeights", "LayerHook", "Conditioning", "PerRow", "row_hooks",
           "as_conditioning"]
