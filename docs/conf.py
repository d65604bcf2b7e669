"""Sphinx configuration for the mpc_llm documentation (pages in MyST Markdown, API from docstrings).

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (what ``tests/test_docs.py``
runs, with warnings as errors).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout, not an installed copy

import mpc_llm  # noqa: E402

project = "mpc_llm"
author = "the mpc_llm authors"
release = version = mpc_llm.__version__
copyright = "the mpc_llm authors, Apache-2.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# The studies' own output folders (summary.md written by `mpc-llm compare`) are data, not pages.
exclude_patterns = ["_build", "results/**/summary.md"]

# MyST: `$...$` maths, heading anchors for `page.md#section` links, ::: fences.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference from the existing docstrings (Google-style sections, reST inline markup: ``code``
# and `name`, which becomes a cross-reference where the name is documented).
default_role = "py:obj"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
add_module_names = False
python_use_unqualified_type_names = True

html_theme = "furo"
html_title = f"mpc_llm {release}"
html_static_path = ["_static"]
html_css_files = ["wide.css"]  # a wider text column on wide windows (code lines fit)
