"""Each baseline against its authors' code: logits, loss and gradients on a tiny random CLIP (fixture of
``scripts/fidelity.py``, which ran the original repositories; nothing of them is needed here)."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from monai_cilmp.handlers import GradientProjection
from monai_cilmp.networks import load_backbone
from monai_cilmp.networks.nets import build_method
from scripts.fidelity_setup import (
    CLASS_NAMES,
    FIDELITY_METHODS,
    LABELS,
    LP_PLUS_PLUS_EPOCHS,
    MODEL_CONFIG,
    PROBE_VALIDATION_LABELS,
    TEMPLATES,
    TIP_ADAPTER_F_SETTINGS,
    TIP_LABELS,
    gradient_summary,
    images,
    openai_state_dict,
    tip_search_images,
    trained_value,
)

FIXTURE = Path(__file__).parent / "data" / "fidelity.json"
#: the agreement asked of every figure: ``max |ours - theirs| <= TOLERANCE * max(1, max |theirs|)``
TOLERANCE = 1e-4
MODEL_NAME = "CILMP-Fidelity-Tiny"


def relative_error(ours, theirs) -> float:
    ours, theirs = torch.as_tensor(ours, dtype=torch.float64), torch.as_tensor(theirs, dtype=torch.float64)
    return ((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1.0)).item()


@pytest.fixture(scope="module")
def fixture():
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fidelity")
    (folder / f"{MODEL_NAME}.json").write_text(json.dumps(MODEL_CONFIG))
    open_clip.add_model_config(folder)
    weights = folder / "tiny-clip.pt"
    torch.save(openai_state_dict(), weights)
    return load_backbone(MODEL_NAME, str(weights), quick_gelu=True, offline=True)


def set_trained_values(net, params: dict, shapes: dict) -> None:
    """Every trained tensor set to the value the original's was set to (mapped by name and layer)."""
    ours = dict(net.named_parameters())
    with torch.no_grad():
        for original, (name, index) in params.items():
            value = trained_value(original, shapes[original])
            target = ours[name] if index is None else ours[name][index]
            target.copy_(value.view(target.shape))
    trained = {n for n, p in ours.items() if p.requires_grad}
    assert trained == {name for name, _ in params.values()}, "every trained tensor of ours has an original"


def test_fixture_covers_the_methods_and_is_small(fixture):
    assert set(fixture["methods"]) == set(FIDELITY_METHODS) | {"tip-adapter", "tip-adapter-f", "lp++", "linear-probe"}
    assert FIXTURE.stat().st_size < 1_000_000
    assert fixture["setup"]["class_names"] == CLASS_NAMES and fixture["setup"]["labels"] == LABELS


def run_ours(method: str, figures: dict, backbone, **options):
    """Our network of ``method`` on the fixed inputs and trained values: logits (eval), loss (train), network."""
    spec = FIDELITY_METHODS[method]
    name, kwargs = spec["ours"]
    torch.manual_seed(0)
    net = build_method(name, CLASS_NAMES, backbone, **{**kwargs, **options})
    set_trained_values(net, spec["params"], figures["shapes"])
    x, y = images(len(LABELS)), torch.tensor(spec.get("labels", LABELS))
    with torch.no_grad():
        logits = net.eval()(x)
    net.train()
    loss = F.cross_entropy(net(x), y)  # zero-shot CLIP too (no figure to compare)
    extra = net.regularization_loss()
    return logits, (loss if extra is None else loss + extra), net


@pytest.mark.parametrize("method", sorted(FIDELITY_METHODS))
def test_method_matches_its_original_code(method, fixture, backbone):
    figures, spec = fixture["methods"][method], FIDELITY_METHODS[method]
    logits, loss, net = run_ours(method, figures, backbone)
    assert relative_error(logits, figures["logits"]) <= TOLERANCE, "logits"
    if figures["loss"] is None:  # zero-shot CLIP: nothing trains
        return
    assert relative_error(loss.detach(), figures["loss"]) <= TOLERANCE, "loss"
    if spec.get("projected"):  # ProGrad: the engine's projection of the gradient off the guide's
        projection = GradientProjection(net)
        projection.guide_gradients()
        loss.backward()
        projection.project()
    else:
        loss.backward()
    grads = dict(net.named_parameters())
    for original, (ours, index) in spec["params"].items():
        grad = grads[ours].grad if index is None else grads[ours].grad[index]
        grad = grad.reshape(figures["shapes"][original])
        error = relative_error(gradient_summary(grad, original), figures["grads"][original])
        assert error <= TOLERANCE, f"gradient of {original}: {error:.2e}"


