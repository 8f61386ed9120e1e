"""The schema of a built split, declared once; the reader's rows follow it."""

from __future__ import annotations

from datasets import Array2D, Array3D, Features, List, Value

from datasets_build.motion.specs import ReleaseSpec

ANNOTATION = {
    "caption": Value("string"),
    "tokens": List(Value("string")),
    "pos": List(Value("string")),
    "start": Value("float32"),  # seconds as written; NaN read as 0.0
    "end": Value("float32"),
    "start_frame": Value("int32"),  # [start_frame, end_frame) at the dataset's fps
    "end_frame": Value("int32"),
    "is_subclip": Value("bool"),
    "line": Value("int32"),  # 1-based line of the caption file (keeps the release's order)
    "clipped": Value("bool"),  # the line's end lay past the motion; end_frame is the motion's end
}

SOURCE_COLUMNS = {
    "source_path": Value("string"),
    "source_start_frame": Value("int32"),
    "source_end_frame": Value("int32"),
}


def base_features(spec: ReleaseSpec, with_joints: bool) -> Features:
    columns = {
        "id": Value("string"),
        "base_id": Value("string"),
        "mirrored": Value("bool"),
        "motion": Array2D((None, spec.feature_dim), "float32"),
        "length": Value("int32"),
        "fps": Value("float32"),
        "annotations": List(ANNOTATION),
    }
    if with_joints:
        columns["joints"] = Array3D((None, spec.num_joints, 3), "float32")
    if spec.has_index_csv:
        columns.update(SOURCE_COLUMNS)
    return Features(columns)


COLUMN_DOCS = {
    "id": "motion id as in the split files (`M` prefix: mirrored copy)",
    "base_id": "id of the motion this one mirrors (itself when not mirrored)",
    "mirrored": "true for `M` ids, the left-right mirrored copies",
    "motion": "features [length, D] float32, exactly the release's `new_joint_vecs/<id>.npy`",
    "length": "number of frames",
    "fps": "frames per second of the features",
    "annotations": "one struct per usable caption line: caption, tokens and pos (the `word/POS` "
    "tokens split), start/end seconds, start_frame/end_frame (end exclusive), is_subclip, line, clipped "
    "(the line's end lay past the motion and was clipped to it, as the reference loaders slice)",
    "joints": "joint positions [length, J, 3] from `new_joints/<id>.npy`",
    "source_path": "index.csv: the AMASS/HumanAct12 source file of the base motion (null if absent)",
    "source_start_frame": "index.csv: start frame in the source file",
    "source_end_frame": "index.csv: end frame in the source file",
}
