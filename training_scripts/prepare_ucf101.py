"""Prepare UCF101 (RGB + TV-L1 flow): ``python training_scripts/prepare_ucf101.py --root DIR [options]``.

A thin wrapper of ``prepare_dataset.py ucf101``; run with ``--help`` for the options and see
``hf_dimml.data.builders.build_ucf101`` for the folder layout it reads.
"""

from __future__ import annotations

import sys

from hf_dimml.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(["ucf101", *sys.argv[1:]]))
