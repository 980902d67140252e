"""The "Hallucinations" panel: a caption or answer about a photo, each token coloured by how
likely it is grounded in the image, and for any token, where on the photo its evidence lies.

The photo comes from a file (opened or dropped) or the library; the text is typed, or generated
now by the configured vision-language model (streamed into the editor). Two detectors: the
grounding detector over the app's own encoder (offline, the default; words it cannot judge stay
plain), or a reward model trained with ``visuallens tldr train`` (the paper's). Scoring runs on a
worker (the reward model on the model's lane): the window never freezes.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from visuallens_app.gui.context import AppContext
from visuallens_app.gui.images import heatmap_qimage
from visuallens_app.gui.inspect_widgets import ImageInput, TokenView
from visuallens_app.gui.panels.base import Panel

DEFAULT_PROMPT = "Describe this photo in one short sentence."
GROUNDING = "grounding"


@dataclass(frozen=True)
class Checked:
    """A scored text and, for its flagged phrases, ranked replacements."""

    scores: Any  # TokenScores
    suggestions: list[Any]  # tldr.correct.Suggestion


def check_library_captions(ctx: Any, library_dir: Path, encoder: Any, threshold: float) -> Any:
    """The batch job: every stored caption of the library, scored by the grounding detector."""
    from visuallens_app.gui import tasks
    from visuallens_app.tldr.batch import library_captions, score_captions
    from visuallens_app.tldr.grounding import GroundingDetector

    with tasks.open_store(library_dir) as store:
        items = library_captions(store.db)
    return score_captions(GroundingDetector(encoder), items, threshold=threshold, cancel=ctx.cancel)


def score_with_grounding(encoder: Any, image: Any, prompt: str, text: str) -> Checked:
    """The grounding detector's scores and suggestions over the app's encoder (worker side)."""
    from visuallens_app.tldr.correct import suggestions
    from visuallens_app.tldr.grounding import GroundingDetector

    detector = GroundingDetector(encoder, heatmaps=True)
    scores = detector.score(image, prompt, text)
    return Checked(scores, suggestions(detector, image, text, scores))


class _RewardModels:
    """Reward models loaded on the model's lane, kept per folder (touched only on that lane)."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str], Any] = {}

    def score(self, vlm: Any, folder: str, image: Any, prompt: str, text: str) -> Any:
        from visuallens_app.tldr.reward import load_detector

        key = (folder, vlm.fingerprint)
        if key not in self._loaded:
            self._loaded.clear()  # one at a time: each holds a copy of the head and adapter
            self._loaded[key] = load_detector(folder, vlm=vlm, heatmaps=True)
        return Checked(self._loaded[key].score(image, prompt, text), [])


def diff_html(diff: list[tuple[str, str, str]]) -> str:
    """A word diff as rich text: removed words struck through in red, added ones in green."""
    parts = []
    for op, old, new in diff:
        if op == "equal":
            parts.append(html.escape(old))
            continue
        if old:
            parts.append(f"<s style='color: #c0392b;'>{html.escape(old)}</s>")
        if new:
            parts.append(f"<b style='color: #1e8449;'>{html.escape(new)}</b>")
    return "".join(parts) if any(op != "equal" for op, _o, _n in diff) else ""


