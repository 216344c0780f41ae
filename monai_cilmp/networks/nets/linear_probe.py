"""Linear probe on frozen CLIP image features, optionally initialised from the zero-shot classifier.

The image encoder is frozen, so its features can be computed once and cached: :func:`extract_features` runs a
loader through the encoder, :func:`feature_items` turns the result into ``{"image": feature, "label": y}`` items,
and :class:`LinearProbe` accepts either images ``(B, 3, H, W)`` or such features ``(B, D)``. The same Ignite
engine therefore trains the head on cached feature batches (fast: no encoder pass per step) and evaluates on
images. With ``init="zero-shot"`` the head starts as the zero-shot classifier (weights = class text embeddings
times CLIP's logit scale, bias zero), in the spirit of LP++ (Huang et al., CVPR 2024) and CLAP (Silva-Rodriguez
et al., CVPR 2024); ``anchor_weight > 0`` adds CLAP's idea of a penalty for leaving the zero-shot prototypes.

With ``fit="sgd"`` (the default) the head trains by gradient descent on the mean cross-entropy, without penalty.
With ``fit="logistic"`` it is fitted as BiomedCoOp's (``trainers/LP``) and CoOp's (``lpclip/linear_probe.py``) linear
probes fit it: scikit-learn's L2 logistic regression (L-BFGS, ``max_iter=1000``) with C searched on validation
accuracy (:func:`search_logistic_regression`: seven decades, then ``search_steps`` halvings in log space); nothing
then trains by gradient. The features, the search and the fits are checked against BiomedCoOp's code in
``tests/networks/test_fidelity.py`` (docs/compare.md, "Fidelity to the authors' code").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from monai_cilmp.networks.backbone_spec import BackboneLike
from monai_cilmp.networks.backbones import Backbone
from monai_cilmp.networks.blocks.towers import build_text_tower, build_vision_tower

from .base import CLIPClassifier, OptionEnum, as_plain_tensor, look_up
from .zeroshot import DEFAULT_TEMPLATE, zero_shot_texts

__all__ = [
    "LOGISTIC_C_GRID",
    "LinearProbe",
    "ProbeFit",
    "ProbeInit",
    "extract_features",
    "feature_items",
    "search_logistic_regression",
]

#: The C values the originals try first (``search_list`` of both), largest first: on ties the first wins.
LOGISTIC_C_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)


class ProbeInit(OptionEnum):
    """How a linear probe's head starts."""

    RANDOM = "random"
    ZERO_SHOT = "zero-shot"


class ProbeFit(OptionEnum):
    """How a linear probe's head is obtained."""

    SGD = "sgd"
    LOGISTIC = "logistic"


