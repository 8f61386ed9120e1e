"""Build HumanML3D and KIT-ML releases into Hugging Face Arrow datasets.

Command line: `python -m datasets_build --help`. From Python:

    from datasets_build import BuildConfig, build, flatten_samples, load_release_stats
"""

from datasets_build.outputs import load_release_stats, read_rejections
from datasets_build.release import SPECS, ReleaseError
from datasets_build.runner import BuildConfig, BuildResult, build
from datasets_build.samples import Sample, flatten_samples

__all__ = [
    "SPECS", "BuildConfig", "BuildResult", "ReleaseError", "Sample", "build", "flatten_samples",
    "load_release_stats", "read_rejections",
]
