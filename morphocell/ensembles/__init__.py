"""Ensembles: the stacked RF / SVC / XGBoost classifier and column groups for fusion."""
from __future__ import annotations

from .column_groups import DEEP, HANDCRAFTED, LATE_FUSION, resolve_groups, select_columns
from .stacking import BASE_KINDS, BaseLearner, StackedCellClassifier

__all__ = ["StackedCellClassifier", "BaseLearner", "BASE_KINDS", "HANDCRAFTED", "DEEP",
           "LATE_FUSION", "resolve_groups", "select_columns"]
