"""The offline demo."""
