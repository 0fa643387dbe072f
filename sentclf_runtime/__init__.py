"""The model's runtime: what every process that scores text with a registered version's files shares.

A registered version is three files: the ONNX graph, `tokenizer.json` and `serving_config.json`. This package
reads them and scores text with them, and nothing else: it imports only numpy, onnxruntime and tokenizers,
so the inference server's slim image, the text-level pyfunc (which ships it as its code), the pipeline's
steps and the benches all run the very same scorer, output names, serving config and token features.

- `config`: `ServingConfig`, the one type of `serving_config.json` (read, checked, written).
- `scorer`: `Scorer`, tokenizer + ONNX Runtime session in length buckets -> class probabilities.
- `outputs`: the names, types and shapes of the model's inputs and outputs on the wire.
- `features`: the token features the capture records and the monitor compares with training data.
- `files`: where the three files sit in a downloaded version (either layout).
- `names`: the model name a server answers to.
- `multilabel`: several labels per text: the sigmoid, the per-label thresholds, the label sets.
"""