@pytest.mark.parametrize(
    "method, other_reading",
    [
        ("kgcoop", {"distance": "squared"}),  # the paper's equation: twice the code's regulariser
        ("promptsrc", {"normalize_templates": True}),  # mean of unit template embeddings
        ("maple", {"keep_init_words": False}),  # "[ctx ctx] {class}." without the code's "of a"
        ("clip-adapter", {"renormalize": False}),  # BiomedCoOp's reading, not gaopengcuhk/CLIP-Adapter's
        ("clip-adapter-biomedcoop", {"renormalize": True}),  # the other way round
        ("clip-adapter-biomedcoop", {"ratio": 0.2}),  # the original's ratio
    ],
)
def test_the_other_reading_does_not_match_the_code(method, other_reading, fixture, backbone):
    """The comparison can fail: the readings the code does not compute are told apart from it."""
    figures = fixture["methods"][method]
    logits, loss, _ = run_ours(method, figures, backbone, **other_reading)
    assert (
        max(relative_error(logits, figures["logits"]), relative_error(loss.detach(), figures["loss"])) > 3 * TOLERANCE
    )


def test_tip_adapter_search_and_logits_match_the_original(fixture, backbone):
    """Tip-Adapter's alpha/beta search (its ``search_hp``) and the logits at the chosen pair (fixed scale 100)."""
    figures = fixture["methods"]["tip-adapter"]
    net = build_method("tip-adapter", CLASS_NAMES, backbone, template=TEMPLATES[0]).eval()
    cache_labels, search_labels = torch.tensor(TIP_LABELS["cache"]), torch.tensor(TIP_LABELS["search"])
    with torch.no_grad():
        net.fit_training_features(net.encode_image(images(len(cache_labels), "cache")), cache_labels)
        search = tip_search_images()
        found = net.search_alpha_beta(search, search_labels, beta_scale=7, alpha_scale=3, beta_steps=40, alpha_steps=10)
        logits = net(search)
    assert (found["alpha"], found["beta"]) == pytest.approx((figures["alpha"], figures["beta"]), rel=1e-9)
    assert relative_error(logits, figures["logits"]) <= TOLERANCE


def tip_adapter_f_step(backbone, **recipe_changes):
    """Our Tip-Adapter-F (registry recipe) for one step on the fixed batch: loss, keys' gradient, update / lr."""
    import dataclasses

    from monai_cilmp.engines import TrainingRecipe, build_optimizer
    from monai_cilmp.networks.nets import get_method

    settings = TIP_ADAPTER_F_SETTINGS
    net = build_method(
        "tip-adapter-f", CLASS_NAMES, backbone, template=TEMPLATES[0], alpha=settings["init_alpha"],
        beta=settings["init_beta"],
    )  # fmt: skip
    cache_labels = torch.tensor(TIP_LABELS["cache"])
    with torch.no_grad():
        net.fit_training_features(net.encode_image(images(len(cache_labels), "cache")), cache_labels)
    recipe = dataclasses.replace(TrainingRecipe(), **{**get_method("tip-adapter-f").recipe_overrides, **recipe_changes})
    optimizer = build_optimizer(net.train(), recipe)
    loss = F.cross_entropy(net(images(len(LABELS))), torch.tensor(LABELS))
    optimizer.zero_grad()
    loss.backward()
    grad, before = net.cache_keys.grad.clone(), net.cache_keys.detach().clone()
    optimizer.step()
    return loss.detach(), grad, (net.cache_keys.detach() - before) / recipe.lr


