"""Regenerate the instruction-following data lists from their fixed seeds (see lsp_env.tasks.instruction_data).

    python benchmarks/instruction_data.py

writes lsp_env/data/instructions_train.txt (the LSP-IF-Data-v0 prompts) and lsp_env/data/instructions_eval.json
(the held-out dev and test splits). The same code always writes the same files.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lsp_env.tasks.instruction_data import write_data_files  # noqa: E402

if __name__ == "__main__":
    write_data_files()
