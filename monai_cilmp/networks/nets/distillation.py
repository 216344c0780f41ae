"""The distillation term several prompt learners share: KL divergence from a frozen zero-shot teacher's prediction.

ProGrad, BiomedCoOp and PromptSRC all compare the prompted model's class distribution with that of frozen CLIP
(zero-shot logits of hand-written or LLM prompts) through ``KL(p_teacher || p_student)``; they differ only in the
temperature and in how the sum over the batch is normalised, which :func:`teacher_kl` takes as arguments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["teacher_kl"]


def teacher_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0, per: str = "sample"
) -> torch.Tensor:
    """``KL(softmax(teacher / T) || softmax(student / T))``, gradient to the student only.

    Args:
        student_logits: ``(B, C)`` logits of the trained model.
        teacher_logits: ``(B, C)`` logits of the frozen teacher (detached here).
        temperature: ``T``; the result is multiplied by ``T^2`` (Hinton et al.'s gradient scale).
        per: ``"sample"``: the sum over classes averaged over the batch (ProGrad); ``"logit"``: the total divided by
            the number of logits ``B * C`` (BiomedCoOp, PromptSRC).
    """
    t = float(temperature)
    student = F.log_softmax(student_logits.float() / t, dim=-1)
    teacher = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    total = F.kl_div(student, teacher, reduction="sum", log_target=True) * t * t
    if per == "sample":
        return total / student_logits.shape[0]
    if per == "logit":
        return total / student_logits.numel()
    raise ValueError(f"per must be 'sample' or 'logit', got '{per}'.")
