"""cam_core: class activation maps and weakly supervised localisation, one core.

The core turns activations and gradients (channels-first) into maps, maps into boxes and
boxes into scores; the adapters ``cam_core.adapters.torch`` and ``cam_core.adapters.keras`` only
record what the core needs from a model. The array functions take NumPy arrays (the reference)
or, through the array API standard, a framework's tensors on their device (see
:mod:`cam_core._validate`). Importing cam_core imports no framework:
``cam_core.explain(model, inputs, ...)`` picks the adapter from the model's type.

**What is public, in one place.** The names in ``cam_core.__all__`` (below) are the library:
explaining (``explain``, ``explain_session`` and the ``Session`` protocol an adapter implements,
``Capture``, ``BiasGradients``, ``Explanation``, ``explain_guided`` (Guided Grad-CAM), the
method registry ``METHODS``/``MethodSpec``, ``raw_maps``, ``display_maps``), the methods one
function each, maps, resizing, thresholds, boxes, the
localisation metrics, faithfulness, data readers and the synthetic set, and pictures. Beyond
them, three public modules: :mod:`cam_core.evaluate` (the evaluation engine,
``cam_core.evaluate.evaluate`` and ``merge``: kept a module of its own because its name is the
function's), :mod:`cam_core.report` (the HTML report) and :mod:`cam_core.cli` (``cam-core``);
and the adapters, ``cam_core.adapters.torch`` / ``.keras`` (each with ``explain``, its session,
``gap_classifier``, ``randomized_copy``, ``guided_backprop``, ``rest_target``), ``.loading``,
``.transfer``, ``.equivalence`` and the model zoos. Modules and names with a leading underscore
are private and may change.
"""

from __future__ import annotations

from cam_core.boxes import (
    FORMATS,
    best_iou,
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
    METHODS,
    BiasGradients,
    Capture,
    ConstantMapWarning,
    Explanation,
    MethodSpec,
    Session,
    display_maps,
    explain,
    explain_guided,
    explain_session,
    method_spec,
    raw_maps,
    resolve_targets,
)
from cam_core.faithfulness import (  # issue 15
    PerturbationCurves,
    RoadCurves,
    average_drop,
    deletion_insertion,
    increase_in_confidence,
    noisy_linear_impute,
    pixel_ranks,
    rank_correlation,
    road,
)
from cam_core.maps import (
    FUSIONS,
    fuse,
    normalize,
)
from cam_core.methods import (  # issue 15
    FinerTarget,
    ablationcam,
    ablationcam_combine,
    cam,
    eigencam,
    eigengradcam,
    fem,
    finer_weights,
    fullgrad,
    gradcam,
    gradcam_elementwise,
    gradcam_pp,
    guided_gradcam,
    hirescam,
    iscam,
    kpcacam,
    layercam,
    randomcam,
    scorecam,
    scorecam_combine,
    shapleycam,
    sscam,
    weighted_activations,
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
    "average_drop",
    "Batch",
    "binarize",
    "box_area",
    "best_iou",
    "box_iou",
    "BoxAccuracy",
    "BoxAccuracyResult",
    "boxes_from_map",
    "boxes_from_mask",
    "cam",
    "Capture",
    "Session",
    "display_maps",
    "colormap",
    "COLORMAPS",
    "ConstantMapWarning",
    "convert_boxes",
    "Dataset",
    "deletion_insertion",
    "draw_boxes",
    "eigencam",
    "eigengradcam",
    "explain",
    "explain_guided",
    "explain_session",
    "Explanation",
    "fem",
    "finer_weights",
    "fullgrad",
    "guided_gradcam",
    "shapleycam",
    "BiasGradients",
    "FinerTarget",
    "FORMATS",
    "fuse",
    "FUSIONS",
    "gradcam",
    "gradcam_elementwise",
    "gradcam_pp",
    "hirescam",
    "image_grid",
    "increase_in_confidence",
    "interpolation_matrix",
    "INTERPOLATIONS",
    "iscam",
    "iter_batches",
    "kpcacam",
    "layercam",
    "Localization",
    "LocalizationResult",
    "make_synthetic",
    "mask_iou",
    "method_spec",
    "METHODS",
    "MethodSpec",
    "noisy_linear_impute",
    "normalize",
    "overlay",
    "PerturbationCurves",
    "Photo",
    "pixel_ranks",
    "PointingGame",
    "PointingGameResult",
    "PxAP",
    "PxAPResult",
    "randomcam",
    "rank_correlation",
    "raw_maps",
    "read_class_names",
    "read_csv_boxes",
    "read_voc",
    "read_wsol",
    "Record",
    "resolve_targets",
    "road",
    "RoadCurves",
    "sample_photos",
    "save_png",
    "scale_boxes",
    "scale_boxes_wsol",
    "scorecam",
    "scorecam_combine",
    "sscam",
    "SyntheticData",
    "threshold_fraction",
    "threshold_otsu",
    "threshold_percentile",
    "threshold_sweep",
    "upsample",
    "weighted_activations",
    "xgradcam",
]
