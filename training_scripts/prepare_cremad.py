"""Prepare CREMA-D: ``python training_scripts/prepare_cremad.py --root DIR [options]``.

A thin wrapper of ``prepare_dataset.py cremad``; run with ``--help`` for the options and see
``hf_dimml.data.builders.build_cremad`` for the folder layout it reads.
"""

from __future__ import annotations

import sys

from hf_dimml.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(["cremad", *sys.argv[1:]]))
