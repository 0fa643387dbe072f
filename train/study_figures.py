"""The search's figures, logged to the parent run under `figures/`:

- `optimization_history.png`: each finished trial's best-epoch validation MCC, and the best so far;
- `intermediate_values.png`: every trial's validation MCC per epoch (a pruned trial's line stops where
  the median pruner stopped it);
- `param_importances.png`: how much of the variation in validation MCC each searched parameter explains
  (Optuna's fANOVA; needs at least two finished trials that differ);
- `parallel_coordinate.png`: each finished trial's parameters as one line, coloured by its MCC.
"""

import logging
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import optuna  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

logger = logging.getLogger(__name__)

FIGURES = {
    "optimization_history": optuna_plots.plot_optimization_history,
    "intermediate_values": optuna_plots.plot_intermediate_values,
    "param_importances": optuna_plots.plot_param_importances,
    "parallel_coordinate": optuna_plots.plot_parallel_coordinate,
}


def log_study_figures(study: optuna.Study) -> list[str]:
    """Log each figure the study's trials allow; the artifact paths logged."""
    logged = []
    for name, plot in FIGURES.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            logger.info("figure %s skipped: %s", name, error)
            continue
        figure = getattr(axes, "figure", None)
        if figure is None:  # an array of axes
            figure = axes.flat[0].figure
        figure.set_size_inches(9, 5.5)
        figure.tight_layout()
        path = f"figures/{name}.png"
        mlflow.log_figure(figure, path)
        plt.close(figure)
        logged.append(path)
    return logged
