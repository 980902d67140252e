"""Recommendations: pick a category, get ranked candidates explained by your own photos."""

from __future__ import annotations

import html
from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QElidingLabel

from visuallens_app.gui import tasks
from visuallens_app.gui.context import AppContext
from visuallens_app.gui.images import pil_to_qimage
from visuallens_app.gui.panels.base import Panel
from visuallens_app.gui.session import QUERY_LANE
from visuallens_app.gui.tasks import CatalogInfo, RecommendationCard, RecommendationView
from visuallens_app.gui.widgets import JobBar
from visuallens_app.gui.workers import Job
from visuallens_app.jobs import CATALOG_STAGE, Progress

EVIDENCE_SIDE = 72


def chips(words: list[tuple[str, float]], limit: int = 8) -> str:
    """Aspect words as small rounded labels (rich text)."""
    spans = [
        f"<span style='background-color: rgba(127,127,127,0.22); border-radius: 6px;'>"
        f"&nbsp;{html.escape(term)}&nbsp;</span>"
        for term, _weight in words[:limit]
    ]
    return " ".join(spans)


def shown_grid(grid: Image.Image, cols: int = 8) -> Image.Image:
    """The profile grid without its empty rows of tiles at the bottom.

    The re-ranker reads the full 8x8 (black where there are fewer than 64 photos, as in the
    paper); on screen those rows are only a black area. Every filled tile carries its number
    label, so a row of tiles holds a photo exactly when it is not all black.
    """
    tile = grid.width // cols
    rows = grid.height // tile if tile else 0
    used = rows
    while used > 1 and grid.crop((0, (used - 1) * tile, grid.width, used * tile)).getbbox() is None:
        used -= 1
    return grid if used == rows else grid.crop((0, 0, grid.width, used * tile))


class RecommendationCardView(QFrame):
    """One ranked candidate: name, score, why (matched aspects), and the photos behind it."""

    def __init__(self, card: RecommendationCard, panel: RecommendationsPanel) -> None:
        super().__init__()
        self.card = card
        self.setObjectName("Card")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        header = QHBoxLayout()
        rank = QLabel(f"{card.rank}")
        rank.setObjectName("CardRank")
        rank.setAlignment(Qt.AlignmentFlag.AlignCenter)
        rank.setFixedSize(28, 28)
        name = QLabel(f"<b>{html.escape(card.name)}</b>")
        name.setObjectName("CardName")
        name.setTextFormat(Qt.TextFormat.RichText)
        rating = f" · ★ {card.rating:.1f}" if card.rating is not None else ""
        score = QLabel(f"match {card.score:.2f}{rating}")
        score.setObjectName("CardScore")
        header.addWidget(rank)
        header.addWidget(name, 1)
        header.addWidget(score)
        layout.addLayout(header)
        if card.description:
            description = QLabel(card.description)
            description.setWordWrap(True)
            description.setObjectName("CardDescription")
            layout.addWidget(description)
        if card.aspects:
            aspects = QLabel("Matches what you photograph: " + chips(card.aspects))
            aspects.setTextFormat(Qt.TextFormat.RichText)
            aspects.setWordWrap(True)
            aspects.setObjectName("CardAspects")
            layout.addWidget(aspects)
        self.evidence_labels: list[tuple[QLabel, tasks.EvidenceItem]] = []
        if card.evidence:
            row = QHBoxLayout()
            row.setSpacing(4)
            caption = QLabel("Because of:")
            caption.setObjectName("CardEvidenceCaption")
            row.addWidget(caption)
            for evidence in card.evidence[:8]:
                label = QLabel()
                label.setFixedSize(EVIDENCE_SIDE, EVIDENCE_SIDE)
                label.setObjectName("EvidencePhoto")
                label.setAlignment(Qt.AlignmentFlag.AlignCenter)
                tip = f"{evidence.path}\ncontribution {evidence.contribution:.3f}"
                label.setToolTip(f"{tip}\n“{evidence.caption}”" if evidence.caption else tip)
                row.addWidget(label)
                self.evidence_labels.append((label, evidence))
            row.addStretch(1)
            layout.addLayout(row)
        else:
            nothing = QLabel(card.explanation)
            nothing.setObjectName("CardNoEvidence")
            nothing.setWordWrap(True)
            layout.addWidget(nothing)
        self.refresh_thumbnails(panel)

    def refresh_thumbnails(self, panel: RecommendationsPanel, key: str | None = None) -> None:
        for label, evidence in self.evidence_labels:
            if evidence.thumbnail is None or (key is not None and evidence.thumbnail.stem != key):
                continue
            pixmap = panel.session.thumbnails.get(
                evidence.thumbnail.stem, evidence.thumbnail, evidence.path
            )
            if pixmap is not None:
                label.setPixmap(
                    pixmap.scaled(
                        EVIDENCE_SIDE,
                        EVIDENCE_SIDE,
                        Qt.AspectRatioMode.KeepAspectRatioByExpanding,
                        Qt.TransformationMode.SmoothTransformation,
                    ).copy(0, 0, EVIDENCE_SIDE, EVIDENCE_SIDE)
                )


