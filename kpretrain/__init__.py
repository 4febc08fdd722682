"""kpretrain: does pre-training help my model, and under which settings?"""

__version__ = "0.3.0"
