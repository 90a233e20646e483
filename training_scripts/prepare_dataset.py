#!/usr/bin/env python
"""Build (decode and cache) a benchmark dataset from its local community layout.

Usage::

    python training_scripts/prepare_dataset.py cremad --root /data/CREMA-D
    python training_scripts/prepare_dataset.py ucf101 --root /data/UCF101 --option split=2 --max-frames 32
    python training_scripts/prepare_dataset.py cremad --root /data/CREMA-D \\
        --set audio.duration=2.0 --set visual.num_frames=2 --processor-out outputs/cremad_processor

The thin wrappers ``prepare_cremad.py``, ``prepare_ave.py``, ``prepare_kinetics_sounds.py``,
``prepare_ucf101.py`` and ``prepare_modelnet40.py`` call this with the dataset name filled in.
Layouts are documented in :mod:`hf_dimml.data.builders`. From the official distribution, what is missing is
extracted first (:mod:`hf_dimml.data.extraction`: frames, audio and optical flow from the videos, once, into
``--root`` in the reference layouts, over ``--workers`` processes, resumable; needs ``pip install
"hf_dimml[video]"``); ``--no-extract`` skips that step. A progress bar shows the decoding; the
result is cached (``--cache-dir``, default ``$HF_DIMML_CACHE/<name>`` or ``~/.cache/hf_dimml/<name>``)
and later builds with the same arguments reload it.
"""

import sys

from hf_dimml.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
