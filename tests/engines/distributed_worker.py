"""One process of the distributed tests (``tests/engines/test_distributed.py``), started by ``torchrun``.

``python -m torch.distributed.run [torchrun options] tests/engines/distributed_worker.py SCENARIO OUT`` trains tiny
networks on CPU with gloo through :func:`~monai_cilmp.engines.create_trainer`, with the loaders a distributed run
uses (a ``DistributedSampler`` of the global batch divided by the world size for training, a
:class:`~monai_cilmp.engines.distributed.ShardSampler` for validation), and writes what the test compares to ``OUT``:

- ``equivalence``: CILMP, Tip-Adapter-F, LP++ and a linear probe (the last three fitted from the training features),
  2 epochs each without augmentation or dropout: ``OUT/<method>.pt`` holds the trained state, the per-step losses
  every rank computed and the loss the trainer's handlers saw;
- ``streams``: CILMP with random augmentation: what each rank drew at each epoch start (``OUT/streams.pt``);
- ``small-validation``: one epoch with a 3-image validation set: the validation metrics and the same metrics
  computed directly on the 3 images (``OUT/validation.pt``);
- ``nonfinite``: CILMP whose loss rank 1 alone turns NaN at the second step: every rank stops with the same
  :class:`~monai_cilmp.handlers.NonFiniteError` sentence (``OUT/nonfinite<rank>.txt``), none waits for another;
- ``elastic``: CILMP for 3 epochs, resuming from ``last.pt`` when there is one; rank 1 is killed once during
  epoch 2, so ``torchrun --max-restarts`` restarts every worker, which resume from epoch 1.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Events
from monai.data import DataLoader, Dataset, DistributedSampler
from monai.engines.utils import IterationEvents
from monai.transforms import Compose, RandFlipd, RandGaussianNoised

from monai_cilmp.engines import (
    TrainingRecipe,
    cached_feature_loader,
    create_evaluator,
    create_trainer,
    end_process_group,
)
from monai_cilmp.engines.distributed import ShardSampler
from monai_cilmp.knowledge import KnowledgeBank
from monai_cilmp.networks import CILMP, load_backbone
from monai_cilmp.networks.nets import LinearProbe, LPPlusPlus, TipAdapter

CLASSES = ["bright", "dark"]
GLOBAL_BATCH = 4
#: ``cuda`` (``DISTRIBUTED_TEST_DEVICE``): one GPU per process, NCCL, fp32 (the GPU module's 2-GPU case)
ON_GPU = os.environ.get("DISTRIBUTED_TEST_DEVICE", "cpu") == "cuda"


def device() -> torch.device:
    return torch.device(f"cuda:{os.environ['LOCAL_RANK']}") if ON_GPU else torch.device("cpu")


def toy_data(n: int, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        label = i % 2
        image = torch.randn(3, 64, 64, generator=generator) * 0.3 + (1.0 if label == 0 else -1.0)
        items.append({"image": image, "label": label})
    return items


def knowledge() -> KnowledgeBank:
    generator = torch.Generator().manual_seed(0)
    return KnowledgeBank.from_tensors(
        {c: torch.randn(n, 16, generator=generator) for c, n in zip(CLASSES, (5, 7))},
        source_model="random",
        mode="tokens",
        layer=-1,
        texts={c: f"a description of {c}" for c in CLASSES},
    )


def network(method: str, dropout: float = 0.1) -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial network on every rank and in every run
    backbone = load_backbone("CILMP-Tiny", None)
    if method == "cilmp":
        return CILMP(CLASSES, knowledge(), backbone, text_prompt_depth=2, vision_prompt_depth=2, dropout=dropout)
    if method == "tip-adapter-f":
        return TipAdapter(CLASSES, backbone, None, fine_tune=True)
    if method == "lp++":
        return LPPlusPlus(CLASSES, backbone, None)
    return LinearProbe(CLASSES, backbone)


def recipe(**changes) -> TrainingRecipe:
    base = dict(lr=0.05, max_epochs=2, warmup_epochs=1, warmup_lr=0.01, batch_size=GLOBAL_BATCH, gpa_std=2.0, seed=7)
    return TrainingRecipe(**{**base, **changes})


def per_rank_batch() -> int:
    if GLOBAL_BATCH % dist.get_world_size():
        raise SystemExit(f"global batch {GLOBAL_BATCH} does not divide over {dist.get_world_size()} processes")
    return GLOBAL_BATCH // dist.get_world_size()


def train_loader(dataset) -> DataLoader:
    sampler = DistributedSampler(dataset, even_divisible=True, shuffle=True, seed=7)
    return DataLoader(dataset, batch_size=per_rank_batch(), sampler=sampler, num_workers=0)


def val_loader(dataset) -> DataLoader:
    return DataLoader(dataset, batch_size=2, sampler=ShardSampler(dataset), num_workers=0)


def record_losses(trainer) -> dict[str, list[float]]:
    """Every rank's own loss per step (before the trainer reduces it for logging) and the loss its handlers see."""
    seen: dict[str, list[float]] = {"local": [], "logged": []}

    def local(engine) -> None:
        seen["local"].append(float(engine.state.output["loss"]))

    def logged(engine) -> None:
        output = engine.state.output
        seen["logged"].append(float((output[0] if isinstance(output, list) else output)["loss"]))

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, local)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, logged)
    return seen


