"""One cell's training: standard or adversarial (a method of :mod:`medgrid.training.methods`: PGD-AT, TRADES,
fast FGSM-RS training), with an epsilon warm-up, the catastrophic-overfitting guard of the methods that have
one, and the epoch kept by validation balanced accuracy or a fixed budget."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from medgrid import __version__, models, train_method
from medgrid.attacks.steps import default_alpha
from medgrid.data import loading
from medgrid.errors import UserError
from medgrid.evaluation import health, metrics
from medgrid.evaluation.predict import predict
from medgrid.names import DEFAULT_METHOD, NO_CONSTRUCTION, SELECTIONS
from medgrid.seeding import seed_everything, training_seeds
from medgrid.training import guard as overfit
from medgrid.training import methods


@dataclass
class HParams:
    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"          # sgd (momentum, nesterov) | adam
    schedule: str = "cosine"        # cosine | step | constant
    weight_decay: float = 5e-4
    momentum: float = 0.9
    attack_steps: int = 7           # PGD steps per adversarial training batch
    attack_step_size: float | None = None   # None: 2.5 * eps / attack_steps
    stop_train_acc: float | None = None     # stop once an epoch's training accuracy reaches this
    selection: str | None = None            # "best_val" | "last"; None: best_val on original data, else last
    eps_warmup_epochs: int = 0      # adversarial training: ramp eps and the step size up over these epochs
    method: str = DEFAULT_METHOD    # adversarial training method (medgrid.training.methods)
    method_param: float | None = None  # the method's parameter (TRADES: beta); None: its default

    def alpha(self, eps: float) -> float:
        if self.attack_step_size is not None:
            return self.attack_step_size
        return default_alpha(eps, self.attack_steps)


def _optimizer(model, hp: HParams):
    if hp.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=hp.lr, momentum=hp.momentum,
                               nesterov=hp.momentum > 0, weight_decay=hp.weight_decay)
    if hp.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    raise ValueError(f"unknown optimizer {hp.optimizer!r}")


def _lr_factor(hp: HParams, progress: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1) of the whole run."""
    if hp.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if hp.schedule == "step":   # x0.1 at 50% and 75%, as in Madry's CIFAR runs
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    if hp.schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {hp.schedule!r}")


def selection_rule(hp: HParams, train_data: str) -> str:
    """Which epoch's weights a run keeps: ``best_val`` (best balanced accuracy on the validation split) or
    ``last``. A model trained on a constructed dataset keeps its last epoch (a fixed budget, as Ilyas et
    al.): the validation split of those files carries the task's true labels, which the experiment hides
    from that model (for D_det they are exactly the labelling it must not see)."""
    rule = hp.selection or ("best_val" if train_data == "original" else "last")
    if rule not in SELECTIONS:
        raise UserError(f"unknown epoch selection {rule!r}; valid: {', '.join(SELECTIONS)}")
    if rule == "best_val" and train_data != "original":
        raise UserError(f"a model trained on {train_data} cannot select its epoch on the validation split: its "
                        f"labels are the original ones the experiment hides; use --selection last (a fixed budget)")
    return rule


def warmup_factor(warmup_epochs: int, it: int, steps_per_epoch: int) -> float:
    """The fraction of the training epsilon (and PGD step size) at batch ``it`` (0-based, over the run).

    A linear ramp per batch over the first ``warmup_epochs`` epochs: batch ``it`` trains at
    (it + 1) / (warmup_epochs * steps_per_epoch) of epsilon, so the last batch of the warm-up and
    everything after it train at the full epsilon. Per batch rather than per epoch so epsilon grows
    smoothly, without a jump at every epoch boundary. 0 epochs: 1.0 throughout (no warm-up).
    """
    ramp = warmup_epochs * steps_per_epoch
    return 1.0 if ramp <= 0 else min(1.0, (it + 1) / ramp)


