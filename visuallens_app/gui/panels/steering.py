"""The "Steering" panel: textual steering vectors applied to the vision-language model.

Compute a vector of a concept (mean shift, linear probe or SAE features, on the model's own
language model reading the concept's sentences), ask a question about a photo and see the
unsteered and the steered answers side by side (streamed) with each option's first-token
probability, and sweep layer x strength on a multiple-choice benchmark while the heatmap fills.
Everything runs on the shared model's lane (:class:`~visuallens_app.gui.vlm_host.VlmHost`); the
window never freezes and every long step can be cancelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from visuallens_app.gui.context import AppContext
from visuallens_app.gui.inspect_widgets import ImageInput
from visuallens_app.gui.panels.base import Panel
from visuallens_app.gui.workers import Job

METHODS = [
    ("mean_shift", "Mean shift"),
    ("probe", "Linear probe"),
    ("sae", "Sparse autoencoder features"),
]
MASKS = [("image", "Image tokens"), ("text", "Text tokens"), ("both", "Both")]


def concept_names() -> list[str]:
    from visuallens_app.steering.concepts import concepts_dir

    return sorted(p.stem for p in concepts_dir().glob("*.jsonl"))


def compute_job(
    vlm: Any, ctx: Any, concept: str, *, method: str, layers: str, sae: str, store: Any
) -> Any:
    """Compute and store a vector (model lane); returns its StoredVector."""
    from visuallens_app.steering.concepts import load_concepts
    from visuallens_app.steering.vectors import compute_vector, load_sae, parse_layers

    concepts = load_concepts(concept)
    chosen = parse_layers(layers, vlm.num_layers)
    autoencoder = load_sae(sae) if method == "sae" and sae else None
    vector = yield from compute_vector(
        vlm, concepts, method, chosen, sae=autoencoder, cancel=ctx.cancel
    )
    return store.save(vector)


class SteeringPanel(ImageInput, Panel):
    """Vectors, side-by-side answers and sweeps (module doc)."""

    title = "Steering"
    icon = "SP_MediaSeekForward"
    needs_library = False

    def __init__(self, context: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(context, parent)
        self.image: Any = None
        self.vector: Any = None
        self._jobs: dict[str, Job] = {}

        self.model_line = QLabel(self.vlm.status())
        self.model_line.setObjectName("SteeringModel")
        self.model_line.setWordWrap(True)
        self.vlm.status_changed.connect(self.model_line.setText)

        # -- vectors --
        self.concept = QComboBox()
        self.concept.setObjectName("SteeringConcept")
        self.concept.addItems(concept_names())
        self.concept.addItem("Your own concept file…", "")
        self.concept.activated.connect(self._concept_chosen)
        self.method = QComboBox()
        self.method.setObjectName("SteeringMethod")
        for value, label in METHODS:
            self.method.addItem(label, value)
        self.method.currentIndexChanged.connect(self._method_changed)
        self.sae = QLineEdit()
        self.sae.setPlaceholderText("SAE folder (cfg.json + sae_weights.safetensors)")
        self.sae.setEnabled(False)
        self.layers = QLineEdit()
        self.layers.setObjectName("SteeringLayers")
        self.layers.setPlaceholderText("e.g. 8-14 or 3,5,7 (default: the middle layer)")
        self.compute_button = QPushButton("Compute vector")
        self.compute_button.setObjectName("SteeringCompute")
        self.compute_button.clicked.connect(self.compute)
        self.compute_progress = QProgressBar()
        self.compute_progress.hide()
        self.saved = QListWidget()
        self.saved.setObjectName("SteeringVectors")
        self.saved.setMaximumHeight(110)
        self.saved.itemSelectionChanged.connect(self._vector_selected)
        delete = QPushButton("Delete")
        delete.clicked.connect(self.delete_selected)
        vectors_box = QGroupBox("Vector")
        vform = QFormLayout(vectors_box)
        vform.addRow("Concept:", self.concept)
        vform.addRow("Method:", self.method)
        vform.addRow("", self.sae)
        vform.addRow("Layers:", self.layers)
        compute_row = QHBoxLayout()
        compute_row.addWidget(self.compute_button)
        compute_row.addWidget(self.compute_progress, 1)
        vform.addRow("", compute_row)
        saved_row = QHBoxLayout()
        saved_row.addWidget(self.saved, 1)
        saved_row.addWidget(delete, 0, Qt.AlignmentFlag.AlignTop)
        vform.addRow("Saved:", saved_row)

        # -- asking --
        self.build_image_input(self.session, "steer-image")
        self.question = QLineEdit("Is the cat to the left or to the right of the cup?")
        self.question.setObjectName("SteeringQuestion")
        self.options = QLineEdit()
        self.options.setObjectName("SteeringOptions")
        self.options.setPlaceholderText("optional answer options, e.g. left,right")
        self.layer = QSpinBox()
        self.layer.setObjectName("SteeringLayer")
        self.alpha = QDoubleSpinBox()
        self.alpha.setObjectName("SteeringAlpha")
        self.alpha.setRange(-100.0, 100.0)
        self.alpha.setSingleStep(0.5)
        self.alpha.setValue(4.0)
        self.mask_choice = QComboBox()
        for value, label in MASKS:
            self.mask_choice.addItem(label, value)
        self.prefill = QCheckBox("Prefill only (the paper)")
        self.prefill.setChecked(True)
        self.ask_button = QPushButton("Ask")
        self.ask_button.setObjectName("SteeringAsk")
        self.ask_button.clicked.connect(self.ask)
        self.unsteered = QPlainTextEdit()
        self.unsteered.setObjectName("UnsteeredAnswer")
        self.unsteered.setReadOnly(True)
        self.steered = QPlainTextEdit()
        self.steered.setObjectName("SteeredAnswer")
        self.steered.setReadOnly(True)
        self.bars = QGridLayout()
        ask_box = QGroupBox("Ask")
        aform = QFormLayout(ask_box)
        aform.addRow("Question:", self.question)
        aform.addRow("Options:", self.options)
        knobs = QHBoxLayout()
        knobs.addWidget(QLabel("layer"))
        knobs.addWidget(self.layer)
        knobs.addWidget(QLabel("alpha"))
        knobs.addWidget(self.alpha)
        knobs.addWidget(self.mask_choice)
        knobs.addWidget(self.prefill)
        knobs.addStretch(1)
        knobs.addWidget(self.ask_button)
        aform.addRow("Steer:", knobs)
        answers = QGridLayout()
        answers.addWidget(QLabel("<b>Unsteered</b>"), 0, 0)
        answers.addWidget(QLabel("<b>Steered</b>"), 0, 1)
        answers.addWidget(self.unsteered, 1, 0)
        answers.addWidget(self.steered, 1, 1)
        answers.addLayout(self.bars, 2, 0, 1, 2)
        aform.addRow(answers)

        # -- sweeping --
        self.bench = QLineEdit()
        self.bench.setObjectName("SteeringBench")
        self.bench.setPlaceholderText("a multiple-choice JSONL (CV-Bench layout)")
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._choose_bench)
        self.sweep_layers = QLineEdit()
        self.sweep_layers.setPlaceholderText("layers, e.g. 0-3 (default: the vector's)")
        self.sweep_alphas = QLineEdit("0,2,4,8")
        self.sweep_button = QPushButton("Run sweep")
        self.sweep_button.setObjectName("SteeringSweep")
        self.sweep_button.clicked.connect(self.sweep)
        self.sweep_progress = QProgressBar()
        self.sweep_progress.hide()
        self.grid = QTableWidget()
        self.grid.setObjectName("SweepGrid")
        self.grid.setMinimumHeight(140)
        self.sweep_summary = QLabel()
        self.sweep_summary.setWordWrap(True)
        sweep_box = QGroupBox("Sweep layer × alpha")
        sform = QFormLayout(sweep_box)
        bench_row = QHBoxLayout()
        bench_row.addWidget(self.bench, 1)
        bench_row.addWidget(browse)
        sform.addRow("Benchmark:", bench_row)
        sform.addRow("Layers:", self.sweep_layers)
        sform.addRow("Alphas:", self.sweep_alphas)
        run_row = QHBoxLayout()
        run_row.addWidget(self.sweep_button)
        run_row.addWidget(self.sweep_progress, 1)
        sform.addRow("", run_row)
        sform.addRow(self.grid)
        sform.addRow(self.sweep_summary)

        self.status = QLabel()
        self.status.setObjectName("SteeringStatus")
        self.status.setWordWrap(True)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(self.model_line)
        left_layout.addWidget(vectors_box)
        left_layout.addWidget(self.source)
        left_layout.addWidget(self.canvas, 1)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.addWidget(ask_box, 3)
        right_layout.addWidget(sweep_box, 2)
        right_layout.addWidget(self.status)
        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setChildrenCollapsible(False)
        # Scrolls rather than forcing its height on the window (a 1280 x 800 screen fits it).
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(splitter)
        splitter.setMinimumSize(900, 720)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(scroll)
        self.refresh_vectors()

    # -- vectors -------------------------------------------------------------------------------
    def _method_changed(self, _index: int) -> None:
        self.sae.setEnabled(self.method.currentData() == "sae")

    def _concept_chosen(self, index: int) -> None:
        if self.concept.itemData(index) != "":
            return
        path, _ = QFileDialog.getOpenFileName(self, "A concept file", "", "JSONL (*.jsonl)")
        if not path:
            self.concept.setCurrentIndex(0)
            return
        self.concept.insertItem(index, Path(path).stem, path)
        self.concept.setCurrentIndex(index)

    def _concept_source(self) -> str:
        data = self.concept.currentData()
        return str(data) if data else self.concept.currentText()

    def store(self) -> Any:
        """The library's vector folder (vectors are the user's work, kept with the library)."""
        from visuallens_app.steering.store import VectorStore

        return VectorStore(self.session.library_dir / "steering" / "vectors")

    def refresh_vectors(self) -> None:
        from visuallens_app.errors import VisualLensError

        self.saved.clear()
        try:
            stored = self.store().list()
        except (VisualLensError, OSError) as err:
            self.status.setText(str(err))
            return
        for entry in stored:
            info = entry.info
            layers = info.get("layers", [])
            text = (
                f"{entry.name}  ({info.get('concept', '?')}, {info.get('method', '?')}, "
                f"layers {layers}, {info.get('model', '?')})"
            )
            item = QListWidgetItem(text)
            item.setToolTip(text)
            item.setData(Qt.ItemDataRole.UserRole, str(entry.path))
            self.saved.addItem(item)

    def compute(self) -> None:
        running = self._jobs.get("compute")
        if running is not None and not running.done:
            running.cancel()
            return
        if not self.vlm.configured("steering"):
            self.status.setText(self.vlm.status())
            return
        concept, method = self._concept_source(), str(self.method.currentData())
        layers, sae = self.layers.text().strip(), self.sae.text().strip()
        store = self.store()

        def work(vlm: Any, ctx: Any) -> Any:
            spec = layers or str(vlm.num_layers // 2)
            return compute_job(vlm, ctx, concept, method=method, layers=spec, sae=sae, store=store)

        job = self.vlm.run("steer-compute", "steering", work)
        self._jobs["compute"] = job
        self.compute_button.setText("Cancel")
        self.compute_progress.show()
        self.compute_progress.setRange(0, 0)
        job.progress_changed.connect(self._compute_progress)
        job.succeeded.connect(self._computed)
        job.failed.connect(self.status.setText)
        job.cancelled.connect(lambda: self.status.setText("Vector cancelled."))
        job.finished.connect(self._compute_finished)

    def _compute_progress(self, progress: Any) -> None:
        if progress.total:
            self.compute_progress.setRange(0, progress.total)
            self.compute_progress.setValue(progress.done)
            self.compute_progress.setFormat(f"{progress.done}/{progress.total} {progress.unit}")

    def _computed(self, stored: Any) -> None:
        self.status.setText(f"Saved the vector {stored.name} in {stored.path.parent}.")
        self.refresh_vectors()
        for row in range(self.saved.count()):
            item = self.saved.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == str(stored.path):
                self.saved.setCurrentRow(row)

    def _compute_finished(self) -> None:
        self.compute_button.setText("Compute vector")
        self.compute_progress.hide()

    def _vector_selected(self) -> None:
        from visuallens_app.errors import VisualLensError
        from visuallens_app.steering.vectors import load_vector

        items = self.saved.selectedItems()
        if not items:
            return
        try:
            self.vector = load_vector(items[0].data(Qt.ItemDataRole.UserRole))
        except (VisualLensError, OSError) as err:
            self.status.setText(str(err))
            return
        layers = self.vector.layers
        self.layer.setRange(min(layers), max(layers))
        self.layer.setValue(layers[len(layers) // 2])
        self.status.setText(
            f"Vector: {self.vector.concept}, {self.vector.method}, layers {layers}."
        )

    def delete_selected(self) -> None:
        for item in self.saved.selectedItems():
            self.store().delete(Path(item.data(Qt.ItemDataRole.UserRole)).stem)
        self.vector = None
        self.refresh_vectors()

    # -- asking --------------------------------------------------------------------------------
    def _image_loaded(self, _path: Path, image: Any) -> None:
        self.image = image
        self.canvas.set_image(image)

    def ask(self) -> None:
        """Both answers, streamed side by side, with option probabilities when there are options."""
        from visuallens_app.steering.apply import ask

        if self.vector is None:
            self.status.setText("Compute or pick a vector first.")
            return
        if not self.vlm.configured("steering"):
            self.status.setText(self.vlm.status())
            return
        question = self.question.text().strip()
        if not question:
            self.status.setText("Write a question.")
            return
        options = [o.strip() for o in self.options.text().split(",") if o.strip()]
        image, vector = self.image, self.vector
        layer, alpha = self.layer.value(), self.alpha.value()
        mask = str(self.mask_choice.currentData())
        during = "prefill" if self.prefill.isChecked() else "generation"
        self.unsteered.clear()
        self.steered.clear()
        self._clear_bars()
        self.status.setText("Asking…")
        job = self.vlm.run(
            "steer-ask",
            "steering",
            lambda vlm, ctx: ask(
                vlm,
                image,
                question,
                vector=vector,
                layers=[layer],
                alpha=alpha,
                mask=mask,
                during=during,  # type: ignore[arg-type]
                options=options,
                cancel=ctx.cancel,
            ),
        )
        job.partial_result.connect(self._answer_piece)
        job.succeeded.connect(self._answered)
        job.failed.connect(self.status.setText)

    def _answer_piece(self, piece: Any) -> None:
        box = self.steered if piece.side == "steered" else self.unsteered
        box.setPlainText(piece.text)

    def _clear_bars(self) -> None:
        while self.bars.count():
            item = self.bars.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()

    def _answered(self, result: Any) -> None:
        self.unsteered.setPlainText(result.unsteered.text)
        self.steered.setPlainText(result.steered.text)
        self._clear_bars()
        for row, option in enumerate(result.unsteered.probabilities):
            self.bars.addWidget(QLabel(option), row, 0)
            for column, answer in ((1, result.unsteered), (2, result.steered)):
                bar = QProgressBar()
                bar.setRange(0, 1000)
                value = answer.probabilities.get(option, 0.0)
                bar.setValue(round(1000 * value))
                bar.setFormat(f"{value:.3f}")
                self.bars.addWidget(bar, row, column)
        self.status.setText("Answered with and without steering.")

    # -- sweeping ------------------------------------------------------------------------------
    def _choose_bench(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "A benchmark", "", "JSONL (*.jsonl)")
        if path:
            self.bench.setText(path)

    def sweep(self) -> None:
        """Run (or resume) the sweep; the grid fills as cells finish; pressing again cancels."""
        from visuallens_app.settings import cache_dir
        from visuallens_app.steering.bench import load_benchmark
        from visuallens_app.steering.sweep import parse_alphas, run_sweep
        from visuallens_app.steering.vectors import parse_layers

        running = self._jobs.get("sweep")
        if running is not None and not running.done:
            running.cancel()
            return
        if self.vector is None:
            self.status.setText("Compute or pick a vector first.")
            return
        bench = self.bench.text().strip()
        if not bench:
            self.status.setText("Choose a benchmark file to sweep on.")
            return
        vector, mask = self.vector, str(self.mask_choice.currentData())
        layers_text, alphas_text = self.sweep_layers.text().strip(), self.sweep_alphas.text()
        out_dir = cache_dir() / "steering" / "sweeps" / Path(bench).stem

        def work(vlm: Any, ctx: Any) -> Any:
            items = load_benchmark(bench)
            layers = parse_layers(layers_text, vlm.num_layers) if layers_text else vector.layers
            alphas = parse_alphas(alphas_text)
            return run_sweep(
                vlm, items, vector, layers, alphas, out_dir=out_dir, mask=mask, cancel=ctx.cancel
            )

        self.grid.clear()
        self.grid.setRowCount(0)
        self.grid.setColumnCount(0)
        job = self.vlm.run("steer-sweep", "steering", work)
        self._jobs["sweep"] = job
        self.sweep_button.setText("Cancel sweep")
        self.sweep_progress.show()
        self.sweep_progress.setRange(0, 0)
        job.progress_changed.connect(self._sweep_progress)
        job.partial_result.connect(self._cell)
        job.succeeded.connect(self._swept)
        job.failed.connect(self.status.setText)
        job.cancelled.connect(
            lambda: self.status.setText("Sweep cancelled; running it again resumes it.")
        )
        job.finished.connect(self._sweep_finished)

    def _sweep_progress(self, progress: Any) -> None:
        if progress.total:
            self.sweep_progress.setRange(0, progress.total)
            self.sweep_progress.setValue(progress.done)
            self.sweep_progress.setFormat(f"{progress.done}/{progress.total} {progress.unit}")

    def _cell_position(self, layer: int, alpha: float) -> tuple[int, int]:
        vertical = (self.grid.verticalHeaderItem(r) for r in range(self.grid.rowCount()))
        horizontal = (self.grid.horizontalHeaderItem(c) for c in range(self.grid.columnCount()))
        rows = [item.text() if item is not None else "" for item in vertical]
        cols = [item.text() if item is not None else "" for item in horizontal]
        row_key, col_key = f"layer {layer}", f"α {alpha:g}"
        if row_key not in rows:
            self.grid.insertRow(self.grid.rowCount())
            self.grid.setVerticalHeaderItem(self.grid.rowCount() - 1, QTableWidgetItem(row_key))
            rows.append(row_key)
        if col_key not in cols:
            self.grid.insertColumn(self.grid.columnCount())
            self.grid.setHorizontalHeaderItem(
                self.grid.columnCount() - 1, QTableWidgetItem(col_key)
            )
            cols.append(col_key)
        return rows.index(row_key), cols.index(col_key)

    def _cell(self, cell: Any) -> None:
        if not hasattr(cell, "layer"):
            return
        row, column = self._cell_position(cell.layer, cell.alpha)
        item = QTableWidgetItem(f"{cell.accuracy:.2f}" + ("" if cell.finished else "…"))
        item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
        shade = QColor.fromHsv(int(120 * cell.accuracy), 110, 240)
        item.setBackground(shade)
        item.setForeground(QColor("#111"))
        self.grid.setItem(row, column, item)

    def _swept(self, result: Any) -> None:
        layer, alpha = result.best
        held = result.heldout
        self.sweep_summary.setText(
            f"Best: layer {layer}, alpha {alpha:g} (+{result.gain:.3f} on the grid-search part). "
            f"Held out: {held}"
        )
        self.status.setText("Sweep finished; sweep.json and heatmap.png are in the cache.")

    def _sweep_finished(self) -> None:
        self.sweep_button.setText("Run sweep")
        self.sweep_progress.hide()

    def shutdown(self) -> None:
        for job in self._jobs.values():
            job.cancel()