def equivalence(out: Path, methods: str = "cilmp,tip-adapter-f,lp++,linear-probe") -> None:
    for method in methods.split(","):
        net = network(method, dropout=0.0)  # each rank draws its own dropout masks: off, to compare with one process
        images = Dataset(toy_data(16))
        if method == "cilmp":
            loader = train_loader(images)
        else:  # the methods of cached features: extracted from every rank's shard, gathered, sharded again
            sharded = DataLoader(images, batch_size=per_rank_batch(), sampler=ShardSampler(images), num_workers=0)
            loader = cached_feature_loader(net.to(device()), sharded, batch_size=per_rank_batch(), seed=7)
        validation = val_loader(Dataset(toy_data(5, 1)))
        trainer = create_trainer(
            net, loader, out / method, recipe(), val_loader=validation, device=device(), amp=False, progress=False
        )
        seen = record_losses(trainer)
        trainer.run()
        everyone: list = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, seen)
        if dist.get_rank() == 0:
            state = {k: v.detach().cpu().clone() for k, v in net.trainable_state_dict().items()}
            metrics = dict(trainer.evaluator.state.metrics)
            torch.save({"state": state, "losses": everyone, "val": metrics}, out / f"{method}.pt")


def streams(out: Path) -> None:
    augment = Compose([RandFlipd("image", prob=0.5, spatial_axis=1), RandGaussianNoised("image", prob=1.0, std=0.1)])
    net = network("cilmp")
    trainer = create_trainer(net, train_loader(Dataset(toy_data(8), augment)), out / "run", recipe(), progress=False)
    drawn: list[dict] = []

    def draw(engine) -> None:  # right after the trainer reseeds: the streams of this rank and epoch
        augmentation = engine.data_loader.dataset.transform.transforms[0]
        drawn.append(
            {"torch": torch.rand(4), "numpy": np.random.rand(4), "transform": augmentation.R.rand(4), "batch": None}
        )

    def first_batch(engine) -> None:
        if drawn[-1]["batch"] is None:
            drawn[-1]["batch"] = torch.as_tensor(engine.state.batch["image"]).as_subclass(torch.Tensor).clone()

    trainer.add_event_handler(Events.EPOCH_STARTED, draw)
    trainer.add_event_handler(Events.ITERATION_STARTED, first_batch)
    trainer.run()
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, drawn)
    if dist.get_rank() == 0:
        torch.save(everyone, out / "streams.pt")


