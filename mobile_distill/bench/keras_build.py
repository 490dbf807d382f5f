"""Build a Keras-native counterpart of a student and convert it with TensorFlow's own TFLite
converter: the latency anchor of ``mdistill bench``.

Run by the Python that has TensorFlow (``python keras_build.py SPEC.json OUT.tflite``); it imports
nothing from mobile_distill, so TensorFlow can live in a separate environment.
"""

import json
import sys


def build(spec):
    import keras

    size, dim = spec["image_size"], spec["embedding_dim"]
    mean, std = spec["mean"], spec["std"]
    inputs = keras.Input((size, size, 3), batch_size=1)
    x = keras.layers.Normalization(mean=mean, variance=[s * s for s in std])(inputs)
    if spec["architecture"] == "mobilenet_v1_025":
        backbone = keras.applications.MobileNet(input_shape=(size, size, 3), alpha=0.25, include_top=False,
                                                weights=None, pooling="avg")
    else:
        raise SystemExit(f"no Keras counterpart for {spec['architecture']}")
    x = backbone(x)
    x = keras.layers.Dense(dim)(x)
    outputs = keras.layers.UnitNormalization()(x)
    return keras.Model(inputs, outputs)


def main(spec_file, out_file):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = build(json.load(open(spec_file)))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with open(out_file, "wb") as f:
        f.write(converter.convert())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