def test_tip_adapter_f_training_step_matches_the_original(fixture, backbone):
    """One step of the authors' ``run_tip_adapter_F`` (AdamW on the cache keys) against ours with the registry
    recipe: the loss, the keys' gradient and their AdamW update (divided by the learning rate: order one, where the
    epsilon and the weight decay show)."""
    figures = fixture["methods"]["tip-adapter-f"]
    loss, grad, update = tip_adapter_f_step(backbone)
    assert list(grad.shape) == figures["shapes"]["adapter.weight"]
    assert relative_error(loss, figures["loss"]) <= TOLERANCE, "loss"
    grad_error = relative_error(gradient_summary(grad, "adapter.weight"), figures["grads"]["adapter.weight"])
    assert grad_error <= TOLERANCE, f"gradient {grad_error:.2e}"
    update_error = relative_error(gradient_summary(update, "adapter.weight"), figures["update_over_lr"])
    assert update_error <= TOLERANCE, f"update {update_error:.2e}"


@pytest.mark.parametrize("other", [{"eps": 1e-8}, {"weight_decay": 0.0}, {"optimizer": "sgd"}])
def test_tip_adapter_f_other_optimiser_does_not_match_the_code(other, fixture, backbone):
    """The update tells the code's AdamW (eps 1e-4, decay 0.01) from torch's default epsilon, no decay, or SGD."""
    _, _, update = tip_adapter_f_step(backbone, **other)
    figures = fixture["methods"]["tip-adapter-f"]
    assert relative_error(gradient_summary(update, "adapter.weight"), figures["update_over_lr"]) > 3 * TOLERANCE


def test_prograd_projection_is_triggered_and_needed(fixture, backbone):
    """The fixture's ProGrad step is one where the cross-entropy's gradient conflicts with the guide's (so the code's
    projection ran), the unprojected gradient does not match the code's, and the guide loss is the code's soft
    cross-entropy minus the teacher's entropy (ours logs the true KL)."""
    figures = fixture["methods"]["prograd"]
    _, loss, net = run_ours("prograd", figures, backbone)
    teacher = F.softmax(net._last[1], dim=-1)
    entropy = -(teacher * teacher.log()).sum(-1).mean()
    guide = net.guide_loss()
    assert relative_error((guide + entropy).detach(), figures["guide_loss"]) <= TOLERANCE
    (h,) = torch.autograd.grad(guide, [net.ctx], retain_graph=True)
    (g,) = torch.autograd.grad(loss, [net.ctx])
    assert torch.dot(g.flatten(), h.flatten()) < 0, "the projection is triggered"
    unprojected = relative_error(gradient_summary(g, "prompt_learner.ctx"), figures["grads"]["prompt_learner.ctx"])
    assert unprojected > 3 * TOLERANCE


@pytest.mark.parametrize("method", ["coop-middle", "coop-front"])
def test_class_token_positions_are_told_apart(method, fixture, backbone):
    """CoOp's middle and front class-token positions (matched above) differ from the class name at the end."""
    logits, _, _ = run_ours(method, fixture["methods"][method], backbone, class_token_position="end")
    assert relative_error(logits, fixture["methods"][method]["logits"]) > 3 * TOLERANCE


def test_lp_plus_plus_initialisation_and_logits_match_the_original(fixture, backbone):
    """BiomedCoOp's LP++: its ``compute_centroids`` (class sums) and ``calculate_init_alpha`` (own-class similarity)
    on the same features, and the logits of its formula at that initialisation (bias zero on both sides)."""
    figures = fixture["methods"]["lp++"]
    net = build_method("lp++", CLASS_NAMES, backbone, template=TEMPLATES[0]).eval()
    labels = torch.tensor(TIP_LABELS["cache"])
    with torch.no_grad():
        net.fit_training_features(net.encode_image(images(len(labels), "cache")), labels)
        logits = net(tip_search_images())
    weight, alpha = net.visual_weight.detach(), net.alpha.detach()
    assert relative_error(gradient_summary(weight, "centroids"), figures["centroids"]) <= TOLERANCE
    assert relative_error(alpha, torch.full_like(alpha, figures["alpha"])) <= TOLERANCE
    assert relative_error(logits, figures["logits"]) <= TOLERANCE
    # the other reading (class means, alpha over every class pair) is told apart
    shots = len(labels) // len(CLASS_NAMES)
    assert relative_error(gradient_summary(weight / shots, "centroids"), figures["centroids"]) > 3 * TOLERANCE