def train(ds: loading.Dataset, *, arch: str, norm: str, eps: float, seed: int, hp: HParams,
          device: str = "cpu", train_data: str = "original", model_seed: int = 0,
          construction: str = NO_CONSTRUCTION, progress: bool = True):
    """Train one cell; returns (model with the selected epoch's weights, settings dict for the checkpoint).

    ``seed`` is the grid seed; the run's own seeds come from :func:`medgrid.seeding.training_seeds`
    (independent of the source cell's for constructed datasets; ``model_seed`` numbers the models trained
    on one constructed dataset). ``construction``: the attack setting that made a D_rand / D_det dataset
    (recorded in the settings, so the model's rows name it). The epoch kept is chosen by
    :func:`selection_rule`. With ``hp.eps_warmup_epochs`` = k > 0, adversarial training ramps epsilon up
    over the first k epochs (:func:`warmup_factor`); only epochs after the warm-up, trained at the full
    epsilon, can be kept or stop the run early. The settings record, per epoch, the training epsilon reached.
    """
    selection = selection_rule(hp, train_data)
    seeds = training_seeds(seed, train_data, model_seed)
    seed_everything(seeds["init"])
    on_cuda = torch.device(device).type == "cuda"
    model = models.build(arch, ds.info.n_channels, ds.info.n_classes, ds.size)
    model.normalize.fit(ds.train.images)  # in chunks where it is held; small splits exactly as always
    # channels-last (NHWC) on every device: on CPU the convolutions and max pooling run their NHWC kernels, an
    # epoch 1.35-1.6x faster at 28-128 px (README, "Speed"); the checkpoint is saved in the default layout
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = _optimizer(model, hp)
    # on the compute device, wherever the images are held: the same batches and starts either way
    gen = torch.Generator(device=ds.train.device).manual_seed(seeds["order"])
    attack_gen = torch.Generator(device=ds.train.device).manual_seed(seeds["attack"])
    steps_per_epoch = math.ceil(len(ds.train) / hp.batch_size)
    total = hp.epochs * steps_per_epoch
    adversarial = norm != "none" and eps > 0
    warmup = hp.eps_warmup_epochs if adversarial else 0
    if warmup >= hp.epochs:
        raise ValueError(f"eps_warmup_epochs ({warmup}) must be smaller than epochs ({hp.epochs})")
    if not adversarial and hp.method != DEFAULT_METHOD:
        raise ValueError(f"training method {hp.method} needs adversarial training (norm linf or l2, eps > 0)")
    param = train_method.param(hp.method, hp.method_param)
    method = (methods.build(hp.method, norm, steps=hp.attack_steps, step_size=hp.attack_step_size, param=param)
              if adversarial else methods.Standard())
    guard = (overfit.OverfitGuard(ds.train, batch_size=hp.batch_size, seed=seed, norm=norm, eps=eps)
             if method.guarded else None)
    best_score, best_state, best_epoch, best_pred, history = -1.0, None, -1, None, []
    factor, guard_acc, overfit_epoch = 1.0, None, None
    it = 0
    for epoch in range(hp.epochs):
        model.train()
        seen = correct = 0
        loss_sum = 0.0
        bar = tqdm(loading.iterate(ds.train, hp.batch_size, shuffle=True, generator=gen), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{hp.epochs}", leave=False, mininterval=1.0,
                   disable=None if progress else True)  # None: bar on a terminal, not in log files
        for x, y in bar:
            for group in opt.param_groups:
                group["lr"] = hp.lr * _lr_factor(hp, it / total)
            x = x.contiguous(memory_format=torch.channels_last)
            if adversarial:
                factor = warmup_factor(warmup, it, steps_per_epoch)
            x_adv = method.examples(model, x, y, eps=eps * factor, alpha=method.alpha(eps) * factor,
                                    generator=attack_gen)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
                loss, logits = method.loss(model, x, x_adv, y)
            value = loss.item()
            if not math.isfinite(value):  # diverged (e.g. --lr too large): stop before a NaN model is kept
                raise UserError(f"training diverged: the loss is {value} at epoch {epoch + 1}, batch "
                                f"{it % steps_per_epoch + 1} (lr {hp.lr:g}, weight decay {hp.weight_decay:g}); "
                                "no checkpoint written: lower --lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            seen += y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            loss_sum += value * y.numel()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        if not all(torch.isfinite(p).all() for p in model.parameters()):  # the epoch's last step diverged
            raise UserError(f"training diverged: non-finite weights after epoch {epoch + 1} (lr {hp.lr:g}); no "
                            "checkpoint written: lower --lr")
        logits, labels = predict(model, ds.val, autocast=on_cuda)
        val_bacc = metrics.balanced_accuracy(labels, logits.argmax(1))
        train_acc = correct / seen
        record = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": train_acc,
                  "val_balanced_acc": val_bacc, "epoch_eps": float(eps) * factor}
        if guard is not None:  # a collapse counts once an epoch before it can be kept
            previous, guard_acc = guard_acc, guard.accuracy(model)
            fired = best_state is not None and overfit.collapsed(previous, guard_acc)
            record.update(guard_pgd_acc=guard_acc, overfit=fired)
        history.append(record)
        if progress:
            tqdm.write(f"epoch {epoch + 1}: train loss {loss_sum / seen:.4f} acc {train_acc:.4f}"
                       f" | val balanced acc {val_bacc:.4f}"
                       + (f" | guard PGD acc {guard_acc:.4f}" if guard is not None else ""))
        if record.get("overfit"):  # catastrophic overfitting: stop, keep an epoch before it
            overfit_epoch = epoch + 1
            break
        if epoch < warmup:   # trained below the full epsilon: not a candidate
            continue
        if selection == "last" or val_bacc > best_score:  # (last: the val score is recorded, never used)
            best_score, best_epoch, best_pred = val_bacc, epoch + 1, logits.argmax(1)
            best_state = copy.deepcopy(model.state_dict())   # a copy, not an alias of the live weights
        if hp.stop_train_acc is not None and train_acc >= hp.stop_train_acc:
            break
    model.load_state_dict(best_state)
    val_health = health.assess(ds.val.labels, best_pred, ds.info.n_classes)
    model = model.to(memory_format=torch.contiguous_format).eval()
    settings = {
        "task": ds.info.name, "size": ds.size, "arch": arch, "norm": norm, "eps": float(eps), "seed": seed,
        "train_data": train_data, "construction": construction, "model_seed": int(model_seed),
        "n_channels": ds.info.n_channels, "n_classes": ds.info.n_classes,
        "data_path": str(ds.path), "data_sha256": ds.sha256, "hparams": asdict(hp),
        "init_seed": seeds["init"], "order_seed": seeds["order"], "attack_seed": seeds["attack"],
        "method": method.name, "method_param": param,
        "guard": guard.describe() if guard is not None else None, "overfit_epoch": overfit_epoch,
        "selection": selection, "best_epoch": best_epoch, "best_val_balanced_acc": best_score, "history": history,
        "val_health": val_health.as_dict(),
        "device": str(device), "data_on": ds.data_on, "torch_version": str(torch.__version__), "medgrid_version": __version__,
    }
    return model, settings
