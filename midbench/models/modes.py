"""Switching a model to eval mode for a while and back, module by module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode on every module of ``model`` inside the block; afterwards each module's own mode as it was.

    Not ``model.train(was_training)``: that sets every submodule to the root's mode. A wrapper is in training mode
    when created (``nn.Module``'s default) even around a model in eval mode, so restoring through it would switch
    on the wrapped model's BatchNorm batch statistics (and their running averages' updates) and its dropout for
    everything that follows; a model whose parts are deliberately in different modes would lose them too.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