def test_lp_plus_plus_full_batch_training_matches_the_original(fixture, backbone):
    """``fit="full-batch"`` is BiomedCoOp's LP++ loop: the same step sizes (``calculate_lr_w``/``calculate_lr_alpha``),
    the same loss at every epoch (SGD with momentum on the weights, alpha moved every 10th epoch by its summed
    gradient) and the same training logits at the last epoch (both biases started at zero)."""
    figures = fixture["methods"]["lp++"]["training"]
    assert figures["epochs"] == LP_PLUS_PLUS_EPOCHS
    net = build_method("lp++", CLASS_NAMES, backbone, template=TEMPLATES[0], fit="full-batch", epochs=figures["epochs"])
    labels = torch.tensor(TIP_LABELS["cache"])
    with torch.no_grad():
        features = net.encode_image(images(len(labels), "cache"))
        net.set_validation_features(net.encode_image(tip_search_images()), torch.tensor(TIP_LABELS["search"]))
    net.fit_training_features(features, labels)
    summary = net.fit_summary
    assert relative_error(summary["lr_w"], figures["lr_w"]) <= TOLERANCE
    assert relative_error(summary["lr_alpha"], figures["lr_alpha"]) <= TOLERANCE
    assert relative_error(summary["losses"], figures["losses"]) <= TOLERANCE
    assert not net.trainable_parameters(), "its own loop trained it: the engine does not"
    # the last epoch's logits are those of the state after the step before it: rerun ours one epoch shorter
    shorter = build_method("lp++", CLASS_NAMES, backbone, template=TEMPLATES[0], fit="full-batch")
    shorter.epochs = figures["epochs"] - 1
    shorter.fit_training_features(features, labels)
    with torch.no_grad():
        logits = shorter(features)
    assert relative_error(logits, figures["last_logits"]) <= TOLERANCE
    # alpha's moves matter: without them the last logits are told apart
    still = build_method("lp++", CLASS_NAMES, backbone, template=TEMPLATES[0], fit="full-batch", alpha_interval=1000)
    still.epochs = figures["epochs"] - 1
    still.fit_training_features(features, labels)
    with torch.no_grad():
        assert relative_error(still(features), figures["last_logits"]) > 3 * TOLERANCE


#: BiomedCoOp's linear probe's fit compared: the C of its search where L-BFGS's stopping point does not move with the
#: features' float rounding (6e-6 here; at C = 1 it stops after 7 iterations at scikit-learn's tol 1e-4, and 1e-7
#: in the features moves the logits by up to 1.2e-4; at C >= 1e4 the six cache images are separable and the weights
#: grow until that tolerance stops them; at C <= 1e-2 the fit is the zero model to within 1e-9)
LINEAR_PROBE_COMPARED_C = (100.0,)


def test_linear_probe_features_and_fits_match_the_original(fixture, backbone):
    """BiomedCoOp's ``trainers/LP`` fits scikit-learn's L2 logistic regression (L-BFGS, C searched on validation
    images) on normalised CLIP image features. The features are our probe's, and the fit at the same C on our
    features, loaded into our probe's head, gives the original's weights, intercepts and test logits; there, the
    gradient of our training loss is that of the data term of the original's objective. (``linear-probe`` trains
    its head by SGD on the mean cross-entropy by default; ``fit="logistic"`` is the original's fit and C search:
    the next test.)"""
    from sklearn.linear_model import LogisticRegression

    figures = fixture["methods"]["linear-probe"]
    net = build_method("linear-probe", CLASS_NAMES, backbone).eval()
    labels = TIP_LABELS["cache"]
    with torch.no_grad():
        features = net.encode_image(images(len(labels), "cache"))
    assert relative_error(gradient_summary(features, "features"), figures["features"]) <= TOLERANCE, "features"
    raw = backbone.model.encode_image(images(len(labels), "cache")).detach()  # the other reading: not normalised
    assert relative_error(gradient_summary(raw, "features"), figures["features"]) > 3 * TOLERANCE
    fits = {fit["C"]: fit for fit in figures["fits"]}
    for c in LINEAR_PROBE_COMPARED_C:
        theirs = fits[c]
        fitted = LogisticRegression(solver="lbfgs", max_iter=1000, C=c).fit(features.double().numpy(), labels)
        with torch.no_grad():
            net.head.weight.copy_(torch.from_numpy(fitted.coef_))
            net.head.bias.copy_(torch.from_numpy(fitted.intercept_))
            logits = net(images())
        coef = torch.from_numpy(fitted.coef_)
        assert relative_error(gradient_summary(coef, "coef"), theirs["coef"]) <= TOLERANCE, f"weights at C={c}"
        assert relative_error(fitted.intercept_, theirs["intercept"]) <= TOLERANCE, f"intercepts at C={c}"
        assert relative_error(logits, theirs["test_logits"]) <= TOLERANCE, f"logits at C={c}"
        # our training loss at that fit: scikit-learn stops L-BFGS once the gradient of the mean cross-entropy plus
        # ||W||^2 / (2 C N) is below its tol 1e-4, so the gradient of ours (the mean cross-entropy of the head) is
        # -W / (C N) there, and the bias's is zero, to that tol; the summed cross-entropy is not
        net.zero_grad()
        F.cross_entropy(net.train()(features), torch.tensor(labels)).backward()
        penalty = coef.float() / (c * len(labels))
        assert (net.head.weight.grad + penalty).abs().max() <= 1e-4, f"weight gradient at C={c}"
        assert net.head.bias.grad.abs().max() <= 1e-4, f"bias gradient at C={c}"
        assert (net.head.weight.grad * len(labels) + penalty).abs().max() > 1e-3, "the summed reading"


