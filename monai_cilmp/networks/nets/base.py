"""The interface every classifier of this package shares (CILMP and its baselines), implemented once.

A network here is a frozen open_clip backbone plus a few trained parameters. The engines rely on:

- the constructor taking ``class_names``, ``backbone`` (a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded
  :class:`~monai_cilmp.networks.backbones.Backbone` or a model name), ``pretrained`` and, for a model name, the
  other :data:`~monai_cilmp.networks.backbone_spec.BACKBONE_OPTIONS` as keywords (``offline``, ``cache_dir``,
  ``quick_gelu``);
- the attributes ``class_names``, ``image_size``, ``image_mean``, ``image_std``, ``backbone_name``,
  ``backbone_pretrained`` (to build transforms and record a run);
- ``forward(images) -> (B, C)`` logits, MONAI ``MetaTensor`` inputs accepted;
- ``train()`` that keeps the frozen towers in eval mode;
- :meth:`~CLIPClassifier.trainable_state_dict` / :meth:`~CLIPClassifier.load_trainable_state_dict` (checkpoints
  hold only what trains), :meth:`~CLIPClassifier.prompt_parameter_names` (what Gaussian prompt aggregation
  averages) and :meth:`~CLIPClassifier.regularization_loss` (a term the engine adds to the loss, or ``None``);
- optionally :attr:`~CLIPClassifier.uses_training_features` with :meth:`~CLIPClassifier.fit_training_features` (a
  method built from the training set's image features, e.g. Tip-Adapter's cache: the engine extracts them once
  before training) and :meth:`~CLIPClassifier.guide_loss` (a loss whose gradient the engine keeps the
  classification gradient from conflicting with, ProGrad).

:class:`CLIPClassifier` provides all of that, plus the text-prompt plumbing the prompt learners share (prompt
layout, context initialisation, splicing learned tokens into a prompt, frozen class text embeddings).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_cilmp.networks.backbone_spec import BackboneLike, resolve_backbone
from monai_cilmp.networks.backbones import Backbone

__all__ = [
    "CLIPClassifier",
    "OptionEnum",
    "TrainableState",
    "as_plain_tensor",
    "check_class_names",
    "look_up",
    "splice_tokens",
]


class OptionEnum(str, Enum):
    """A string option (like ``monai.utils.StrEnum``, defined here so that importing the networks stays light)."""

    def __str__(self) -> str:
        return str(self.value)


def look_up(option: Any, supported: Collection | type[Enum]) -> Any:
    """``monai.utils.look_up_option`` (did-you-mean errors), importing MONAI only when an option is checked."""
    from monai.utils import look_up_option

    return look_up_option(option, supported)


def as_plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """``x`` without MONAI ``MetaTensor`` metadata (whose tracking only slows every op down here)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def check_class_names(class_names: Sequence[str]) -> list[str]:
    """``class_names`` as a list of strings.

    Raises:
        ValueError: empty or repeated names.
    """
    names = [str(n) for n in class_names]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"class_names must be a non-empty list of distinct names, got {names}.")
    return names


def splice_tokens(x: torch.Tensor, start: int, tokens: torch.Tensor) -> torch.Tensor:
    """``x`` with positions ``start .. start + n`` of its token axis (``-2``) replaced by ``tokens`` (``n`` of them).

    Args:
        x: ``(..., T, width)`` prompt embeddings.
        start: first replaced position.
        tokens: ``(..., n, width)``, broadcastable to ``x``'s leading shape.
    """
    n = tokens.shape[-2]
    lead = torch.broadcast_shapes(x.shape[:-2], tokens.shape[:-2])
    x = x.expand(*lead, *x.shape[-2:])
    tokens = tokens.to(x.dtype).expand(*lead, *tokens.shape[-2:])
    return torch.cat([x[..., :start, :], tokens, x[..., start + n :, :]], dim=-2)


