"""BiomedCoOp (Koleilat, Asgariandehkordi, Rivaz, Xiao, "BiomedCoOp: Learning to Prompt for Biomedical
Vision-Language Models", CVPR 2025).

CoOp's learned context (4 tokens from "a photo of a"), kept close to what an LLM knows about each class. Every class
``c`` has ``P`` description prompts written by an LLM, embedded once by the frozen text encoder: ``E[c, i]``
(normalised). Two terms join the cross-entropy:

- **Semantic consistency (SCCM)**: the learned class feature ``w_c`` is pulled toward the mean description
  embedding ``e_c = normalise(mean_i E[c, i])`` with a mean squared error, ``lambda_1 * mean((w - e)^2)``.
- **Knowledge distillation with selective prompting (KDSP)**: a teacher prediction from frozen CLIP with the
  description prompts, ``KL(p_teacher || p_model)`` summed and divided by the number of logits, weighted
  ``lambda_2``. The teacher uses only the prompt sets that are not outliers for the current batch: prompt set ``i``
  scores ``s_i = mean_b max_c s * z_b . E[c, i]`` (how confidently it classifies the batch); the scores are turned
  into robust z-scores ``z_i = (s_i - median s) / MAD(s)``, and set ``i`` is kept when
  ``|z_i - mean z| / std z <= tau``. The teacher's class embeddings are the normalised mean of the kept sets.

The paper uses 50 GPT-4 descriptions per class. Here the descriptions are the project's medical knowledge
(:func:`~monai_cilmp.networks.nets.knowledge_prompts`: the curated or given descriptions, their attribute prompts
with each synonym, or an attribute-prompt file from the knowledge pipeline); a class with fewer texts than the
largest class repeats its own texts in order, so that the ``P`` prompt sets are aligned across classes as the
pruning needs. When all scores are equal (e.g. one text per class) nothing is pruned.
Only the context trains (as CoOp); the defaults are the paper's (``lambda_1 = lambda_2 = 1``, ``tau = 1.5``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from monai_cilmp.networks.backbone_spec import BackboneLike
from monai_cilmp.networks.backbones import Backbone

from .base import as_plain_tensor
from .coop import CoOp
from .distillation import teacher_kl

__all__ = ["BiomedCoOp", "select_prompt_sets"]


def select_prompt_sets(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """BiomedCoOp's outlier pruning: which of ``P`` prompt sets to keep given their batch scores ``(P,)``.

    Robust z-scores ``z = (s - median s) / MAD`` are standardised again (``(z - mean z) / std z``, unbiased std);
    sets within ``tau`` are kept. Degenerate scores (fewer than 3 sets, zero MAD or zero spread) keep every set.

    Returns:
        a ``(P,)`` boolean mask.
    """
    scores = scores.double()
    keep_all = torch.ones_like(scores, dtype=torch.bool)
    if scores.numel() < 3:
        return keep_all
    median = scores.median()
    mad = (scores - median).abs().median()
    if mad == 0:
        return keep_all
    z = (scores - median) / mad
    spread = z.std()
    if not torch.isfinite(spread) or spread == 0:
        return keep_all
    return ((z - z.mean()) / spread).abs() <= tau


class BiomedCoOp(CoOp):
    """CoOp regularised by LLM description prompts (SCCM) and distilled from a pruned description teacher (KDSP).

    The two terms are :meth:`regularization_loss` (the engine adds it to the cross-entropy), computed from the last
    training forward.

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        prompts: class -> description texts (the registry passes the project's knowledge texts).
        n_ctx: number of context tokens (4 in the paper).
        ctx_init: text initialising the context (``"a photo of a"`` in the paper).
        sccm_weight: ``lambda_1``.
        kdsp_weight: ``lambda_2``.
        tau: pruning threshold.
        truncate_context: run the text encoder only up to the longest prompt (exact).

    Raises:
        ValueError: a class without description texts, negative weights or ``tau``.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        prompts: Mapping[str, Sequence[str] | str] | None = None,
        n_ctx: int = 4,
        ctx_init: str | None = "a photo of a",
        sccm_weight: float = 1.0,
        kdsp_weight: float = 1.0,
        tau: float = 1.5,
        truncate_context: bool = True,
        **backbone_options: Any,
    ) -> None:
        if prompts is None:
            raise ValueError("BiomedCoOp needs description prompts per class (prompts=...; build_method adds them).")
        if min(sccm_weight, kdsp_weight, tau) < 0:
            raise ValueError(f"sccm_weight, kdsp_weight and tau must be >= 0, got {sccm_weight}, {kdsp_weight}, {tau}.")
        self.prompts = {str(k): [v] if isinstance(v, str) else [str(t) for t in v] for k, v in prompts.items()}
        self.sccm_weight, self.kdsp_weight, self.tau = float(sccm_weight), float(kdsp_weight), float(tau)
        super().__init__(
            class_names,
            backbone,
            pretrained,
            **backbone_options,
            n_ctx=n_ctx,
            ctx_init=ctx_init,
            class_specific=False,
            truncate_context=truncate_context,
        )
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _setup_extra(self, backbone: Backbone) -> None:
        missing = [n for n in self.class_names if not self.prompts.get(n)]
        if missing:
            raise ValueError(f"BiomedCoOp has no description prompts for the classes {missing}.")
        per_class = self._class_text_embeddings({n: self.prompts[n] for n in self.class_names}, ensemble=False)
        n_sets = max(len(e) for e in per_class)
        # (C, P, e): class c's i-th prompt set member, its own texts repeated in order up to P
        table = torch.stack([e[torch.arange(n_sets) % len(e)] for e in per_class])
        means = F.normalize(torch.stack([e.mean(dim=0) for e in per_class]), dim=-1)
        self.register_buffer("description_embeddings", table, persistent=False)
        self.register_buffer("description_means", means, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C)``; in training also keeps what the regulariser needs."""
        z = self.encode_image(as_plain_tensor(images))
        text = self.encode_prompts(z)
        logits = self._logits(z, text)
        self._last = (logits, z.detach(), text[0]) if self.training and torch.is_grad_enabled() else None
        return logits

    @torch.no_grad()
    def teacher_embeddings(self, image_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pruned teacher's class embeddings ``(C, e)`` for a batch, and the kept-set mask ``(P,)``."""
        table = self.description_embeddings.to(image_embeddings.dtype)  # (C, P, e)
        logits = self.logit_scale.exp() * torch.einsum("be,cpe->bpc", image_embeddings, table)
        scores = logits.max(dim=-1).values.mean(dim=0)  # (P,)
        keep = select_prompt_sets(scores, self.tau)
        return F.normalize(table[:, keep].mean(dim=1), dim=-1), keep

    def regularization_loss(self) -> torch.Tensor | None:
        """``lambda_1 * SCCM + lambda_2 * KDSP`` of the last training forward (``None`` without one)."""
        last, self._last = self._last, None
        if last is None:
            return None
        logits, z, text = last
        sccm = F.mse_loss(text.float(), self.description_means.to(text.device))
        teacher, _ = self.teacher_embeddings(z)
        kdsp = teacher_kl(logits, self._logits(z, teacher), per="logit")
        return self.sccm_weight * sccm + self.kdsp_weight * kdsp
