"""Which trained CILMP runs the app serves (``--conf models``, ``--conf cilmp_runs``) and their task configs."""

from .cilmp import CILMPConfig, ModelSelectionError, discover_runs, resolve_run, select_models

__all__ = ["CILMPConfig", "ModelSelectionError", "discover_runs", "resolve_run", "select_models"]
