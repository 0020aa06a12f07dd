"""Every kind of work the engine runs. Adding a lane: a new folder under engine/, and one line here."""

from __future__ import annotations

from collections.abc import Callable

from engine.asr.lane import build_asr_lane
from engine.config import EngineConfig
from engine.lane import Lane
from engine.llm.lane import build_llm_lane
from engine.pooling.lane import build_pooling_lane
from engine.stats import EngineStats
from engine.tts.lane import build_tts_lane

# Each builder loads its models (blocking) and returns its lane, or None when the config asks for none.
# The order is the order lanes run in within a step.
LaneBuilder = Callable[[EngineConfig, str, EngineStats], Lane | None]
LANE_BUILDERS: tuple[LaneBuilder, ...] = (
    build_asr_lane,
    build_llm_lane,
    build_tts_lane,
    build_pooling_lane,  # last: it sizes its batch by what the others planned for the step
)
