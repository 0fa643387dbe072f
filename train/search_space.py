"""The search space of `train -e tune`: its dimensions, their default bounds, and `-P space=` overrides.

`space` is a comma-separated list of `name=low:high` (new bounds), `name=a|b|c` (these values only) or
`name=value` (fixed), e.g. `learning_rate=1e-4:5e-4,batch_size=16|32,epochs=3`. A dimension not named keeps
its default bounds; the train step's other parameters (max_train_samples, weight_decay, ...) are no
dimension and pass through to every trial as given.
"""

from dataclasses import dataclass, replace

import optuna


@dataclass(frozen=True)
class Dimension:
    kind: str  # "log" (float, sampled on a log scale), "float", "int", "choice"
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()
    minimum: float = 0.0  # the smallest valid value
    maximum: float = float("inf")  # the largest valid value
    open_below: bool = False  # `minimum` itself is invalid

    def suggest(self, trial: optuna.Trial, name: str):
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high))
        return trial.suggest_float(name, self.low, self.high, log=self.kind == "log")

    @property
    def numeric_type(self):
        integral = self.kind == "int" or (self.kind == "choice" and isinstance(self.choices[0], int))
        return int if integral else float


# Defaults around the train step's recipe (README, "Training recipe"): its learning rate 2e-4, layer decay
# 0.8, 5 epochs, batch 32, the backbone's dropout 0.1 and warm-up 0.1 sit inside each range.
DEFAULT_SPACE: dict[str, Dimension] = {
    "learning_rate": Dimension("log", 5e-5, 1e-3, minimum=0.0, open_below=True),
    "layer_lr_decay": Dimension("float", 0.6, 1.0, minimum=0.0, maximum=1.0, open_below=True),
    "epochs": Dimension("int", 2, 6, minimum=1),
    "batch_size": Dimension("choice", choices=(16, 32, 64), minimum=1),
    "dropout": Dimension("float", 0.0, 0.3, maximum=0.9),
    "warmup_ratio": Dimension("float", 0.0, 0.2, maximum=0.5),
}


def _number(text: str, kind: type, name: str):
    try:
        value = kind(float(text)) if kind is int and "e" not in text.lower() else kind(text)
    except ValueError:
        raise ValueError(f"space: {name}={text!r} is not a{'n int' if kind is int else ' number'}") from None
    if kind is int and float(text) != int(float(text)):
        raise ValueError(f"space: {name}={text!r} must be a whole number")
    return value


def _check_range(name: str, dimension: Dimension, values: list) -> None:
    for value in values:
        too_low = value <= dimension.minimum if dimension.open_below else value < dimension.minimum
        if too_low or value > dimension.maximum:
            bound = f"{'>' if dimension.open_below else '>='} {dimension.minimum:g}"
            if dimension.maximum != float("inf"):
                bound += f" and <= {dimension.maximum:g}"
            raise ValueError(f"space: {name} must be {bound}, got {value:g}")


def parse_space(text: str) -> dict[str, Dimension]:
    """The default space with the overrides of `text` applied; ValueError naming the item at fault."""
    space = dict(DEFAULT_SPACE)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in space:
            raise ValueError(
                f"space: {item!r} is not `name=low:high`, `name=a|b` or `name=value` for one of "
                f"{', '.join(DEFAULT_SPACE)}"
            )
        default = DEFAULT_SPACE[name]
        kind = default.numeric_type
        if ":" in value:
            low, high = (_number(v.strip(), kind, name) for v in value.split(":", 1))
            if low > high:
                raise ValueError(f"space: {name}={value}: low {low:g} is above high {high:g}")
            _check_range(name, default, [low, high])
            new_kind = default.kind if default.kind != "choice" else ("int" if kind is int else "float")
            space[name] = replace(default, kind=new_kind, low=low, high=high, choices=())
        else:
            choices = tuple(_number(v.strip(), kind, name) for v in value.split("|"))
            _check_range(name, default, list(choices))
            space[name] = replace(default, kind="choice", choices=choices)
    return space


def describe(space: dict[str, Dimension]) -> str:
    """One line per dimension, for the run's description and log."""
    parts = []
    for name, dimension in space.items():
        if dimension.kind == "choice":
            parts.append(f"{name} in {{{', '.join(f'{c:g}' for c in dimension.choices)}}}")
        else:
            scale = " (log)" if dimension.kind == "log" else ""
            parts.append(f"{name} in [{dimension.low:g}, {dimension.high:g}]{scale}")
    return "; ".join(parts)


def suggest(trial: optuna.Trial, space: dict[str, Dimension]) -> dict:
    return {name: dimension.suggest(trial, name) for name, dimension in space.items()}
