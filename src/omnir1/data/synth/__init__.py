"""Synthetic audio-visual referring-segmentation data in the official layouts.

Scenes of moving shapes that enter, leave and occlude each other, with a soundtrack in which
each shape class has its own sound; expressions of several kinds (appearance, audio, temporal
reasoning, multi-object, null) with exact ground-truth masks. See `generate.synthesize`.
"""

from omnir1.data.synth.generate import SynthConfig, synthesize

__all__ = ["SynthConfig", "synthesize"]
