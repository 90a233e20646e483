"""Prepare Kinetics-Sounds: ``python training_scripts/prepare_kinetics_sounds.py --root DIR [options]``.

A thin wrapper of ``prepare_dataset.py kinetics_sounds``; run with ``--help`` for the options and see
``hf_dimml.data.builders.build_kinetics_sounds`` for the folder layout it reads.
"""

from __future__ import annotations

import sys

from hf_dimml.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(["kinetics_sounds", *sys.argv[1:]]))
