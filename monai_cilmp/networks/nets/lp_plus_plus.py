"""LP++ (Huang, Shakeri, Dolz, Boudiaf, Bahig, Ben Ayed, "LP++: A Surprisingly Strong Linear Probe for Few-Shot
CLIP", CVPR 2024).

A linear probe whose class weights blend a learned visual part with CLIP's fixed text embeddings, each class with
its own learned blending factor::

    logits_c = f . w_c + b_c + alpha_c * (f . t_c)

``w_c`` starts at the sum of class ``c``'s training features (data-driven, not random; ``shots`` times their
centroid: the code's ``compute_centroids`` leaves its division by the class count commented out), ``t_c`` is the
frozen zero-shot class embedding, and every ``alpha_c`` starts at one shared, data-driven value: ``kappa`` times the
mean over classes ``c`` of the mean zero-shot similarity ``f . t_c`` of class ``c``'s own features (its
``compute_centroids_alpha`` keeps only the matching class; ``kappa = 250`` in the public implementation, which brings
the text term to the order of CLIP's own logit scale). Both as HealthX-Lab/BiomedCoOp's LP++ trainer
(``trainers/LP2``) computes them (checked by ``scripts/fidelity.py``). The centroids and ``alpha`` are set from the
training features by the engine before training (:func:`~monai_cilmp.engines.fit_training_features`); before that
the network is zero-shot CLIP (``w = b = 0``, ``alpha_c = s``).

Training, two ways (``fit``):

- ``"sgd"`` (default): ``w``, ``b`` and ``alpha`` train jointly with cross-entropy on cached feature batches by the
  engine's recipe.
- ``"full-batch"``: the authors' loop (:func:`lp_plus_plus_step_sizes`, :meth:`LPPlusPlus.fit_training_features`),
  run when the training features are fitted: ``epochs`` full-batch steps of SGD with momentum 0.9 on ``w`` and ``b``
  at the step size ``4 N / lambda_max(F^T F)``; every ``alpha_interval``-th epoch ``alpha`` moves by
  ``N / (4 max_c sum_n (f_n . t_c)^2)`` times its gradient summed over every epoch so far (the code never zeroes
  it); with validation features, the state after the last epoch at least as accurate on them as every earlier one
  is kept. Nothing then trains by the engine. Matched to BiomedCoOp's code step by step in
  ``tests/networks/test_fidelity.py``. Their ``nn.Linear`` bias starts at random; ours at zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_cilmp.networks.backbone_spec import BackboneLike

from .base import OptionEnum, look_up
from .feature_head import FrozenFeatureClassifier
from .zeroshot import DEFAULT_TEMPLATE

__all__ = ["LPPlusPlus", "LPPlusPlusFit", "lp_plus_plus_init", "lp_plus_plus_step_sizes"]


class LPPlusPlusFit(OptionEnum):
    """How LP++'s weights are trained."""

    SGD = "sgd"
    FULL_BATCH = "full-batch"


def lp_plus_plus_step_sizes(features: torch.Tensor, text_weights: torch.Tensor) -> tuple[float, float]:
    """LP++'s step sizes from the training features ``(N, D)`` and class embeddings ``(C, D)``: for the visual weights
    ``4 N / lambda_max(F^T F)``, for the blending factors ``N / (4 max_c sum_n (f_n . t_c)^2)`` (the authors'
    ``calculate_lr_w`` and ``calculate_lr_alpha``)."""
    f = features.detach().double()
    largest = torch.linalg.eigvalsh(f.T @ f).max()
    similarity_energy = (f @ text_weights.detach().double().T).pow(2).sum(dim=0).max()
    return float(4 * len(f) / largest), float(len(f) / (4 * similarity_energy))


