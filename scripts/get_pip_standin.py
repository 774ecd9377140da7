"""Offline stand-in for get-pip.py: ansible-test runs it to put pip into the venvs it builds.

It installs pip (and whatever else ansible-test asks for) from the pip wheel that
scripts/bootstrap.sh downloaded from the package registry into pip-wheel/ beside this file.
"""

import glob
import os
import sys

wheels = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "pip-wheel", "pip-*.whl")))
if not wheels:
    sys.exit("get-pip stand-in: no pip wheel beside this script; run scripts/bootstrap.sh")
sys.path.insert(0, wheels[-1])

from pip._internal.cli.main import main  # noqa: E402  (the wheel is on sys.path only now)

# get-pip.py accepts these; pip itself does not.
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", *args]))
