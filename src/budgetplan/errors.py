"""Errors a user can act on. Each message says what is wrong and what to do; the CLI prints it as one line."""


class BudgetplanError(Exception):
    """Base class: the message is shown to the user verbatim, on one line."""


class ModelLoadError(BudgetplanError):
    """A model file or name could not be loaded."""


class LayoutError(BudgetplanError):
    """The block stack of a model could not be found."""


class ConfigError(BudgetplanError):
    """A configuration, context or option value is invalid."""


class DeviceError(BudgetplanError):
    """A device class is unknown or its file is malformed."""


class InfeasibleError(BudgetplanError):
    """No plan fits the budget."""


class PlanError(BudgetplanError):
    """A plan or profile file is malformed, of another schema version, or for another model."""


class DataError(BudgetplanError):
    """A dataset is unknown or not installed."""


class ExtraMissingError(BudgetplanError):
    """An optional extra (e.g. budgetplan[flower]) that a command needs is not installed."""


class ProfileError(BudgetplanError):
    """A model cannot be profiled exactly (a block runs twice, a trainable parameter gets no gradient)."""


def first_line(reason: object, limit: int | None = None, empty: str | None = None) -> str:
    """The first line of an exception's message (or of a text), stripped and cut to `limit` characters: what a
    one-line error quotes of a cause. With no text: `empty`, else the exception's type name (a text: "")."""
    lines = ("" if reason is None else str(reason)).strip().splitlines()
    if lines:
        return lines[0][:limit]
    if empty is not None:
        return empty
    return type(reason).__name__ if isinstance(reason, BaseException) else ""
