"""Training of our networks per a config's task: AdamW, warmup + cosine, checkpoints, exact resume.

Tasks (``TrainConfig.task``): ``unsuperpoint``, self-supervised UnsuperPoint (paper section 2) on
siamese homography pairs of photos; ``magicpoint``, the SuperPoint detector on Synthetic Shapes
(cell-wise cross-entropy); ``superpoint``, SuperPoint on photo pairs with the pseudo-labels of
Homographic Adaptation (cross-entropy on both views plus the descriptor hinge loss). The datasets
and losses differ; the loop, checkpoints, validation and resume are the same.

One ``Trainer`` runs on one device; under ``torchrun`` each process builds one, after
``setup_distributed``, and the model is wrapped in DistributedDataParallel. Rank 0 alone logs, shows
progress, writes TensorBoard events and checkpoints.

Exact resume: a sample is a pure function of its global index (see ``usp_core.training.data``) and the
training sampler restarts at ``step * batch_size * world_size``; the checkpoint carries model,
optimizer, scheduler, GradScaler and RNG state. On CPU a resumed run reproduces the losses of an
uninterrupted one bit for bit (tested); on CUDA, up to the nondeterminism of cuDNN kernels.

Both images of a pair go through the network in one forward pass (batch 2B), so BatchNorm
normalises them with shared statistics, and DDP sees one forward per step. Losses are computed in
float32 outside autocast: the correspondence search works on pixel distances that bf16 would round
to ~1 px.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from usp_core.inference.weights import load_network, resolve_weights
from usp_core.models.build import build_model
from usp_core.models.layers import DenseOutput, TrainingMaps
from usp_core.models.unsuperpoint import UnsuperPoint
from usp_core.support.atomic import remove_stale_temp_files
from usp_core.support.checkpoint import CheckpointError, compact_state, load_checkpoint, model_weights, save_checkpoint
from usp_core.support.device import resolve_device
from usp_core.support.errors import first_line
from usp_core.training.config import TrainConfig, save_config, to_dict
from usp_core.training.data import HomographyPairDataset, ImageFolder, InfiniteSampler
from usp_core.training.dense_losses import dense_losses
from usp_core.training.losses import distillation_loss, unsuperpoint_loss
from usp_core.training.superpoint_data import LabelledPairDataset, SyntheticShapesDataset
from usp_core.training.superpoint_losses import point_loss, superpoint_loss

__all__ = ["Trainer", "setup_distributed", "cleanup_distributed", "lr_factor"]

logger = logging.getLogger(__name__)

SYNTHETIC_SAMPLES = 1_000_000  # Synthetic Shapes per epoch (each index renders its own image)
VALIDATION_SEED_OFFSET = 7919  # validation pairs use seed + this, so they never coincide with training pairs
CONFIG_KEYS_FREE_ON_RESUME = ("data_dir", "labels_dir", "num_workers", "steps", "val_interval", "checkpoint_interval",
                              "snapshot_interval", "log_interval")


def setup_distributed(device: str = "auto") -> str:
    """Join the torchrun process group when WORLD_SIZE > 1; returns this process's device string.

    Uses NCCL with one GPU per process (``cuda:LOCAL_RANK``) on CUDA, else gloo on CPU.
    Without torchrun it returns ``device`` unchanged.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    use_cuda = resolve_device(device).type == "cuda"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    return "cpu"


def cleanup_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based): linear warmup, then cosine."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _split_branches(output: TrainingMaps, batch: int) -> tuple[TrainingMaps, TrainingMaps]:
    """TrainingMaps of 2B images -> (first B, last B), cast to float32."""
    def part(rows: slice) -> TrainingMaps:
        fine = None if output.fine is None else output.fine[rows].float()
        return TrainingMaps(DenseOutput(*(t[rows].float() for t in output.dense)), output.score_logit[rows].float(),
                            fine, tuple(source[rows].float() for source in output.descriptor_sources))

    return part(slice(None, batch)), part(slice(batch, None))


