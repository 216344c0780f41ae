"""Infer tasks of the CILMP MONAI Label app."""

from .cilmp import CILMPClassification, ImageInputError

__all__ = ["CILMPClassification", "ImageInputError"]
