"""Prepare ModelNet40 front/rear views: ``python training_scripts/prepare_modelnet40.py --root DIR [options]``.

A thin wrapper of ``prepare_dataset.py modelnet40``; run with ``--help`` for the options and see
``hf_dimml.data.builders.build_modelnet40`` for the folder layout it reads.
"""

from __future__ import annotations

import sys

from hf_dimml.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(["modelnet40", *sys.argv[1:]]))
