"""Published benchmarks' settings as data (``compare --benchmark``): the table, how it applies, the report."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from monai_cilmp.cli import main
from monai_cilmp.compare import Cell
from monai_cilmp.compare.benchmarks import benchmark_markdown, benchmark_settings, list_benchmarks, load_benchmarks
from monai_cilmp.data import get_dataset
from monai_cilmp.engines import TrainingRecipe, load_checkpoint
from monai_cilmp.networks.nets import LinearProbe, LPPlusPlus, TipAdapter, get_method

LABEL = "CILMP-Tiny (random)"


def test_every_entry_names_a_registered_method_and_options_it_takes():
    recipe_fields = {f.name for f in dataclasses.fields(TrainingRecipe)}
    searches = {  # the keywords of each method's search on validation (and the split's reduction, val_shots)
        TipAdapter: set(inspect.signature(TipAdapter.search_alpha_beta).parameters),
        LinearProbe: set(inspect.signature(LinearProbe.set_validation_features).parameters),
        LPPlusPlus: set(inspect.signature(LPPlusPlus.set_validation_features).parameters),
    }
    for name, entry in load_benchmarks().items():
        assert entry["title"] and entry["source"]
        sections = [entry["methods"], *(d.get("methods", {}) for d in entry.get("datasets", {}).values())]
        for methods in sections:
            for method, applied in methods.items():
                spec = get_method(method)  # raises on an unknown method
                accepted = set(inspect.signature(spec.network.__init__).parameters)
                assert set(applied.get("network", {})) <= accepted, (name, method)
                assert set(applied.get("recipe", {})) <= recipe_fields, (name, method)
                search_options = searches.get(spec.network, set()) - {"self", "features", "labels"} | {"val_shots"}
                assert set(applied.get("search", {})) <= search_options, (name, method)
                for fields in applied.get("recipe_by_shots", {}).values():
                    assert set(fields) <= recipe_fields, (name, method)
        for dataset, values in entry.get("datasets", {}).items():
            renamed = values.get("class_names", {})
            assert set(renamed) <= set(get_dataset(dataset).class_names), (name, dataset)


def test_biomedcoop_per_dataset_values_and_class_names():
    names = list(get_dataset("kvasir").class_names)
    settings = benchmark_settings("biomedcoop", ["coop", "kgcoop", "biomedcoop", "cilmp"], "kvasir", names)
    methods = settings["methods"]
    assert methods["coop"]["network"] == {"n_ctx": 4, "ctx_init": "a photo of a"}
    assert methods["coop"]["recipe"]["lr"] == 0.002 and methods["coop"]["recipe"]["batch_size"] == 32
    assert methods["kgcoop"]["network"]["kg_weight"] == 6.0  # KgCoOp's W for Kvasir
    weights = {k: methods["biomedcoop"]["network"][k] for k in ("sccm_weight", "kdsp_weight", "tau")}
    assert weights == {"sccm_weight": 0.75, "kdsp_weight": 0.75, "tau": 1.5}
    assert settings["class_names"] == {"normal z-line": "normal z line"}
    assert settings["not_in_benchmark"] == ["cilmp"]
    derma = benchmark_settings("biomedcoop", ["biomedcoop"], "dermamnist")
    assert derma["methods"]["biomedcoop"]["network"]["kdsp_weight"] == 20.0
    assert derma["class_names"]["melanocytic nevi"] == "melanocytic nevus"
    common = benchmark_settings("biomedcoop", ["biomedcoop"])  # no data set: only what every data set shares
    assert "sccm_weight" not in common["methods"]["biomedcoop"]["network"]
    text = benchmark_markdown(settings, {"max_epochs": 1})
    assert "| kgcoop |" in text and "kg_weight=6.0" in text and "normal z-line -> normal z line" in text
    assert "max_epochs=1" in text
    with pytest.raises(ValueError, match="biomedcoop"):
        benchmark_settings("biomedcop", ["coop"])
    assert {"biomedcoop", "coop", "cocoop", "maple", "promptsrc"} <= set(list_benchmarks())


def test_coop_epochs_per_shot_count_and_octmnist_names():
    """CoOp's scripts train 50 epochs at 1 shot, 100 at 2 and 4, 200 at 8 and 16 (COOP.md); BiomedCoOp prompts
    OCTMNIST's normal class as "normal OCT scan" (its prompt file's key)."""
    from monai_cilmp.compare.cells import CellContext

    settings = benchmark_settings("coop", ["coop", "coop-csc"])
    by_shots = settings["methods"]["coop"]["recipe_by_shots"]
    assert {k: v["max_epochs"] for k, v in by_shots.items()} == {"1": 50, "2": 100, "4": 100, "8": 200, "16": 200}
    assert settings["methods"]["coop-csc"]["recipe_by_shots"] == by_shots
    context = CellContext({}, None, None, None, None, TrainingRecipe(), {"coop": {"lr": 0.003}}, {"coop": by_shots})
    assert [context.recipe_for("coop", 1, k).max_epochs for k in (1, 2, 4, 8, 16)] == [50, 100, 100, 200, 200]
    assert context.recipe_for("coop", 1, 1).lr == 0.003  # a K the table lacks keeps the method's recipe:
    assert context.recipe_for("coop", 1, 3) == context.recipe_for("coop", 1)
    assert "1: max_epochs=50" in benchmark_markdown(settings)
    octmnist = benchmark_settings("biomedcoop", ["coop"], "octmnist", list(get_dataset("octmnist").class_names))
    assert octmnist["class_names"] == {"normal": "normal OCT scan"}


@pytest.mark.slow  # a comparison that trains CoOp, CLIP-Adapter and the probes
def test_compare_applies_a_benchmark_and_lists_it_in_the_report(tiny_data, tmp_path, capsys):
    argv = ["compare", "--datalist", tiny_data["datalist"], "--methods", "coop", "tip-adapter", "clip-adapter"]
    argv += ["linear-probe", "lp++"]
    argv += ["--shots", "2", "--seeds", "1", "--out", str(tmp_path), "--backbone", "CILMP-Tiny", "--pretrained"]
    argv += ["none", "--offline", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--benchmark", "biomedcoop"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Benchmark settings: BiomedCoOp" in printed
    coop = json.loads(Cell("coop", 2, 1, LABEL).record_path(tmp_path).read_text())
    assert coop["recipe"]["lr"] == 0.002 and coop["recipe"]["max_epochs"] == 1 and coop["recipe"]["batch_size"] == 4
    adapter = json.loads(Cell("clip-adapter", 2, 1, LABEL).record_path(tmp_path).read_text())
    assert adapter["recipe"]["lr"] == 0.01 and adapter["recipe"]["momentum"] == 0.0
    tip = json.loads(Cell("tip-adapter", 2, 1, LABEL).record_path(tmp_path).read_text())
    assert set(tip["alpha_beta_search"]) == {"alpha", "beta", "accuracy"}  # searched on the validation split
    final = load_checkpoint(Cell("tip-adapter", 2, 1, LABEL).directory(tmp_path) / "checkpoints" / "final.pt")
    searched = [tip["alpha_beta_search"]["alpha"], tip["alpha_beta_search"]["beta"]]
    assert final["network"]["alpha_beta"].tolist() == pytest.approx(searched)  # the run folder holds what was evaluated
    probe = json.loads(Cell("linear-probe", 2, 1, LABEL).record_path(tmp_path).read_text())
    fit = probe["fit_summary"]  # BiomedCoOp's C search on K validation images per class, recorded with the cell
    assert len(fit["trace"]) == 7 + 2 * 8 and fit["C"] in {t["C"] for t in fit["trace"][-2:]}
    lpp = json.loads(Cell("lp++", 2, 1, LABEL).record_path(tmp_path).read_text())["fit_summary"]
    assert len(lpp["losses"]) == 300 and lpp["val_accuracy"] is not None  # its own loop, best validation epoch
    report = (tmp_path / "results.md").read_text()
    assert "## Benchmark settings" in report and '| coop | n_ctx=4, ctx_init="a photo of a"' in report
    assert "ratio=0.5, renormalize=False" in report
    settings = json.loads((tmp_path / "comparison.json").read_text())
    assert settings["benchmark"]["benchmark"] == "biomedcoop"


def test_benchmark_class_names_reach_the_prompts_of_methods_without_a_bank(tiny_data):
    from monai_cilmp.compare import CellContext
    from monai_cilmp.networks import load_backbone

    from .conftest import CLASSES

    backbone = load_backbone("CILMP-Tiny", None, offline=True)
    context = CellContext(
        datalist={},
        backbone=backbone,
        test_loader=None,
        train_transforms=None,
        eval_transforms=None,
        recipe=None,
        descriptions=tiny_data["descriptions"],
        prompt_names={CLASSES[0]: "blue patch"},
        method_kwargs={"coop": {"n_ctx": 2}},
    )
    coop = context.build("coop", CLASSES)
    assert coop.class_names == ["blue patch", CLASSES[1]] and coop.n_ctx == 2
    # descriptions are looked up under the data set's names, the prompts read the benchmark's
    biomedcoop = context.build("biomedcoop", CLASSES)
    assert biomedcoop.class_names == ["blue patch", CLASSES[1]]
