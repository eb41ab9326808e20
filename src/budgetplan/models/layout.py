"""Find the block stack of a model: the repeated ModuleList of Transformer blocks."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from budgetplan.errors import LayoutError


@dataclass(frozen=True)
class BlockLayout:
    path: str  # dotted path of the ModuleList inside the module it was searched in
    num_blocks: int
    block_class: str


def _is_stack(module: nn.Module, least: int = 2) -> bool:
    """A stack is a ModuleList/Sequential of `least` or more modules of one class that own parameters."""
    if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) < least:
        return False
    classes = {type(child) for child in module}
    return len(classes) == 1 and any(True for _ in module[0].parameters())


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def candidate_stacks(model: nn.Module, least: int = 2) -> list[str]:
    return [name for name, module in model.named_modules() if name and _is_stack(module, least)]


def find_blocks(model: nn.Module, override: str | None = None) -> BlockLayout:
    """The block stack: `override` if given, else the stack holding the most parameters.

    Without two identical blocks, a one-block list is taken (a one-layer model, or ALBERT's one layer group
    that runs once per layer, which the profiler then refuses by name). Two disjoint stacks of comparable size
    (an encoder and a decoder) are refused: their blocks are not joined by one hidden state.
    """
    if override:
        return _layout_at(model, override)
    candidates = candidate_stacks(model) or candidate_stacks(model, least=1)
    if not candidates:
        lists = [n for n, m in model.named_modules() if isinstance(m, (nn.ModuleList, nn.Sequential)) and n]
        tried = ", ".join(lists) if lists else "no ModuleList or Sequential at all"
        raise LayoutError(
            "no block stack found (looked for a ModuleList/Sequential of identical blocks with parameters; "
            f"containers seen: {tried}); point --blocks at the container of the model's blocks (a dotted path)"
        )
    # Transformer blocks hold linear layers: a stack of them wins over a larger stack of convolutions.
    best = max(candidates, key=lambda name: (_has_linear(model.get_submodule(name)[0]),
                                             _param_count(model.get_submodule(name))))
    _refuse_second_stack(model, best, candidates)
    return _layout_at(model, best)


def _has_linear(block: nn.Module) -> bool:
    return any(isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D" for m in block.modules())


def _refuse_second_stack(model: nn.Module, best: str, candidates: list[str]) -> None:
    size = _param_count(model.get_submodule(best))
    for other in candidates:
        nested = other.startswith(best + ".") or best.startswith(other + ".")
        stack = model.get_submodule(other)
        if other != best and not nested and _has_linear(stack[0]) and 2 * _param_count(stack) >= size:
            first, second = sorted((best, other))
            raise LayoutError(
                f"two stacks of blocks, '{first}' and '{second}' (an encoder-decoder model); budgetplan profiles "
                "one stack of blocks joined by one hidden state, and a decoder's blocks also read the encoder's "
                "output: profile the encoder alone (e.g. T5EncoderModel, or the model's get_encoder()) or a "
                "decoder-only model")


def _layout_at(model: nn.Module, path: str) -> BlockLayout:
    try:
        stack = model.get_submodule(path)
    except AttributeError:
        found = ", ".join(candidate_stacks(model)) or "none"
        raise LayoutError(f"--blocks {path}: no such submodule; block stacks found: {found}") from None
    if not isinstance(stack, (nn.ModuleList, nn.Sequential)) or len(stack) < 1:
        raise LayoutError(f"--blocks {path}: is a {type(stack).__name__}, not a ModuleList/Sequential of blocks")
    return BlockLayout(path=path, num_blocks=len(stack), block_class=type(stack[0]).__name__)