def loss_scores(maps: TrainingMaps, standardise: bool) -> DenseOutput:
    """The DenseOutput that L_usp reads: with ``standardise``, scores sigmoid((logit - mean) / std) (B, 1, h, w),
    mean and std over each image's cells; the rest as inferred.

    They rank the cells as inference does, and no scale of the logits saturates them: L_usp's score terms keep
    their gradient on the cells near the top-k boundary, which sigmoid(logit) saturates as training pushes the
    logits apart (``LossConfig.score_standardise``). A fixed temperature, sigmoid(logit / T), does not: the
    network scales its logits up by about T and the scores it infers tie at 1.0 (docs/training.md "Session 11").
    """
    if not standardise:
        return maps.dense
    logit = maps.score_logit
    mean, std = logit.mean(dim=(1, 2, 3), keepdim=True), logit.std(dim=(1, 2, 3), keepdim=True)
    return maps.dense._replace(score=torch.sigmoid((logit - mean) / std.clamp(min=1e-3)))


def _modules(keys: set[str], other: set[str]) -> str:
    """State-dict keys that ``other`` lacks -> the largest modules wholly absent from ``other``, comma-separated.

    E.g. v3 weights into the lite network: "backbone.to_eighth.1.2" (a dropped conv block), not "backbone".
    """
    prefixes = {part for key in other for part in _prefixes(key)}
    return ", ".join(sorted({next(p for p in _prefixes(key) if p not in prefixes) for key in keys}))


def _prefixes(key: str) -> list[str]:
    """"a.b.c" -> ["a", "a.b", "a.b.c"]."""
    parts = key.split(".")
    return [".".join(parts[:count]) for count in range(1, len(parts) + 1)]


