"""Running the command line from tests: in this process (fast) or in a subprocess."""
import os
import subprocess
import sys

from captum_paths.cli import main

#: The environment of CLI subprocesses: one thread each, no warnings on stderr.
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def cli(*args, **kw):
    """``python -m captum_paths ARGS`` in a subprocess; returns the ``CompletedProcess``."""
    return subprocess.run([sys.executable, "-m", "captum_paths", *map(str, args)], capture_output=True, text=True,
                          env=ENV, **kw)


def run_main(capsys, *args):
    """The CLI in this process (fast); returns (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def extract_args(data, out, *extra):
    """``extract`` of the demo model on ``data`` into ``out``, quietly."""
    return ["extract", "--model", "demo", "--data", data, "--out", out, "--quiet", *extra]
