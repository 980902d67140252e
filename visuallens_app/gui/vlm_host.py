"""The one vision-language model of the window: loaded once, shared by every panel.

Captions, the re-ranker and the two inspection panels all ask the host. It loads the model the
settings name for a feature (``Settings.vlm_for``) on its own worker lane, the first time a job
needs it, and keeps it; every job that uses it runs on that lane, one at a time, so two panels
never drive the model at once and the weights are never loaded twice. When the setting changes
the model is dropped (on the lane, after the running job) and the next job loads the new one.
Only one model is held at a time: a feature overriding the shared model swaps it in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from visuallens_app.gui.workers import Job, JobContext, JobRunner
from visuallens_app.settings import Settings

if TYPE_CHECKING:
    from visuallens_app.vlm.loading import VisionLanguageModel

log = logging.getLogger(__name__)

#: The runner lane (one dedicated thread) every vision-language model job runs on.
VLM_LANE = "vlm"

#: What the status bar says when no model is configured.
NO_VLM = (
    "No vision-language model: choose one in File → Settings, or download one with "
    "`visuallens models download-vlm`."
)


class VlmHost(QObject):
    """Loads, shares and unloads the configured vision-language model (module doc)."""

    loading = Signal(str)  # the source being loaded
    loaded = Signal(str)  # VisionLanguageModel.describe()
    failed = Signal(str)  # one sentence
    unloaded = Signal()
    status_changed = Signal(str)  # the status bar's line

    def __init__(
        self, runner: JobRunner, settings: Settings, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.runner = runner
        self.settings = settings
        self._vlm: VisionLanguageModel | None = None  # touched only on the lane
        self._loaded_source = ""
        self.description = ""
        self.error = ""
        runner.add_lane(VLM_LANE, on_shutdown=self._drop)
        self.loaded.connect(self._on_loaded)
        self.failed.connect(self._on_failed)
        self.unloaded.connect(lambda: self.status_changed.emit(self.status()))

    # -- what panels ask -------------------------------------------------------------------------
    def source(self, feature: str) -> str:
        """The model ``feature`` would use (a folder or Hub name); empty when none."""
        return self.settings.vlm_for(feature)

    def configured(self, feature: str) -> bool:
        return bool(self.source(feature))

    def status(self) -> str:
        """One line: which model is loaded, configured, or how to get one."""
        if self.description:
            return f"VLM: {self.description}"
        if self.error:
            return f"VLM not loaded: {self.error}"
        shared = self.settings.vlm.strip()
        if shared:
            return f"VLM: {shared} (loads when a panel needs it)"
        return NO_VLM

    def run(
        self,
        key: str,
        feature: str,
        work: Callable[[VisionLanguageModel, JobContext], Any],
        *,
        device: str | None = None,
    ) -> Job:
        """Run ``work(vlm, ctx)`` on the model lane, loading the model first when needed.

        ``work`` may return a generator (a job): the runner drives it, relaying its progress
        and partial results. A job of the same key supersedes the previous one.
        """
        source = self.source(feature)
        device = device or self.settings.device

        def task(ctx: JobContext) -> Any:
            vlm = self._ensure(source, device, ctx)
            return work(vlm, ctx)

        return self.runner.start(key, task, lane=VLM_LANE)

    def settings_changed(self) -> None:
        """The settings were saved: drop the model if no feature uses it any more."""
        from visuallens_app.settings import VLM_FEATURES

        wanted = {self.settings.vlm_for(feature) for feature in VLM_FEATURES}
        self.error = ""
        if self._loaded_source and self._loaded_source not in wanted:
            self.unload()
        self.status_changed.emit(self.status())

    def unload(self) -> None:
        """Drop the loaded model (on the lane, after the job running there)."""
        self.description = ""
        self.runner.start("vlm-unload", lambda _ctx: self._drop(), lane=VLM_LANE)

    # -- the lane ----------------------------------------------------------------------------
    def _ensure(self, source: str, device: str, ctx: JobContext) -> VisionLanguageModel:
        from visuallens_app.errors import ModelUnavailableError
        from visuallens_app.vlm.loading import load_vlm

        if not source:
            raise ModelUnavailableError(NO_VLM)
        if self._vlm is not None and self._loaded_source == source:
            return self._vlm
        self._drop()
        self.loading.emit(source)
        try:
            vlm = load_vlm(source, device=device)
        except Exception as err:
            from visuallens_app.errors import user_message

            self.failed.emit(user_message(err) or f"Could not load {source} ({err}).")
            raise
        ctx.cancel.check()
        self._vlm, self._loaded_source = vlm, source
        self.loaded.emit(vlm.describe())
        return vlm

    def _drop(self) -> None:
        if self._vlm is None:
            return
        from visuallens_app.devices import release_memory

        self._vlm = None
        self._loaded_source = ""
        release_memory()
        self.unloaded.emit()

    # -- UI thread -------------------------------------------------------------------------------
    def _on_loaded(self, description: str) -> None:
        self.description = description
        self.error = ""
        self.status_changed.emit(self.status())

    def _on_failed(self, message: str) -> None:
        self.description = ""
        self.error = message
        self.status_changed.emit(self.status())


__all__ = ["NO_VLM", "VLM_LANE", "VlmHost"]