class Trainer:
    """Trains the network of a ``TrainConfig``'s task, writing ``last.pt``/``best.pt`` under ``out_dir``.

    The constructor builds the model (seeded, without touching the global RNG), optimizer and
    schedule; nothing is read from or written to disk until ``train``/``validate``/``resume``.
    ``history`` holds one dict of float loss terms per completed step of this process's run.
    """

    def __init__(self, config: TrainConfig, out_dir: str | Path, device: str | torch.device = "auto",
                 progress: bool = True):
        self.config = config
        self.out_dir = Path(out_dir)
        self.device = resolve_device(device)
        self.progress = progress
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.is_main = self.rank == 0
        self.step = 0
        self.best_val_loss = math.inf
        self.init_from: str | None = None  # the checkpoint whose weights started the run (fine-tuning)
        self.campaign_path: Path | None = None  # also keep this compact copy of last.pt (see compact_state)
        self.history: list[dict[str, float]] = []

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = build_model(config.model).to(self.device)
        self.teacher = self._load_teacher(config.distill.teacher)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.optimizer.lr, betas=tuple(config.optimizer.betas),
            weight_decay=config.optimizer.weight_decay,
        )
        total, warmup, floor = config.steps, config.schedule.warmup_steps, config.schedule.min_lr_ratio
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total, warmup, floor)
        )
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self._network: nn.Module = self.model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._network = DistributedDataParallel(self.model, device_ids=ids)
        self._datasets: tuple[Dataset, Dataset | None] | None = None

    def _load_teacher(self, name: str) -> UnsuperPoint | None:
        """The frozen eval-mode teacher of ``config.distill`` on the device, or None when distillation is off.

        ``name``: a checkpoint path, "bundled" or the name of a shipped model. Raises CheckpointError.
        """
        if not name:
            return None
        teacher = load_network(name)
        if teacher.config.descriptor_dim != self.config.model.descriptor_dim:
            raise CheckpointError(f"the teacher {resolve_weights(name)} has {teacher.config.descriptor_dim}-d "
                                  f"descriptors, the model {self.config.model.descriptor_dim}-d")
        return teacher.requires_grad_(False).to(self.device)

    def _amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None. AMP runs on CUDA only; on CPU a requested mode is ignored."""
        mode = self.config.amp
        if mode == "none":
            return None
        if self.device.type != "cuda":
            if mode != "auto":
                logger.warning("amp=%s ignored: mixed precision is used on CUDA only", mode)
            return None
        if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    # data

    def prepare_data(self) -> tuple[Dataset, Dataset | None]:
        """The task's (training, validation) datasets, built once; validation is None without held-out photos.

        Photo tasks split the photos of data_dir; magicpoint renders Synthetic Shapes (training and
        validation from different seeds). Called by ``train``/``validate``; call it first to surface
        data errors early. Raises FileNotFoundError (no folder), ValueError (no data_dir, no readable
        image) or usp_core.training.superpoint_data.LabelError (a photo without pseudo-labels).
        """
        if self._datasets is None:
            c = self.config
            if not c.reads_photos:
                self._datasets = (self._synthetic(c.seed, SYNTHETIC_SAMPLES),
                                  self._synthetic(c.seed + VALIDATION_SEED_OFFSET, c.val_batches * c.batch_size))
                return self._datasets
            if not c.data_dir:
                raise ValueError("no training data folder: set data_dir in the config or pass --data")
            train, val = ImageFolder(c.data_dir).split(c.val_fraction, c.seed)
            self._datasets = (self._pairs(train, c.seed),
                              self._pairs(val, c.seed + VALIDATION_SEED_OFFSET) if len(val) else None)
            if self.is_main:
                logger.info("data: %d training and %d validation photos under %s", len(train), len(val), c.data_dir)
        return self._datasets

    def _synthetic(self, seed: int, length: int) -> SyntheticShapesDataset:
        c = self.config
        return SyntheticShapesDataset(c.synthetic, tuple(c.image_size), c.homography, c.photometric, seed=seed,
                                      length=length)

    def _pairs(self, folder: ImageFolder, seed: int) -> Dataset:
        """The photo pairs of the task: plain (unsuperpoint) or with pseudo-labels (superpoint)."""
        c = self.config
        if c.task == "superpoint":
            return LabelledPairDataset(folder, c.labels_dir, tuple(c.image_size), c.homography, c.photometric,
                                       seed=seed, crop=c.crop)
        return HomographyPairDataset(folder, tuple(c.image_size), c.homography, c.photometric, seed=seed,
                                     crop=c.crop)

    def _train_batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        dataset, _ = self.prepare_data()
        sampler = InfiniteSampler(len(dataset), seed=self.config.seed,
                                  start=self.step * self.config.batch_size * self.world_size,
                                  rank=self.rank, world_size=self.world_size)
        loader = DataLoader(dataset, batch_size=self.config.batch_size,
                            sampler=sampler, num_workers=self.config.num_workers, drop_last=True,
                            pin_memory=self.device.type == "cuda")
        return iter(loader)

    def _validation_loader(self) -> DataLoader | None:
        _, dataset = self.prepare_data()
        if dataset is None:
            return None
        samples = Subset(dataset, range(self.config.val_batches * self.config.batch_size))
        sampler = None
        if self.world_size > 1:
            sampler = DistributedSampler(samples, self.world_size, self.rank, shuffle=False)
        return DataLoader(samples, batch_size=self.config.batch_size, sampler=sampler,
                          num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda")

    # steps

    def _losses(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """The task's loss terms for a batch of its dataset; "total" is what is minimised."""
        batch = tuple(t.to(self.device, non_blocking=True) for t in batch)
        if self.config.task == "magicpoint":
            return self._magicpoint_losses(*batch)
        if self.config.task == "superpoint":
            return self._superpoint_losses(*batch)
        return self._unsuperpoint_losses(*batch)

    def _magicpoint_losses(self, images: torch.Tensor, labels: torch.Tensor,
                           valid: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cell-wise cross-entropy: images (B, 1, H, W), labels and valid (B, H/8, W/8)."""
        with self._autocast():
            logits, _ = self._network(images, raw=True)
        points = point_loss(logits, labels, valid)
        return {"total": points, "points": points}

    def _superpoint_losses(self, image_a: torch.Tensor, image_b: torch.Tensor, h_ab: torch.Tensor,
                           labels_a: torch.Tensor, labels_b: torch.Tensor,
                           valid_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """SuperPoint's loss on pairs: images (B, 1, H, W), H_ab (B, 3, 3), labels and valid_b (B, H/8, W/8)."""
        batch = image_a.shape[0]
        with self._autocast():
            logits, descriptors = self._network(torch.cat([image_a, image_b]), raw=True)
        return superpoint_loss(logits[:batch], logits[batch:], descriptors[:batch], descriptors[batch:],
                               labels_a, labels_b, valid_b, h_ab.float(), self.config.superpoint)

    def _unsuperpoint_losses(self, image_a: torch.Tensor, image_b: torch.Tensor,
                             h_ab: torch.Tensor) -> dict[str, torch.Tensor]:
        """UnsuperPoint's loss terms for image_a, image_b (B, 1, H, W), H_ab (B, 3, 3), plus score stats."""
        images = torch.cat([image_a, image_b])
        with self._autocast():
            output = self._network(images, training=True, position_fit=self.config.loss.position_fit)
        maps_a, maps_b = _split_branches(output, image_a.shape[0])
        out_a, out_b = maps_a.dense, maps_b.dense
        c = self.config.loss
        losses = unsuperpoint_loss(loss_scores(maps_a, c.score_standardise), loss_scores(maps_b, c.score_standardise),
                                   h_ab.float(), tuple(self.config.image_size), c)
        if c.a_reprojection or c.a_peakiness or c.a_dense_desc:
            dense = dense_losses(maps_a, maps_b, self.model.point_descriptors, h_ab.float(), c.reprojection_radius,
                                 c.reprojection_fraction, c.dense_temperature, c.dense_exclusion_radius,
                                 c.dense_desc_fraction, c.position_fit)
            losses.update(dense)
            losses["total"] = (losses["total"] + c.a_dense_desc * dense["dense_desc"]
                               + c.a_reprojection * dense.get("reprojection", 0.0)
                               + c.a_peakiness * dense.get("peakiness", 0.0))
        if self.teacher is not None:
            losses.update(self._distillation_terms(images, output.dense))
            losses["total"] = losses["total"] + losses["distill"]
        scores = torch.cat([out_a.score, out_b.score]).detach()
        losses["score_mean"] = scores.mean()
        losses["score_std"] = scores.std()
        return losses

    def _distillation_terms(self, images: torch.Tensor, output: DenseOutput) -> dict[str, torch.Tensor]:
        """The distillation terms of the model's output on images (2B, C, H, W) against the frozen teacher's."""
        with torch.no_grad(), self._autocast():
            target = self.teacher(images)
        return distillation_loss(DenseOutput(*(t.float() for t in output)), target, self.config.distill)

    def train_step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """One optimizer step on a batch; returns the detached loss terms (tensors on the device)."""
        self._network.train()
        losses = self._losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        if self.config.optimizer.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            losses["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                                 self.config.optimizer.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return {name: value.detach() for name, value in losses.items()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss terms over the fixed validation pairs (all ranks take part). Empty without a split."""
        loader = self._validation_loader()
        if loader is None:
            return {}
        self._network.eval()
        sums: dict[str, torch.Tensor] = {}
        count = torch.zeros((), device=self.device)
        for batch in loader:
            size = batch[0].shape[0]
            for name, value in self._losses(batch).items():
                sums[name] = sums.get(name, torch.zeros((), device=self.device)) + value.float() * size
            count += size
        self._network.train()
        names = sorted(sums)
        totals = torch.stack([sums[n] for n in names] + [count])
        if self.world_size > 1:
            dist.all_reduce(totals)
        return {n: (totals[i] / totals[-1]).item() for i, n in enumerate(names)}

    # checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume; every entry loads with ``torch.load(weights_only=True)``."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "config": to_dict(self.config),
            "seed": self.config.seed,
            "best_val_loss": self.best_val_loss,
            "init_from": self.init_from,
            "rng": rng,
        }

    def save(self, name: str = "last.pt") -> Path | None:
        """Write a checkpoint under out_dir atomically (rank 0 only; returns its path, None elsewhere).

        With ``campaign_path`` set, every ``last.pt`` is also written there in compact form.
        """
        if not self.is_main:
            return None
        state = self.state_dict()
        if self.campaign_path is not None and name == "last.pt":
            save_checkpoint(self.campaign_path, compact_state(state))
        return save_checkpoint(self.out_dir / name, state)

    def save_snapshot(self) -> Path | None:
        """Write the model weights of this step to out_dir/snapshots/step_N.pt (rank 0; None elsewhere).

        A snapshot holds ``model``, ``config``, ``step`` and ``seed``: what ``usp-eval --weights`` and
        ``KeypointDetector.from_pretrained`` read, so checkpoints can be chosen by evaluation.
        """
        if not self.is_main:
            return None
        state = {"model": self.model.state_dict(), "config": to_dict(self.config), "step": self.step,
                 "seed": self.config.seed}
        return save_checkpoint(self.out_dir / "snapshots" / f"step_{self.step:06d}.pt", state)

    def resume(self, path: str | Path) -> int:
        """Restore a checkpoint written by ``save``; training continues at its step, which is returned."""
        state = load_checkpoint(path, map_location="cpu")
        self._warn_config_changes(state.get("config", {}))
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise CheckpointError(f"cannot resume from {path}: it does not fit this config "
                                  f"({first_line(error)})") from error
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.init_from = state.get("init_from")
        self.best_val_loss = float(state.get("best_val_loss", math.inf))
        rng = state.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        if self.is_main:
            logger.info("resumed from %s at step %d", path, self.step)
        return self.step

    def initialize_from(self, path: str | Path) -> None:
        """Start from the model weights of a checkpoint (training or exported, fp16 too): fine-tuning.

        Only the weights are taken: step, optimizer, schedule and RNG start afresh. Weights of modules
        the other model lacks are left as initialised (a new head on a trained backbone, e.g. v2 -> v3:
        the log names them). Raises CheckpointError when the file is unusable, shares no weight with
        the model, or holds a weight of another size.
        """
        weights = model_weights(load_checkpoint(path, map_location="cpu"), path)
        own = self.model.state_dict()
        shared = {key: value for key, value in weights.items() if key in own}
        misfit = [key for key, value in shared.items() if not torch.is_tensor(value) or value.shape != own[key].shape]
        if not shared or misfit:
            reason = f"size mismatch for {misfit[0]}" if misfit else "no weight of it is in this model"
            raise CheckpointError(f"cannot initialise from {path}: it does not fit this config ({reason})")
        self.model.load_state_dict(shared, strict=False)
        self.init_from = str(path)
        if self.is_main:
            new, unused = _modules(set(own) - set(shared), set(weights)), _modules(set(weights) - set(own), set(own))
            logger.info("initialised the model from %s%s%s", path, f"; new: {new}" if new else "",
                        f"; not used: {unused}" if unused else "")

    def _warn_config_changes(self, saved: dict[str, Any]) -> None:
        current = to_dict(self.config)
        for key in sorted(set(saved) | set(current)):
            if key not in CONFIG_KEYS_FREE_ON_RESUME and saved.get(key) != current.get(key):
                logger.warning("resuming with a different config: %s was %r, now %r",
                               key, saved.get(key), current.get(key))

    # the loop

    def train(self, max_steps: int | None = None, time_limit: float | None = None) -> dict[str, float]:
        """Train until ``config.steps`` (or ``max_steps`` total steps, or ``time_limit`` seconds of this call).

        Logs every ``log_interval`` steps (also to out_dir/metrics.jsonl, one JSON object per line),
        validates every ``val_interval`` (keeping ``best.pt``), writes ``last.pt`` every
        ``checkpoint_interval`` steps and on exit, and a weight snapshot every ``snapshot_interval``.
        Returns the last validation metrics (empty when none ran).
        """
        target = min(self.config.steps, max_steps) if max_steps is not None else self.config.steps
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            folders = [self.out_dir, self.out_dir / "snapshots"]  # what killed runs' checkpoint writes left
            if self.campaign_path is not None:
                folders.append(Path(self.campaign_path).parent)
            for folder in folders:
                remove_stale_temp_files(folder)
            save_config(self.config, self.out_dir / "config.yaml")
        writer = self._summary_writer()
        batches = self._train_batches()
        started = time.monotonic()
        pending: list[dict[str, torch.Tensor]] = []
        metrics: dict[str, float] = {}
        bar = tqdm(total=target, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=None if self.progress and self.is_main else True)  # None: off when not a TTY
        saved_step = self.step
        try:
            while self.step < target:
                pending.append(self.train_step(next(batches)))
                bar.update(1)
                finished = self.step >= target
                timed_out = self._time_is_up(started, time_limit)
                if self.step % self.config.log_interval == 0 or finished or timed_out:
                    bar.set_postfix(loss=f"{self._flush(pending, writer):.4f}")
                    pending = []
                if self.step % self.config.val_interval == 0 or self.step == self.config.steps:
                    metrics = self._validate_and_keep_best(writer)
                if self.step % self.config.checkpoint_interval == 0:
                    self.save("last.pt")
                    saved_step = self.step
                if self.config.snapshot_interval and self.step % self.config.snapshot_interval == 0:
                    self.save_snapshot()
                if timed_out:
                    if self.is_main:
                        logger.info("time limit of %g s reached at step %d", time_limit, self.step)
                    break
        finally:
            bar.close()
            del batches
            if writer is not None:
                writer.close()
        if self.step != saved_step:
            self.save("last.pt")
        return metrics

    def _time_is_up(self, started: float, time_limit: float | None) -> bool:
        """Whether ``time_limit`` seconds have passed since ``started``, as rank 0 sees it (all ranks agree)."""
        if time_limit is None:
            return False
        flag = torch.tensor(float(time.monotonic() - started >= time_limit), device=self.device)
        if self.world_size > 1:
            dist.broadcast(flag, src=0)
        return bool(flag.item())

    def _flush(self, pending: list[dict[str, torch.Tensor]], writer) -> float:
        """Move pending step losses to ``history`` and log their mean over the window (and over ranks).

        Returns the mean total; raises FloatingPointError (on every rank alike) when it is not finite.
        """
        names = list(pending[0])
        values = torch.stack([torch.stack([p[n].float() for n in names]) for p in pending]).cpu()
        first_step = self.step - len(pending) + 1
        for offset, row in enumerate(values.tolist()):
            self.history.append({"step": first_step + offset, **dict(zip(names, row))})
        window = values.mean(0).to(self.device)
        if self.world_size > 1:
            dist.all_reduce(window)
            window /= self.world_size
        mean = dict(zip(names, window.tolist()))
        if not math.isfinite(mean["total"]):
            raise FloatingPointError(f"training loss became non-finite by step {self.step}")
        self._record("train", {**mean, "lr": self.scheduler.get_last_lr()[0]}, writer)
        return mean["total"]

    def _record(self, split: str, values: dict[str, float], writer) -> None:
        """On rank 0: log ``values``, add them to TensorBoard, and append a line to out_dir/metrics.jsonl."""
        if not self.is_main:
            return
        logger.info("%s step %d | %s", split, self.step, " ".join(f"{n} {v:.4g}" for n, v in values.items()))
        if writer is not None:
            for name, value in values.items():
                writer.add_scalar(f"{split}/{name}", value, self.step)
        with open(self.out_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps({"split": split, "step": self.step, **values}) + "\n")

    def _validate_and_keep_best(self, writer) -> dict[str, float]:
        metrics = self.validate()
        if not metrics or not self.is_main:
            return metrics
        self._record("val", metrics, writer)
        if metrics["total"] < self.best_val_loss:
            self.best_val_loss = metrics["total"]
            self.save("best.pt")
        return metrics

    def _summary_writer(self):
        """A TensorBoard SummaryWriter under out_dir/tensorboard on rank 0, when tensorboard is installed."""
        if not self.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("tensorboard is not installed; losses go to the log only")
            return None
        return SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))
