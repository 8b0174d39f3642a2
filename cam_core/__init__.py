"""cam_core: class activation maps and weakly supervised localisation, one NumPy core.

The core turns activations and gradients (channels-first) into maps, maps into boxes and
boxes into scores; the adapters ``cam_core.adapters.torch`` and ``cam_core.adapters.keras`` only
record what the core needs from a model. The array functions take NumPy arrays (the reference)
or, through the array API standard, a framework's tensors on their device (see
:mod:`cam_core._validate`). Importing cam_core imports no framework:
``cam_core.explain(model, inputs, ...)`` picks the adapter from the model's type.
"""

from __future__ import annotations

from cam_core.boxes import (
    FORMATS,
    box_area,
    box_iou,
    boxes_from_map,
    boxes_from_mask,
    convert_boxes,
    mask_iou,
)
from cam_core.data import (
    Batch,
    Dataset,
    Photo,
    Record,
    SHAPES,
    SyntheticData,
    iter_batches,
    make_synthetic,
    read_class_names,
    read_csv_boxes,
    read_voc,
    read_wsol,
    sample_photos,
    scale_boxes,
)
from cam_core.explain import (
    Capture,
    ConstantMapWarning,
    Explanation,
    METHODS,
    MethodSpec,
    explain,
    explain_session,
    method_spec,
    raw_maps,
    resolve_targets,
)
from cam_core.faithfulness import (
    PerturbationCurves,
    average_drop,
    deletion_insertion,
    increase_in_confidence,
    pixel_ranks,
)
from cam_core.maps import (
    FUSIONS,
    fuse,
    normalize,
)
from cam_core.methods import (
    ablationcam,
    ablationcam_combine,
    cam,
    eigencam,
    gradcam,
    gradcam_pp,
    hirescam,
    layercam,
    scorecam,
    scorecam_combine,
    xgradcam,
)
from cam_core.metrics import (
    BoxAccuracy,
    BoxAccuracyResult,
    Localization,
    LocalizationResult,
    PointingGame,
    PointingGameResult,
    PxAP,
    PxAPResult,
    scale_boxes_wsol,
)
from cam_core.resize import (
    INTERPOLATIONS,
    interpolation_matrix,
    upsample,
)
from cam_core.threshold import (
    binarize,
    threshold_fraction,
    threshold_otsu,
    threshold_percentile,
    threshold_sweep,
)
from cam_core.viz import (
    COLORMAPS,
    atomic_write_bytes,
    colormap,
    draw_boxes,
    image_grid,
    overlay,
    save_png,
)

__version__ = "0.1.0"

__all__ = [
    "ablationcam",
    "ablationcam_combine",
    "atomic_write_bytes",
    "average_drop",
    "Batch",
    "binarize",
    "box_area",
    "box_iou",
    "BoxAccuracy",
    "BoxAccuracyResult",
    "boxes_from_map",
    "boxes_from_mask",
    "cam",
    "Capture",
    "colormap",
    "COLORMAPS",
    "ConstantMapWarning",
    "convert_boxes",
    "Dataset",
    "deletion_insertion",
    "draw_boxes",
    "eigencam",
    "explain",
    "explain_session",
    "Explanation",
    "FORMATS",
    "fuse",
    "FUSIONS",
    "gradcam",
    "gradcam_pp",
    "hirescam",
    "image_grid",
    "increase_in_confidence",
    "interpolation_matrix",
    "INTERPOLATIONS",
    "iter_batches",
    "layercam",
    "Localization",
    "LocalizationResult",
    "make_synthetic",
    "mask_iou",
    "method_spec",
    "METHODS",
    "MethodSpec",
    "normalize",
    "overlay",
    "PerturbationCurves",
    "Photo",
    "pixel_ranks",
    "PointingGame",
    "PointingGameResult",
    "PxAP",
    "PxAPResult",
    "raw_maps",
    "read_class_names",
    "read_csv_boxes",
    "read_voc",
    "read_wsol",
    "Record",
    "resolve_targets",
    "sample_photos",
    "save_png",
    "scale_boxes",
    "scale_boxes_wsol",
    "scorecam",
    "scorecam_combine",
    "SHAPES",
    "SyntheticData",
    "threshold_fraction",
    "threshold_otsu",
    "threshold_percentile",
    "threshold_sweep",
    "upsample",
    "xgradcam",
]
