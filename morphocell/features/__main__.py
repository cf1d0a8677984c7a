"""``python -m morphocell.features > docs/features.md``: print the feature reference page."""
from .registry import to_markdown

print(to_markdown())
