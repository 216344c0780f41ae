"""The CILMP MONAI Label app served for real: ``monailabel start_server`` on 127.0.0.1 with a tiny trained run.

Runs only in the app's own environment (``apps/monailabel/setup_env.sh``; monailabel pins numpy<2) and only when
selected: ``.venv-label/bin/python -m pytest -m monailabel tests/apps``. In the main environment it skips.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("monailabel", reason="monailabel is not installed: run apps/monailabel/setup_env.sh")
requests = pytest.importorskip("requests")

pytestmark = pytest.mark.monailabel

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "apps" / "monailabel"
MODEL = "tiny"
START_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_tiny_run(root: Path) -> Path:
    """A CILMP-Tiny run trained for one epoch on the bundle tests' toy images, with a saved (fixed) backbone so that
    the server and ``monai-cilmp predict`` rebuild the very same network."""
    import torch

    from monai_cilmp.cli import main
    from monai_cilmp.networks import load_backbone
    from tests.bundle.test_cilmp_bundle import _tiny_dataset

    _tiny_dataset(root)
    torch.manual_seed(0)
    torch.save(load_backbone("CILMP-Tiny", None).model.state_dict(), root / "tiny_clip.pt")
    data = root / "data" / "toy"
    run = root / "runs" / MODEL
    args = ["train", "--datalist", str(data / "datalist.json"), "--knowledge", str(data / "knowledge.safetensors")]
    args += ["--out", str(run), "--backbone", "CILMP-Tiny", "--pretrained", str(root / "tiny_clip.pt"), "--offline"]
    args += ["--preset", "radiography", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--lr", "0.05"]
    assert main(args) == 0
    return run


def _studies(root: Path) -> Path:
    """A few PNGs and one DICOM (pydicom's CT_small.dcm)."""
    from pydicom.data import get_testdata_file

    studies = root / "studies"
    studies.mkdir()
    for i, png in enumerate(sorted((root / "data" / "toy" / "inference").glob("*.png"))):
        shutil.copy(png, studies / f"photo{i}.png")
    shutil.copy(get_testdata_file("CT_small.dcm"), studies / "ct_small.dcm")
    return studies


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and everything it started (its own process group), whatever state it is in."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("monailabel")
    run = _train_tiny_run(root)
    studies = _studies(root)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    exe = shutil.which("monailabel", path=str(Path(sys.executable).parent)) or shutil.which("monailabel")
    assert exe, "the monailabel command is not installed next to this Python"
    command = [exe, "start_server", "--app", str(APP), "--studies", str(studies)]
    command += ["--conf", "models", MODEL, "--conf", "cilmp_runs", str(run.parent), "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    log = root / "server.log"
    # the monailabel script runs `python -m monailabel.main` with the `python` on PATH unless MONAILABEL_PYEXE says
    env = {**os.environ, "MONAILABEL_PYEXE": sys.executable, "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"monailabel exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"monailabel did not answer /info/ in {START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        print(f"server ready in {time.monotonic() - started:.1f} s")
        yield {"url": url, "root": root, "run": run, "studies": studies, "proc": proc, "log": log}
    finally:
        _stop(proc)
        print(log.read_text()[-3000:])


def _infer(url: str, model: str = MODEL, **kwargs):
    return requests.post(f"{url}/infer/{model}", timeout=120, **kwargs)


def _check_result(result: dict, class_names: list[str]) -> dict[str, float]:
    probs = result["probabilities"]
    assert list(probs) == class_names
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(0 <= p <= 1 for p in probs.values())
    assert result["predicted"] == max(probs, key=probs.get)
    assert [p["label"] for p in result["prediction"]] == class_names
    assert result["label_names"] == class_names
    return probs


def test_info_lists_the_classification_model(server):
    info = requests.get(f"{server['url']}/info/", timeout=30).json()
    assert list(info["models"]) == [MODEL, f"{MODEL}_saliency"]
    assert info["models"][f"{MODEL}_saliency"]["type"] == "segmentation"
    model = info["models"][MODEL]
    assert model["type"] == "classification" and model["dimension"] == 2
    assert model["labels"] == ["flat blue lesion", "round red lesion"] and model["preset"] == "radiography"
    datastore = requests.get(f"{server['url']}/datastore/?output=all", timeout=30).json()
    assert {"photo0", "photo1", "photo2", "ct_small"} <= set(datastore["objects"])


def test_infer_datastore_images_match_monai_cilmp_predict(server):
    from monai_cilmp.cli import main

    out = server["root"] / "predict.jsonl"
    images = [str(server["studies"] / f) for f in ("photo0.png", "photo1.png", "ct_small.dcm")]
    assert main(["predict", "--run", str(server["run"]), *images, "--out", str(out)]) == 0
    expected = {Path(r["image"]).name.split(".")[0]: r["probabilities"] for r in map(json.loads, out.open())}
    names = ["flat blue lesion", "round red lesion"]
    for image in ("photo0", "photo1", "ct_small"):
        response = _infer(server["url"], params={"image": image})
        assert response.status_code == 200, response.text
        probs = _check_result(response.json(), names)
        assert probs == pytest.approx(expected[image], abs=1e-4), image  # same network, same preprocessing


def test_infer_an_uploaded_image(server):
    png = server["studies"] / "photo2.png"
    response = _infer(server["url"], files={"file": ("upload.png", png.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    by_id = _infer(server["url"], params={"image": "photo2"}).json()
    assert _check_result(response.json(), by_id["label_names"]) == pytest.approx(by_id["probabilities"])


def test_client_errors_are_4xx_with_a_clear_message_and_the_server_keeps_serving(server):
    url = server["url"]
    response = _infer(url, model="no-such-model", params={"image": "photo0"})
    assert response.status_code == 404
    served = f"{MODEL}, {MODEL}_saliency"
    assert response.json()["detail"] == f"Model 'no-such-model' is not served by this app (served: {served})."

    response = _infer(url, params={"image": "no-such-image"})
    assert response.status_code == 404 and "not in the datastore" in response.json()["detail"]

    response = _infer(url, files={"file": ("notes.txt", b"not an image", "text/plain")})
    assert response.status_code == 415, response.text
    assert "unsupported file type '.txt'" in response.json()["detail"]

    response = _infer(url, files={"file": ("fake.png", b"this is text, not a PNG", "image/png")})
    assert response.status_code == 415, response.text
    assert response.json()["detail"].startswith("Cannot read")

    assert server["proc"].poll() is None
    assert requests.get(f"{url}/info/", timeout=30).status_code == 200
    response = _infer(url, params={"image": "photo1"})
    assert response.status_code == 200 and sum(response.json()["probabilities"].values()) == pytest.approx(1.0)


def test_datastore_is_read_only_by_default(server):
    url = server["url"]
    response = requests.delete(f"{url}/datastore/image", params={"id": "photo0"}, timeout=30)
    assert response.status_code == 403 and "read-only" in response.json()["detail"]
    assert (server["studies"] / "photo0.png").is_file()
    png = (server["studies"] / "photo1.png").read_bytes()
    response = requests.put(f"{url}/datastore/image", files={"file": ("planted.png", png, "image/png")}, timeout=30)
    assert response.status_code == 403 and not (server["studies"] / "planted.png").exists()


def test_image_ids_are_studies_only_and_errors_do_not_reveal_files(server):
    url = server["url"]
    outside = server["root"] / "secret.png"
    shutil.copy(server["studies"] / "photo0.png", outside)
    for image in (str(outside), str(server["root"] / "missing.png"), "../secret.png", str(server["studies"] / "x")):
        response = _infer(url, params={"image": image})
        assert response.status_code == 404, (image, response.text)
        assert response.json()["detail"] == f"Image '{image}' is not in the datastore: use an id listed by /datastore/."
    # the same through the params form field, which MONAI Label merges into the request
    response = _infer(url, params={"image": "photo0"}, data={"params": json.dumps({"image": str(outside)})})
    assert response.status_code == 404


def test_uploads_are_deleted_and_devices_checked(server):
    import tempfile

    url = server["url"]
    before = set(Path(tempfile.gettempdir()).glob("tmp*"))
    response = _infer(url, files={"file": ("fake.png", b"not a PNG", "image/png")})
    assert response.status_code == 415
    png = (server["studies"] / "photo2.png").read_bytes()
    assert _infer(url, files={"file": ("ok.png", png, "image/png")}).status_code == 200
    time.sleep(1)
    assert {p for p in Path(tempfile.gettempdir()).glob("tmp*") if p.suffix == ".png"} - before == set()
    response = _infer(url, params={"image": "photo0"}, data={"params": json.dumps({"device": "cuda:7"})})
    assert response.status_code == 400 and "is not available on this server" in response.json()["detail"]
    nan = server["root"] / "nan.npy"
    import numpy as np

    array = np.random.rand(32, 32).astype(np.float32)
    array[0, 0] = np.nan
    np.save(nan, array)
    response = _infer(url, files={"file": ("nan.npy", nan.read_bytes(), "application/octet-stream")})
    assert response.status_code == 415 and "NaN" in response.json()["detail"], response.text
    assert server["proc"].poll() is None


def test_saliency_map_is_a_label_image_of_the_image_size(server):
    import io

    from PIL import Image

    url = server["url"]
    response = requests.post(
        f"{url}/infer/{MODEL}_saliency", params={"image": "photo0", "output": "image"}, timeout=120
    )
    assert response.status_code == 200, response.text
    saliency = Image.open(io.BytesIO(response.content))
    original = Image.open(server["studies"] / "photo0.png")
    assert saliency.mode == "L" and saliency.size == original.size
    pixels = list(saliency.getdata())
    assert 0 <= min(pixels) <= max(pixels) <= 255
    response = _infer(url, model=f"{MODEL}_saliency", params={"image": "photo0"}, data={"params": '{"class": "x"}'})
    assert response.status_code == 400 and "is not one of this model's classes" in response.json()["detail"], (
        response.text
    )
