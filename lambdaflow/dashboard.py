"""Moved to :mod:`lambdaflow.monitoring.dashboard`; this name stays for the imports that use it.

``from lambdaflow import dashboard`` gives the very same module object (not a copy), so attributes
patched through either name are seen by both.
"""

import sys

from lambdaflow.monitoring import dashboard as _dashboard

sys.modules[__name__] = _dashboard
