"""The CILMP MONAI Label app served for real: ``monailabel start_server`` on 127.0.0.1 with a tiny trained run.

Runs only in the app's own environment (``apps/monailabel/setup_env.sh``; monailabel pins numpy<2) and only when
selected: ``.venv-label/bin/python -m pytest -m monailabel tests/apps``. In the main environment it skips.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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
    """One server for every test: its temp dir (``TMPDIR``) and sessions folder are folders of the test, so that
    decoy ``tmp*`` files can sit where its uploads go and nothing it leaves behind goes unnoticed."""
    root = tmp_path_factory.mktemp("monailabel")
    run = _train_tiny_run(root)
    studies = _studies(root)
    server_tmp, sessions = root / "server_tmp", root / "sessions"
    server_tmp.mkdir()
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
    env.update({"TMPDIR": str(server_tmp), "MONAI_LABEL_SESSION_PATH": str(sessions), "MONAI_LABEL_SESSIONS": "true"})
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
        yield {
            "url": url,
            "root": root,
            "run": run,
            "studies": studies,
            "proc": proc,
            "log": log,
            "tmp": server_tmp,
            "sessions": sessions,
        }
    finally:
        _stop(proc)
        print(log.read_text()[-3000:])


@pytest.fixture(scope="module")
def client(server):
    from monailabel.client import MONAILabelClient

    folder = server["root"] / "client"
    folder.mkdir(exist_ok=True)
    return MONAILabelClient(server["url"], tmpdir=str(folder))


def _client_error(call, *args, **kwargs) -> tuple[int, dict]:
    """The status and JSON body of a request MONAILabelClient reports as failed (it raises with both in its message)."""
    from monailabel.client.client import MONAILabelClientException

    with pytest.raises(MONAILabelClientException) as error:
        call(*args, **kwargs)
    match = re.fullmatch(r"Status: (\d+); Response: (.*)", str(error.value.msg), flags=re.S)
    assert match, error.value.msg
    return int(match.group(1)), json.loads(match.group(2))


def _infer_with_client(client, model: str, image: str = "", params: dict | None = None, **kwargs) -> tuple:
    """``MONAILabelClient.infer``: the label file (``None`` for a classifier) and the JSON answer, decoded (the client
    returns the body of a JSON-only answer as bytes)."""
    label, result = client.infer(model, image, params or {}, **kwargs)
    return label, json.loads(result) if isinstance(result, (bytes, str)) else result


def _server_tmp(server) -> set[str]:
    return {p.name for p in server["tmp"].iterdir()}


def _settled(server, expected: set[str], timeout_s: float = 10.0) -> set[str]:
    """The server temp dir's entries once MONAI Label's background removals (run after each response) are done."""
    deadline = time.monotonic() + timeout_s
    while (names := _server_tmp(server)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return names


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


def test_info_lists_the_classifier_and_its_saliency_segmentation(server, client):
    info = client.info()
    assert list(info["models"]) == [MODEL, f"{MODEL}_saliency"]
    model = info["models"][MODEL]
    assert model["type"] == "classification" and model["dimension"] == 2
    assert model["labels"] == ["flat blue lesion", "round red lesion"] and model["preset"] == "radiography"
    saliency = info["models"][f"{MODEL}_saliency"]
    assert saliency["type"] == "segmentation" and saliency["labels"] == {"salient region": 1}
    assert {"photo0", "photo1", "photo2", "ct_small"} <= set(client.datastore()["objects"])


def test_infer_datastore_images_match_monai_cilmp_predict(server, client):
    from monai_cilmp.cli import main

    out = server["root"] / "predict.jsonl"
    images = [str(server["studies"] / f) for f in ("photo0.png", "photo1.png", "ct_small.dcm")]
    assert main(["predict", "--run", str(server["run"]), *images, "--out", str(out)]) == 0
    expected = {Path(r["image"]).name.split(".")[0]: r["probabilities"] for r in map(json.loads, out.open())}
    names = ["flat blue lesion", "round red lesion"]
    for image in ("photo0", "photo1", "ct_small"):
        label, result = _infer_with_client(client, MODEL, image, {})
        assert label is None  # a classifier answers JSON only
        probs = _check_result(result, names)
        assert probs == pytest.approx(expected[image], abs=1e-4), image  # same network, same preprocessing


def test_infer_an_upload_and_a_session(server, client):
    before = _server_tmp(server)
    png = server["studies"] / "photo2.png"
    by_id = _infer_with_client(client, MODEL, "photo2", {})[1]
    _, uploaded = _infer_with_client(client, MODEL, "", {}, file=str(png))
    assert _check_result(uploaded, by_id["label_names"]) == pytest.approx(by_id["probabilities"])
    assert _settled(server, before) == before  # the upload's copy is gone

    session = client.create_session(str(png))
    session_id = session["session_id"]
    image = Path(session["session_info"]["image"])
    assert image.resolve().is_relative_to(server["sessions"].resolve()) and image.is_file()
    _, in_session = _infer_with_client(client, MODEL, "", {}, session_id=session_id)
    assert _check_result(in_session, by_id["label_names"]) == pytest.approx(by_id["probabilities"])
    # a session's image is its own: neither a query image nor params can replace it
    _, again = _infer_with_client(client, MODEL, "photo0", {"image": "photo0"}, session_id=session_id)
    assert again["probabilities"] == pytest.approx(by_id["probabilities"])
    assert image.is_file()  # the session keeps its image until it is removed
    client.remove_session(session_id)
    assert not image.exists()
    status, body = _client_error(client.infer, MODEL, "", {}, session_id=session_id)
    assert status == 404 and body["detail"] == f"Session '{session_id}' does not exist: create one with PUT /session/."
    assert _settled(server, before) == before


def test_saliency_is_one_segment_a_client_imports_as_such(server, client):
    from PIL import Image

    label, result = _infer_with_client(client, f"{MODEL}_saliency", "photo0", {})
    assert result["label_names"] == {"salient region": 1} and result["threshold"] == 0.5
    assert result["class"] == _infer_with_client(client, MODEL, "photo0")[1]["predicted"]  # the predicted class
    region = np.asarray(Image.open(label))
    original = Image.open(server["studies"] / "photo0.png")
    assert region.shape == (original.height, original.width)
    assert set(np.unique(region)) == {0, 1}  # one segment on background, whatever the map's range
    assert result["salient_fraction"] == pytest.approx(region.mean(), abs=1e-6) and 0 < region.mean() < 1
    # the same as `monai-cilmp explain`'s map, thresholded at half its maximum
    names = ["flat blue lesion", "round red lesion"]
    label, other = _infer_with_client(client, f"{MODEL}_saliency", "photo0", {"class": names[1]})
    assert other["class"] == names[1] and set(np.unique(np.asarray(Image.open(label)))) <= {0, 1}
    status, body = _client_error(client.infer, f"{MODEL}_saliency", "photo0", {"class": "x"})
    assert status == 400 and "is not one of this model's classes" in body["detail"]
    # an upload works too, and its copy goes
    before = _server_tmp(server)
    label, _ = _infer_with_client(client, f"{MODEL}_saliency", "", {}, file=str(server["studies"] / "photo1.png"))
    assert set(np.unique(np.asarray(Image.open(label)))) == {0, 1}
    assert _settled(server, before) == before


def test_output_image_and_malformed_params_are_json_4xx(server):
    url = server["url"]
    before = _server_tmp(server)
    for output in ("image", "dicom_seg"):
        response = _infer(url, params={"image": "photo0", "output": output})
        assert response.status_code == 400, response.text
        assert response.json()["detail"] == (
            f"Model '{MODEL}' is a classifier: it answers JSON (class probabilities), not an image; leave out output "
            "or use output=json."
        )
    assert _infer(url, params={"image": "photo0", "output": "json"}).json()["probabilities"]
    png = (server["studies"] / "photo2.png").read_bytes()
    for params, why in (("{not json", "is not valid JSON"), ("[1, 2]", "must be a JSON object, not list")):
        for files in (None, {"file": ("up.png", png, "image/png")}):
            response = _infer(url, params={"image": "photo0"}, data={"params": params}, files=files)
            assert response.status_code == 400, response.text
            assert why in response.json()["detail"] and "'params' form field" in response.json()["detail"]
    response = requests.post(f"{url}/infer/{MODEL}", timeout=60)
    assert response.status_code == 400 and response.json()["detail"].startswith("Nothing to infer on"), response.text
    response = _infer(url, params={"image": "photo0"}, files={"label": ("scribbles.bin", b"\x00\x01", "text/plain")})
    assert response.status_code == 400 and "take no label" in response.json()["detail"], response.text
    assert _settled(server, before) == before


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


def test_datastore_is_read_only_and_refused_uploads_leave_nothing(server, client):
    url = server["url"]
    before, studies = _server_tmp(server), sorted(p.name for p in server["studies"].iterdir())
    response = requests.delete(f"{url}/datastore/image", params={"id": "photo0"}, timeout=30)
    assert response.status_code == 403 and "read-only" in response.json()["detail"]
    assert (server["studies"] / "photo0.png").is_file()
    png = server["studies"] / "photo1.png"
    status, body = _client_error(client.upload_image, str(png), image_id="planted")
    assert status == 403 and "read-only" in body["detail"]
    status, body = _client_error(client.save_label, "photo0", str(png), tag="final")
    assert status == 403 and "read-only" in body["detail"]
    response = requests.put(f"{url}/datastore/image", files={"file": ("planted.png", png.read_bytes())}, timeout=30)
    assert response.status_code == 403
    response = _infer(url, params={"image": "photo0"}, data={"params": json.dumps({"save_label": True})})
    assert response.status_code == 403, response.text
    checkpoint = server["run"] / "checkpoints" / "final.pt"
    served = checkpoint.read_bytes()
    response = requests.put(f"{url}/model/{MODEL}", files={"file": ("final.pt", b"not a checkpoint")}, timeout=30)
    assert response.status_code == 403 and "read-only" in response.json()["detail"], response.text
    response = requests.delete(f"{url}/model/{MODEL}", timeout=30)
    assert response.status_code == 403 and "read-only" in response.json()["detail"], response.text
    assert checkpoint.read_bytes() == served
    assert _settled(server, before) == before  # no tmp* copies of the refused uploads
    assert sorted(p.name for p in server["studies"].iterdir()) == studies


def test_only_the_requests_own_upload_or_session_is_read_and_nothing_else_is_deleted(server, client):
    """Traversal attempts through the query, ``params`` and ``session_id``, against files in the server's temp dir
    (where its uploads go, named like them) and elsewhere: every one a 404 JSON sentence that does not depend on
    whether the file exists, and every file still there afterwards."""
    url, tmp = server["url"], server["tmp"]
    photo = (server["studies"] / "photo0.png").read_bytes()
    decoys = {
        tmp / "tmpdecoy.png": photo,  # a readable image named like an upload
        tmp / "tmpsecret.txt": b"secret",
        tmp / "tmpdecoy.nii.gz": b"not really",
        server["root"] / "secret.png": photo,
        server["sessions"] / "planted.png": photo,  # inside the sessions folder, but no session's image
    }
    for path, content in decoys.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    missing = [tmp / "tmpnothere.png", server["root"] / "nothere.png"]
    before = _server_tmp(server)
    paths = [str(p) for p in [*decoys, *missing]]
    relative = ["../secret.png", "../server_tmp/tmpdecoy.png", "photo0.png/../../secret.png", "studies/../secret"]

    def not_in_datastore(image: str, response) -> None:
        assert response.status_code == 404, (image, response.status_code, response.text)
        assert response.json()["detail"] == f"Image '{image}' is not in the datastore: use an id listed by /datastore/."

    png = {"file": ("up.png", photo, "image/png")}
    for image in paths + relative:
        not_in_datastore(image, _infer(url, params={"image": image}))  # the query
        not_in_datastore(image, _infer(url, params={"image": "photo0"}, data={"params": json.dumps({"image": image})}))
        # params replacing the request's own upload: the upload is not read, and its copy goes
        not_in_datastore(image, _infer(url, files=png, data={"params": json.dumps({"image": image})}))
        not_in_datastore(image, _infer(url, model=f"{MODEL}_saliency", params={"image": image}))
        status, body = _client_error(client.infer, MODEL, image, {})  # MONAI Label's own client
        assert status == 404 and body["detail"].startswith(f"Image '{image}' is not in the datastore")
    # the whole-slide endpoint reads images by path: refused altogether
    for endpoint in ("wsi", "wsi_v2"):
        response = requests.post(f"{url}/infer/{endpoint}/{MODEL}", params={"image": paths[0]}, timeout=60)
        assert response.status_code == 404 and "no whole-slide" in response.json()["detail"], response.text

    # MONAI Label's batch inference reads ids given in the request: refused, as are its other tasks the app lacks
    response = requests.post(
        f"{url}/batch/infer/{MODEL}", params={"run_sync": "true"}, json={"images": paths[:2]}, timeout=60
    )
    assert response.status_code == 404 and "no batch inference" in response.json()["detail"], response.text
    for endpoint in (f"train/{MODEL}", "scoring/dice", "activelearning/nope"):
        response = requests.post(f"{url}/{endpoint}", params={"run_sync": "true"}, timeout=60)
        assert 400 <= response.status_code < 500 and response.json()["detail"], (endpoint, response.text)

    # sessions: only a session id (one name) of MONAI Label's sessions folder, never a path
    session_id = client.create_session(str(server["studies"] / "photo1.png"))["session_id"]
    for bad in ("../sessions", f"{session_id}/..", f"../{server['sessions'].name}/{session_id}", "no-such-session"):
        response = _infer(url, params={"image": "photo0", "session_id": bad})
        assert response.status_code == 404, (bad, response.text)
        assert response.json()["detail"] == f"Session '{bad}' does not exist: create one with PUT /session/."
    for bad in ("no-such-session", ".hidden"):
        assert requests.get(f"{url}/session/{bad}", timeout=30).status_code == 404
        assert requests.delete(f"{url}/session/{bad}", timeout=30).status_code == 404
    response = requests.put(
        f"{url}/session/", params={"uncompress": "true"}, files={"files": ("a.tar", b"x")}, timeout=30
    )
    assert response.status_code == 400 and "does not unpack archives" in response.json()["detail"]
    client.remove_session(session_id)

    for path, content in decoys.items():
        assert path.read_bytes() == content, path
    assert _settled(server, before) == before
    assert server["proc"].poll() is None


def test_devices_are_checked_and_nan_images_refused(server):
    url = server["url"]
    before = _server_tmp(server)
    response = _infer(url, params={"image": "photo0"}, data={"params": json.dumps({"device": "cuda:7"})})
    assert response.status_code == 400 and "is not available on this server" in response.json()["detail"]
    nan = server["root"] / "nan.npy"
    array = np.random.rand(32, 32).astype(np.float32)
    array[0, 0] = np.nan
    np.save(nan, array)
    response = _infer(url, files={"file": ("nan.npy", nan.read_bytes(), "application/octet-stream")})
    assert response.status_code == 415 and "NaN" in response.json()["detail"], response.text
    assert _settled(server, before) == before
    assert server["proc"].poll() is None