def lp_plus_plus_init(
    features: torch.Tensor, labels: torch.Tensor, text_weights: torch.Tensor, kappa: float = 250.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """LP++'s initial visual weights (class sums of the features, ``(C, D)``) and blending factor (a scalar).

    Args:
        features: ``(N, D)`` normalised training features.
        labels: ``(N,)`` labels in ``0..C-1``; every class must occur.
        text_weights: ``(C, D)`` zero-shot class embeddings.
        kappa: scale of the blending factor.

    Raises:
        ValueError: a class without training features.
    """
    n_cls = text_weights.shape[0]
    onehot = torch.nn.functional.one_hot(labels.long(), n_cls).to(features.dtype)  # (N, C)
    counts = onehot.sum(dim=0)
    if (counts == 0).any():
        missing = [int(c) for c in torch.nonzero(counts == 0).view(-1)]
        raise ValueError(f"LP++ needs training features of every class; classes {missing} have none.")
    class_sums = onehot.T @ features  # (C, D): the code's "centroids" are sums
    similarity_centroids = (onehot.T @ (features @ text_weights.to(features.dtype).T)) / counts[:, None]  # (C, C)
    return class_sums, kappa * similarity_centroids.diagonal().mean()


class LPPlusPlus(FrozenFeatureClassifier):
    """Linear probe with class weights blended from visual centroids and text embeddings (LP++).

    ``forward`` takes images ``(B, 3, H, W)`` or cached features ``(B, D)``.

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        kappa: scale of the initial blending factor (250, as in the public implementation).
        text: zero-shot text kind of the class embeddings.
        template: the template of ``text="template"``.
        templates: the templates of ``text="ensemble"``.
        prompts: class -> texts for ``text="descriptions"``.
        fit: ``"sgd"`` (the engine trains the weights) or ``"full-batch"`` (the authors' loop when the training
            features are fitted; module docstring).
        epochs: full-batch epochs (the authors' ``train_epoch``, 300).
        alpha_interval: with ``"full-batch"``, ``alpha`` moves every this many epochs (the authors' 10).

    Raises:
        ValueError: unknown ``fit``, or ``epochs``/``alpha_interval`` below 1.
    """

    uses_training_features = True

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        kappa: float = 250.0,
        text: str = "template",
        template: str = DEFAULT_TEMPLATE,
        templates: Sequence[str] | None = None,
        prompts: Mapping[str, Sequence[str] | str] | None = None,
        fit: str = LPPlusPlusFit.SGD,
        epochs: int = 300,
        alpha_interval: int = 10,
        **backbone_options: Any,
    ) -> None:
        super().__init__()
        self._init_features(class_names, backbone, pretrained, text, template, templates, prompts, **backbone_options)
        self.kappa = float(kappa)
        self.fit = look_up(fit, LPPlusPlusFit)
        if int(epochs) < 1 or int(alpha_interval) < 1:
            raise ValueError(f"LP++ needs epochs >= 1 and alpha_interval >= 1, got {epochs} and {alpha_interval}.")
        self.epochs, self.alpha_interval = int(epochs), int(alpha_interval)
        n_cls = len(self.class_names)
        self.visual_weight = nn.Parameter(torch.zeros(n_cls, self.feature_dim))
        self.bias = nn.Parameter(torch.zeros(n_cls))
        self.alpha = nn.Parameter(torch.full((n_cls,), float(self.logit_scale.exp())))
        self.validation_features: tuple[torch.Tensor, torch.Tensor] | None = None
        self.fit_summary: dict[str, Any] | None = None
        if self.fit == LPPlusPlusFit.FULL_BATCH:
            for parameter in (self.visual_weight, self.bias, self.alpha):
                parameter.requires_grad_(False)  # trained by its own loop, not by the engine

    def set_validation_features(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Validation features ``(M, D)`` and labels ``(M,)``: the full-batch loop keeps its most accurate epoch on
        them (never the test split's). Give them before the engine fits the training features.

        Raises:
            ValueError: not the full-batch fit, or shapes that do not match.
        """
        if self.fit != LPPlusPlusFit.FULL_BATCH:
            raise ValueError("Validation features are for LP++'s fit='full-batch'; with 'sgd' the engine trains it.")
        labels = torch.as_tensor(labels).long().view(-1)
        if features.ndim != 2 or features.shape != (len(labels), self.feature_dim):
            raise ValueError(f"Validation features must be ({len(labels)}, {self.feature_dim}), got {features.shape}.")
        self.validation_features = (features.detach().float(), labels)

    def fit_training_features(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Initialise the visual weights at the class centroids and ``alpha`` from the zero-shot similarities; with
        ``fit="full-batch"``, then train them by the authors' loop (module docstring; its per-epoch losses, step
        sizes and kept epoch in :attr:`fit_summary`)."""
        labels = torch.as_tensor(labels).long().view(-1)
        centroids, alpha = lp_plus_plus_init(features.float(), labels, self.text_weights, self.kappa)
        with torch.no_grad():
            self.visual_weight.copy_(centroids)
            self.bias.zero_()
            self.alpha.fill_(float(alpha))
        if self.fit == LPPlusPlusFit.FULL_BATCH:
            self._full_batch_loop(features.float(), labels.to(features.device))

    def _full_batch_loop(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        text = self.text_weights.to(features.dtype)
        lr_w, lr_alpha = lp_plus_plus_step_sizes(features, text)
        weight = self.visual_weight.detach().clone().requires_grad_(True)
        bias = self.bias.detach().clone().requires_grad_(True)
        alpha = self.alpha.detach().clone().requires_grad_(True)
        optimizer = torch.optim.SGD([weight, bias], lr=lr_w, momentum=0.9)
        text_logits = features @ text.T
        validation = self.validation_features
        best_accuracy, best, best_epoch, losses = -1.0, None, self.epochs - 1, []
        for epoch in range(self.epochs):
            loss = F.cross_entropy(features @ weight.T + bias + alpha * text_logits, labels)
            losses.append(float(loss.detach()))
            optimizer.zero_grad()  # the weights' gradients only: alpha's add up over the epochs, as in their code
            loss.backward()
            optimizer.step()
            if (epoch + 1) % self.alpha_interval == 0:
                with torch.no_grad():
                    alpha -= lr_alpha * alpha.grad
            if validation is not None:
                with torch.no_grad():
                    v, v_labels = validation[0].to(features), validation[1].to(labels.device)
                    logits = v @ weight.T + bias + alpha * (v @ text.T)
                    accuracy = float((logits.argmax(dim=1) == v_labels).float().mean())
                if accuracy >= best_accuracy:  # the last of the best epochs, as theirs
                    best_accuracy, best_epoch = accuracy, epoch
                    best = tuple(t.detach().clone() for t in (weight, bias, alpha))
        with torch.no_grad():
            for target, value in zip((self.visual_weight, self.bias, self.alpha), best or (weight, bias, alpha)):
                target.copy_(value)
        self.fit_summary = {
            "lr_w": lr_w,
            "lr_alpha": lr_alpha,
            "losses": losses,
            "kept_epoch": best_epoch + 1,
            "val_accuracy": best_accuracy if validation is not None else None,
        }

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained parameters (with ``fit="full-batch"``: the weights its loop trained)."""
        if self.fit == LPPlusPlusFit.SGD:
            return super().trainable_state_dict()
        return {n: getattr(self, n).detach().clone() for n in ("visual_weight", "bias", "alpha")}

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` returned.

        Raises:
            ValueError: keys or shapes differ.
        """
        if self.fit == LPPlusPlusFit.SGD:
            return super().load_trainable_state_dict(state)
        names = ("visual_weight", "bias", "alpha")
        wrong = [n for n in names if n not in state or tuple(state[n].shape) != tuple(getattr(self, n).shape)]
        if wrong or set(state) != set(names):
            raise ValueError(
                f"The trained state does not fit this full-batch {type(self).__name__}: {wrong or sorted(state)} "
                "missing, unexpected or of other shapes; load a checkpoint of an LP++ run with the same classes."
            )
        with torch.no_grad():
            for n in names:
                getattr(self, n).copy_(state[n])

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        text_logits = f @ self.text_weights.to(f.dtype).T
        return f @ self.visual_weight.to(f.dtype).T + self.bias + self.alpha * text_logits
