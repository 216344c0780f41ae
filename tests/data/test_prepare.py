"""Each dataset's prepare function on a small fake tree that mimics the layout of its public download."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from monai_cilmp.data import DATASETS, get_dataset, prepare_dataset
from monai_cilmp.data.prepare import prepare_function

from .conftest import only_these_files, touch_images

SPLITS = ("training", "validation", "test")


def run(name: str, raw: Path, tmp_path: Path, **kwargs) -> dict:
    out = tmp_path / "out" / f"{name}.json"
    datalist = prepare_function(name)(raw, out, **kwargs)
    spec = get_dataset(name)
    assert json.loads(out.read_text()) == datalist
    assert datalist["name"] == spec.name and datalist["preset"] == spec.preset
    assert datalist["class_names"] == list(spec.class_names)
    paths = [i["image"] for s in SPLITS for i in datalist[s]]
    assert len(paths) == len(set(paths)) and all(os.path.isfile(p) for p in paths)
    return datalist


def by_name(datalist: dict) -> dict[str, tuple[str, str]]:
    """File name -> (split, class name)."""
    names = datalist["class_names"]
    return {Path(i["image"]).name: (s, names[i["label"]]) for s in SPLITS for i in datalist[s]}


def counts(datalist: dict, split: str) -> Counter:
    return Counter(datalist["class_names"][i["label"]] for i in datalist[split])


def test_every_dataset_has_a_prepare_function():
    assert all(callable(prepare_function(name)) for name in DATASETS)
    assert len(DATASETS) == 23  # 15 of CILMP, 11 of BiomedCoOp, 3 shared


def test_adam(tmp_path):
    root = tmp_path / "raw" / "ADAM" / "Training400"
    touch_images(root / "AMD", [f"A{i:04d}.jpg" for i in range(1, 6)])
    touch_images(root / "Non-AMD", [f"N{i:04d}.jpg" for i in range(1, 11)])
    datalist = run("adam", tmp_path / "raw", tmp_path, seed=0)
    labels = by_name(datalist)
    assert labels["A0003.jpg"][1] == "fundus with age-related macular degeneration"
    assert labels["N0007.jpg"][1] == "normal fundus"
    assert counts(datalist, "test") == {"normal fundus": 2, "fundus with age-related macular degeneration": 1}


def test_aptos2019(tmp_path):
    raw = tmp_path / "raw" / "aptos2019-blindness-detection"
    ids = [f"{i:012x}" for i in range(20)]
    touch_images(raw / "train_images", [f"{i}.png" for i in ids])
    (raw / "train.csv").write_text("id_code,diagnosis\n" + "\n".join(f"{i},{n % 5}" for n, i in enumerate(ids)))
    (raw / "test.csv").write_text("id_code\nffff\n")
    datalist = run("aptos2019", tmp_path / "raw", tmp_path)
    assert by_name(datalist)[f"{ids[7]}.png"][1] == "moderate diabetic retinopathy"  # grade 2
    assert sum(len(datalist[s]) for s in SPLITS) == 20


@pytest.mark.parametrize("name, classes", [("bloodmnist", 8), ("dermamnist", 7), ("octmnist", 4)])
def test_medmnist(tmp_path, name, classes):
    rng = np.random.default_rng(0)

    def arrays(size):
        out = {}
        for key, n in (("train", 2 * classes), ("val", classes), ("test", classes)):
            out[f"{key}_images"] = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
            out[f"{key}_labels"] = (np.arange(n) % classes).reshape(-1, 1)
        return out

    raw = tmp_path / "raw"
    raw.mkdir()
    np.savez(raw / f"{name}.npz", **arrays(28))
    big = arrays(64)
    np.savez(raw / f"{name}_64.npz", **big)
    datalist = run(name, raw, tmp_path)
    assert [len(datalist[s]) for s in SPLITS] == [2 * classes, classes, classes]  # the official split
    first = datalist["training"][3]
    from PIL import Image

    assert first["label"] == 3
    np.testing.assert_array_equal(np.asarray(Image.open(first["image"])), big["train_images"][3])  # the 64 px one
    assert Path(first["image"]).parent.parent == tmp_path / "out" / f"{name}_images"
    run(name, raw, tmp_path)  # a re-run replaces the images it wrote
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with pytest.raises(ValueError, match="exists and was not written by prepare"):
        prepare_function(name)(raw, tmp_path / "x.json", image_dir=foreign)
    assert not (tmp_path / "x.json").exists()


def test_busi_skips_masks(tmp_path):
    root = tmp_path / "raw" / "Dataset_BUSI_with_GT"
    for kind, n in (("benign", 6), ("malignant", 5), ("normal", 4)):
        names = [f"{kind} ({i}).png" for i in range(1, n + 1)]
        touch_images(
            root / kind, names + [f"{kind} ({i})_mask.png" for i in range(1, n + 1)] + [f"{kind} (1)_mask_1.png"]
        )
    datalist = run("busi", tmp_path / "raw", tmp_path)
    labels = by_name(datalist)
    assert len(labels) == 15 and not any("_mask" in n for n in labels)
    assert labels["malignant (2).png"][1] == "malignant" and labels["normal (4).png"][1] == "normal"


def test_chaoyang_keeps_the_official_test_split(tmp_path):
    root = tmp_path / "raw" / "chaoyang-data"
    train = [{"name": f"train/{i}-IMG.JPG", "label": i % 4} for i in range(20)]
    test = [{"name": f"test/{i}-IMG.JPG", "label": i % 4} for i in range(8)]
    touch_images(root, [e["name"] for e in train + test])
    (root / "train.json").write_text(json.dumps(train))
    (root / "test.json").write_text(json.dumps(test))
    datalist = run("chaoyang", tmp_path / "raw", tmp_path, val_fraction=0.2)
    assert sorted(Path(i["image"]).name for i in datalist["test"]) == sorted(Path(e["name"]).name for e in test)
    assert len(datalist["validation"]) == 4 and len(datalist["training"]) == 16
    assert by_name(datalist)["2-IMG.JPG"] == ("test", "adenocarcinoma")


def test_cpn_x_ray(tmp_path):
    root = tmp_path / "raw" / "CPN"
    for folder, n in (("COVID", 5), ("Normal", 6), ("pneumonia", 7)):
        touch_images(root / folder, [f"{folder.lower()}_{i}.jpg" for i in range(n)])
    datalist = run("cpn-x-ray", tmp_path / "raw", tmp_path)
    labels = by_name(datalist)
    assert labels["covid_0.jpg"][1] == "covid" and labels["normal_0.jpg"][1] == "normal"
    assert sum(len(datalist[s]) for s in SPLITS) == 18


def test_derm7pt_groups_diagnoses_and_keeps_official_split(tmp_path):
    release = tmp_path / "raw" / "release_v0"
    diagnoses = [
        "basal cell carcinoma",
        "seborrheic keratosis",
        "melanoma (in situ)",
        "melanoma metastasis",
        "melanosis",
        "vascular lesion",
        "reed or spitz nevus",
        "clark nevus",
        "miscellaneous",
        "dermatofibroma",
    ]
    rows = [f"{i},{d},x,Fcl/c{i}.jpg,Fdl/d{i}.JPG" for i, d in enumerate(diagnoses)]
    (release / "meta").mkdir(parents=True)
    (release / "meta" / "meta.csv").write_text("case_num,diagnosis,notes,clinic,derm\n" + "\n".join(rows))
    for file_name, indexes in (("train", [0, 1, 2, 4, 6, 8, 9]), ("valid", [3, 5]), ("test", [7])):
        (release / "meta" / f"{file_name}_indexes.csv").write_text("indexes\n" + "\n".join(map(str, indexes)))
    touch_images(release / "images", [f"Fdl/d{i}.JPG" for i in range(10)] + [f"Fcl/c{i}.jpg" for i in range(10)])
    datalist = run("derm7pt", tmp_path / "raw", tmp_path)
    labels = by_name(datalist)
    assert labels["d0.JPG"] == ("training", "carcinoma") and labels["d1.JPG"] == ("training", "keratosis")
    assert labels["d2.JPG"][1] == labels["d3.JPG"][1] == "melanoma"
    assert labels["d4.JPG"][1] == labels["d5.JPG"][1] == labels["d9.JPG"][1] == "miscellaneous"
    assert labels["d6.JPG"][1] == labels["d7.JPG"][1] == "nevus"
    assert labels["d7.JPG"][0] == "test" and labels["d3.JPG"][0] == "validation"
    assert not any(n.startswith("c") for n in labels)  # the dermoscopic image, not the clinical one


def test_fetal_planes(tmp_path):
    root = tmp_path / "raw" / "FETAL_PLANES_ZENODO"
    planes = ["Fetal brain", "Fetal femur", "Fetal abdomen", "Fetal thorax", "Maternal cervix", "Other"]
    rows = [
        f"Patient{i:05d}_Plane{i}_1_of_1;{i};{planes[i % 6]};Not A Brain;Op. 1;Voluson E6;{int(i >= 6)}"
        for i in range(24)
    ]
    (root).mkdir(parents=True)
    header = "Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train \n"
    (root / "FETAL_PLANES_DB_data.csv").write_text(header + "\n".join(rows))
    touch_images(root / "Images", [f"Patient{i:05d}_Plane{i}_1_of_1.png" for i in range(24)])
    datalist = run("fetal-us", tmp_path / "raw", tmp_path, val_fraction=0.34)
    labels = by_name(datalist)
    assert labels["Patient00005_Plane5_1_of_1.png"] == ("test", "Other planes")
    assert labels["Patient00007_Plane7_1_of_1.png"][1] == "Fetal femur"
    assert len(datalist["test"]) == 6 and len(datalist["validation"]) == 6 and len(datalist["training"]) == 12


def isic_csv(path: Path, columns: list[str], rows: list[tuple[str, int]]) -> None:
    lines = ["image," + ",".join(columns)]
    lines += [name + "," + ",".join("1.0" if j == k else "0.0" for j in range(len(columns))) for name, k in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def test_isic2018_official_validation(tmp_path):
    raw = tmp_path / "raw"
    columns = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    train = [(f"ISIC_{i:07d}", i % 7) for i in range(28)]
    val = [(f"ISIC_{100 + i:07d}", i % 7) for i in range(7)]
    isic_csv(raw / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv", columns, train)
    isic_csv(raw / "ISIC2018_Task3_Validation_GroundTruth" / "ISIC2018_Task3_Validation_GroundTruth.csv", columns, val)
    touch_images(raw / "ISIC2018_Task3_Training_Input", [f"{n}.jpg" for n, _ in train])
    touch_images(raw / "ISIC2018_Task3_Validation_Input", [f"{n}.jpg" for n, _ in val])
    datalist = run("isic", raw, tmp_path, test_fraction=0.25)
    labels = by_name(datalist)
    assert labels["ISIC_0000003.jpg"][1] == "Actinic keratosis" and labels["ISIC_0000006.jpg"][1] == "Vascular lesion"
    assert {Path(i["image"]).stem for i in datalist["validation"]} == {n for n, _ in val}
    assert len(datalist["test"]) == 7 and len(datalist["training"]) == 21  # test carved from training


def test_isic2019_drops_scc_and_unknown(tmp_path):
    raw = tmp_path / "raw"
    columns = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    rows = [(f"ISIC_{i:07d}", i % 9) for i in range(27)]
    isic_csv(raw / "ISIC_2019_Training_GroundTruth.csv", columns, rows)
    touch_images(raw / "ISIC_2019_Training_Input", [f"{n}.jpg" for n, _ in rows])
    datalist = run("isic", raw, tmp_path)
    labels = by_name(datalist)
    assert len(labels) == 21 and "ISIC_0000007.jpg" not in labels and "ISIC_0000008.jpg" not in labels
    assert labels["ISIC_0000001.jpg"][1] == "Melanocytic nevus"


def test_kvasir(tmp_path):
    root = tmp_path / "raw" / "kvasir-dataset-v2"
    folders = ["dyed-lifted-polyps", "dyed-resection-margins", "esophagitis", "normal-cecum", "normal-pylorus"]
    folders += ["normal-z-line", "polyps", "ulcerative-colitis"]
    for folder in folders:
        touch_images(root / folder, [f"{folder}-{i}.jpg" for i in range(5)])
    datalist = run("kvasir", tmp_path / "raw", tmp_path, seed=4)
    labels = by_name(datalist)
    assert labels["dyed-lifted-polyps-0.jpg"][1] == "dyed lifted polyps"
    assert labels["normal-z-line-2.jpg"][1] == "normal z-line"
    assert all(counts(datalist, "test")[c] == 1 for c in datalist["class_names"])


def odir_tree(tmp_path: Path) -> Path:
    root = tmp_path / "raw" / "ODIR-5K"
    header = "ID,Patient Age,Patient Sex,Left-Fundus,Right-Fundus,Left-Diagnostic Keywords,Right-Diagnostic Keywords,"
    header += "N,D,G,C,A,H,M,O,filepath,labels,target,filename"
    keywords = ["normal fundus", "cataract", "moderate non proliferative retinopathy", "glaucoma"]
    letters = "NDGCAHMO"
    rows = []
    for i in range(16):
        left, right = keywords[i % 4], keywords[(i + 1) % 4]
        for side in ("left", "right"):
            letter = letters[(2 * i + (side == "right")) % 8]
            rows.append(
                f"{i},60,Male,{i}_left.jpg,{i}_right.jpg,{left},{right},1,0,0,0,0,0,0,0,x,\"['{letter}']\",x,{i}_{side}.jpg"
            )
    root.mkdir(parents=True)
    (root / "full_df.csv").write_text(header + "\n" + "\n".join(rows))
    touch_images(root / "preprocessed_images", [f"{i}_{s}.jpg" for i in range(16) for s in ("left", "right")])
    return tmp_path / "raw"


def test_odir_eight_classes(tmp_path):
    datalist = run("odir", odir_tree(tmp_path), tmp_path)
    labels = by_name(datalist)
    assert len(labels) == 32
    # image k of the table (eye i, left then right) has letter k % 8 of NDGCAHMO
    assert labels["0_left.jpg"][1] == "normal" and labels["1_right.jpg"][1] == "cataract"
    assert (
        labels["3_left.jpg"][1] == "pathological myopia"
        and labels["3_right.jpg"][1] == "other diseases or abnormalities"
    )


def test_odir2_normal_versus_cataract_per_eye(tmp_path):
    datalist = run("odir2", odir_tree(tmp_path), tmp_path)
    labels = by_name(datalist)
    # eye i's left keywords are keywords[i % 4], right ones keywords[(i + 1) % 4]
    assert labels["0_left.jpg"][1] == "normal" and labels["0_right.jpg"][1] == "cataract"
    assert labels["3_right.jpg"][1] == "normal" and "2_left.jpg" not in labels and "2_right.jpg" not in labels
    assert len(labels) == 16


def chest_xray_tree(tmp_path: Path) -> Path:
    root = tmp_path / "raw" / "chest_xray"
    for base in (root, root / "chest_xray", tmp_path / "raw" / "__MACOSX" / "chest_xray"):  # Kaggle's duplicates
        for split, n in (("train", 8), ("val", 2), ("test", 4)):
            touch_images(base / split / "NORMAL", [f"IM-{split}-{i}.jpeg" for i in range(n)])
            names = [f"person{i}_{'bacteria' if i % 2 else 'virus'}_{i}.jpeg" for i in range(n)]
            touch_images(base / split / "PNEUMONIA", names)
    return tmp_path / "raw"


def test_pneumonia2_official_split(tmp_path):
    datalist = run("pneumonia2", chest_xray_tree(tmp_path), tmp_path)
    assert [len(datalist[s]) for s in SPLITS] == [16, 4, 8]
    assert all("/chest_xray/chest_xray/" not in i["image"] for s in SPLITS for i in datalist[s])
    assert counts(datalist, "validation") == {"normal": 2, "pneumonia": 2}


def test_pneumonia3_reads_the_kind_from_the_name(tmp_path):
    datalist = run("pneumonia3", chest_xray_tree(tmp_path), tmp_path)
    labels = {(s, Path(i["image"]).name): datalist["class_names"][i["label"]] for s in SPLITS for i in datalist[s]}
    assert labels[("training", "person1_bacteria_1.jpeg")] == "bacteria pneumonia"
    assert labels[("test", "person2_virus_2.jpeg")] == "virus pneumonia"
    assert labels[("test", "IM-test-0.jpeg")] == "normal"


def test_biomedcoop_archive_without_its_split_file_is_split_by_class_folder(tmp_path):
    root = tmp_path / "raw" / "BTMRI" / "BTMRI"
    for folder in ("glioma_tumor", "meningioma_tumor", "pituitary_tumor", "normal_brain"):
        touch_images(root / folder, [f"{folder}-{i}.jpg" for i in range(10)])
    datalist = run("btmri", tmp_path / "raw", tmp_path)
    labels = by_name(datalist)
    assert labels["pituitary_tumor-3.jpg"][1] == "pituitary tumor" and labels["normal_brain-0.jpg"][1] == "normal brain"
    assert all(counts(datalist, "test")[c] == 2 for c in datalist["class_names"])  # stratified 20 %


def test_every_layout_is_described_and_marked_checked_or_not():
    from monai_cilmp.data import describe_layouts

    for name, spec in DATASETS.items():
        text = describe_layouts(name)
        assert all(
            layout.expected in text.replace("\n    ", " ") or layout.expected[:40] in text for layout in spec.layouts
        )
        assert text.count("UNCHECKED") == sum(not layout.checked for layout in spec.layouts), name
        assert prepare_function(name).__doc__.startswith(text)


def test_wrong_download_and_missing_images_write_nothing(tmp_path):
    (tmp_path / "raw").mkdir()
    out = tmp_path / "out" / "kvasir.json"
    with pytest.raises(FileNotFoundError) as e:
        prepare_dataset("kvasir", tmp_path / "raw", out)
    assert str(e.value).startswith(f"'{tmp_path / 'raw'}' does not look like the Kvasir v2 download: no folder with")
    raw = tmp_path / "aptos"
    touch_images(raw / "train_images", ["a.png"])
    (raw / "train.csv").write_text("id_code,diagnosis\na,0\nb,1\n")
    with pytest.raises(FileNotFoundError) as e:
        prepare_dataset("aptos", raw, out)
    assert str(e.value) == (
        f"1 image file listed in '{raw / 'train.csv'}' does not exist: '{raw / 'train_images' / 'b.png'}'."
    )
    assert only_these_files(out.parent) == []
    with pytest.raises(ValueError, match="Unknown dataset 'kvasirr' \\(did you mean 'kvasir'\\?\\)"):
        prepare_dataset("kvasirr", raw, out)


def test_check_before_writing(tmp_path):
    root = tmp_path / "raw" / "ADAM" / "Training400"
    touch_images(root / "AMD", ["A0001.jpg", "A0002.jpg"])
    touch_images(root / "Non-AMD", ["N0001.jpg", "N0002.jpg"])
    (root / "AMD" / "A0003.jpg").write_bytes(b"\xff\xd8\xff truncated")
    out = tmp_path / "out" / "adam.json"
    with pytest.raises(ValueError) as e:
        prepare_dataset("adam", tmp_path / "raw", out, check=True)
    assert str(e.value).startswith(
        f"1 of 5 images in '{root}' cannot be used:\n  Cannot read '{root / 'AMD' / 'A0003.jpg'}'"
    )
    assert only_these_files(out.parent) == []
    written = prepare_dataset("adam", tmp_path / "raw", out)  # without the check the images are not opened
    assert sum(len(written[s]) for s in SPLITS) == 5


def test_missing_folder_and_columns_are_one_sentence(tmp_path):
    raw = tmp_path / "aptos"
    raw.mkdir()
    (raw / "train.csv").write_text("id_code,diagnosis\na,0\n")
    out = tmp_path / "out" / "aptos.json"
    with pytest.raises(FileNotFoundError) as e:
        prepare_dataset("aptos2019", raw, out)
    assert str(e.value) == f"'{raw}' has no 'train_images' folder (expected train.csv and train_images/<id_code>.png)."
    touch_images(raw / "train_images", ["a.png"])
    (raw / "train.csv").write_text("image,grade\na,0\n")
    with pytest.raises(ValueError) as e:
        prepare_dataset("aptos2019", raw, out)
    assert str(e.value) == (
        f"CSV file '{raw / 'train.csv'}' has no 'id_code', 'diagnosis' columns; its columns are: image, grade."
    )
    root = tmp_path / "fetal" / "FETAL_PLANES_ZENODO"
    touch_images(root / "Images", ["x.png"])
    (root / "FETAL_PLANES_DB_data.csv").write_text("Image_name;Plane;Train\nx;Other;1\n")
    with pytest.raises(ValueError) as e:
        prepare_dataset("fetal-us", tmp_path / "fetal", out)
    assert str(e.value) == (
        f"CSV file '{root / 'FETAL_PLANES_DB_data.csv'}' has no 'Patient_num' column; its columns are: "
        "Image_name, Plane, Train."
    )
    assert only_these_files(out.parent) == []


def test_medmnist_failure_leaves_nothing_new(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for key, n in (("train", 8), ("val", 4), ("test", 4)):
        arrays[f"{key}_images"] = rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{key}_labels"] = (np.arange(n) % 4).reshape(-1, 1)  # classes 4-7 have no training images
    np.savez(raw / "bloodmnist.npz", **arrays)
    out = tmp_path / "out" / "bloodmnist.json"
    with pytest.raises(ValueError, match="has no images in the training split"):
        prepare_dataset("bloodmnist", raw, out)
    assert only_these_files(out.parent) == []  # neither the image folder, nor a temporary one, nor the datalist


def split_of(datalist: dict) -> dict[str, str]:
    return {Path(i["image"]).name: s for s in SPLITS for i in datalist[s]}


@pytest.mark.parametrize("name", ["odir", "odir2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_odir_keeps_a_patients_eyes_together(tmp_path, name, seed):
    datalist = run(name, odir_tree(tmp_path), tmp_path, seed=seed, val_fraction=0.2, test_fraction=0.25)
    splits = split_of(datalist)
    for i in range(16):
        sides = {splits[f"{i}_{side}.jpg"] for side in ("left", "right") if f"{i}_{side}.jpg" in splits}
        assert len(sides) <= 1, (i, sides)
    assert datalist["test"]  # the held-out splits are not empty


def test_fetal_validation_keeps_a_patient_together(tmp_path):
    root = tmp_path / "raw" / "FETAL_PLANES_ZENODO"
    planes = ["Fetal brain", "Fetal femur", "Fetal abdomen", "Fetal thorax", "Maternal cervix", "Other"]
    names = [f"Patient{i // 3:05d}_Plane{i}_1_of_1" for i in range(36)]  # three images per patient
    rows = [f"{n};{i // 3};{planes[i % 6]};Not A Brain;Op. 1;Voluson E6;{int(i >= 6)}" for i, n in enumerate(names)]
    root.mkdir(parents=True)
    header = "Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train \n"
    (root / "FETAL_PLANES_DB_data.csv").write_text(header + "\n".join(rows))
    touch_images(root / "Images", [f"{n}.png" for n in names])
    datalist = run("fetal-us", tmp_path / "raw", tmp_path, val_fraction=0.3)
    splits = split_of(datalist)
    by_patient: dict[int, set] = {}
    for i, n in enumerate(names):
        by_patient.setdefault(i // 3, set()).add(splits[f"{n}.png"])
    assert all(len(s) == 1 for s in by_patient.values())
    assert datalist["validation"]


def test_isic_keeps_a_lesion_together(tmp_path):
    raw = tmp_path / "raw"
    columns = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    train = [(f"ISIC_{i:07d}", (i // 2) % 7) for i in range(56)]  # two images per lesion, same class
    isic_csv(raw / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv", columns, train)
    touch_images(raw / "ISIC2018_Task3_Training_Input", [f"{n}.jpg" for n, _ in train])
    lesions = "image,lesion_id,diagnosis_confirm_type\n" + "\n".join(
        f"{n},HAM_{i // 2:07d},histo" for i, (n, _) in enumerate(train)
    )
    (raw / "ISIC2018_Task3_Training_LesionGroupings.csv").write_text(lesions)
    for seed in range(3):
        datalist = run("isic", raw, tmp_path, seed=seed, val_fraction=0.25, test_fraction=0.25)
        splits = split_of(datalist)
        for i in range(0, 56, 2):
            assert splits[f"{train[i][0]}.jpg"] == splits[f"{train[i + 1][0]}.jpg"]
        assert datalist["validation"] and datalist["test"]


def test_grouped_split_and_no_image_in_two_splits():
    from monai_cilmp.data.datalist import grouped_stratified_split, make_datalist

    items = [(f"/x/{i}.png", i % 3) for i in range(60)]
    groups = {p: f"g{i // 4}" for i, (p, _) in enumerate(items)}
    splits = grouped_stratified_split(items, groups, 0.2, 0.2, seed=3)
    where = {p: s for s, v in splits.items() for p, _ in v}
    assert sorted(where) == sorted(p for p, _ in items)
    for g in set(groups.values()):
        assert len({where[p] for p, gg in groups.items() if gg == g}) == 1
    assert all(counts_ for counts_ in (Counter(lab for _, lab in splits["training"]).values()))
    with pytest.raises(ValueError, match="is in both the training and the test split"):
        make_datalist({"training": [("/x/a.png", 0), ("/x/b.png", 1)], "test": [("/x/a.png", 0)]}, ["a", "b"])
    # the same file under another spelling is the same image
    with pytest.raises(ValueError, match=r"is in both the training \(as '/x/a.png'\) and the test split"):
        make_datalist({"training": [("/x/a.png", 0), ("/x/b.png", 1)], "test": [("/x/../x/a.png", 0)]}, ["a", "b"])
    with pytest.raises(ValueError, match="single class"):
        make_datalist({"training": [("/x/a.png", 0)]}, ["a"])
