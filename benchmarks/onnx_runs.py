"""The onnxruntime variants as zero-argument calls, one batch size at a time.

- runtime: `runtime.Explainer.explain` on decoded photos (resize in, top-1 Grad-CAM heatmaps
  upsampled to the photo's size out): what a user of the package pays;
- gradcam: bare `session.run` of the Grad-CAM graph on 224x224 inputs, fetching what the runtime
  fetches (cam, probabilities, explained_class);
- plain: the plain classifier, fetching probabilities;
- on CUDA also: gradcam_cam_only, gradcam_all_outputs (numpy out), and gradcam_iobinding,
  plain_iobinding (inputs and outputs stay on the GPU through `session.io_binding()`).

Sessions keep onnxruntime's default thread settings (intra-op threads = all cores).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from benchmarks.images import model_batch, photos
from runtime import Explainer, contract
from runtime.session import open_session

RUNTIME_OUTPUTS = [contract.OUTPUT_CAM, contract.OUTPUT_PROBABILITIES, contract.OUTPUT_EXPLAINED_CLASS]
CPU_VARIANTS = ("runtime", "gradcam", "plain")
CUDA_VARIANTS = CPU_VARIANTS + ("gradcam_cam_only", "gradcam_all_outputs", "gradcam_iobinding", "plain_iobinding")


class BoundRun:
    """One run with IO binding: inputs copied to the device once, outputs left there."""

    def __init__(self, session: ort.InferenceSession, feeds: dict[str, np.ndarray], outputs: list[str], device: str):
        self.session = session
        self.binding = session.io_binding()
        self.inputs = {name: ort.OrtValue.ortvalue_from_numpy(array, device, 0) for name, array in feeds.items()}
        for name, value in self.inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        for name in outputs:
            self.binding.bind_output(name, device)

    def __call__(self) -> None:
        self.session.run_with_iobinding(self.binding)
        self.binding.synchronize_outputs()


class OnnxVariants:
    """Opens what `variants` need once; `calls(batch)` gives one call per variant."""

    def __init__(self, gradcam_path: str, plain_path: str, device: str, variants: tuple[str, ...], max_batch: int):
        self.device = device
        self.variants = variants
        self.explainer = (
            Explainer(gradcam_path, device=device, batch_size=max_batch) if "runtime" in variants else None
        )
        needs_gradcam = any(name.startswith("gradcam") for name in variants)
        self.gradcam = open_session(gradcam_path, device) if needs_gradcam else None
        self.plain = open_session(plain_path, device) if any(name.startswith("plain") for name in variants) else None

    def calls(self, batch: int) -> dict[str, Callable[[], object]]:
        return {name: self._call(name, batch) for name in self.variants}

    def _call(self, name: str, batch: int) -> Callable[[], object]:
        if name == "runtime":
            batch_photos = photos(batch)
            return lambda: self.explainer.explain(batch_photos, top_k=1)
        images = model_batch(batch)
        if name.startswith("plain"):
            feeds = {contract.INPUT_IMAGE: images}
            if name == "plain_iobinding":
                return BoundRun(self.plain, feeds, [contract.OUTPUT_PROBABILITIES], self.device)
            return lambda: self.plain.run([contract.OUTPUT_PROBABILITIES], feeds)
        feeds = {
            contract.INPUT_IMAGE: images,
            contract.INPUT_CLASS_INDEX: np.full((batch, 1), -1, dtype=np.int64),
        }
        outputs = {
            "gradcam": RUNTIME_OUTPUTS,
            "gradcam_iobinding": RUNTIME_OUTPUTS,
            "gradcam_cam_only": [contract.OUTPUT_CAM],
            "gradcam_all_outputs": [output.name for output in self.gradcam.get_outputs()],
        }[name]
        if name == "gradcam_iobinding":
            return BoundRun(self.gradcam, feeds, outputs, self.device)
        return lambda: self.gradcam.run(outputs, feeds)