def small_validation(out: Path) -> None:
    net = network("cilmp")
    validation = Dataset(toy_data(3, 1))
    training = train_loader(Dataset(toy_data(8)))
    trainer = create_trainer(net, training, out / "run", recipe(max_epochs=1), val_loader(validation), progress=False)
    trainer.run()
    metrics = dict(trainer.evaluator.state.metrics)
    # the same network, evaluated again on its own (every rank its shard), and the metrics from the 3 images directly
    again = create_evaluator(net, val_loader(validation), "cpu")
    again.run()
    with torch.no_grad():
        net.eval()
        images = torch.stack([item["image"] for item in validation])
        labels = torch.tensor([item["label"] for item in validation])
        logits = net(images).float()
    direct = {
        "val_accuracy": float((logits.argmax(1) == labels).float().mean()),
        "val_loss": float(torch.nn.functional.cross_entropy(logits, labels)),
    }
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, {"trainer": metrics, "evaluator": dict(again.state.metrics), "direct": direct})
    if dist.get_rank() == 0:
        torch.save(everyone, out / "validation.pt")


def nonfinite(out: Path) -> None:
    from monai_cilmp.handlers import NonFiniteError

    net = network("cilmp")
    trainer = create_trainer(net, train_loader(Dataset(toy_data(16))), out / "run", recipe(), progress=False)
    before = {k: v.detach().clone() for k, v in net.trainable_state_dict().items()}

    @trainer.on(IterationEvents.LOSS_COMPLETED)
    def poison(engine) -> None:  # the graph stays: the backward pass (and DDP's all-reduce) still runs on every rank
        if dist.get_rank() == 1 and engine.state.iteration == 2:
            engine.state.output["loss"] = engine.state.output["loss"] * float("nan")

    @trainer.on(IterationEvents.MODEL_COMPLETED)
    def remember(engine) -> None:
        before.update({k: v.detach().clone() for k, v in net.trainable_state_dict().items()})

    try:
        trainer.run()
        message = "no error"
    except NonFiniteError as e:
        message = str(e)
    changed = any(not torch.equal(before[k], v) for k, v in net.trainable_state_dict().items())
    (out / f"nonfinite{dist.get_rank()}.txt").write_text(f"{message}\nweights changed: {changed}\n")


def elastic(out: Path) -> None:
    """An uninterrupted run (once), then the same run, of which rank 1 is killed in epoch 2 on the first attempt."""

    def train(run: Path, kill: bool) -> dict:
        net = network("cilmp")
        resume = (run / "checkpoints" / "last.pt").exists()
        trainer = create_trainer(
            net, train_loader(Dataset(toy_data(16))), run, recipe(max_epochs=3), resume=resume, progress=False
        )
        killed = out / "killed"  # once: a restart that a loaded machine's slow start costs does not kill again
        if kill and not killed.exists() and dist.get_rank() == 1:

            @trainer.on(Events.ITERATION_STARTED)
            def die(engine) -> None:
                if engine.state.epoch == 2 and engine.state.iteration % engine.state.epoch_length == 2:
                    killed.touch()
                    os.kill(os.getpid(), signal.SIGKILL)

        trainer.run()
        return {"state": {k: v.detach().clone() for k, v in net.trainable_state_dict().items()}, "resumed": resume}

    if not (out / "reference.pt").exists():
        reference = train(out / "reference", kill=False)
        if dist.get_rank() == 0:
            torch.save(reference, out / "reference.pt")
        dist.barrier()
    interrupted = train(out / "interrupted", kill=True)
    if dist.get_rank() == 0:
        torch.save(interrupted, out / "elastic.pt")


SCENARIOS = {
    "equivalence": equivalence,
    "streams": streams,
    "small-validation": small_validation,
    "nonfinite": nonfinite,
    "elastic": elastic,
}

if __name__ == "__main__":
    scenario, out, *options = sys.argv[1:]
    if ON_GPU:
        torch.cuda.set_device(device())
    dist.init_process_group("nccl" if ON_GPU else "gloo")
    SCENARIOS[scenario](Path(out), *options)
    end_process_group()
    threads = Path("/proc/self/task")  # Linux: the threads' names
    if threads.is_dir() and not ON_GPU:
        names = [(task / "comm").read_text().strip() for task in threads.iterdir()]
        if any("gloo" in name for name in names):  # left for the interpreter's shutdown, they may abort the process
            raise SystemExit(f"Gloo's threads outlived the process group: {sorted(names)}")
