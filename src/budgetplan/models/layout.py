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


def _is_stack(module: nn.Module) -> bool:
    """A stack is a ModuleList/Sequential of two or more modules of one class that own parameters."""
    if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) < 2:
        return False
    classes = {type(child) for child in module}
    return len(classes) == 1 and any(True for _ in module[0].parameters())


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def candidate_stacks(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if name and _is_stack(module)]


def find_blocks(model: nn.Module, override: str | None = None) -> BlockLayout:
    """The block stack: `override` if given, else the stack holding the most parameters."""
    if override:
        return _layout_at(model, override)
    candidates = candidate_stacks(model)
    if not candidates:
        lists = [n for n, m in model.named_modules() if isinstance(m, (nn.ModuleList, nn.Sequential)) and n]
        tried = ", ".join(lists) if lists else "no ModuleList or Sequential at all"
        raise LayoutError(
            "no block stack found (looked for a ModuleList/Sequential of 2+ identical blocks with parameters; "
            f"containers seen: {tried}); point at it with --blocks dotted.path, e.g. --blocks encoder.layer"
        )
    best = max(candidates, key=lambda name: _param_count(model.get_submodule(name)))
    return _layout_at(model, best)


def _layout_at(model: nn.Module, path: str) -> BlockLayout:
    try:
        stack = model.get_submodule(path)
    except AttributeError:
        found = ", ".join(candidate_stacks(model)) or "none"
        raise LayoutError(f"--blocks {path}: no such submodule; block stacks found: {found}") from None
    if not isinstance(stack, (nn.ModuleList, nn.Sequential)) or len(stack) < 1:
        raise LayoutError(f"--blocks {path}: is a {type(stack).__name__}, not a ModuleList/Sequential of blocks")
    return BlockLayout(path=path, num_blocks=len(stack), block_class=type(stack[0]).__name__)