class CLIPClassifier(nn.Module):
    """Base of the classifiers on a frozen open_clip backbone; see the module docstring for the interface.

    Subclasses call :meth:`_init_classifier` first thing in their constructor, register the towers they use as
    ``text_tower`` / ``vision_tower`` (kept in eval mode by :meth:`train`), and name their prompt parameters in
    :attr:`prompt_parameters`.
    """

    #: names of the parameters Gaussian prompt aggregation averages (those that exist).
    prompt_parameters: tuple[str, ...] = ()

    #: the engine calls :meth:`fit_training_features` with the training set's image features before training.
    uses_training_features: bool = False

    class_names: list[str]
    image_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    backbone_name: str
    backbone_pretrained: str | None
    logit_scale: torch.Tensor

    def _init_classifier(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike,
        pretrained: str | None = "openai",
        **backbone_options: Any,
    ) -> Backbone:
        """Check the class names, load the backbone if needed, set the shared attributes; returns the backbone.

        ``backbone``, ``pretrained`` and ``backbone_options`` go to
        :func:`~monai_cilmp.networks.backbone_spec.resolve_backbone`.
        """
        self.class_names = check_class_names(class_names)
        backbone = resolve_backbone(backbone, pretrained, **backbone_options)
        self.image_size = backbone.image_size
        self.image_mean, self.image_std = tuple(backbone.mean), tuple(backbone.std)
        self.backbone_name, self.backbone_pretrained = backbone.name, backbone.pretrained
        self.register_buffer("logit_scale", backbone.model.logit_scale.detach().clone().float(), persistent=False)
        return backbone

    @staticmethod
    def _embed_dim(model: nn.Module) -> int:
        """Size of the joint image-text embedding of an open_clip model (open_clip's ViT or a timm trunk)."""
        proj = getattr(model.visual, "proj", None)
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[1])
        for tower in (model.visual, getattr(model, "text", None)):
            if getattr(tower, "output_dim", None):
                return int(tower.output_dim)
        text_projection = getattr(model, "text_projection", None)
        if isinstance(text_projection, nn.Linear):
            return int(text_projection.out_features)
        return int(text_projection.shape[1])

    # ----- modes and encoders ------------------------------------------------------------------------------------

    def frozen_towers(self) -> list[nn.Module]:
        """The frozen encoder towers this network runs (always in eval mode)."""
        return [m for m in (getattr(self, "text_tower", None), getattr(self, "vision_tower", None)) if m is not None]

    def train(self, mode: bool = True) -> CLIPClassifier:
        """Set training mode for the trained modules; the frozen towers always stay in eval mode."""
        super().train(mode)
        for tower in self.frozen_towers():
            tower.eval()
        return self

    def to_compute_dtype(self, dtype: torch.dtype | None) -> CLIPClassifier:
        """Keep the frozen towers' matrix weights in the autocast compute dtype, cast once instead of every step.

        Under autocast every matrix product (linear, convolution, matmul) casts its frozen float32 weight to the
        compute dtype on every call; on a GPU that is hundreds of copy kernels per training step. This casts exactly
        those weights (of ``nn.Linear``, convolutions, ``nn.MultiheadAttention``'s input projection and the towers'
        projection matrices) once, so autocast's cast becomes a no-op and the results are bitwise the same as before.
        Normalisation weights, embeddings and everything that trains stay float32.

        The network must then run under autocast with ``dtype`` (as the engines do on a GPU); call it on a network
        that is not used in float32 afterwards (the float32 bits of the cast weights are gone). ``None`` or
        ``torch.float32`` changes nothing.

        Returns:
            the network itself.
        """
        if dtype is None or dtype == torch.float32:
            return self
        for tower in self.frozen_towers():
            for module in tower.modules():
                names: tuple[str, ...] = ()
                if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                    names = ("weight", "bias")
                elif isinstance(module, nn.MultiheadAttention):
                    names = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight")
                elif module is tower or module is getattr(tower, "visual", None):
                    names = ("text_projection", "proj")  # projection matrices used only in matmuls
                for name in names:
                    param = getattr(module, name, None)
                    if isinstance(param, torch.Tensor) and not param.requires_grad and param.is_floating_point():
                        param.data = param.data.to(dtype)
        return self

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised embeddings ``(B, embed_dim)`` of a normalised ``(B, 3, H, W)`` batch."""
        return F.normalize(self.vision_tower(as_plain_tensor(images)), dim=-1)

    def _logits(self, image_embeddings: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Scaled cosine logits ``(B, C)`` from image embeddings ``(B, e)`` and class features.

        Args:
            image_embeddings: normalised ``(B, e)``.
            text: normalised ``(C, e)``, ``(1, C, e)`` (shared by all images) or ``(B, C, e)`` (per image).
        """
        scale = self.logit_scale.exp()
        text = text.to(image_embeddings.dtype)
        if text.ndim == 3 and text.shape[0] != 1:
            return scale * torch.einsum("be,bce->bc", image_embeddings, text)
        return scale * image_embeddings @ text.reshape(-1, text.shape[-1]).T

    # ----- shared text-prompt plumbing ---------------------------------------------------------------------------

    def _build_prompts(self, texts: Sequence[str], n_slots: Sequence[int], truncate: bool = True) -> None:
        """Lay out one prompt per class and keep its frozen token embeddings.

        Registers ``prompt_embeddings`` ``(C, T, width)`` (saved with the frozen weights) and ``pool_index``, and sets
        ``slot_start``. Needs ``self.text_tower`` with its token table.
        """
        layout = self.text_tower.layout(list(texts), list(n_slots), truncate=truncate)
        self.slot_start = layout.slot_start
        self.register_buffer("pool_index", layout.pool_index, persistent=False)
        with torch.no_grad():
            self.register_buffer("prompt_embeddings", self.text_tower.embed(layout.token_ids).float())

    def _context_init(self, ctx_init: str | None, n_ctx: int, width: int) -> torch.Tensor:
        """``(n_ctx, width)`` initial context: token embeddings of ``ctx_init``, or N(0, 0.02²) when ``None``.

        Raises:
            ValueError: ``ctx_init`` does not have ``n_ctx`` tokens.
        """
        if not ctx_init:
            return torch.randn(n_ctx, width) * 0.02
        ids = self.text_tower.encode(ctx_init.replace("_", " "))
        if len(ids) != n_ctx:
            raise ValueError(
                f"ctx_init '{ctx_init}' has {len(ids)} tokens but n_ctx is {n_ctx}: give a ctx_init of "
                f"{n_ctx} tokens or ctx_init=None for a random initialisation."
            )
        with torch.no_grad():
            return self.text_tower.embed(torch.tensor(ids)).float().cpu()

    @torch.no_grad()
    def _class_text_embeddings(
        self,
        prompts: Mapping[str, Sequence[str]],
        tower: nn.Module | None = None,
        ensemble: bool = True,
        normalize_texts: bool = True,
    ) -> torch.Tensor | list[torch.Tensor]:
        """``(C, e)`` frozen class embeddings: per class, the normalised mean of its texts' normalised embeddings.

        Needs ``self.text_tower`` with its token table, or ``tower`` (any tower with ``encode_texts``).

        Args:
            prompts: class -> text or texts.
            tower: the text tower to use (default ``self.text_tower``).
            ensemble: average each class's texts (``False``: return the list of ``(P_c, e)`` normalised embeddings
                of every class instead, e.g. for a method that weighs or prunes them).
            normalize_texts: normalise each text's embedding before the mean (``False``: the normalised mean of the
                raw embeddings, as PromptSRC's code builds its frozen text target).

        Raises:
            ValueError: a class of ``class_names`` without texts.
        """
        texts: list[str] = []
        counts: list[int] = []
        for name in self.class_names:
            variants = [prompts[name]] if isinstance(prompts.get(name), str) else list(prompts.get(name) or ())
            if not variants:
                raise ValueError(f"Class '{name}' has no prompt texts; give at least one per class.")
            texts += [str(v) for v in variants]
            counts.append(len(variants))
        tower = tower if tower is not None else self.text_tower
        features = tower.encode_texts(texts).float()
        if normalize_texts or not ensemble:
            features = F.normalize(features, dim=-1)
        if not ensemble:
            return [chunk.cpu() for chunk in features.split(counts)]
        # a single text is used as it is (renormalising would move its last bits: KgCoOp's regulariser is exactly
        # zero at initialisation because the learned and hand-crafted features are then bitwise equal)
        rows = [
            chunk[0] if len(chunk) == 1 and normalize_texts else F.normalize(chunk.mean(dim=0), dim=-1)
            for chunk in features.split(counts)
        ]
        return torch.stack(rows).cpu()

    # ----- trainable state -----------------------------------------------------------------------------------

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The trained parameters by name (everything of CLIP is frozen)."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def num_trainable_parameters(self) -> int:
        """Number of trained scalars (for comparison tables)."""
        return sum(p.numel() for p in self.trainable_parameters().values())

    def prompt_parameter_names(self) -> list[str]:
        """Names of the prompt parameters (averaged by Gaussian prompt aggregation); may be empty."""
        return [n for n, _ in self.named_parameters() if n in self.prompt_parameters]

    def regularization_loss(self) -> torch.Tensor | None:
        """A term to add to the classification loss (``None``: the method has none). See :class:`KgCoOp`."""
        return None

    def guide_loss(self) -> torch.Tensor | None:
        """A loss of the last training forward whose gradient the classification gradient must not oppose.

        The engine (:class:`~monai_cilmp.handlers.GradientProjection`) projects the classification gradient of
        each trained tensor off this loss's gradient where the two conflict (ProGrad). ``None``: no guide.
        """
        return None

    def fit_training_features(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Build what the method takes from the training set's normalised image features ``(N, e)`` and labels.

        Called by the engine before training when :attr:`uses_training_features` is set.

        Raises:
            NotImplementedError: the method does not use training features.
        """
        raise NotImplementedError(f"{type(self).__name__} does not build anything from training features.")

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trained parameters, detached; CLIP is not included."""
        return {n: p.detach().clone() for n, p in self.trainable_parameters().items()}

    def trainable_state(self) -> TrainableState:
        """This network's trained state as an object with ``state_dict``/``load_state_dict`` (see
        :class:`TrainableState`), e.g. for MONAI's ``CheckpointLoader``."""
        return TrainableState(self)

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` returned.

        Raises:
            ValueError: keys or shapes differ; the message lists them.
        """
        params = self.trainable_parameters()
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        wrong = [n for n in params if n in state and tuple(state[n].shape) != tuple(params[n].shape)]
        if missing or unexpected or wrong:
            raise ValueError(
                f"The trained state does not fit this {type(self).__name__}: missing {missing or 'none'}, unexpected "
                f"{unexpected or 'none'}, wrong shapes {wrong or 'none'}; build the network with the same classes, "
                "knowledge and hyper-parameters as the run that saved it."
            )
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state[n])


class TrainableState:
    """The trained state of a :class:`CLIPClassifier` under the names Ignite and MONAI handlers expect.

    A checkpoint of this package holds only what trains (``trainable_state_dict``), never the frozen CLIP towers, so
    the network's own ``load_state_dict`` would refuse it; and some methods size their state from what they load
    (Tip-Adapter's cache). This adapter gives MONAI's ``CheckpointLoader`` (or Ignite's ``Checkpoint``) the object
    it wants: ``load_dict={"network": TrainableState(net)}`` restores the ``"network"`` entry of a checkpoint.

    Args:
        network: a network with ``trainable_state_dict()`` and ``load_trainable_state_dict(state)``.
    """

    def __init__(self, network: nn.Module) -> None:
        for name in ("trainable_state_dict", "load_trainable_state_dict"):
            if not callable(getattr(network, name, None)):
                raise TypeError(f"{type(network).__name__} has no {name}(): it is not a monai-cilmp classifier.")
        self.network = network

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The trained tensors, detached (what ``checkpoints/*.pt`` store under ``"network"``)."""
        return self.network.trainable_state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Load a trained state.

        Args:
            state: what :meth:`state_dict` returned.
            strict: every trained tensor must be in ``state`` with its shape (the network's own check, which names
                what differs); ``False``: take the entries whose name and shape fit and keep the others as they are.

        Raises:
            ValueError: with ``strict``, names or shapes differ.
        """
        if not strict:
            current = self.network.trainable_state_dict()
            fits = {k: v for k, v in state.items() if k in current and tuple(v.shape) == tuple(current[k].shape)}
            state = {**current, **fits}
        self.network.load_trainable_state_dict(state)
