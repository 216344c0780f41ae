"""Infer tasks of the CILMP MONAI Label app."""

from .cilmp import CILMPClassification, CILMPSaliency, ImageInputError

__all__ = ["CILMPClassification", "CILMPSaliency", "ImageInputError"]