def _logistic_fit(features: np.ndarray, labels: np.ndarray, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(solver="lbfgs", max_iter=1000, C=float(c)).fit(features, labels)


def _accuracy(classifier: Any, features: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(classifier.predict(features) == labels))


def search_logistic_regression(
    features: torch.Tensor,
    labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    c_grid: Sequence[float] = LOGISTIC_C_GRID,
    steps: int = 8,
) -> tuple[Any, dict[str, Any]]:
    """The originals' fit of a linear probe: L2 logistic regression with C searched on validation accuracy.

    As CoOp's ``lpclip/linear_probe.py`` and BiomedCoOp's ``trainers/LP`` do: fit at every C of ``c_grid`` and keep
    the most accurate on the validation features (the first on ties); then ``steps`` times, fit at the two ends of
    ``[C / 10, 10 C]`` (first step) or of the current range, keep the more accurate end (the left one on ties) and
    halve the range in log space on its side. The classifier of the last step is the result. The features are
    fitted as float32, as theirs are (torch's float32 features handed to scikit-learn).

    Args:
        features: ``(N, D)`` normalised training features.
        labels: ``(N,)`` training labels.
        val_features: ``(M, D)`` normalised validation features (``M = 0``: no search, the fit at ``c_grid[0]``).
        val_labels: ``(M,)`` validation labels.
        c_grid: the C values of the first search.
        steps: the halvings of the range that follow (8 in both originals).

    Returns:
        the fitted ``sklearn.linear_model.LogisticRegression`` and ``{"C", "val_accuracy", "trace"}`` (``trace``:
        every C fitted, with its validation accuracy, in order).

    Raises:
        ValueError: an empty grid or a negative number of steps.
    """
    if not len(c_grid) or int(steps) < 0:
        raise ValueError(f"The C search needs a non-empty grid and steps >= 0, got {list(c_grid)} and {steps}.")
    x = as_plain_tensor(features).detach().float().cpu().numpy()
    y = as_plain_tensor(labels).detach().long().cpu().numpy()
    x_val = as_plain_tensor(val_features).detach().float().cpu().numpy()
    y_val = as_plain_tensor(val_labels).detach().long().cpu().numpy()
    trace: list[dict[str, float | None]] = []

    def fit(c: float) -> tuple[Any, float | None]:
        classifier = _logistic_fit(x, y, c)
        accuracy = _accuracy(classifier, x_val, y_val) if len(y_val) else None
        trace.append({"C": float(c), "val_accuracy": accuracy})
        return classifier, accuracy

    if not len(y_val):
        classifier, _ = fit(c_grid[0])
        return classifier, {"C": float(c_grid[0]), "val_accuracy": None, "trace": trace}
    accuracies = [fit(c)[1] for c in c_grid]
    peak = float(c_grid[int(np.argmax(accuracies))])
    c_left, c_right = 1e-1 * peak, 1e1 * peak
    classifier, chosen, accuracy = None, peak, max(accuracies)
    for _ in range(int(steps)):
        left, accuracy_left = fit(c_left)
        right, accuracy_right = fit(c_right)
        # the same arithmetic as the originals' (log10 of both ends, midpoint, back through 10**x): the same Cs
        log_left, log_right = np.log10(c_left), np.log10(c_right)
        if accuracy_left < accuracy_right:
            classifier, chosen, accuracy = right, c_right, accuracy_right
            c_left, c_right = np.power(10, 0.5 * (log_right + log_left)), np.power(10, log_right)
        else:
            classifier, chosen, accuracy = left, c_left, accuracy_left
            c_left, c_right = np.power(10, log_left), np.power(10, 0.5 * (log_right + log_left))
    if classifier is None:  # no halving step: the grid's best
        classifier, accuracy = _logistic_fit(x, y, peak), max(accuracies)
    return classifier, {"C": float(chosen), "val_accuracy": accuracy, "trace": trace}


def _device_of(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def extract_features(
    network: nn.Module | Backbone,
    loader: Iterable[Mapping[str, Any]],
    image_key: str = "image",
    label_key: str | None = "label",
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Normalised image features of every batch of ``loader``, computed once (no gradients, eval mode).

    Args:
        network: a network with ``encode_image`` (e.g. :class:`LinearProbe`), or a loaded
            :class:`~monai_cilmp.networks.backbones.Backbone` (plain CLIP image features).
        loader: batches of ``{image_key: (B, 3, H, W) normalised images, label_key: (B,) labels}``; use the
            evaluation transforms (features are extracted once, so random augmentation would be frozen in).
        image_key: key of the images.
        label_key: key of the labels (``None`` or absent: no labels).
        device: where to run (default: the network's device).

    Returns:
        ``(N, D)`` float32 features on the CPU and ``(N,)`` long labels (``None`` without labels).
    """
    if isinstance(network, Backbone):
        model = network.model
        encode = lambda x: F.normalize(model.encode_image(x), dim=-1)  # noqa: E731
        module: nn.Module = model
    else:
        encode, module = network.encode_image, network
    device = torch.device(device) if device is not None else _device_of(module)
    was_training = module.training
    module.eval()
    features, labels = [], []
    try:
        for batch in loader:
            images = as_plain_tensor(batch[image_key]).to(device)
            features.append(encode(images).float().cpu())
            label = batch.get(label_key) if label_key else None
            if label is not None:
                labels.append(torch.as_tensor(as_plain_tensor(label)).reshape(len(images), -1)[:, 0].long().cpu())
    finally:
        module.train(was_training)
    if not features:
        raise ValueError("The loader gave no batches to extract features from.")
    out_labels = torch.cat(labels) if labels and len(labels) == len(features) else None
    return torch.cat(features), out_labels


def feature_items(
    features: torch.Tensor, labels: torch.Tensor | None, image_key: str = "image", label_key: str = "label"
) -> list[dict[str, torch.Tensor]]:
    """One ``{image_key: (D,) feature, label_key: label}`` item per sample, for a ``DataLoader`` of cached features."""
    if labels is not None and len(labels) != len(features):
        raise ValueError(f"{len(features)} features but {len(labels)} labels.")
    return [
        {image_key: features[i]} if labels is None else {image_key: features[i], label_key: labels[i]}
        for i in range(len(features))
    ]


class LinearProbe(CLIPClassifier):
    """A linear classifier on frozen, normalised CLIP image features.

    ``forward`` takes images ``(B, 3, H, W)`` or cached features ``(B, D)`` (2-D inputs are features).

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        init: ``"random"`` (PyTorch's default for ``nn.Linear``) or ``"zero-shot"`` (starts as the zero-shot
            classifier: its logits at initialisation are :class:`~monai_cilmp.networks.nets.ZeroShotCLIP`'s).
        text: zero-shot text kind for ``init="zero-shot"`` (see :class:`~monai_cilmp.networks.nets.ZeroShotText`).
        template: zero-shot template.
        templates: zero-shot template ensemble.
        prompts: class -> texts for ``text="descriptions"``.
        anchor_weight: with ``init="zero-shot"``, weight of ``mean_c ||W_c / s - t_c||^2`` (``s`` the logit scale,
            ``t_c`` the zero-shot class embedding), returned by :meth:`regularization_loss`; ``0`` disables it.
        fit: ``"sgd"`` (the head trains by the engine's recipe) or ``"logistic"`` (the originals' fit: the head is
            scikit-learn's L2 logistic regression on the training features, fitted by the engine before training
            (:meth:`fit_training_features`), with C searched on validation features when
            :meth:`set_validation_features` gave some, else at ``C``; nothing then trains by gradient).
        C: with ``fit="logistic"`` and no validation features, the inverse regularisation strength of the fit.
        c_grid: with ``fit="logistic"``, the C values of the first search (the originals').
        search_steps: with ``fit="logistic"``, the halvings of the C range after the first search (the originals' 8).

    Raises:
        ValueError: unknown ``init`` or ``fit``, ``anchor_weight`` without the zero-shot initialisation or with the
            logistic fit, or a C that is not positive.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        init: str = ProbeInit.RANDOM,
        text: str = "template",
        template: str = DEFAULT_TEMPLATE,
        templates: Sequence[str] | None = None,
        prompts: Mapping[str, Sequence[str] | str] | None = None,
        anchor_weight: float = 0.0,
        fit: str = ProbeFit.SGD,
        C: float = 1.0,  # noqa: N803 (scikit-learn's and the originals' name)
        c_grid: Sequence[float] = LOGISTIC_C_GRID,
        search_steps: int = 8,
        **backbone_options: Any,
    ) -> None:
        super().__init__()
        backbone = self._init_classifier(class_names, backbone, pretrained, **backbone_options)
        self.init = look_up(init, ProbeInit)
        self.fit = look_up(fit, ProbeFit)
        if anchor_weight and self.init != ProbeInit.ZERO_SHOT:
            raise ValueError("anchor_weight needs init='zero-shot': the anchor is the zero-shot classifier.")
        if anchor_weight and self.fit == ProbeFit.LOGISTIC:
            raise ValueError("anchor_weight needs fit='sgd': the logistic fit has its own L2 penalty and no anchor.")
        if not float(C) > 0 or not all(float(c) > 0 for c in c_grid) or not len(c_grid) or int(search_steps) < 0:
            raise ValueError(
                f"The logistic fit needs C > 0, a non-empty grid of positive Cs and search_steps >= 0, got C={C}, "
                f"c_grid={list(c_grid)}, search_steps={search_steps}."
            )
        self.C, self.c_grid, self.search_steps = float(C), tuple(float(c) for c in c_grid), int(search_steps)
        # the logistic fit is built from the training features by the engine (and searched on validation features)
        self.uses_training_features = self.fit == ProbeFit.LOGISTIC
        self.validation_features: tuple[torch.Tensor, torch.Tensor] | None = None
        self.fit_summary: dict[str, Any] | None = None
        self.anchor_weight = float(anchor_weight)
        self.vision_tower = build_vision_tower(backbone.model)
        self.feature_dim = self._embed_dim(backbone.model)
        self.head = nn.Linear(self.feature_dim, len(self.class_names))
        if self.init == ProbeInit.ZERO_SHOT:
            self.text_tower = build_text_tower(backbone.model, backbone.tokenizer)
            texts = zero_shot_texts(self.class_names, text, template, templates, prompts)
            embeddings = self._class_text_embeddings(texts)
            del self.text_tower
            with torch.no_grad():
                self.head.weight.copy_(embeddings * self.logit_scale.exp())
                self.head.bias.zero_()
            if self.anchor_weight:
                self.register_buffer("zero_shot_embeddings", embeddings, persistent=False)
        if self.fit == ProbeFit.LOGISTIC:
            self.head.requires_grad_(False)  # fitted, not trained

    def set_validation_features(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        c_grid: Sequence[float] | None = None,
        steps: int | None = None,
    ) -> None:
        """Validation features ``(M, D)`` and labels ``(M,)`` on which the logistic fit searches C (never the test
        split's). Give them before the engine fits the training features.

        Args:
            features: normalised validation image features.
            labels: their labels.
            c_grid: the C values of the first search (``None``: the constructor's).
            steps: the halvings after it (``None``: the constructor's ``search_steps``).

        Raises:
            ValueError: not the logistic fit, or shapes that do not match.
        """
        if c_grid is not None:
            self.c_grid = tuple(float(c) for c in c_grid)
        if steps is not None:
            self.search_steps = int(steps)
        if self.fit != ProbeFit.LOGISTIC:
            raise ValueError("Validation features are for the C search of fit='logistic'; this probe trains by SGD.")
        labels = torch.as_tensor(as_plain_tensor(labels)).long().view(-1)
        if features.ndim != 2 or features.shape != (len(labels), self.feature_dim):
            raise ValueError(f"Validation features must be ({len(labels)}, {self.feature_dim}), got {features.shape}.")
        self.validation_features = (features.detach().float().cpu(), labels.cpu())

    def fit_training_features(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """The logistic fit of the head on the training features ``(N, D)`` and labels ``(N,)``: C searched on the
        validation features as the originals do (:func:`search_logistic_regression`), or ``C`` without them. The
        chosen C and the search are in :attr:`fit_summary` (and in :meth:`trainable_state_dict`).

        Raises:
            NotImplementedError: the probe trains by SGD.
            ValueError: the training labels hold one class only (nothing to fit).
        """
        if self.fit != ProbeFit.LOGISTIC:
            raise NotImplementedError("A linear probe with fit='sgd' trains its head; it fits nothing beforehand.")
        labels = torch.as_tensor(as_plain_tensor(labels)).long().view(-1)
        present = sorted(set(labels.tolist()))
        if len(present) < 2:
            raise ValueError(f"The logistic fit needs training features of at least two classes, got {present}.")
        if self.validation_features is None:
            empty = (torch.zeros(0, self.feature_dim), torch.zeros(0, dtype=torch.long))
            classifier, summary = search_logistic_regression(features, labels, *empty, c_grid=(self.C,), steps=0)
        else:
            classifier, summary = search_logistic_regression(
                features, labels, *self.validation_features, c_grid=self.c_grid, steps=self.search_steps
            )
        self._load_classifier(classifier)
        self.fit_summary = summary

    def _load_classifier(self, classifier: Any) -> None:
        """The fitted classifier's weights in the head; classes missing from the training labels get the lowest
        logit (scikit-learn knows only the classes it saw)."""
        coef = torch.from_numpy(np.asarray(classifier.coef_, dtype=np.float64))
        intercept = torch.from_numpy(np.asarray(classifier.intercept_, dtype=np.float64))
        seen = [int(c) for c in classifier.classes_]
        if len(seen) == 2:  # binary: one row, the logit of the second class; as two logits with the same softmax
            coef, intercept = torch.cat([-coef / 2, coef / 2]), torch.cat([-intercept / 2, intercept / 2])
        weight = torch.zeros_like(self.head.weight, dtype=torch.float64)
        bias = torch.full_like(self.head.bias, torch.finfo(torch.float32).min / 2, dtype=torch.float64)
        weight[seen], bias[seen] = coef, intercept
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained parameters; with the logistic fit, the fitted head and its C (``logistic_C``)."""
        state = super().trainable_state_dict()
        if self.fit == ProbeFit.LOGISTIC:
            state["head.weight"] = self.head.weight.detach().clone()
            state["head.bias"] = self.head.bias.detach().clone()
            c = self.fit_summary["C"] if self.fit_summary else float("nan")
            state["logistic_C"] = torch.tensor(float(c), dtype=torch.float64)
        return state

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` returned (the fitted head of the logistic fit included).

        Raises:
            ValueError: keys or shapes differ; the message lists them.
        """
        if self.fit != ProbeFit.LOGISTIC:
            return super().load_trainable_state_dict(state)
        state = dict(state)
        c = state.pop("logistic_C", None)
        head = {k: state.pop(k, None) for k in ("head.weight", "head.bias")}
        wrong = [k for k, v in head.items() if v is None or tuple(v.shape) != tuple(self.get_parameter(k).shape)]
        if wrong or c is None:
            raise ValueError(
                f"The trained state does not fit this logistic {type(self).__name__}: {wrong or ['logistic_C']} "
                "missing or of other shapes; load a checkpoint of a fit='logistic' probe with the same classes."
            )
        super().load_trainable_state_dict(state)
        with torch.no_grad():
            self.head.weight.copy_(head["head.weight"])
            self.head.bias.copy_(head["head.bias"])
        self.fit_summary = {"C": float(c), "val_accuracy": None, "trace": []}

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised frozen image features ``(B, D)`` (never with gradients: nothing before the head trains)."""
        with torch.no_grad():
            return super().encode_image(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C)`` from images ``(B, 3, H, W)`` or cached features ``(B, D)``."""
        x = as_plain_tensor(x)
        if x.ndim != 2:
            x = self.encode_image(x)
        elif x.shape[1] != self.feature_dim:
            raise ValueError(f"Cached features must be (B, {self.feature_dim}), got {tuple(x.shape)}.")
        return self.head(x.to(self.head.weight.dtype))

    def regularization_loss(self) -> torch.Tensor | None:
        """``anchor_weight * mean_c ||W_c / s - t_c||^2``, or ``None`` without an anchor."""
        if not self.anchor_weight:
            return None
        drift = self.head.weight / self.logit_scale.exp() - self.zero_shot_embeddings
        return self.anchor_weight * drift.pow(2).sum(dim=-1).mean()