class RecommendationsPanel(Panel):
    """Ranked catalog candidates for a category, each with the photos that support it."""

    title = "Recommendations"
    icon = "SP_FileDialogContentsView"

    recommendations_shown = Signal(object)  # RecommendationView

    def __init__(self, context: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(context, parent)
        session = context.session
        self.catalog_info: CatalogInfo | None = None
        self.view: RecommendationView | None = None
        self.cards: list[RecommendationCardView] = []

        self.category = QComboBox()
        self.category.setObjectName("CategoryCombo")
        self.category.setMinimumContentsLength(16)
        self.category.currentTextChanged.connect(self._category_changed)
        self.category.activated.connect(self._category_picked)
        # Elided, so that the toolbar never makes the window wider than a 1280 px screen.
        self.catalog_label = QElidingLabel()
        self.catalog_label.setObjectName("CatalogLabel")
        self.import_button = QPushButton("Import catalog folder…")
        self.import_button.clicked.connect(self.choose_catalog)
        self.default_button = QPushButton("Use shipped catalog")
        self.default_button.clicked.connect(lambda: self.load_catalog(None))
        self.top_k = QSpinBox()
        self.top_k.setRange(1, 50)
        self.top_k.setValue(10)
        self.top_k.setPrefix("top ")
        self.top_k.valueChanged.connect(lambda _v: self.run())
        top = QHBoxLayout()
        top.addWidget(QLabel("Recommend"))
        top.addWidget(self.category)
        top.addWidget(self.top_k)
        self.rerank = QCheckBox("Re-rank with the VLM")
        self.rerank.setObjectName("RerankToggle")
        self.rerank.setToolTip(
            "Let the vision-language model (File → Settings) re-order the picks from the grid "
            "of your photos, as the VisualLens paper does; slow on a CPU."
        )
        self.rerank.setChecked(self.vlm.configured("rerank"))
        self.rerank.toggled.connect(lambda _on: self.run())
        top.addWidget(self.rerank)
        top.addSpacing(16)
        top.addWidget(self.catalog_label, 1)
        top.addWidget(self.default_button)
        top.addWidget(self.import_button)

        self.problems_toggle = QToolButton()
        self.problems_toggle.setObjectName("CatalogProblemsToggle")
        self.problems_toggle.setCheckable(True)
        self.problems_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.problems_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.problems_toggle.setAutoRaise(True)
        self.problems_toggle.toggled.connect(self._toggle_problems)
        self.problems = QLabel()
        self.problems.setObjectName("CatalogProblems")
        self.problems.setWordWrap(True)
        self.problems.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problems_toggle.hide()
        self.problems.hide()

        self.status = QLabel("Choose a category to see recommendations.")
        self.status.setObjectName("RecommendationStatus")
        self.status.setWordWrap(True)
        # A large catalog's first question reads its descriptions (minutes for 100,000): the
        # indexing bar's count, rate and cancel (a cancel keeps what was read; no pause).
        self.catalog_bar = JobBar(
            title="Reading the catalog (once):",
            stage=CATALOG_STAGE,
            pausable=False,
            name="CatalogBar",
        )
        self.catalog_bar.cancel_clicked.connect(self.cancel_run)
        self._job: Job | None = None
        self._read: Progress | None = None  # the run's last count of descriptions read

        self.cards_box = QWidget()
        self.cards_layout = QVBoxLayout(self.cards_box)
        self.cards_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.cards_box)
        scroll.setFrameShape(QFrame.Shape.NoFrame)

        self.grid_title = QLabel("<b>Your profile</b>")
        self.grid_image = QLabel()
        self.grid_image.setObjectName("ProfileGrid")
        self.grid_image.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignHCenter)
        self.grid_image.setMinimumSize(240, 240)
        self.grid_caption = QLabel(
            "The photos closest to this category, best first: the 8×8 grid the lens reads."
        )
        self.grid_caption.setWordWrap(True)
        self.profile_aspects = QLabel()
        self.profile_aspects.setWordWrap(True)
        self.profile_aspects.setTextFormat(Qt.TextFormat.RichText)
        side = QWidget()
        side.setMaximumWidth(480)
        side_layout = QGridLayout(side)
        side_layout.addWidget(self.grid_title, 0, 0)
        side_layout.addWidget(self.grid_image, 1, 0)
        side_layout.addWidget(self.grid_caption, 2, 0)
        side_layout.addWidget(self.profile_aspects, 3, 0)
        side_layout.setRowStretch(4, 1)

        splitter = QSplitter()
        splitter.addWidget(scroll)
        splitter.addWidget(side)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)
        scroll.setMinimumWidth(420)
        splitter.setSizes([640, 460])

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 0)
        layout.addLayout(top)
        problems_row = QHBoxLayout()
        problems_row.addWidget(self.problems_toggle)
        problems_row.addStretch(1)
        layout.addLayout(problems_row)
        layout.addWidget(self.problems)
        layout.addWidget(self.status)
        layout.addWidget(self.catalog_bar)
        layout.addWidget(splitter, 1)

        session.thumbnails.thumbnail_ready.connect(self._thumbnail_ready)
        session.encoder_ready.connect(lambda _r: self._maybe_run())
        session.indexing_finished.connect(lambda _r: self._maybe_run())
        self._loaded_once = False

    # -- catalog ---------------------------------------------------------------------------
    def activated(self) -> None:
        if not self._loaded_once:
            self._loaded_once = True
            folder = self.session.settings.catalog_dir
            self.load_catalog(Path(folder) if folder else None)

    def choose_catalog(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Choose a catalog folder (items.jsonl or items.csv)"
        )
        if folder:
            self.load_catalog(Path(folder))

    def load_catalog(self, folder: Path | None) -> None:
        """Load the shipped catalog (None) or a folder; problems are listed, never blocking."""
        self._loaded_once = True
        self.catalog_label.setText("Loading catalog…")
        job = self.session.runner.start("catalog", lambda _ctx: tasks.load_catalog(folder))
        job.succeeded.connect(lambda info: self._on_catalog(info, folder))
        job.failed.connect(self._on_catalog_failed)

    def _on_catalog(self, info: CatalogInfo, folder: Path | None) -> None:
        self.catalog_info = info
        self.session.settings.catalog_dir = str(folder) if folder else ""
        self.session.save_settings()
        catalog = info.catalog
        where = "shipped catalog" if info.shipped else f"catalog “{catalog.name}”"
        text = f"From the {where}: {len(catalog.items)} places and things"
        self.catalog_label.setText(text)
        self.catalog_label.setToolTip(text)  # whole, when the toolbar had to shorten it
        self._show_problems(info.problems)
        current = self.category.currentText()
        self.category.blockSignals(True)
        self.category.clear()
        self.category.addItems(catalog.categories())
        index = self.category.findText(current)
        self.category.setCurrentIndex(max(0, index))
        self.category.blockSignals(False)
        self.run()

    def _on_catalog_failed(self, message: str) -> None:
        self.catalog_label.setText("No catalog loaded")
        self._show_problems([message], title="The catalog could not be loaded")

    def _show_problems(self, problems: list[str], title: str = "") -> None:
        if not problems:
            self.problems_toggle.hide()
            self.problems.hide()
            return
        title = title or f"{len(problems)} catalog lines were skipped or partly used"
        self.problems_toggle.setText(title)
        self.problems.setText("\n".join(f"• {p}" for p in problems[:200]))
        self.problems_toggle.show()
        self.problems_toggle.setChecked(False)
        self._toggle_problems(False)

    def _toggle_problems(self, shown: bool) -> None:
        self.problems.setVisible(shown)
        self.problems_toggle.setArrowType(
            Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow
        )

    # -- running -----------------------------------------------------------------------------
    def set_category(self, category: str) -> None:
        """Choose ``category`` as the user does in the list (choosing it again resumes it)."""
        index = self.category.findText(category, Qt.MatchFlag.MatchFixedString)
        if index < 0:
            return
        if index == self.category.currentIndex():
            self._category_picked(index)
        else:
            self.category.setCurrentIndex(index)

    def _category_changed(self, _text: str) -> None:
        self.run()

    def _category_picked(self, _index: int) -> None:
        """The category chosen again after its run was cancelled: run it (a changed choice
        already started one)."""
        shown = self.view is not None and self.view.category == self.category.currentText()
        if self.session.runner.current("recommend") is None and not shown:
            self.run()

    def _maybe_run(self) -> None:
        if self.catalog_info is not None and self.isVisible():
            self.run()

    def run(self) -> None:
        """Rank the current category; a new run cancels the one still going."""
        info = self.catalog_info
        category = self.category.currentText()
        if info is None or not category:
            return
        encoder = self.session.encoder
        if encoder is None:
            self.status.setText("The model is still loading; recommendations follow in a moment.")
            return
        directory, queries = self.session.library_dir, self.session.queries
        k, w = self.top_k.value(), self.session.settings.retrieval_size
        self.status.setText(f"Looking through your photos for {category}…")
        self._read = None
        self.catalog_bar.hide()
        catalog = info.catalog

        def rank() -> None:
            # The descriptions are in the library now: the ranking itself, on the query lane.
            self.catalog_bar.hide()
            self._watch(
                self.session.runner.start(
                    "recommend",
                    lambda ctx: tasks.recommend(
                        queries, directory, encoder, category, catalog, k, w, ctx.cancel
                    ),
                    lane=QUERY_LANE,
                ),
                category,
            )

        # First the category's descriptions the library has not read (minutes for a large
        # catalog's first question), on the pool, so that searches are not held up meanwhile.
        read = self.session.runner.start(
            "recommend",
            lambda ctx: tasks.read_catalog(directory, encoder, catalog, category, ctx.cancel),
        )
        # Connected before _watch's own end handler, which forgets the run that ended.
        read.finished.connect(
            lambda j=read: rank() if j is self._job and j.outcome == "succeeded" else None
        )
        self._watch(read, category)

    def _watch(self, job: Job, category: str) -> None:
        """Follow ``job`` (reading or ranking ``category``) as the panel's current run."""
        self._job = job
        job.progress_changed.connect(lambda p, j=job, c=category: self._progress(j, c, p))
        if job.lane == QUERY_LANE:
            job.succeeded.connect(self._show)
            job.succeeded.connect(self._maybe_rerank)
        job.failed.connect(self._failed)
        job.cancelled.connect(lambda j=job, c=category: self._cancelled(j, c))
        job.finished.connect(lambda j=job: self._run_finished(j))

    def cancel_run(self) -> None:
        """Stop the running question; the descriptions read so far stay in the library."""
        job = self._job
        if job is not None and not job.done:
            job.cancel()
            self.catalog_bar.set_stopping("Stopping after the descriptions being read…")

    def _progress(self, job: Job, category: str, progress: Progress) -> None:
        if job is not self._job or progress.stage != CATALOG_STAGE:
            return  # a superseded run's last batch
        if self._read is None:
            self.catalog_bar.start()
        self._read = progress
        if not job.token.cancelled:
            self.catalog_bar.set_progress(progress)
        if progress.total > 0 and progress.done >= progress.total:
            self.status.setText(f"Looking through your photos for {category}…")
        else:
            self.status.setText(
                f"Reading the catalog's {category} descriptions once; the recommendations follow."
            )

    def _cancelled(self, job: Job, category: str) -> None:
        if job is not self._job:
            return  # superseded: the newer run speaks for itself
        read = self._read
        if read is not None and read.total > 0 and read.done < read.total:
            self.status.setText(
                f"Stopped reading the catalog: {read.done:,} of {read.total:,} {read.unit} "
                f"read are kept. Choose {category} again to read the rest and see its "
                "recommendations."
            )
        else:
            self.status.setText(
                f"Stopped before the {category} recommendations were ready. Choose {category} "
                "again to see them."
            )
        if self.view is not None and self.view.category != category:
            self._clear_view()  # another category's cards under this one's name

    def _run_finished(self, job: Job) -> None:
        if job is self._job:
            self._job = None
            self.catalog_bar.hide()

    def _maybe_rerank(self, view: RecommendationView) -> None:
        """Second pass, on the model's lane: the VLM re-orders the cards already shown."""
        if not (self.rerank.isChecked() and self.vlm.configured("rerank") and view.cards):
            return
        directory = self.session.library_dir
        # Captions of the grid's photos come from the same model when it is also the captioner.
        caption = self.vlm.source("captions") == self.vlm.source("rerank")
        self.status.setText(self.status.text() + " Re-ranking with the vision-language model…")
        job = self.vlm.run(
            "rerank",
            "rerank",
            lambda vlm, ctx: tasks.rerank_view(vlm, directory, view, ctx.cancel, caption=caption),
        )
        job.succeeded.connect(lambda ranked: self._show(ranked) if self.view is view else None)
        job.failed.connect(self._failed)

    def _failed(self, message: str) -> None:
        self.status.setText(message)
        self._clear_cards()

    def _clear_cards(self) -> None:
        for card in self.cards:
            card.setParent(None)
            card.deleteLater()
        self.cards = []

    def _clear_view(self) -> None:
        self.view = None
        self._clear_cards()
        self.grid_image.clear()
        self.grid_title.setText("<b>Your profile</b>")
        self.profile_aspects.setText("")

    def _show(self, view: RecommendationView) -> None:
        self.view = view
        self._clear_cards()
        for card in view.cards:
            widget = RecommendationCardView(card, self)
            self.cards_layout.insertWidget(self.cards_layout.count() - 1, widget)
            self.cards.append(widget)
        notes = " ".join(view.notes)
        summary = (
            f"{len(view.cards)} {view.category} picks, based on {view.retrieved} of your "
            f"photos. {notes}".strip()
            if view.cards
            else f"No {view.category} candidates in this catalog. {notes}".strip()
        )
        # Nothing in the library for this category goes first, above the list.
        self.status.setText(f"{view.library_note} {summary}" if view.library_note else summary)
        if view.grid is not None:
            pixmap = QPixmap.fromImage(pil_to_qimage(shown_grid(view.grid.image)))
            self.grid_image.setPixmap(
                pixmap.scaled(
                    min(440, pixmap.width()),
                    min(440, pixmap.height()),
                    Qt.AspectRatioMode.KeepAspectRatio,
                    Qt.TransformationMode.SmoothTransformation,
                )
            )
            self._grid_pixmap = pixmap
        else:
            self.grid_image.clear()
        self.grid_title.setText(f"<b>Your {html.escape(view.category)} profile</b>")
        self.profile_aspects.setText(
            "Your photos show: " + chips(view.profile_aspects, 12) if view.profile_aspects else ""
        )
        self.recommendations_shown.emit(view)

    def _thumbnail_ready(self, key: str) -> None:
        for card in self.cards:
            card.refresh_thumbnails(self, key)