class HallucinationsPanel(ImageInput, Panel):
    """Per-token hallucination highlights over a photo (module doc)."""

    title = "Hallucinations"
    icon = "SP_MessageBoxWarning"
    needs_library = False

    def __init__(self, context: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(context, parent)
        self.image: Any = None
        self.scores: Any = None
        self._selected = -1
        self._rewards = _RewardModels()

        self.build_image_input(self.session, "tldr-image")

        self.prompt = QLineEdit(DEFAULT_PROMPT)
        self.prompt.setObjectName("TldrPrompt")
        self.text = QPlainTextEdit()
        self.text.setObjectName("TldrText")
        self.text.setPlaceholderText(
            "Type or paste a caption or an answer about the photo, or generate one with the "
            "vision-language model."
        )
        self.text.setMaximumHeight(110)
        self.generate_button = QPushButton("Generate with the VLM")
        self.generate_button.setObjectName("TldrGenerate")
        self.generate_button.clicked.connect(self.generate)
        self.check_button = QPushButton("Check for hallucinations")
        self.check_button.setObjectName("TldrCheck")
        self.check_button.setDefault(True)
        self.check_button.clicked.connect(self.check)

        self.detector = QComboBox()
        self.detector.setObjectName("TldrDetector")
        self.detector.addItem("Grounding (your encoder, offline)", GROUNDING)
        self.detector.addItem("Reward model folder…", "")
        self.detector.activated.connect(self._detector_chosen)

        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setObjectName("TldrThreshold")
        self.threshold.setRange(5, 95)
        self.threshold.setValue(50)
        self.threshold.valueChanged.connect(lambda _v: self._redraw())
        self.threshold_label = QLabel("0.50")

        self.tokens = TokenView()
        self.tokens.token_hovered.connect(self._hovered)
        self.tokens.token_clicked.connect(self._clicked)
        self.flagged = QListWidget()
        self.flagged.setObjectName("TldrFlagged")
        self.flagged.setMaximumHeight(140)
        self.flagged.setToolTip("Double-click a suggestion to put it in the text")
        self.flagged.itemDoubleClicked.connect(self._apply_suggestion)
        self.correct_button = QPushButton("Correct with the VLM")
        self.correct_button.setObjectName("TldrCorrect")
        self.correct_button.setToolTip(
            "The paper's self-correction: the flagged words are fed back to the vision-language "
            "model, which fixes only the sentences that hold them"
        )
        self.correct_button.clicked.connect(self.correct)
        self.diff = QLabel()
        self.diff.setObjectName("TldrDiff")
        self.diff.setWordWrap(True)
        self.diff.setTextFormat(Qt.TextFormat.RichText)
        self.annotate = QCheckBox("Annotate: click a token to toggle its label")
        self.annotate.setObjectName("TldrAnnotate")
        self.annotate.toggled.connect(self._annotate_toggled)
        self.save_annotation = QPushButton("Save annotation")
        self.save_annotation.clicked.connect(self.save_annotation_now)
        self.export_button = QPushButton("Export annotations…")
        self.export_button.clicked.connect(self.export_annotations)
        self.timer_label = QLabel()
        self.timer_label.setObjectName("TldrTimer")
        self._labels: list[int] = []  # per token: 1 good, 0 hallucinated (annotation mode)
        self._annotation_started = 0.0
        self._annotation_id: int | None = None
        self._suggestions: list[Any] = []
        self.status = QLabel(
            "Open a photo, write or generate a caption, and check it: red words are likely "
            "hallucinated, green ones grounded, plain ones were not checked."
        )
        self.status.setObjectName("TldrStatus")
        self.status.setWordWrap(True)

        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.check_button)
        buttons.addStretch(1)
        threshold_row = QHBoxLayout()
        threshold_row.addWidget(self.threshold, 1)
        threshold_row.addWidget(self.threshold_label)
        form = QFormLayout()
        form.addRow("Prompt:", self.prompt)
        form.addRow("Text:", self.text)
        form.addRow("", buttons)
        form.addRow("Detector:", self.detector)
        form.addRow("Flag below:", threshold_row)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.addLayout(form)
        right_layout.addWidget(QLabel("<b>Tokens</b> (hover one to see where its evidence lies)"))
        right_layout.addWidget(self.tokens, 1)
        right_layout.addWidget(QLabel("<b>Flagged</b>, with replacements that fit the photo"))
        right_layout.addWidget(self.flagged)
        fix_row = QHBoxLayout()
        fix_row.addWidget(self.correct_button)
        fix_row.addStretch(1)
        right_layout.addLayout(fix_row)
        right_layout.addWidget(self.diff)
        annotate_row = QHBoxLayout()
        annotate_row.addWidget(self.annotate)
        annotate_row.addWidget(self.timer_label)
        annotate_row.addStretch(1)
        annotate_row.addWidget(self.save_annotation)
        annotate_row.addWidget(self.export_button)
        right_layout.addLayout(annotate_row)
        right_layout.addWidget(self.status)
        self.batch_button = QPushButton("Check the library's captions")
        self.batch_button.setObjectName("TldrBatch")
        self.batch_button.setToolTip(
            "Score every stored caption (File → Caption photos writes them) in the background, "
            "worst first; click one to inspect it"
        )
        self.batch_button.clicked.connect(self.check_library)
        self.batch = QListWidget()
        self.batch.setObjectName("TldrBatchList")
        self.batch.setMaximumHeight(150)
        self.batch.itemActivated.connect(self._batch_chosen)
        self.batch.itemClicked.connect(self._batch_chosen)
        self.batch.hide()
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(self.source)
        left_layout.addWidget(self.canvas, 1)
        batch_row = QHBoxLayout()
        batch_row.addWidget(self.batch_button)
        batch_row.addStretch(1)
        left_layout.addLayout(batch_row)
        left_layout.addWidget(self.batch)
        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(splitter)
        self._reward_folder = ""

    # -- input -------------------------------------------------------------------------------
    def _image_loaded(self, _path: Path, image: Any) -> None:
        self.image = image
        self.scores = None
        self.canvas.set_image(image)
        self.tokens.clear()
        self.flagged.clear()
        if self.text.toPlainText().strip():
            self.check()

    def _detector_chosen(self, index: int) -> None:
        if self.detector.itemData(index) == "":
            folder = QFileDialog.getExistingDirectory(self, "A reward model from tldr train")
            if not folder:
                self.detector.setCurrentIndex(0)
                return
            self._reward_folder = folder
            label = f"Reward model: {Path(folder).name}"
            existing = self.detector.findData(folder)
            if existing < 0:
                self.detector.insertItem(1, label, folder)
                existing = 1
            self.detector.setCurrentIndex(existing)

    def use_reward_model(self, folder: Path) -> None:
        """Score with the reward model saved in ``folder`` (what the folder picker does)."""
        self._reward_folder = str(folder)
        self.detector.insertItem(1, f"Reward model: {folder.name}", str(folder))
        self.detector.setCurrentIndex(1)

    # -- generating ------------------------------------------------------------------------------
    def generate(self) -> None:
        """Stream a caption from the vision-language model into the text box, then check it."""
        if self.image is None:
            self.status.setText("Open a photo first.")
            return
        if not self.vlm.configured("tldr"):
            self.status.setText(self.vlm.status())
            return
        from visuallens_app.vlm.generation import stream

        image, prompt = self.image, self.prompt.text().strip() or DEFAULT_PROMPT
        self.text.setPlainText("")
        self.status.setText("Generating…")
        self.generate_button.setEnabled(False)
        job = self.vlm.run(
            "tldr-generate",
            "tldr",
            lambda vlm, ctx: stream(vlm, image, prompt, max_new_tokens=96, cancel=ctx.cancel),
        )
        job.partial_result.connect(lambda piece: self.text.setPlainText(piece.text))
        job.succeeded.connect(self._generated)
        job.failed.connect(self._failed)
        job.finished.connect(lambda: self.generate_button.setEnabled(True))

    def _generated(self, answer: Any) -> None:
        self.text.setPlainText(answer.text)
        self.check()

    # -- scoring ------------------------------------------------------------------------------
    def check(self) -> None:
        """Score the text against the photo with the chosen detector, on a worker."""
        text = self.text.toPlainText()
        if self.image is None:
            self.status.setText("Open a photo first.")
            return
        if not text.strip():
            self.status.setText("Write or generate a caption to check.")
            return
        image, prompt = self.image, self.prompt.text().strip() or DEFAULT_PROMPT
        kind = self.detector.currentData()
        self.status.setText("Checking…")
        if kind == GROUNDING:
            encoder = self.session.encoder
            if encoder is None:
                self.status.setText("The encoder is still loading; try again in a moment.")
                return
            job = self.session.runner.start(
                "tldr-score", lambda _ctx: score_with_grounding(encoder, image, prompt, text)
            )
        else:
            folder = str(kind)
            job = self.vlm.run(
                "tldr-score",
                "tldr",
                lambda vlm, _ctx: self._rewards.score(vlm, folder, image, prompt, text),
            )
        job.succeeded.connect(self._scored)
        job.failed.connect(self._failed)

    def _scored(self, checked: Checked) -> None:
        self.scores = checked.scores
        self._suggestions = checked.suggestions
        self._labels = [0 if t.flagged(self.threshold_value) else 1 for t in checked.scores.tokens]
        self._annotation_id = None
        self._annotation_started = time.monotonic()
        self._selected = -1
        self.canvas.set_overlay(None)
        self._redraw()

    def _failed(self, message: str) -> None:
        self.status.setText(message)

    @property
    def threshold_value(self) -> float:
        return self.threshold.value() / 100

    def _redraw(self) -> None:
        threshold = self.threshold_value
        self.threshold_label.setText(f"{threshold:.2f}")
        scores = self.scores
        if scores is None:
            return
        spans: list[tuple[int, int, float | None]]
        if self.annotate.isChecked() and len(self._labels) == len(scores.tokens):
            # Annotation mode: the user's labels, not the detector's (0 red, 1 green).
            spans = [
                (t.start, t.end, float(label))
                for t, label in zip(scores.tokens, self._labels, strict=True)
            ]
        else:
            spans = [(t.start, t.end, t.p_good if t.checked else None) for t in scores.tokens]
        self.tokens.show_tokens(
            scores.response, spans, threshold=threshold, selected=self._selected
        )
        flagged = scores.flagged(threshold)
        self.flagged.clear()
        covered: set[int] = set()
        for suggestion in self._suggestions:
            phrase = f"“{suggestion.original.strip()}”"
            if suggestion.p_good is not None:
                phrase += f"  P(good) {suggestion.p_good:.2f}"
            self.flagged.addItem(phrase)
            for text, p_good in suggestion.replacements:
                shown = f"      → {text}" + (f"  ({p_good:.2f})" if p_good is not None else "")
                item = QListWidgetItem(shown)
                item.setData(Qt.ItemDataRole.UserRole, (suggestion, text))
                self.flagged.addItem(item)
            covered.update(
                i
                for i, t in enumerate(scores.tokens)
                if t.start < suggestion.end and suggestion.start < t.end
            )
        for index in flagged:
            if index not in covered:
                token = scores.tokens[index]
                self.flagged.addItem(f"“{token.text.strip()}”  P(good) {token.p_good:.2f}")
        checked = sum(1 for t in scores.tokens if t.checked)
        summary = (
            f"{len(flagged)} of {checked} checked token(s) flagged; "
            f"{len(scores.tokens) - checked} not checked ({scores.detector})."
        )
        self.status.setText(" ".join([summary, *scores.warnings]))

    def _hovered(self, index: int) -> None:
        if index < 0:
            if self._selected >= 0:
                self._show_heatmap(self._selected)
            else:
                self.canvas.set_overlay(None)
            return
        self._show_heatmap(index)

    def _clicked(self, index: int) -> None:
        if self.annotate.isChecked() and 0 <= index < len(self._labels):
            self._labels[index] = 1 - self._labels[index]
            self._redraw()
            return
        self._selected = -1 if index == self._selected else index
        self._redraw()
        self._show_heatmap(self._selected)

    # -- the batch view ------------------------------------------------------------------------
    def check_library(self) -> None:
        """Score every caption in the library on a worker; the list fills worst first."""
        running = self.session.runner.current("tldr-batch")
        if running is not None:
            running.cancel()
            return
        encoder = self.session.encoder
        if encoder is None:
            self.status.setText("The encoder is still loading; try again in a moment.")
            return
        directory, threshold = self.session.library_dir, self.threshold_value
        self.batch.clear()
        self.batch.show()
        self.batch_button.setText("Stop checking")
        job = self.session.runner.start(
            "tldr-batch", lambda ctx: check_library_captions(ctx, directory, encoder, threshold)
        )
        job.partial_result.connect(self._batch_scored)
        job.progress_changed.connect(lambda p: self.status.setText(p.message))
        job.succeeded.connect(self._batch_done)
        job.failed.connect(self._failed)
        job.finished.connect(lambda: self.batch_button.setText("Check the library's captions"))

    def _batch_scored(self, scored: Any) -> None:
        text = (
            f"{scored.rate:.0%}  {scored.path.name}: {scored.caption}"
            f"  ({scored.flagged} of {scored.checked} checked flagged)"
        )
        item = QListWidgetItem(text)
        item.setData(Qt.ItemDataRole.UserRole, scored)
        item.setToolTip(str(scored.path))
        row = 0  # worst first, kept sorted as results arrive
        while row < self.batch.count():
            other = self.batch.item(row).data(Qt.ItemDataRole.UserRole)
            if other.rate < scored.rate:
                break
            row += 1
        self.batch.insertItem(row, item)

    def _batch_done(self, results: list[Any]) -> None:
        if not results:
            self.status.setText(
                "No captions in the library yet: File → Caption photos with the VLM writes them."
            )
        else:
            worst = sum(1 for r in results if r.flagged)
            self.status.setText(f"Checked {len(results)} caption(s); {worst} with a flagged word.")

    def _batch_chosen(self, item: QListWidgetItem) -> None:
        scored = item.data(Qt.ItemDataRole.UserRole)
        if scored is None:
            return
        self.text.setPlainText(scored.caption)
        self.open_image(scored.path)  # checks the caption once the photo is in

    # -- fixing ----------------------------------------------------------------------------------
    def _apply_suggestion(self, item: QListWidgetItem) -> None:
        from visuallens_app.errors import VisualLensError
        from visuallens_app.tldr.correct import apply_suggestion

        chosen = item.data(Qt.ItemDataRole.UserRole)
        if not chosen:
            return
        suggestion, replacement = chosen
        try:
            fixed = apply_suggestion(self.text.toPlainText(), suggestion, replacement)
        except VisualLensError as err:
            self.status.setText(str(err))
            return
        self.text.setPlainText(fixed)
        self.check()

    def correct(self) -> None:
        """The paper's self-correction by the VLM, streamed; shown as a diff and re-checked."""
        scores, image = self.scores, self.image
        if scores is None or image is None:
            self.status.setText("Check a text first; the correction fixes what was flagged.")
            return
        if not scores.flagged(self.threshold_value):
            self.status.setText("Nothing is flagged at this threshold: nothing to correct.")
            return
        if not self.vlm.configured("tldr"):
            self.status.setText(
                "Correcting needs a vision-language model (File → Settings); the suggestions "
                "above work without one."
            )
            return
        from visuallens_app.tldr.correct import correct_with_vlm

        text, threshold = scores.response, self.threshold_value
        self.status.setText("Correcting the flagged sentences…")
        self.correct_button.setEnabled(False)
        job = self.vlm.run(
            "tldr-correct",
            "tldr",
            lambda vlm, ctx: correct_with_vlm(
                vlm, image, text, scores, threshold=threshold, cancel=ctx.cancel
            ),
        )
        job.partial_result.connect(lambda piece: self.diff.setText(html.escape(piece.text)))
        job.succeeded.connect(self._corrected)
        job.failed.connect(self._failed)
        job.finished.connect(lambda: self.correct_button.setEnabled(True))

    def _corrected(self, correction: Any) -> None:
        self.diff.setText(diff_html(correction.diff) or "No change.")
        if correction.changed:
            self.text.setPlainText(correction.corrected)
            self.check()
        else:
            self.status.setText(
                " ".join(["The model left the text as it was.", *correction.warnings])
            )

    # -- annotating ------------------------------------------------------------------------------
    def _annotate_toggled(self, on: bool) -> None:
        self._annotation_started = time.monotonic()
        self.timer_label.setText("timing this item" if on else "")
        self._redraw()

    def annotation_store(self) -> Any:
        from visuallens_app.tldr.annotate import AnnotationStore, default_annotations_path

        return AnnotationStore(default_annotations_path(self.session.library_dir))

    def save_annotation_now(self) -> None:
        """Store the labels, the (corrected) text and the seconds spent on this item."""
        from visuallens_app.errors import VisualLensError
        from visuallens_app.tldr.annotate import AnnotatedToken

        scores, path = self.scores, self.source.path
        if scores is None or path is None:
            self.status.setText("Check a text about a photo first, then label its tokens.")
            return
        seconds = time.monotonic() - self._annotation_started
        tokens = [
            AnnotatedToken(t.text, t.start, t.end, label, t.p_good, t.checked)
            for t, label in zip(scores.tokens, self._labels, strict=True)
        ]
        text = self.text.toPlainText()
        corrected = text if text != scores.response else None
        try:
            with self.annotation_store() as store:
                if self._annotation_id is None:
                    item = store.add(str(path), scores.response, tokens=tokens, corrected=corrected)
                    self._annotation_id = item.id
                    store.update(item.id, seconds=seconds)
                else:
                    store.update(
                        self._annotation_id,
                        labels=self._labels,
                        corrected=corrected,
                        add_seconds=seconds,
                    )
        except (VisualLensError, OSError) as err:
            self.status.setText(str(err))
            return
        self._annotation_started = time.monotonic()
        self.status.setText(f"Saved the annotation ({seconds:.0f} s on this item).")

    def export_annotations(self) -> None:
        from visuallens_app.errors import VisualLensError

        path, chosen = QFileDialog.getSaveFileName(
            self,
            "Export annotations",
            "annotations.jsonl",
            "JSONL with offsets and labels (*.jsonl);;Label Studio import (*.json)",
        )
        if not path:
            return
        try:
            with self.annotation_store() as store:
                if path.endswith(".json") or "Label Studio" in chosen:
                    count = store.export_label_studio(Path(path))
                else:
                    count = store.export_jsonl(Path(path))
        except (VisualLensError, OSError) as err:
            self.status.setText(str(err))
            return
        self.status.setText(f"Exported {count} annotation(s) to {path}.")

    def _show_heatmap(self, index: int) -> None:
        scores = self.scores
        heat = scores.heatmaps.get(index) if scores is not None and index >= 0 else None
        self.canvas.set_overlay(heatmap_qimage(heat) if heat is not None else None)

    def shutdown(self) -> None:
        for key in ("tldr-score", "tldr-generate", "tldr-image", "tldr-correct", "tldr-batch"):
            self.session.runner.cancel(key)
