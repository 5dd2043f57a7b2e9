"""Episodes: a sample's low-resolution first turn, the prompts and the turn parser."""

from visionthink.episode.builder import EncodedImage, Episode, EpisodeBuilder, Segment
from visionthink.episode.parser import FinalAnswer, Malformed, ParsedTurn, ToolCall, TurnParser
from visionthink.episode.prompts import PromptSpec, ToolSpec, prompt_from_config
from visionthink.episode.resolution import ImageGeometryError, ResolutionPolicy, View, Views

__all__ = [
    "EncodedImage",
    "Episode",
    "EpisodeBuilder",
    "FinalAnswer",
    "ImageGeometryError",
    "Malformed",
    "ParsedTurn",
    "PromptSpec",
    "ResolutionPolicy",
    "Segment",
    "ToolCall",
    "ToolSpec",
    "TurnParser",
    "View",
    "Views",
    "prompt_from_config",
]
