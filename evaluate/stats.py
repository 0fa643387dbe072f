"""The gate's statistics, for the evaluate step's modules: the bootstrap maths lives in sentclf.bootstrap
(the live loop in the monitor room judges versions with the same code) and is re-exported here."""

from sentclf.bootstrap import (  # noqa: F401
    ClassCounts,
    Interval,
    PairedComparison,
    accuracy_per_resample,
    class_counts,
    f1_macro,
    f1_weighted,
    interval,
    mcc,
    mcc_from_counts,
    mcc_interval,
    paired_bootstrap,
    precision_recall_f1,
    resample_indices,
    resampled_class_counts,
    resampled_mcc,
)
