"""The one exception the media stage raises, so callers can record a per-video failure and move on."""

from __future__ import annotations


class MediaError(Exception):
    """A video could not be fetched, probed or decoded.

    ``video_id`` is whatever names the video best where the error arose (a source string, a file name);
    callers that know the dataset's video id may overwrite it, ``str()`` follows the attribute so the
    message stays ``"<id>: <reason>"``.
    """

    def __init__(self, reason: str, video_id: str | None = None) -> None:
        super().__init__(reason, video_id)
        self.reason = reason
        self.video_id = video_id

    def __str__(self) -> str:
        return f"{self.video_id}: {self.reason}" if self.video_id is not None else self.reason

    def __reduce__(self):  # keep pickling (multiprocessing, Dagster) working with keyword state
        return (type(self), (self.reason, self.video_id))
