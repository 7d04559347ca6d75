"""What an onnxcam `.onnx` file promises: input, output and metadata names.

`runtime/contract.py` holds the same names for the reading side; the two halves share
nothing else, and `tests/test_contract.py` keeps the two copies equal.
"""

FORMAT = "onnxcam/1"

INPUT_IMAGE = "image"  # float32 [N, H, W, 3], raw RGB 0..255
INPUT_CLASS_INDEX = "class_index"  # int64 [N, K]; -1 in column k = the k-th most probable class

OUTPUT_PROBABILITIES = "probabilities"  # float32 [N, classes]
OUTPUT_EXPLAINED_CLASS = "explained_class"  # int64 [N, K]: the classes actually explained
OUTPUT_SCORE = "score"  # float32 [N, K]: the differentiated score of each target
OUTPUT_FEATURE_MAPS = "feature_maps"  # float32 [N, h, w, C]
OUTPUT_GRADIENTS = "gradients"  # float32 [N, K, h, w, C]: d score / d feature_maps
OUTPUT_POOLED_GRADIENTS = "pooled_gradients"  # float32 [N, K, C]: gradients averaged over h, w
OUTPUT_CAM = "cam"  # float32 [N, K, h, w]: ReLU(sum_c pooled_gradients * feature_maps)

# Per layer: with several layers (`--layer a,b`), layer i > 0 adds these with the suffix ".i".
LAYER_OUTPUTS = (OUTPUT_FEATURE_MAPS, OUTPUT_GRADIENTS, OUTPUT_POOLED_GRADIENTS, OUTPUT_CAM)

OUTPUTS = (
    OUTPUT_PROBABILITIES,
    OUTPUT_EXPLAINED_CLASS,
    OUTPUT_SCORE,
    OUTPUT_FEATURE_MAPS,
    OUTPUT_GRADIENTS,
    OUTPUT_POOLED_GRADIENTS,
    OUTPUT_CAM,
)

SCORES = ("logit", "probability")  # what the gradients differentiate: the logit, or its probability
# How the logits become probabilities: softmax over the classes, or one sigmoid per class (multi-label).
ACTIVATIONS = ("softmax", "sigmoid")

META_FORMAT = "onnxcam.format"  # FORMAT
META_MODEL = "onnxcam.model"  # "resnet50", or the .keras or .onnx file's name
META_LABELS = "onnxcam.labels"  # JSON list of class names, index = class
META_INPUT_SIZE = "onnxcam.input_size"  # JSON [H, W]
META_PREPROCESSING = "onnxcam.preprocessing"  # caffe | tf | torch | none | "mean [..] std [..]" (in the graph)
META_LAYER = "onnxcam.layer"  # the Keras layer or ONNX tensor whose output is feature_maps
META_LAYERS = "onnxcam.layers"  # JSON list of all target layers; [0] is META_LAYER
META_SCORE = "onnxcam.score"  # one of SCORES
# Optional (files written before it say nothing: softmax): one of ACTIVATIONS.
META_ACTIVATION = "onnxcam.activation"
META_WEIGHTS = "onnxcam.weights"  # JSON {"source": ..., "sha256": ...}
META_VERSIONS = "onnxcam.versions"  # JSON {"onnxcam", "onnx", "opset", and the path's own libraries}
META_SELF_CHECK = "onnxcam.self_check"  # JSON: error per output vs TensorFlow, or vs the original ONNX model

METADATA = (
    META_FORMAT,
    META_MODEL,
    META_LABELS,
    META_INPUT_SIZE,
    META_PREPROCESSING,
    META_LAYER,
    META_LAYERS,
    META_SCORE,
    META_WEIGHTS,
    META_VERSIONS,
    META_SELF_CHECK,
)


def layer_output(name: str, layer_index: int) -> str:
    """The output `name` (one of LAYER_OUTPUTS) of the layer_index-th target layer."""
    return name if layer_index == 0 else f"{name}.{layer_index}"
