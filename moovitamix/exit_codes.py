"""Exit codes of every command, so cron and on-call can tell failures apart."""

OK = 0
STEP_FAILED = 1  # a pipeline step failed; the message names it
USAGE = 2  # bad arguments (argparse's own code)
WAREHOUSE_UNREACHABLE = 3
SOURCE_UNREACHABLE = 4
ALREADY_RUNNING = 75  # EX_TEMPFAIL: another run holds the lock; try again later
