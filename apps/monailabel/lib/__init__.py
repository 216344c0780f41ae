"""The CILMP MONAI Label app's own code: which runs are served (configs), how one is served (infers), and what a
request may read, guarded around MONAI Label's own endpoints (endpoints)."""
