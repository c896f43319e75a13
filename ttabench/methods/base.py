"""The interface every test-time adaptation method implements.

Shaped after the Doebler/Marsden benchmark's ``TTAMethod`` (``configure_model``,
``collect_params``, ``forward_and_adapt``, ``reset``): the runner calls ``method(x)`` once per
test batch and scores the returned logits. What counts as the prediction is fixed by each
method's paper and stated in its docstring; for the entropy family it is the forward pass that
also produces the loss (weights from before this batch's update, normalisation statistics of this
batch), i.e. predict and adapt on the same batch (specs/methods.md, "Common protocol facts").

One base class for every method, gradient-free or not, with or without memories and teachers:

- ``__init__`` takes the model, a :class:`MethodContext` (classes, source data, batch size)
  and the YAML knobs; a subclass sets its own knobs *before* calling ``super().__init__``, which
  runs ``configure`` (modes, swapped layers, which parameters train, via ``trainable``), builds
  the optimizer from the ``optim`` partial, runs ``prepare`` (one-off work such as EATA's
  Fisher) and snapshots everything ``reset`` restores.
- ``forward`` runs ``forward_and_adapt`` ``steps`` times and returns the last logits; methods
  with another protocol (no gradient, memories, teachers) override ``forward``.
- Cost is counted where it happens: forwards by a hook on the model (``count_forwards`` adds
  more modules: a teacher, an anchor), backwards by ``backward(loss, n)`` with the number of
  samples the loss is over (EATA's efficiency table counts backwards of selected samples only).
  A non-finite loss is noted without a host sync; ``pop_costs`` is read by the runner after its
  own sync.
- Extra state lives in buffers (restored with the state dict) or in Python attributes named in
  ``state_attributes`` (memory banks, running values), cleared in ``reset_state``. ``snapshot``
  and ``restore`` carry all of it, so an evaluation protocol can try steps and go back.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ttabench.methods.augment import MethodRandom
from ttabench.norms.base import statistics_frozen

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class MethodContext:
    """What a method may need to know beyond its knobs and the model (a plain class, not a
    dataclass: Hydra would turn a dataclass argument into a config node).

    Attributes:
        num_classes: C, for margins in units of ln C.
        batch_size: The stream's configured batch size (EATA's Fisher batches use it; ROID
            divides its loss by it).
        source_data: ``source_data(n)`` -> (uint8 images (n, 3, H, W), int64 labels) of clean
            source samples, drawn reproducibly; None when the dataset has none (an error
            naming the config key is raised by the provider, not here).
        device: Where the model lives.
        seed: The run's method seed: the method's own random streams (augmentations, memory
            choices, stochastic restore) start from it (:class:`MethodRandom`).
    """

    def __init__(
        self,
        num_classes: int = 10,
        batch_size: int = 64,
        source_data: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        self.num_classes, self.batch_size = int(num_classes), int(batch_size)
        self.source_data, self.device, self.seed = source_data, device, int(seed)


class TTAMethod(nn.Module):
    """Wraps a source model; ``forward`` predicts a batch and adapts on it; ``reset`` undoes
    everything learned since construction (the runner resets before each new domain under the
    ``single`` schedule, once before the stream otherwise).

    Args:
        model: The source model, already prepared by the norm.
        context: See :class:`MethodContext` (default: 10 classes, no source data).
        optim: ``optimizer_class(params)`` partial (``_partial_: true`` in YAML); required when
            ``trainable`` returns parameters.
        steps: Adaptation steps per batch (``forward_and_adapt`` calls; official default 1).
    """

    #: Python attributes that are learned state (memories, moving values held as floats): copied
    #: by :meth:`snapshot`. Everything else a method learns lives in buffers and parameters.
    state_attributes: tuple[str, ...] = ()

    def __init__(
        self,
        model: nn.Module,
        context: MethodContext | None = None,
        optim: OptimizerFactory | None = None,
        steps: int = 1,
    ) -> None:
        super().__init__()
        self.steps = knob(steps, "steps", int, low=1)
        self.model = model
        self.context = context or MethodContext()
        self.random = MethodRandom(self.context.seed)
        self.forwards = self.backwards = self.recoveries = 0
        self._nonfinite_loss: torch.Tensor | None = None
        self.count_forwards(self.model)
        self.configure()
        self.trained = [p for _, p in self.trainable()]  # what the optimizer updates, in order
        self.optimizer = self._make_optimizer(optim, self.trained) if self.trained else None
        self.prepare()
        self.to(_device_of(model))  # state made in prepare (EATA's m) lives with the model
        self._initial_state = copy.deepcopy(self.state_dict())
        self._initial_optimizer = copy.deepcopy(self.optimizer_state())
        self.forwards = self.backwards = self.recoveries = 0

    # -- what subclasses define ---------------------------------------------------------------

    def configure(self) -> None:
        """Prepare ``self.model`` for test-time use: eval mode, gradients only for ``trainable``
        (the norm decides where batch statistics come from, in eval mode as well)."""
        self.model.eval()
        self.model.requires_grad_(False)
        for _, param in self.trainable():
            param.requires_grad_(True)

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` pairs the optimizer updates (default: none)."""
        return []

    def prepare(self) -> None:
        """One-off work after the optimizer exists and before the reset snapshot."""

    def forward_and_adapt(self, x: torch.Tensor) -> torch.Tensor:
        """One adaptation step on ``x``; returns the logits to score."""
        raise NotImplementedError

    def reset_state(self) -> None:
        """Clear method state that is not a buffer (moving averages held as Python values)."""

    # -- the protocol the runner uses ---------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits for images ``x`` (floats in [0, 1], shape (B, 3, H, W))."""
        for _ in range(self.steps):
            logits = self.forward_and_adapt(x)
        return logits

    def reset(self) -> None:
        """Restore model, optimizer and method state to the moment after construction."""
        self.load_state_dict(self._initial_state)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(copy.deepcopy(self._initial_optimizer))
        self.random.reseed()
        self.reset_state()

    def prediction_model(self) -> nn.Module:
        """The network whose output is the method's prediction (mean-teacher methods: the
        teacher)."""
        return self.model

    @torch.no_grad()
    def plain_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the prediction network as it is now, without the method's machinery, a
        step, or moving norm statistics: what answers a batch the method is too busy for, and
        the time unit of its cost (Alfarra et al.'s ``model.model``)."""
        net = self.prediction_model()
        with statistics_frozen(net):
            return net(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The method's output for ``x`` in its current state, without adapting on it (the
        oracle's candidates, the consistency criterion). Default: :meth:`plain_forward`; a
        method whose output is more than its network's (LAME, ROID's prior) says so here."""
        return self.plain_forward(x)

    def adapt_again(self, x: torch.Tensor) -> None:
        """One more adaptation step on ``x``, a batch the method has just taken (TTAB's
        ``n_train_steps`` under ``oracle_selection``): a gradient method steps on it again; a
        memory method steps on its memory without storing ``x`` twice; a method without
        steps does nothing. ``method.steps`` steps, as one call takes."""
        for _ in range(self.steps):
            self.forward_and_adapt(x)

    def log_probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of what ``forward`` returns (logits, unless the method says
        otherwise): what the label-free criteria and the oracle's cross-entropy read."""
        return outputs.float().log_softmax(dim=1)

    def outlier_score(self, log_probs: torch.Tensor, kind: str = "entropy") -> torch.Tensor:
        """Per-sample in-distribution score of the output whose log-probabilities are
        ``log_probs`` (higher: more like a known class), for the outlier metrics. STAMP scores
        every baseline by ``entropy`` (the negative entropy of the prediction); ``msp`` is the
        maximum softmax probability (Hendrycks & Gimpel 2017). A method with a score of its
        own (STAMP) overrides this and ignores ``kind``."""
        return outlier_score(log_probs, kind)

    def snapshot(self) -> dict[str, Any]:
        """Everything the method has learned so far (weights, statistics, optimizer moments,
        memories, random streams), for :meth:`restore`; costs are not part of it."""
        shared = self._shared_objects()
        return {
            "module": copy.deepcopy(self.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer_state()),
            "random": self.random.get_state(),
            "python": copy.deepcopy({a: getattr(self, a) for a in self.state_attributes}, shared),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Go back to ``snapshot`` (which stays usable: it can be restored again)."""
        self.load_state_dict(snapshot["module"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(copy.deepcopy(snapshot["optimizer"]))
        self.random.set_state(snapshot["random"])
        for name, value in copy.deepcopy(snapshot["python"], self._shared_objects()).items():
            setattr(self, name, value)

    def _shared_objects(self) -> dict[int, Any]:
        """Objects a memory refers to but does not own (the method's random generator): a
        deepcopy memo that keeps them shared instead of copied."""
        return {id(self.random.host): self.random.host}

    def pop_costs(self) -> dict[str, int]:
        """Forwarded and back-propagated samples, non-finite losses and recoveries (a method
        resetting itself, e.g. SAR) since the last call. Reads one device scalar: call it after
        the runner's own sync."""
        bad = self._nonfinite_loss
        costs = {
            "forwards": self.forwards,
            "backwards": self.backwards,
            "nonfinite_loss": int(bad.item()) if bad is not None else 0,
            "recoveries": self.recoveries,
        }
        self.forwards = self.backwards = self.recoveries = 0
        self._nonfinite_loss = None
        return costs

    # -- helpers for subclasses ---------------------------------------------------------------

    @property
    def ln_classes(self) -> float:
        """ln C, the unit of the entropy margins."""
        return math.log(self.context.num_classes)

    def count_forwards(self, module: nn.Module) -> None:
        """Count every sample that passes through ``module`` (a teacher, an anchor, ...)."""

        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            self.forwards += int(args[0].shape[0]) if args and torch.is_tensor(args[0]) else 0

        module.register_forward_pre_hook(hook)

    def frozen_copy(self) -> nn.Module:
        """A copy of the model as it is now, without gradients: a teacher or an anchor. Its
        forwards are counted (the copy keeps the model's counting hook)."""
        twin = copy.deepcopy(self.model)
        for param in twin.parameters():
            param.detach_().requires_grad_(False)
        return twin

    def backward(self, loss: torch.Tensor, n_samples: int | torch.Tensor) -> None:
        """``loss.backward()``, counting ``n_samples`` back-propagated samples and noting a
        non-finite loss (no host sync: the flag stays on the device)."""
        loss.backward()
        self.backwards += int(n_samples)
        self.note_loss(loss)

    def note_loss(self, loss: torch.Tensor) -> None:
        """Remember whether ``loss`` was NaN/Inf (the runner records it with the step)."""
        bad = ~torch.isfinite(loss.detach()).all()
        self._nonfinite_loss = bad if self._nonfinite_loss is None else self._nonfinite_loss | bad

    def optimizer_state(self) -> dict[str, Any] | None:
        return self.optimizer.state_dict() if self.optimizer is not None else None

    def _make_optimizer(
        self, optim: OptimizerFactory | None, params: list[nn.Parameter]
    ) -> torch.optim.Optimizer:
        if optim is None:
            raise ValueError(
                f"{type(self).__name__} trains {len(params)} parameter tensors but has no "
                "optimizer: set method.optim (e.g. {_target_: torch.optim.Adam, _partial_: "
                "true, lr: 1e-3})"
            )
        try:
            return optim(params)
        except (ValueError, TypeError) as exc:  # torch's own checks: "Invalid learning rate"
            raise ValueError(f"method.optim: {exc}") from None


#: the ``outlier_score`` run key's choices
OUTLIER_SCORES = ("entropy", "msp")


def outlier_score(log_probs: torch.Tensor, kind: str = "entropy") -> torch.Tensor:
    """Negative entropy (``entropy``) or maximum probability (``msp``) of each row."""
    log_probs = log_probs.float()
    if kind == "msp":
        return log_probs.max(dim=1).values.exp()
    if kind != "entropy":
        raise ValueError(f"outlier_score={kind!r}; valid: {', '.join(OUTLIER_SCORES)}")
    return (log_probs.exp() * log_probs).nan_to_num(0.0, posinf=0.0, neginf=0.0).sum(dim=1)


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    if first is None:
        first = next(model.buffers(), None)
    return first.device if first is not None else torch.device("cpu")


def knob(
    value: Any,
    key: str,
    kind: type = float,
    low: float = float("-inf"),
    high: float | None = None,
    group: str = "method",
) -> Any:
    """``value`` as ``kind`` (float or int) within [low, high], or one clear line naming
    ``<group>.<key>`` (values come from YAML or the command line, so may be strings)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    bad = number is None or math.isnan(number) or isinstance(value, bool)
    if bad or (kind is int and not number.is_integer()):
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{group}.{key} must be {what}, got {value!r}")
    if number < low or (high is not None and number > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{group}.{key} must be {bounds}, got {value!r}")
    return kind(number)