#: L-BFGS's stopping point at these Cs moves with the features' float rounding (6e-6 here): at C = 1e6 the
#: logits agree to 1.8e-4 only (at C = 1, to 1.2e-4), so the search that ends there is compared to this looser bound
LINEAR_PROBE_ILL_CONDITIONED_C = {1e6: 5e-4, 1.0: 5e-4}


@pytest.mark.parametrize("run", ["fits", "probe_validation_fits"])
def test_linear_probe_logistic_search_matches_the_original(fixture, backbone, run):
    """``fit="logistic"`` is BiomedCoOp's ``trainers/LP`` (and CoOp's ``lpclip``): the same Cs fitted in the same
    order with the same validation accuracies (the seven decades, then the halvings of the range: on the second
    validation set the accuracies differ, so both branches are taken), the same C chosen, and the chosen fit's
    test logits."""
    figures = fixture["methods"]["linear-probe"][run]
    validation = tip_search_images() if run == "fits" else images(len(PROBE_VALIDATION_LABELS), "probe-validation")
    val_labels = TIP_LABELS["search"] if run == "fits" else PROBE_VALIDATION_LABELS
    net = build_method("linear-probe", CLASS_NAMES, backbone, fit="logistic", search_steps=2).eval()
    labels = torch.tensor(TIP_LABELS["cache"])
    with torch.no_grad():
        net.set_validation_features(net.encode_image(validation), torch.tensor(val_labels))
        net.fit_training_features(net.encode_image(images(len(labels), "cache")), labels)
        logits = net(images())
    trace = net.fit_summary["trace"]
    assert [t["C"] for t in trace] == [f["C"] for f in figures]  # exactly: the same arithmetic on the same Cs
    assert [t["val_accuracy"] for t in trace] == pytest.approx([f["val_accuracy"] for f in figures], abs=1e-8)
    chosen = net.fit_summary["C"]
    # the original's last step keeps one of its two fits: the one of the chosen C
    theirs = [f for f in figures[-2:] if f["C"] == chosen]
    assert theirs, f"C {chosen} is not one of the original's last two fits"
    bound = LINEAR_PROBE_ILL_CONDITIONED_C.get(chosen, TOLERANCE)
    assert relative_error(logits, theirs[0]["test_logits"]) <= bound
    assert net.trainable_state_dict()["logistic_C"].item() == chosen
    assert not net.trainable_parameters(), "the fitted head does not train"


def test_linear_probe_zero_shot_initialisation_is_the_original_zero_shot_classifier(fixture, backbone):
    """``linear-probe-zs`` (no original of its own) starts as zero-shot CLIP: its initial logits are those of CoOp's
    ``ZeroshotCLIP`` ("a photo of a {}."), and the random head's are not."""
    theirs = fixture["methods"]["zero-shot-template"]["logits"]
    torch.manual_seed(0)
    for name, matches in (("linear-probe-zs", True), ("linear-probe", False)):
        net = build_method(name, CLASS_NAMES, backbone).eval()
        with torch.no_grad():
            logits = net(images(len(LABELS)))
        assert (relative_error(logits, theirs) <= TOLERANCE) is matches, name
