"""Reading a checkpoint file into a backbone safely: state dicts of tensors only, and OpenAI's TorchScript archives
read without Python's pickle."""

from __future__ import annotations

import re
from typing import Any

import open_clip
import torch

__all__: list[str] = []


def _is_torchscript(checkpoint: str) -> bool:
    """Whether ``checkpoint`` is a TorchScript archive (how OpenAI released CLIP), not a plain state dict."""
    import zipfile

    try:
        with zipfile.ZipFile(checkpoint) as archive:
            return any(n.split("/", 2)[1:2] == ["code"] for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _torchscript_state_dict(checkpoint: str) -> dict[str, torch.Tensor]:
    """The weights of a TorchScript archive (OpenAI's CLIP release format), read without Python's pickle.

    ``torch.jit.load`` reads the archive's pickles with TorchScript's own unpickler (C++,
    ``torch/csrc/jit/serialization/unpickler.cpp``), which only rebuilds tensors, containers, a fixed set of torch types
    and the TorchScript classes compiled from the archive's code: a global such as ``posix.system`` is an "unknown type"
    error, never a call. Nothing of the module is run here but its parameters read.
    """
    try:
        scripted = torch.jit.load(checkpoint, map_location="cpu")
    except Exception as e:
        raise ValueError(
            f"Checkpoint '{checkpoint}' looks like a TorchScript archive but could not be read as one ({e}): use the "
            "archive as released, or a state dict saved with safetensors."
        ) from None
    state = {k: v.detach().clone() for k, v in scripted.state_dict().items()}
    for key in ("input_resolution", "context_length", "vocab_size"):  # OpenAI's archives keep these as buffers
        state.pop(key, None)
    return state


def _check_weights_only(checkpoint: str) -> None:
    """Refuse a checkpoint whose pickle holds anything but tensors and plain containers, before open_clip reads it
    (open_clip before 3.x reads with ``torch.load`` without ``weights_only``): what passes torch's ``weights_only``
    unpickler calls only torch's allow-listed functions however it is read again."""
    import pickle

    try:
        torch.load(checkpoint, map_location="meta", weights_only=True)
    except pickle.UnpicklingError as e:
        found = next(iter(re.findall(r"GLOBAL ([\w.]+)", str(e))), "")
        raise ValueError(
            f"Checkpoint '{checkpoint}' holds Python objects besides tensors{f' ({found})' if found else ''}, which "
            "are never loaded (unpickling them could run code): save the weights as a state dict, with safetensors "
            "or torch.save(model.state_dict())."
        ) from None
    except Exception:  # not a pickle at all (a truncated or foreign file): open_clip's own error says so
        return


def _create_from_checkpoint(name: str, checkpoint: str, create_kwargs: dict[str, Any]) -> torch.nn.Module:
    """Build ``name`` with the weights in ``checkpoint``: a state dict (safetensors, or a ``torch.save`` file of
    tensors only, read by open_clip) or a TorchScript archive as OpenAI released CLIP (its weights read without
    Python's pickle, see :func:`_torchscript_state_dict`, into ``name`` built by open_clip)."""
    if _is_torchscript(checkpoint):
        from open_clip.model import convert_to_custom_text_state_dict

        state = _torchscript_state_dict(checkpoint)
        model = open_clip.create_model(name, pretrained=None, **create_kwargs)
        if hasattr(model, "text"):  # a model with its own text tower names the text weights text.*
            state = convert_to_custom_text_state_dict(state)
        # buffers open_clip recomputes (the causal attention mask) are not weights, whatever the archive kept
        computed = {name for name, _ in model.named_buffers()} - set(model.state_dict())
        state = {k: v for k, v in state.items() if k not in computed}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"The TorchScript archive '{checkpoint}' holds weights of another architecture than {name} "
                f"({' '.join(str(e).split())[:300]}): give the model name the archive was released for."
            ) from None
        return model
    if not checkpoint.endswith(".safetensors"):
        _check_weights_only(checkpoint)
    try:
        return open_clip.create_model(name, pretrained=checkpoint, **create_kwargs)
    except Exception as error:
        problem = f"{error}"
    raise ValueError(
        f"Checkpoint '{checkpoint}' could not be loaded into {name} ({problem}): check that it is an open_clip or "
        f"OpenAI CLIP checkpoint of the {name} architecture."
    )
