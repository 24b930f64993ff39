"""Video files with a text overlay, written frame by frame (a long episode never sits in memory).

The file appears only when writing finished without error: frames go to a temp file
that is renamed at the end and deleted on failure, so a wrong video is never left behind.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import cv2
import numpy as np

from mario_apo.runs import refuse_non_regular

VIDEO_FORMATS = (".mp4", ".gif")


def check_video_path(path: Path) -> Path:
    path = Path(path)
    if path.suffix not in VIDEO_FORMATS:
        raise ValueError(f"video file must end in {' or '.join(VIDEO_FORMATS)}, got {path.name!r}")
    return path


class VideoWriter:
    """MP4 (imageio-ffmpeg's own ffmpeg) or GIF by file name; ``add`` scales and annotates a frame."""

    def __init__(self, path: Path, fps: int = 60, scale: int = 2):
        self.path = check_video_path(path)
        self.fps, self.scale = fps, scale
        self.frames = 0
        # a fresh name: a file (or link) already in the folder is never written through
        self._tmp = self.path.with_name(f".{self.path.stem}.{uuid.uuid4().hex[:12]}.tmp{self.path.suffix}")

    def __enter__(self) -> VideoWriter:
        import imageio.v2 as imageio

        self.path.parent.mkdir(parents=True, exist_ok=True)
        refuse_non_regular(self.path)
        if self.path.suffix == ".mp4":
            self._writer = imageio.get_writer(self._tmp, fps=self.fps, macro_block_size=1)
        else:  # GIF delays are in 10 ms units: 60 fps plays at 50
            self._writer = imageio.get_writer(self._tmp, duration=1000 / self.fps, loop=0)
        return self

    def add(self, rgb: np.ndarray, lines: list[str]) -> None:
        scale = self.scale
        image = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale != 1 else rgb.copy()
        for row, text in enumerate(lines):
            origin = (6 * scale, (52 + 11 * row) * scale)  # below the game's score line
            size = 0.33 * scale
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), 2 * scale, cv2.LINE_AA)
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), scale, cv2.LINE_AA)
        self._writer.append_data(image)
        self.frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        self._writer.close()
        if exc_type is None:
            refuse_non_regular(self.path)
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)
