#!/usr/bin/env python
"""Push an existing hf_dimml output folder (what training_scripts/train.py wrote) to a Hugging Face Hub model repo.

    python training_scripts/push_to_hub.py --output_dir outputs/dimml-av-digits --repo_id user/dimml-av-digits
    python training_scripts/push_to_hub.py --output_dir X --repo_id user/name --private --commit_message "Retrain"
    python training_scripts/push_to_hub.py --output_dir X --dry_run        # list what would be uploaded

The token comes from the HF_TOKEN environment variable or from `hf auth login`; the Hub from HF_ENDPOINT (default
https://huggingface.co). Uploaded: the weights (safetensors), config.json, the processor config, the code files for
`trust_remote_code`, the model card README.md and the images it embeds; never optimizer/scheduler/RNG states,
training_args.bin, checkpoint-*/ or runs/. The card is regenerated from training_summary.json (so that its
snippet names the repo) unless --keep_card is given, which uploads README.md as it is (e.g. after editing it).
Pushing again to the same repo makes a new commit. Exit status: 0 on success, 1 when the push fails (the reason is
printed; the local folder is left as it was, byte for byte), 2 on bad arguments, 3 when the connection was lost after
the commit was sent and the Hub could not be asked whether it made it (the message says how to check; pushing again is
safe: files already on the Hub make no new commit).
"""

import sys

from hf_dimml.hub import main

if __name__ == "__main__":
    sys.exit(main())
