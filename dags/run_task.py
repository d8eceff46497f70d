"""Run one DAG task's command and say plainly when it failed on bad input.

    python dags/run_task.py dvc repro --single-item distill

``dvc repro`` reports a failed stage with its own status (255), so a stage that refused
its input (exit 2, the stage CLIs' contract: retrying cannot help) would look like any
other failure and be retried for minutes. This passes the command's output through and
exits 2 when the command did, or when DVC says the stage command exited with 2, with the
stage's one-line error as the last line (what the DAG shows as the task's failure and
puts on the pipeline's MLflow run). Any other status is passed on unchanged.
"""

from __future__ import annotations

import re
import subprocess
import sys

BAD_INPUT = 2
_STAGE_EXIT = re.compile(r"failed to run: .*, exited with (-?\d+)")
_ERROR_LINE = re.compile(r"^[\w.-]+: error: ")


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python dags/run_task.py COMMAND [ARG...]", file=sys.stderr)
        return BAD_INPUT
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    error, stage_status = None, None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if _ERROR_LINE.match(line):
            error = line.strip()
        elif found := _STAGE_EXIT.search(line):
            stage_status = int(found[1])
    status = proc.wait()
    if status != 0 and stage_status == BAD_INPUT:
        status = BAD_INPUT
    if status != 0 and error:
        print(error)  # the last line: the task's failure message
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
