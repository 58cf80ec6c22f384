"""Activation statistics from forward hooks (the design notes' model debugging).

For each chosen module, over every forward pass between two :meth:`ActivationStats.collect`
calls: the fraction of activations with ``|a| < 0.05`` (near zero: a dying layer shows 90 %+),
their mean and their standard deviation. Sums are kept on the activation's device and read
once per collect, so the hooks add no GPU sync per step.
"""

from __future__ import annotations

import torch
from torch import nn

NEAR_ZERO = 0.05


class ActivationStats:
    """Forward hooks on named modules of ``model`` (names as in ``model.named_modules()``).

    Raises:
        KeyError: a name is not a module of the model; the message lists a few valid names.
    """

    def __init__(self, model: nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        self._sums: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in names:
            if name not in modules:
                sample = [n for n in modules if n.count(".") <= 2][:12]
                raise KeyError(f"activation_stats: no module named {name!r}; e.g. {', '.join(sample)}")
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def record(module: nn.Module, inputs, output) -> None:
            tensor = _first_tensor(output)
            if tensor is None or not module.training:
                return
            a = tensor.detach().float()
            # [count, near-zero count, sum, sum of squares]
            stats = torch.stack(
                [
                    torch.tensor(float(a.numel()), device=a.device),
                    (a.abs() < NEAR_ZERO).sum().float(),
                    a.sum(),
                    (a * a).sum(),
                ]
            )
            self._sums[name] = self._sums[name] + stats if name in self._sums else stats

        return record

    def collect(self) -> dict[str, float]:
        """Statistics since the last collect, keyed ``act/<module>/{near_zero,mean,std}``; resets."""
        out: dict[str, float] = {}
        for name, stats in self._sums.items():
            n, near, total, squares = stats.tolist()  # one sync per module per epoch
            mean = total / n
            out[f"act/{name}/near_zero"] = near / n
            out[f"act/{name}/mean"] = mean
            out[f"act/{name}/std"] = max(squares / n - mean * mean, 0.0) ** 0.5
        self._sums.clear()
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _first_tensor(output) -> torch.Tensor | None:
    if torch.is_tensor(output):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        for item in output:
            if torch.is_tensor(item):
                return item
    return None
