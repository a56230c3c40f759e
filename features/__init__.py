"""Risk indicators: the registry (`indicators.yaml`) and their computation with evidence.

    from features import load_registry, compute_indicators
    registry = load_registry()
    result = compute_indicators(con, registry, reference=date(2026, 10, 31))
"""

from features.compute import IndicatorResult, compute_indicators
from features.registry import Indicator, Registry, load_registry

__all__ = ["Indicator", "Registry", "load_registry", "IndicatorResult", "compute_indicators"]
