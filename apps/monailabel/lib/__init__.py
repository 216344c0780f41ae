"""The CILMP MONAI Label app's own code: which runs are served (configs) and how one is served (infers)."""
