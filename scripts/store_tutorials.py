"""Execute the tutorial notebooks offline, in order, in one temporary folder, and store them with their outputs.

    python scripts/store_tutorials.py [01_quick_start.ipynb ...]   # default: every notebook of the main environment

Figures are shrunk to at most 640 pixels wide with a 128-colour palette, so that a stored notebook stays small, and
this machine's paths (the temporary folder, the installed packages, the repository) are taken out of the text
outputs (``tests/test_tutorials.py`` checks both, and runs the notebooks again).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
import tempfile
from pathlib import Path

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
#: notebooks that need another environment (stored without outputs)
OTHER_ENVIRONMENT = ("05_monai_label.ipynb",)
MAX_WIDTH = 640


def shrink_png(data: str, width: int = MAX_WIDTH) -> str:
    """A base64 PNG at most ``width`` pixels wide, with a 128-colour palette."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(data)))
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def _local_paths(workdir: str) -> list[tuple[str, str]]:
    """This machine's folders in a notebook's text and what they read as once stored: the temporary working folder,
    the installed packages (a warning's source line) and the repository (the bundle's configs)."""
    import sysconfig

    return [
        (workdir + "/", ""),
        (workdir, "."),
        (sysconfig.get_paths()["purelib"], "<site-packages>"),
        (str(TUTORIALS.parent), "<repository>"),
    ]


def _strip(text: str, paths: list[tuple[str, str]]) -> str:
    for local, stored in paths:
        text = text.replace(local, stored)
    return text


def store(notebook, workdir: str) -> None:
    """Shrink the figures of an executed notebook and take this machine's paths out of its text, in place."""
    paths = _local_paths(workdir)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                data["image/png"] = shrink_png(data["image/png"])
                output.get("metadata", {}).pop("image/png", None)
            if "text/plain" in data:
                data["text/plain"] = _strip(data["text/plain"], paths)
            if "text" in output:
                output["text"] = _strip(output["text"], paths)


def main(argv: list[str] | None = None) -> int:
    import nbclient
    import nbformat

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebook file names in tutorials/ (default: all but 05)")
    args = parser.parse_args(argv)
    names = args.notebooks or [p.name for p in sorted(TUTORIALS.glob("*.ipynb")) if p.name not in OTHER_ENVIRONMENT]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="tutorials-") as workdir:
        for name in names:
            notebook = nbformat.read(TUTORIALS / name, as_version=4)
            client = nbclient.NotebookClient(
                notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": workdir}}
            )
            client.execute(env=env)
            store(notebook, workdir)
            nbformat.write(notebook, TUTORIALS / name)
            print(f"{name}: {(TUTORIALS / name).stat().st_size:,} bytes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
