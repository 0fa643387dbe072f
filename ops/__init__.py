"""Host-side operations of the scheduled retraining (scripts/retrain.sh): attempts, retries and the time
limit (ops.nightly), notifications (ops.notify), the schedule and missed nights (ops.schedule). Never
part of the step image."""
