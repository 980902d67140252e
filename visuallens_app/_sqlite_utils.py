"""sqlite-utils, imported without the pandas it loads whenever pandas happens to be installed.

sqlite-utils imports pandas only to map ``pandas.Timestamp`` values to a column type, which the
app never writes; that import alone cost 0.3 s of every command's 1 s start on the 2-core
development machine (issue 13). pandas is hidden for the duration of this one import and stays
importable for anything that needs it afterwards.
"""

from __future__ import annotations

import sys

if "sqlite_utils" not in sys.modules and "pandas" not in sys.modules:
    sys.modules["pandas"] = None  # type: ignore[assignment]  # makes `import pandas` fail
    try:
        import sqlite_utils
    finally:
        del sys.modules["pandas"]

import sqlite_utils
from sqlite_utils import Migrations

__all__ = ["Migrations", "sqlite_utils"]
