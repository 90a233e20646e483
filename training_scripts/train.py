#!/usr/bin/env python
"""Train a multimodal classifier on a dataset preset (or your own data), evaluate it and save a shareable checkpoint.

    python training_scripts/train.py --output_dir outputs/dimml-av-digits
    python training_scripts/train.py training_scripts/configs/av_digits_dimml.yaml [--overrides ...]
    accelerate launch training_scripts/train.py training_scripts/configs/av_digits_dimml.yaml

The arguments are `hf_dimml.arguments` (every `TrainingArguments` flag, the methods' knobs, the model and the data);
the run itself is `hf_dimml.run.main`, which Python code can call with the same argument list. A wrong argument, file
or folder ends the script with its message and exit status 2, without a traceback (HF_DIMML_TRACEBACK=1 shows it).
"""

import os
import sys

from hf_dimml.run import main

if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as error:
        if os.environ.get("HF_DIMML_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
