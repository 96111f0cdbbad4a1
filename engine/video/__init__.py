"""Video: a shot's frames rendered one after another with temporal consistency (Ruder et al.,
GCPR 2016), resumable frame by frame, encoded with PyAV; optical flow with OpenCV's DIS.

Sits between rendering and batch: it calls ``render`` per frame, and a batch job can be a shot.
PyAV and OpenCV are the ``video`` extra, imported when first used (``MissingExtraError`` names
the extra when they are missing).
"""

from .._video_config import VideoConfig
from ._deps import MissingExtraError, require
from ._encode import CODECS, CONTAINERS, check_codec, check_encoding, encode_video, encoding_mark, video_digest
from ._flow import FLOW_PRESETS, consistency_mask, motion_boundaries, occlusions, optical_flow, warp
from ._frames import IMAGE_SUFFIXES, VIDEO_SUFFIXES, FrameSource, open_frames
from ._metric import sequence_warp_error, warp_error
from ._sequence import FrameSequence, find_sequence, frame_path, is_sequence, parse_frame_range, printf_pattern
from ._shot import ShotInterrupted, ShotResult, VideoEvent, check_shot, render_shot, shot_digests
from ._store import FrameStore, chain_digests, frame_store

__all__ = [
    "render_shot", "VideoConfig", "VideoEvent", "ShotResult", "ShotInterrupted", "check_shot", "shot_digests",
    "open_frames", "FrameSource", "VIDEO_SUFFIXES", "IMAGE_SUFFIXES",
    "find_sequence", "FrameSequence", "frame_path", "is_sequence", "parse_frame_range", "printf_pattern",
    "frame_store", "FrameStore", "chain_digests", "encode_video", "video_digest", "check_codec", "check_encoding",
    "encoding_mark", "CODECS",
    "CONTAINERS",
    "optical_flow", "warp", "occlusions", "motion_boundaries", "consistency_mask", "FLOW_PRESETS",
    "warp_error", "sequence_warp_error",
    "MissingExtraError", "require",
]
